import { accessSync, constants, statSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { configError } from './errors.js';

export interface CommandResult {
  ok: boolean;
  /** Why it failed, in a few words: "exited with 1", "timed out after 10 s". */
  failure: string;
  timedOut: boolean;
  output: string;
}

export interface RunOptions {
  timeoutMs: number;
  /** Secrets that must not reach the child's environment. */
  secrets: string[];
  /** A private directory for the output file. */
  scratchDir: string;
  origin: string;
}

const SBIN = [
  '/usr/local/sbin',
  '/usr/local/bin',
  '/usr/sbin',
  '/usr/bin',
  '/sbin',
  '/bin',
];

/**
 * Runs a validator, reload or verify command. Output goes to a file, not a
 * pipe, so a daemon the command leaves behind cannot keep us waiting; on
 * time-out the whole process group is killed.
 */
export async function runCommand(
  argv: string[],
  options: RunOptions,
): Promise<CommandResult> {
  const { execa } = await import('execa');
  const [file, ...args] = argv;
  if (!file) throw configError(`${options.origin}: empty command`);

  const outputFile = join(options.scratchDir, `.output-${process.pid}`);
  // execa copies a { file } target through a pipe, which a daemon left behind
  // would hold open: the child gets the file's own descriptor instead. (Its
  // types list only 1 and 2, but any descriptor is handed over as it is.)
  const sink = await open(outputFile, 'w', 0o600);
  const descriptor = sink.fd as 1;

  let timedOut = false;
  try {
    const child = execa(file, args, {
      env: childEnv(options.secrets),
      extendEnv: false,
      stdin: 'ignore',
      stdout: descriptor,
      stderr: descriptor,
      detached: true,
      reject: false,
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, options.timeoutMs);
    const result = await child;
    clearTimeout(timer);

    if (result.failed && isSpawnFailure(result.cause)) {
      throw configError(
        `${options.origin}: cannot run ${file}: ${spawnReason(file, result.cause)}`,
        'command-missing',
      );
    }
    const output = trimOutput(await readFile(outputFile, 'utf8'));
    const failure = timedOut
      ? `timed out after ${options.timeoutMs / 1000} s`
      : result.signal
        ? `killed by ${result.signal}`
        : `exited with ${result.exitCode}`;
    return { ok: !timedOut && result.exitCode === 0, failure, timedOut, output };
  } finally {
    await sink.close();
    await rm(outputFile, { force: true });
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is already gone.
  }
}

function isSpawnFailure(cause: unknown): boolean {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'EACCES' || code === 'ENOEXEC';
}

function spawnReason(file: string, cause: unknown): string {
  const code = (cause as NodeJS.ErrnoException).code;
  // A path with a slash is not looked up in PATH.
  return code === 'ENOENT'
    ? file.includes('/')
      ? 'no such file'
      : 'not found in PATH'
    : code === 'EACCES'
      ? 'permission denied'
      : String(code);
}

/**
 * Whether `file` can be started with the children's PATH: a reload command
 * that is missing must be found before the live file is replaced.
 */
export function findCommand(file: string): string | undefined {
  const dirs = file.includes('/') ? [''] : (childEnv([]).PATH ?? '').split(':');
  for (const dir of dirs) {
    const path = dir ? join(dir, file) : file;
    try {
      accessSync(path, constants.X_OK);
      if (statSync(path).isFile()) return path;
    } catch {
      // Not here; try the next directory.
    }
  }
  return undefined;
}

/** The child gets our environment less the key, and a PATH with sbin in it. */
export function childEnv(secrets: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key === 'API_KEY' || key === 'API_KEY_FILE') continue;
    if (secrets.some((secret) => secret && value.includes(secret))) continue;
    env[key] = value;
  }

  const path = (env.PATH ?? '').split(':').filter(Boolean);
  env.PATH = [...path, ...SBIN.filter((dir) => !path.includes(dir))].join(':');
  return env;
}

/** Keeps what a person needs from a validator's output: its last lines. */
function trimOutput(text: string): string {
  const lines = text
    .split('\n')
    .map((line) => line.trimEnd())
    .filter(Boolean);
  return lines.slice(-10).join('\n');
}
