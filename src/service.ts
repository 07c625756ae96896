import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { withCandidate } from './command.js';
import { configError, PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import type { Instance } from './instances.js';
import { awaitNginxReload, snapshotNginx } from './nginx-watch.js';
import { runCommand } from './run-command.js';

export interface ServiceContext {
  secrets: string[];
  scratchDir: string;
}

/** Runs the validator against `path`; a failure carries its own words. */
export async function validate(
  instance: Instance,
  path: string,
  context: ServiceContext,
): Promise<void> {
  if (!instance.test) return;
  const result = await runCommand(withCandidate(instance.test, path), {
    timeoutMs: instance.tunables.testTimeoutMs,
    secrets: context.secrets,
    scratchDir: context.scratchDir,
    origin: instance.test.origin,
  });
  if (result.ok) return;

  const words = keyLine(result.output) ?? result.failure;
  throw new PullError(
    `the validator rejected the config: ${words.replaceAll(path, instance.confFile)}`,
    {
      code: 'rejected',
      exitCode: EXIT.rejected,
      detail: result.output.replaceAll(path, instance.confFile),
    },
  );
}

/**
 * systemctl without a running systemd fails with a message that reads like a
 * service problem; say what it is before anything is touched.
 */
export function assertReloadable(instance: Instance): void {
  const command = instance.reload?.argv[0];
  if (
    command &&
    basename(command) === 'systemctl' &&
    !existsSync('/run/systemd/system')
  ) {
    throw configError(
      `${instance.reload!.origin}: systemd is not running here, so systemctl cannot reload; ` +
        'set RELOAD_COMMAND',
      'no-systemd',
    );
  }
}

/** Reloads the service and, where we can, checks it took the new config. */
export async function reload(
  instance: Instance,
  previousConfig: Buffer | undefined,
  context: ServiceContext,
): Promise<void> {
  if (!instance.reload) return;
  const watch =
    instance.reloadCheck === 'nginx'
      ? await snapshotNginx(String(previousConfig ?? ''))
      : undefined;
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
    if (!check.ok) {
      throw reloadError(
        `VERIFY_COMMAND ${check.failure}${suffix(check.output)}`,
        check.output,
      );
    }
  }
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
