import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ioError } from './errors.js';

export type Result =
  | 'unchanged'
  | 'applied'
  | 'rejected'
  | 'failed'
  | 'disabled'
  | 'enabled'
  | 'rolled back';

export interface Version {
  file: string;
  etag: string | undefined;
  hash: string;
  appliedAt: string;
  size: number;
}

/** What pull-config remembers about one instance between runs. */
export interface State {
  /** ETag of the config that is live and was reloaded successfully. */
  etag?: string;
  hash?: string;
  appliedAt?: string;
  /** Applied configs, oldest first; the last one is live. */
  versions: Version[];
  lastResult?: Result;
  lastRunAt?: string;
  lastError?: string;
  failure?: { code: string; since: string; count: number };
  rejected?: { etag?: string; hash: string; at: string; message: string };
  retryAfter?: string;
  warned: string[];
  disabled?: { reason: string; by: string; at: string };
}

export function emptyState(): State {
  return { versions: [], warned: [] };
}

export function instanceDir(stateDir: string, key: string): string {
  return join(stateDir, key);
}

/**
 * Reads the state; a missing, unreadable or corrupt file is an empty state,
 * which only costs one unconditional request.
 */
export async function readState(dir: string): Promise<State> {
  try {
    const parsed: unknown = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
    if (typeof parsed !== 'object' || parsed === null) return emptyState();
    const state = { ...emptyState(), ...(parsed as Partial<State>) };
    if (!Array.isArray(state.versions) || !Array.isArray(state.warned))
      return emptyState();
    if (state.etag !== undefined && !isHeaderSafe(state.etag)) delete state.etag;
    return state;
  } catch {
    return emptyState();
  }
}

function isHeaderSafe(value: unknown): value is string {
  return (
    typeof value === 'string' && /^[\x21-\x7e\x80-\xff][\x20-\x7e\x80-\xff]*$/.test(value)
  );
}

/** State directories hold copies of configs: root only. */
export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw ioError('create', dir, error);
  }
}

export async function writeState(dir: string, state: State): Promise<void> {
  await ensureDir(dir);
  await writeAtomic(join(dir, 'state.json'), JSON.stringify(state, null, 2) + '\n');
}

/** Atomic, fsynced, 0600; write-file-atomic is loaded only when needed. */
export async function writeAtomic(
  path: string,
  data: string | Buffer,
  mode = 0o600,
): Promise<void> {
  const { default: writeFileAtomic } = await import('write-file-atomic');
  try {
    await writeFileAtomic(path, data, { mode });
  } catch (error) {
    throw ioError('write', path, error);
  }
}

// write-file-atomic's temporary names (NAME.digits), command output files,
// and a copy of a replaced file whose journal is gone: what runs killed with
// -9 leave behind. Called after any journal has been resolved.
const LEFTOVER = new RegExp(
  '^(state\\.json|pending\\.json|pending\\.old|rejected\\.conf)\\.[0-9a-f]+$' +
    '|^\\.output-\\d+$|^pending\\.old$',
);
const DRIFT_LEFTOVER = /\.conf\.[0-9a-f]+$/;

/** Removes what killed runs left in the instance's state directory. */
export async function sweepStateDir(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (LEFTOVER.test(name)) await rm(join(dir, name), { force: true });
  }
  const drift = join(dir, 'drift');
  for (const name of await readdir(drift).catch(() => [] as string[])) {
    if (DRIFT_LEFTOVER.test(name)) await rm(join(drift, name), { force: true });
  }
}
