import { randomBytes } from 'node:crypto';
import {
  chown,
  open,
  readFile,
  readdir,
  readlink,
  realpath,
  rename,
  rm,
  stat,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { errnoOf, ioError } from './errors.js';

/**
 * The file to replace. When the configured path is a symlink, its target is
 * replaced and the link stays, as admins who symlink configs expect.
 */
export async function realTarget(confFile: string, depth = 0): Promise<string> {
  try {
    return await realpath(confFile);
  } catch (error) {
    if (errnoOf(error) !== 'ENOENT') throw ioError('resolve', confFile, error);
  }
  // A link whose target does not exist yet: create the target, keep the link.
  const link = await readlink(confFile).catch(() => undefined);
  if (link !== undefined && depth < 40) {
    return realTarget(resolve(dirname(confFile), link), depth + 1);
  }
  try {
    return join(await realpath(dirname(confFile)), basename(confFile));
  } catch (error) {
    throw ioError('resolve the directory of', confFile, error);
  }
}

export async function readLive(target: string): Promise<Buffer | undefined> {
  try {
    return await readFile(target);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return undefined;
    throw ioError('read', target, error);
  }
}

// Candidates live beside the target, so relative includes resolve as they
// will once live and the final rename never crosses a filesystem. The leading
// dot keeps them out of `*.conf` globs and dnsmasq's conf-dir.
function candidatePrefix(target: string): string {
  return `.${basename(target)}.pull-config-`;
}

/**
 * Writes `data` next to `target` under a dot-name, fsynced, with the mode
 * and owner of the file it will replace.
 */
export async function stageFile(target: string, data: Buffer): Promise<string> {
  const path = join(
    dirname(target),
    candidatePrefix(target) + randomBytes(6).toString('hex'),
  );
  const current = await stat(target).catch(() => undefined);

  try {
    const handle = await open(path, 'wx', current ? current.mode & 0o7777 : 0o644);
    try {
      await handle.writeFile(data);
      if (current) await handle.chmod(current.mode & 0o7777);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (current) await chown(path, current.uid, current.gid);
  } catch (error) {
    await rm(path, { force: true });
    // The candidate is gone by now: name the file it was to replace.
    throw ioError('write the new', target, error);
  }
  return path;
}

/** Renames the staged file over the target and makes the rename durable. */
export async function replaceFile(staged: string, target: string): Promise<void> {
  try {
    await rename(staged, target);
  } catch (error) {
    await rm(staged, { force: true });
    throw ioError('replace', target, error);
  }
  await syncDirectory(dirname(target));
}

/** Writes `data` over `target` atomically: stage beside it, then rename. */
export async function writeConfig(target: string, data: Buffer): Promise<void> {
  await replaceFile(await stageFile(target, data), target);
}

async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw ioError('sync', dir, error);
  }
}

/** Removes candidates that a run killed mid-way left behind. */
export async function removeStaleCandidates(target: string): Promise<void> {
  const prefix = candidatePrefix(target);
  const names = await readdir(dirname(target)).catch(() => [] as string[]);
  for (const name of names) {
    if (name.startsWith(prefix)) await rm(join(dirname(target), name), { force: true });
  }
}

export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
}
