import { PullError } from './errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';
import { realTarget } from './files.js';
import { legacyInstance, loadInstance, type Instance } from './instances.js';
import { tryLock } from './lock.js';
import { exitCodeOf, type Outcome } from './outcome.js';
import { pull, type PullContext } from './pull.js';
import type { Reporter } from './report.js';
import { readSite, type Paths } from './settings.js';
import { ensureDir, instanceDir, readState, touchChecked, writeState, type State } from './state.js';

export interface CycleOptions {
  /** Undefined: legacy mode, driven by CONF_FILE and CONF_URL. */
  name: string | undefined;
  paths: Paths;
  env: NodeJS.ProcessEnv;
  reporter: Reporter;
  secrets: string[];
  version: string;
}

/** Runs one instance's pull cycle and reports it; returns the exit code. */
export async function runCycle(options: CycleOptions): Promise<ExitCode> {
  const { reporter, paths } = options;
  const { instance, site } = await prepare(options).catch((error: unknown) => {
    if (error instanceof PullError) error.message = `${options.name ?? 'legacy'}: ${error.message}`;
    throw error;
  });
  const dir = instanceDir(paths.stateDir, instance.stateKey);

  const attempt = await tryLock(paths.stateDir, instance.stateKey);
  if (!('lock' in attempt)) {
    return finish(reporter, instance, { kind: 'busy', holder: attempt.holder });
  }

  try {
    const state = await readState(dir);
    const before = JSON.stringify(state);
    const context: PullContext = {
      instance,
      target: await realTarget(instance.confFile),
      dir,
      state,
      step: 'start',
      secrets: options.secrets,
      scratchDir: dir,
      apiKey: site.apiKey,
      keyOrigins: new Set(site.managerUrls.map((url) => new URL(url).origin)),
      version: options.version,
      warn: (key, message) => warnOnce(reporter, instance, state, key, message),
    };
    warnPlainHttp(context);

    const outcome = await pull(context).catch((error: unknown) => {
      if (!(error instanceof PullError)) throw error;
      return { kind: 'failed', error, step: context.step } satisfies Outcome;
    });
    noteOutcome(reporter, instance, state, outcome);
    await saveState(dir, state, before, outcome, reporter, instance);
    return finish(reporter, instance, outcome, state);
  } finally {
    await attempt.lock.release();
  }
}

async function prepare(options: CycleOptions) {
  const site = await readSite(options.paths, options.env);
  if (site.apiKey) options.secrets.push(site.apiKey);
  const instance = options.name
    ? await loadInstance(options.name, options.paths, site)
    : await legacyInstance(options.env, options.paths, site);
  await ensureDir(instanceDir(options.paths.stateDir, instance.stateKey));
  return { instance, site };
}

function warnOnce(
  reporter: Reporter,
  instance: Instance,
  state: State,
  key: string | undefined,
  message: string,
): void {
  if (key && state.warned.includes(key) && !reporter.interactive) return;
  if (key && !state.warned.includes(key)) state.warned.push(key);
  reporter.err(`${instance.name}: warning: ${message}`);
}

/** A key sent in clear text to anything but this machine can be read on the way. */
function warnPlainHttp(context: PullContext): void {
  if (!context.apiKey) return;
  for (const url of context.instance.urls) {
    const { protocol, hostname } = new URL(url);
    const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(hostname);
    if (protocol === 'http:' && !loopback && context.keyOrigins.has(new URL(url).origin)) {
      context.warn('plain-http', `API_KEY goes to ${hostname} over plain http://`);
      return;
    }
  }
}

/**
 * Keeps failures quiet while they last: a line when one starts, when its
 * cause changes and when it ends, so an outage is a few lines, not 1,440 a
 * day. A run from a terminal always prints.
 */
function noteOutcome(reporter: Reporter, instance: Instance, state: State, outcome: Outcome) {
  const now = new Date().toISOString();
  if (outcome.kind === 'failed' || outcome.kind === 'rejected') {
    const code = outcome.kind === 'rejected' ? `rejected ${outcome.key}` : outcome.error.code;
    const same = state.failure?.code === code;
    state.failure = same
      ? { ...state.failure!, count: state.failure!.count + 1 }
      : { code, since: now, count: 1 };
    state.lastError = outcome.error.message;
    state.lastResult = outcome.kind;
    if (outcome.error.retryAfter) state.retryAfter = outcome.error.retryAfter.toISOString();
    if (!same || reporter.interactive) {
      const step = outcome.kind === 'failed' ? outcome.step : 'validate';
      reporter.err(`${instance.name}: ${step}: ${outcome.error.message}`);
      if (outcome.error.detail && reporter.interactive) {
        for (const line of outcome.error.detail.split('\n')) reporter.err(`  ${line}`);
      }
    }
    return;
  }

  if (outcome.kind === 'unchanged' || outcome.kind === 'applied') {
    if (state.failure) {
      const runs = state.failure.count;
      reporter.out(`${instance.name}: recovered after ${runs} failed run${runs === 1 ? '' : 's'}`);
      delete state.failure;
      delete state.lastError;
    }
    state.lastResult = outcome.kind;
  }
}

async function saveState(
  dir: string,
  state: State,
  before: string,
  outcome: Outcome,
  reporter: Reporter,
  instance: Instance,
): Promise<void> {
  try {
    if (JSON.stringify(state) !== before) await writeState(dir, state);
    if (outcome.kind === 'unchanged' || outcome.kind === 'applied') await touchChecked(dir);
  } catch (error) {
    // A check that found nothing to do must not fail because the state disk
    // is full; the next write will say so.
    if (outcome.kind === 'unchanged') return;
    const message = error instanceof Error ? error.message : String(error);
    reporter.err(`${instance.name}: state: ${message}`);
  }
}

function finish(reporter: Reporter, instance: Instance, outcome: Outcome, _state?: State): ExitCode {
  switch (outcome.kind) {
    case 'applied': {
      const tag = outcome.etag ?? '(no ETag)';
      const reloaded = outcome.reloaded ? ', reloaded' : '';
      reporter.out(`${instance.name}: applied ${tag} (${outcome.bytes} bytes)${reloaded}`);
      break;
    }
    case 'busy':
      if (reporter.interactive) {
        const who = outcome.holder ? `process ${outcome.holder}` : 'another process';
        reporter.err(`${instance.name}: lock: ${who} is already running this instance`);
      }
      break;
    case 'disabled':
      if (reporter.interactive) {
        reporter.err(
          `${instance.name}: disabled by ${outcome.by} at ${outcome.at}: ${outcome.reason}`,
        );
      }
      break;
    case 'deferred':
      if (reporter.interactive) {
        reporter.err(`${instance.name}: fetch: the manager asked to wait until ${outcome.until}`);
      }
      break;
    default:
      break;
  }
  return exitCodeOf(outcome, reporter.interactive);
}

export { EXIT };
