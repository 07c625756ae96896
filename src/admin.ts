import { userInfo } from 'node:os';
import { PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import { logEvent, readEvents } from './events.js';
import { readLive, realTarget } from './files.js';
import { install, type InstallContext } from './install.js';
import { readPending } from './journal.js';
import type { Instance } from './instances.js';
import { waitLock } from './lock.js';
import type { Paths } from './settings.js';
import { instanceDir, readState, writeState, type State } from './state.js';
import { updateSummary } from './summary.js';
import { readVersion } from './versions.js';
import { assertReloadable } from './service.js';

/** Who is acting, for disable reasons: the admin behind sudo if any. */
export function actor(env: NodeJS.ProcessEnv): string {
  return env.SUDO_USER || env.USER || env.LOGNAME || userInfo().username;
}

interface AdminContext {
  instance: Instance;
  paths: Paths;
  secrets: string[];
}

/** Runs `change` on the instance's state under its lock, then saves it. */
async function withState<T>(
  context: AdminContext,
  change: (state: State, dir: string) => Promise<T>,
): Promise<T> {
  const { instance, paths } = context;
  const attempt = await waitLock(paths.stateDir, instance.stateKey, 10_000);
  if (!('lock' in attempt)) {
    const who = attempt.holder ? `process ${attempt.holder}` : 'another process';
    throw new PullError(`${instance.name}: ${who} holds the lock; try again shortly`, {
      code: 'busy',
      exitCode: EXIT.tempFail,
    });
  }
  try {
    const dir = instanceDir(paths.stateDir, instance.stateKey);
    const state = await readState(dir);
    const result = await change(state, dir).catch((error: unknown) => {
      // The admin may be acting on several instances: say which one failed.
      const named =
        error instanceof PullError && !error.message.startsWith(`${instance.name}:`);
      if (named) error.message = `${instance.name}: ${error.message}`;
      throw error;
    });
    await writeState(dir, state);
    await updateSummary(paths.stateDir, instance, state, {
      success: false,
      stateChanged: true,
      checked: false,
    });
    return result;
  } finally {
    await attempt.lock.release();
  }
}

export async function disable(context: AdminContext, reason: string, by: string) {
  await withState(context, async (state, dir) => {
    state.disabled = { reason, by, at: new Date().toISOString() };
    state.lastResult = 'disabled';
    await logEvent(dir, 'disabled', `by ${by}: ${reason}`);
  });
}

export async function enable(context: AdminContext, by: string): Promise<boolean> {
  return withState(context, async (state, dir) => {
    if (!state.disabled) return false;
    delete state.disabled;
    // Until the next run says more, what status can tell is this.
    state.lastResult = 'enabled';
    await logEvent(dir, 'enabled', `by ${by}`);
    return true;
  });
}

/**
 * Puts back the version applied before the live one, validated and
 * reloaded, and disables the instance so that the next cron run does not
 * undo it. Each rollback goes one version further back.
 */
export async function rollback(
  context: AdminContext,
  by: string,
): Promise<State['versions'][0]> {
  const { instance } = context;
  return withState(context, async (state, dir) => {
    const current = state.versions.at(-1);
    const previous = state.versions.at(-2);
    if (!current || !previous) {
      throw new PullError(
        `${instance.name}: no earlier version is kept to roll back to`,
        {
          code: 'no-version',
          exitCode: EXIT.usage,
        },
      );
    }
    const content = await readVersion(dir, previous);
    if (!content)
      throw new PullError(`${instance.name}: the kept copy ${previous.file} is missing`, {
        code: 'no-version',
        exitCode: EXIT.ioError,
      });

    // The live file of an interrupted apply is not the applied version: let
    // a run resolve its journal first, or rollback would call it previous.
    if (await readPending(dir)) {
      throw new PullError(
        `an interrupted apply is pending; run "pull-config run ${instance.name}" first`,
        { code: 'pending', exitCode: EXIT.tempFail },
      );
    }
    assertReloadable(instance);
    const target = await realTarget(instance.confFile);
    const installContext: InstallContext = {
      instance,
      target,
      dir,
      state,
      step: 'rollback',
      secrets: context.secrets,
      scratchDir: dir,
    };
    const reason =
      `rolled back from ${current.etag ?? current.hash.slice(0, 12)} ` +
      `to ${previous.etag ?? previous.hash.slice(0, 12)}; enable to follow the manager again`;
    const disabled = { reason, by, at: new Date().toISOString() };
    await install(installContext, content, await readLive(target), {
      kind: 'rollback',
      etag: previous.etag,
      disabled,
    });
    await logEvent(dir, 'rollback', `by ${by}: ${reason}`);
    return previous;
  });
}

export async function history(
  context: AdminContext,
): Promise<{ state: State; events: string[] }> {
  const dir = instanceDir(context.paths.stateDir, context.instance.stateKey);
  return { state: await readState(dir), events: await readEvents(dir, 20) };
}
