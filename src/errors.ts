import { EXIT, type ExitCode } from './exit-codes.js';

export interface FailureFacts {
  /** Stable identifier of the cause, e.g. "fetch-timeout"; used to tell
   *  whether a failure is new or the same one as last run. */
  code: string;
  exitCode: ExitCode;
  /** Extra lines shown on a terminal or with --verbose: a validator's output. */
  detail?: string;
  cause?: unknown;
  /** When the manager asked us to come back (429 or 503 with Retry-After). */
  retryAfter?: Date;
}

/** The one error type for expected failures: printed as one line, no stack. */
export class PullError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly detail: string | undefined;
  readonly retryAfter: Date | undefined;

  constructor(message: string, facts: FailureFacts) {
    super(message, { cause: facts.cause });
    this.name = 'PullError';
    this.code = facts.code;
    this.exitCode = facts.exitCode;
    this.detail = facts.detail;
    this.retryAfter = facts.retryAfter;
  }
}

export function configError(message: string, code = 'config'): PullError {
  return new PullError(message, { code, exitCode: EXIT.config });
}

const ioMessages: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EIO: 'input/output error',
};

/** Turns a Node file-system error into a one-line local I/O failure (74). */
export function ioError(what: string, path: string, error: unknown): PullError {
  const errno = (error as NodeJS.ErrnoException)?.code ?? '';
  const reason =
    ioMessages[errno] ?? (error instanceof Error ? error.message : String(error));
  return new PullError(`cannot ${what} ${path}: ${reason}`, {
    code: `io-${errno || 'other'}`,
    exitCode: EXIT.ioError,
    cause: error,
  });
}

export function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException)?.code;
}
