import type { PullError } from './errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';

/** What one run did; the exit code, the output and the state derive from it. */
export type Outcome =
  | { kind: 'unchanged' }
  | {
      kind: 'applied';
      etag: string | undefined;
      bytes: number;
      reloaded: boolean;
      /** "recovered after N failed runs", when this change ended a failure. */
      recovered?: string;
    }
  | { kind: 'would change'; diff: string }
  | { kind: 'rejected'; error: PullError; key: string }
  | { kind: 'failed'; error: PullError; step: string }
  | { kind: 'busy'; holder: number | undefined }
  | { kind: 'disabled'; reason: string; by: string; at: string }
  | { kind: 'deferred'; until: string };

export function exitCodeOf(outcome: Outcome, interactive: boolean): ExitCode {
  switch (outcome.kind) {
    case 'unchanged':
    case 'applied':
    case 'disabled':
      return EXIT.ok;
    case 'would change':
      return 2 as ExitCode;
    case 'rejected':
    case 'failed':
      return outcome.error.exitCode;
    case 'busy':
      return interactive ? EXIT.tempFail : EXIT.ok;
    case 'deferred':
      return EXIT.tempFail;
  }
}
