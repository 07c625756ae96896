import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { withCandidate } from './command.js';
import { configError, PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import type { Instance } from './instances.js';
import { awaitNginxReload, snapshotNginx } from './nginx-watch.js';
import { findCommand, runCommand, type CommandResult } from './run-command.js';

export interface ServiceContext {
  secrets: string[];
  scratchDir: string;
  /** Each command run and its output, for --verbose. */
  debug?: (message: string) => void;
}

/** Runs the validator against `path`; a failure carries its own words. */
export async function validate(
  instance: Instance,
  path: string,
  context: ServiceContext,
  /** The name the validator's messages should give the file it checked. */
  shownAs = instance.confFile,
): Promise<void> {
  if (!instance.test) return;
  const argv = withCandidate(instance.test, path);
  const result = await runCommand(argv, {
    timeoutMs: instance.tunables.testTimeoutMs,
    secrets: context.secrets,
    scratchDir: context.scratchDir,
    origin: instance.test.origin,
  });
  context.debug?.(ran(argv, result));
  if (result.ok) return;

  // A validator that hangs says nothing about the config: a local trouble,
  // retried next run, not a rejection to remember.
  if (result.timedOut || result.failure.startsWith('killed by')) {
    throw new PullError(`the validator ${result.failure}`, {
      code: 'validate-timeout',
      exitCode: EXIT.tempFail,
      detail: result.output,
    });
  }
  const words = keyLine(result.output) ?? result.failure;
  throw new PullError(
    `the validator rejected the config: ${words.replaceAll(path, shownAs)}`,
    {
      code: 'rejected',
      exitCode: EXIT.rejected,
      detail: result.output.replaceAll(path, shownAs),
    },
  );
}

/**
 * Checks, before anything is touched, that the reload and verify commands
 * can start at all; systemctl without a running systemd fails with a
 * message that reads like a service problem, so that is said plainly.
 */
export function assertReloadable(instance: Instance): void {
  for (const command of [instance.reload, instance.verify]) {
    const file = command?.argv[0];
    if (!command || !file) continue;
    if (basename(file) === 'systemctl' && !existsSync('/run/systemd/system')) {
      throw configError(
        `${command.origin}: systemd is not running here, so systemctl cannot reload; ` +
          'set RELOAD_COMMAND',
        'no-systemd',
      );
    }
    if (!findCommand(file)) {
      const where = file.includes('/') ? 'no such executable' : 'not found in PATH';
      throw configError(
        `${command.origin}: cannot run ${file}: ${where}`,
        'command-missing',
      );
    }
  }
}

/** Reloads the service and, where we can, checks it took the new config. */
export async function reload(
  instance: Instance,
  previousConfig: Buffer | undefined,
  context: ServiceContext,
  { afterRefusal = false } = {},
): Promise<void> {
  if (!instance.reload) return;
  const watch =
    instance.reloadCheck === 'nginx'
      ? await snapshotNginx(String(previousConfig ?? ''))
      : undefined;
  // nginx retries a failed bind for a few seconds and logs [emerg] each time,
  // so after a refused reload only new workers tell that this one took.
  if (watch && afterRefusal) watch.errorLog = undefined;
  const options = {
    timeoutMs: instance.tunables.reloadTimeoutMs,
    secrets: context.secrets,
    scratchDir: context.scratchDir,
  };

  const started = Date.now();
  const result = await runCommand(instance.reload.argv, {
    ...options,
    origin: instance.reload.origin,
  });
  context.debug?.(ran(instance.reload.argv, result));
  if (!result.ok) {
    throw reloadError(`reload ${result.failure}${suffix(result.output)}`, result.output);
  }

  if (watch) {
    const remaining = Math.max(1000, options.timeoutMs - (Date.now() - started));
    const failure = await awaitNginxReload(watch, remaining);
    if (failure) throw reloadError(failure, '');
  }

  if (instance.verify) {
    const check = await runCommand(instance.verify.argv, {
      ...options,
      origin: instance.verify.origin,
    });
    context.debug?.(ran(instance.verify.argv, check));
    if (!check.ok) {
      throw reloadError(
        `VERIFY_COMMAND ${check.failure}${suffix(check.output)}`,
        check.output,
      );
    }
  }
}

// A failure's output is printed with the error already.
function ran(argv: string[], result: CommandResult): string {
  const output =
    result.ok && result.output ? `\n${result.output.replace(/^/gm, '  ')}` : '';
  return `${argv.join(' ')}: ${result.ok ? 'ok' : result.failure}${output}`;
}

function reloadError(message: string, detail: string): PullError {
  return new PullError(message, {
    code: 'reload-failed',
    exitCode: EXIT.unavailable,
    detail,
  });
}

function suffix(output: string): string {
  const line = keyLine(output);
  return line ? `: ${line}` : '';
}

/** The line that says what went wrong: nginx prints [emerg] before a summary. */
function keyLine(output: string): string | undefined {
  const lines = output.split('\n').filter(Boolean);
  const line =
    lines.find((text) => /\[(emerg|alert|crit|error)\]/.test(text)) ?? lines.at(-1);
  // nginx prefixes its log lines with a time and pid#tid that say nothing here.
  return line?.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: /, '$1 ');
}
