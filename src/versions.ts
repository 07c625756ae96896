import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir, writeAtomic, type State, type Version } from './state.js';

/** Keeps a copy of each applied config: drift repair and rollback use them. */
export async function keepVersion(
  dir: string,
  state: State,
  entry: Omit<Version, 'file'>,
  content: Buffer,
  keep: number,
): Promise<void> {
  const versionsDir = join(dir, 'versions');
  await ensureDir(versionsDir);
  const file = `${entry.appliedAt.replace(/[:.]/g, '-')}-${entry.hash.slice(0, 8)}`;
  await writeAtomic(join(versionsDir, file), content);

  state.versions.push({ ...entry, file });
  const surplus = state.versions.splice(
    0,
    Math.max(0, state.versions.length - Math.max(1, keep)),
  );
  for (const old of surplus) await rm(join(versionsDir, old.file), { force: true });
}

export async function readVersion(
  dir: string,
  version: Version,
): Promise<Buffer | undefined> {
  return readFile(join(dir, 'versions', version.file)).catch(() => undefined);
}
