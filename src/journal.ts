import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAtomic } from './state.js';

/**
 * A record, written before the live file is touched, of what is being
 * replaced. If the process dies before the reload is confirmed, the next run
 * finds it and puts the previous file back.
 */
export interface Pending {
  target: string;
  /** Hash of the file being replaced; absent when there was none. */
  oldHash: string | undefined;
  newHash: string;
  startedAt: string;
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

/** The interrupted apply, and the copy of the file it replaced. */
export async function readPending(
  dir: string,
): Promise<{ pending: Pending; old: Buffer | undefined } | undefined> {
  let pending: Pending;
  try {
    pending = JSON.parse(await readFile(join(dir, RECORD), 'utf8')) as Pending;
  } catch {
    return undefined;
  }
  const old = pending.oldHash ? await readFile(join(dir, OLD_COPY)) : undefined;
  return { pending, old };
}

export async function endApply(dir: string): Promise<void> {
  await rm(join(dir, RECORD), { force: true });
  await rm(join(dir, OLD_COPY), { force: true });
}
