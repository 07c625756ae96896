import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { State } from './state.js';
import { writeAtomic } from './state.js';

/** What the state must say once a new file is live and reloaded. */
export type Completion =
  | { kind: 'apply'; etag: string | undefined }
  /** Drift repair: the state already describes the file put back. */
  | { kind: 'repair' }
  | {
      kind: 'rollback';
      etag: string | undefined;
      disabled: NonNullable<State['disabled']>;
    };

/**
 * A record, written before the live file is touched, of what is being
 * replaced. If the process dies before the reload is confirmed, the next run
 * puts the previous file back; once it is confirmed (`reloaded`), the next
 * run completes the bookkeeping instead, so that a failed state write never
 * undoes a config the service has taken.
 */
export interface Pending {
  target: string;
  /** Hash of the file being replaced; absent when there was none. */
  oldHash: string | undefined;
  newHash: string;
  startedAt: string;
  reloaded: boolean;
  completion: Completion;
}

const RECORD = 'pending.json';
const OLD_COPY = 'pending.old';

export async function beginApply(
  dir: string,
  pending: Pending,
  old: Buffer | undefined,
): Promise<void> {
  try {
    if (old) await writeAtomic(join(dir, OLD_COPY), old);
    await writeAtomic(join(dir, RECORD), JSON.stringify(pending) + '\n');
  } catch (error) {
    // A half-begun journal must not hold space on a disk that is full.
    await endApply(dir);
    throw error;
  }
}

/** Notes that the service took the new file: from here on, only forward. */
export async function markReloaded(dir: string, pending: Pending): Promise<void> {
  pending.reloaded = true;
  await writeAtomic(join(dir, RECORD), JSON.stringify(pending) + '\n');
}

/**
 * The interrupted apply, and the copy of the file it replaced. A record that
 * does not parse is removed: it cannot be acted on, and must not block.
 */
export async function readPending(
  dir: string,
): Promise<{ pending: Pending; old: Buffer | undefined } | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(join(dir, RECORD), 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    parsed = undefined;
  }
  const pending = parsed as Pending | undefined;
  if (typeof pending?.newHash !== 'string' || typeof pending.completion !== 'object') {
    await endApply(dir);
    return undefined;
  }
  const copy = pending.oldHash
    ? await readFile(join(dir, OLD_COPY)).catch(() => undefined)
    : undefined;
  // A copy that is not the file the record names is no copy at all.
  const sha = copy && createHash('sha256').update(copy).digest('hex');
  return { pending, old: sha === pending.oldHash ? copy : undefined };
}

export async function endApply(dir: string): Promise<void> {
  await rm(join(dir, RECORD), { force: true });
  await rm(join(dir, OLD_COPY), { force: true });
}
