import { spawn } from 'node:child_process';

export interface CommandResult {
  // null when the process was killed by a signal (see signal).
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface CommandOptions {
  // Exactly the environment the child sees; nothing is inherited from the test.
  env: Record<string, string>;
  timeoutMs?: number;
  cwd?: string;
}

// Runs a program to completion and never rejects for a non-zero exit, so tests
// can assert on the exit code and output. Stdin is /dev/null, as under cron.
export function runCommand(
  file: string,
  args: string[],
  { env, timeoutMs = 30_000, cwd = '/' }: CommandOptions,
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;

    // A daemon started by the child may still hold our pipes; closing them
    // ends the wait even then.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
    }, timeoutMs);

    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        timedOut,
      });
    });
  });
}

// Runs a program that is expected to succeed; throws with its output otherwise.
export async function runChecked(
  file: string,
  args: string[],
  env: Record<string, string>,
): Promise<CommandResult> {
  const result = await runCommand(file, args, { env });
  if (result.code === 0) return result;

  const output = `${result.stdout}${result.stderr}`.trim();
  throw new Error(`${file} ${args.join(' ')} exited ${result.code}: ${output}`);
}
