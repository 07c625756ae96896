import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { usesCandidate } from './command.js';
import { PullError } from './errors.js';
import { removeFile, replaceFile, stageFile, writeConfig } from './files.js';
import type { Instance } from './instances.js';
import {
  beginApply,
  endApply,
  markReloaded,
  type Completion,
  type Pending,
} from './journal.js';
import { reload, validate, type ServiceContext } from './service.js';
import { writeAtomic, writeState, type State } from './state.js';
import { keepVersion, pruneVersions } from './versions.js';

export interface InstallContext extends ServiceContext {
  instance: Instance;
  target: string;
  dir: string;
  state: State;
  /** Which step is running, for the one line a failure prints. */
  step: string;
}

export function hashOf(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Makes `content` the live config: validate, journal, rename, reload, record.
 * If the reload fails the previous file is put back and reloaded, so the
 * service always ends on a config it accepted.
 */
export async function install(
  context: InstallContext,
  content: Buffer,
  live: Buffer | undefined,
  completion: Completion,
): Promise<void> {
  const { instance, target, dir } = context;
  const pending: Pending = {
    target,
    oldHash: live && hashOf(live),
    newHash: hashOf(content),
    startedAt: new Date().toISOString(),
    reloaded: false,
    completion,
  };

  // A refused config is kept for the admin to read, and the validator's
  // message names that copy: the live file still holds the old one.
  const keptAs = join(dir, 'rejected.conf');
  const keepRejected = async (error: unknown): Promise<never> => {
    if (error instanceof PullError && error.code === 'rejected') {
      await writeAtomic(keptAs, content).catch(() => undefined);
    }
    throw error;
  };

  context.step = 'stage';
  const staged = await stageFile(target, content);
  try {
    if (!instance.test || usesCandidate(instance.test)) {
      context.step = 'validate';
      await validateBeside(context, staged, content, keptAs).catch(keepRejected);
      context.step = 'apply';
      await beginApply(dir, pending, live);
      await replaceFile(staged, target);
      context.debug?.(`${target} replaced (${content.length} bytes)`);
    } else {
      // The validator only checks the live path: swap the candidate in, under
      // the journal, and swap back if it is refused.
      context.step = 'apply';
      await beginApply(dir, pending, live);
      await replaceFile(staged, target);
      context.debug?.(`${target} replaced (${content.length} bytes)`);
      context.step = 'validate';
      await validate(instance, target, context, keptAs).catch(async (error: unknown) => {
        await restore(target, live);
        await endApply(dir);
        await keepRejected(error);
      });
    }
  } finally {
    await removeFile(staged);
  }

  context.step = 'reload';
  try {
    await reload(instance, live, context);
  } catch (error) {
    await rollBack(context, live, error);
  }

  context.step = 'record';
  await markReloaded(dir, pending);
  await complete(context, content, completion);
  await endApply(dir);
}

/**
 * nginx resolves relative includes from the directory of the path it was
 * given: when CONF_FILE is a symlink into another directory, the candidate
 * is checked beside the link, where the service will read it from.
 */
async function validateBeside(
  context: InstallContext,
  staged: string,
  content: Buffer,
  keptAs: string,
): Promise<void> {
  const { instance, target } = context;
  if (dirname(instance.confFile) === dirname(target)) {
    return validate(instance, staged, context, keptAs);
  }
  const besideLink = await stageFile(instance.confFile, content);
  try {
    await validate(instance, besideLink, context, keptAs);
  } finally {
    await removeFile(besideLink);
  }
}

async function rollBack(
  context: InstallContext,
  live: Buffer | undefined,
  error: unknown,
) {
  await restore(context.target, live);
  let outcome = 'previous config restored';
  try {
    await reload(context.instance, live, context, { afterRefusal: true });
  } catch (second) {
    const message = second instanceof Error ? second.message : String(second);
    const first = error instanceof Error ? error.message : '';
    // Often the service is simply down, and both reloads fail alike.
    outcome +=
      message === first
        ? '; its reload failed the same way: is the service running?'
        : `; its reload failed too: ${message}`;
  }
  await endApply(context.dir);
  if (error instanceof PullError) error.message += ` (${outcome})`;
  throw error;
}

/** Puts `old` back in place, or removes the target when there was none. */
export async function restore(target: string, old: Buffer | undefined): Promise<void> {
  if (old) await writeConfig(target, old);
  else await removeFile(target);
}

/**
 * Makes the state say what is now live. Run after a confirmed reload, and
 * again by the next run if this one died before the journal was closed, so
 * each kind checks whether it was already done.
 */
export async function complete(
  context: InstallContext,
  content: Buffer,
  completion: Completion,
): Promise<void> {
  const { state, dir } = context;
  const hash = hashOf(content);
  if (completion.kind === 'repair') return;

  if (completion.kind === 'rollback') {
    // The version rolled back from is dropped, so a second rollback goes
    // one further back; the disable is in the same write.
    if (state.versions.at(-1)?.hash !== hash) state.versions.pop();
    state.disabled = completion.disabled;
    state.lastResult = 'rolled back';
  } else if (state.hash !== hash || state.etag !== completion.etag) {
    const entry = { etag: completion.etag, hash, appliedAt: now(), size: content.length };
    await keepVersion(dir, state, entry, content, context.instance.tunables.keepVersions);
  }

  state.etag = completion.etag;
  state.hash = hash;
  state.appliedAt = now();
  delete state.rejected;
  // Durable before the journal goes: else the next run would take the new
  // file for a hand edit.
  await writeState(dir, state);
  await pruneVersions(dir, state);
}

const now = () => new Date().toISOString();
