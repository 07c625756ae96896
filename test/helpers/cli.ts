import { fileURLToPath } from 'node:url';
import { runCommand, type CommandResult } from './command.js';

export type { CommandResult } from './command.js';

// The installed entry point, resolved from this file so the cwd does not matter.
export const CLI_PATH = fileURLToPath(new URL('../../bin/pull-config', import.meta.url));

export interface RunOptions {
  timeoutMs?: number;
  // Cron starts jobs outside the repo; "/" unless a test needs otherwise.
  cwd?: string;
}

// Runs bin/pull-config (a sh launcher) with exactly `env`, as cron would.
export function runCli(
  args: string[],
  env: Record<string, string>,
  options: RunOptions = {},
): Promise<CommandResult> {
  return runCommand(CLI_PATH, args, { env, ...options });
}

// Runs a cron.d-style directory through run-parts with exactly `env`. run-parts
// skips file names with dots or other characters outside [A-Za-z0-9_-].
export function runParts(
  dir: string,
  env: Record<string, string>,
  options: RunOptions = {},
): Promise<CommandResult> {
  return runCommand('/usr/bin/run-parts', [dir], { env, ...options });
}
