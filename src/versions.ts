import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir, writeAtomic, type State, type Version } from './state.js';

/**
 * Keeps a copy of each applied config: drift repair and rollback use them.
 * Copies that fall out of the list are removed by `pruneVersions`, after
 * the state that no longer names them is written.
 */
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
  state.versions.splice(0, Math.max(0, state.versions.length - Math.max(1, keep)));
}

/** Removes kept copies that the state no longer names. */
export async function pruneVersions(dir: string, state: State): Promise<void> {
  const kept = new Set(state.versions.map((version) => version.file));
  const versionsDir = join(dir, 'versions');
  for (const name of await readdir(versionsDir).catch(() => [] as string[])) {
    if (!kept.has(name)) await rm(join(versionsDir, name), { force: true });
  }
}

export async function readVersion(
  dir: string,
  version: Version,
): Promise<Buffer | undefined> {
  return readFile(join(dir, 'versions', version.file)).catch(() => undefined);
}
