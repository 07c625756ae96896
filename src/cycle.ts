import { chmod, mkdir } from 'node:fs/promises';
import { ioError, PullError } from './errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';
import { logEvent } from './events.js';
import {
  legacyInstance,
  loadInstance,
  NAME,
  type Instance,
  type InstanceLabel,
} from './instances.js';
import { tryLock, waitLock } from './lock.js';
import { exitCodeOf, type Outcome } from './outcome.js';
import { preview, pull, type PullContext, type PullMode } from './pull.js';
import { redactSecrets, type Reporter } from './report.js';
import { readSite, type Paths, type Site } from './settings.js';
import { ensureDir, instanceDir, readState, writeState, type State } from './state.js';
import { updateSummary } from './summary.js';

export interface CycleOptions {
  /** Undefined: legacy mode, driven by CONF_FILE and CONF_URL. */
  name: string | undefined;
  paths: Paths;
  env: NodeJS.ProcessEnv;
  reporter: Reporter;
  secrets: string[];
  version: string;
  mode?: PullMode;
  detailedExitCodes?: boolean;
}

/** Runs one instance's pull cycle and reports it; returns the exit code. */
export async function runCycle(options: CycleOptions): Promise<ExitCode> {
  const { reporter, paths } = options;
  const mode = options.mode ?? {};
  const prepared = await prepareRun(options).catch((error: unknown) => {
    if (
      error instanceof PullError &&
      !mode.dryRun &&
      isRecordable(options.name, error, options.reporter.interactive)
    ) {
      return error;
    }
    if (error instanceof PullError)
      error.message = `${options.name ?? 'legacy'}: ${error.message}`;
    throw error;
  });
  if (prepared instanceof PullError)
    return failBeforeStart(options, options.name!, prepared);
  const { instance, site } = prepared;
  const dir = instanceDir(paths.stateDir, instance.stateKey);

  // Cron runs give way at once; a person at a terminal waits a little.
  const attempt = reporter.interactive
    ? await waitLock(paths.stateDir, instance.stateKey, 3000)
    : await tryLock(paths.stateDir, instance.stateKey);
  if (!('lock' in attempt)) {
    return finish(reporter, instance, { kind: 'busy', holder: attempt.holder }, options);
  }

  try {
    const state = await readState(dir);
    const before = JSON.stringify(state);
    const context = pullContext(options, instance, site, dir, state, mode);
    reporter.debug(
      `${instance.name}: start: ${instance.confFile} from ${instance.urls.join(', ')}`,
    );

    const outcome = await (mode.dryRun ? preview(context) : pull(context)).catch(
      (error: unknown) => {
        if (!(error instanceof PullError)) throw error;
        return { kind: 'failed', error, step: context.step } satisfies Outcome;
      },
    );
    // A manager may quote the key back in an error page; state and the event
    // log keep the message, so it is redacted before anything stores it.
    if ('error' in outcome) {
      outcome.error.message = redactSecrets(outcome.error.message, options.secrets);
    }
    if (mode.dryRun) return finish(reporter, instance, outcome, options);

    await noteOutcome(reporter, instance, state, outcome, dir);
    await saveState(options, instance, state, before, outcome);
    return finish(reporter, instance, outcome, options);
  } finally {
    await attempt.lock.release();
  }
}

interface PrepareOptions {
  name: string | undefined;
  paths: Paths;
  env: NodeJS.ProcessEnv;
  secrets: string[];
}

/** Reads the settings and the instance; errors name the instance. */
export async function prepare(
  options: PrepareOptions,
): Promise<{ instance: Instance; site: Site }> {
  try {
    return await prepareRun(options);
  } catch (error) {
    if (error instanceof PullError) {
      error.message = `${options.name ?? 'legacy'}: ${error.message}`;
    }
    throw error;
  }
}

/**
 * A broken setting of a named instance fails every run until it is fixed:
 * it is recorded like any failure, so that it is reported once, not every
 * minute, and so that status and monitoring see it.
 */
function isRecordable(
  name: string | undefined,
  error: PullError,
  interactive: boolean,
): boolean {
  const broken = error.exitCode === EXIT.config || error.exitCode === EXIT.ioError;
  // From cron an unknown instance is a shim without a definition, to report
  // once; from a terminal it may be a mistyped command, not worth a record.
  const unknown = error.code === 'unknown-instance';
  return name !== undefined && NAME.test(name) && (broken || (unknown && !interactive));
}

async function failBeforeStart(
  options: CycleOptions,
  name: string,
  error: PullError,
): Promise<ExitCode> {
  const { paths, reporter } = options;
  const stub = { name, stateKey: name, confFile: '', urls: [] };
  const outcome: Outcome = { kind: 'failed', error, step: 'settings' };
  error.message = redactSecrets(error.message, options.secrets);

  const dir = instanceDir(paths.stateDir, name);
  const attempt = await tryLock(paths.stateDir, name).catch(() => undefined);
  if (attempt && !('lock' in attempt))
    return finish(reporter, stub, { kind: 'busy', holder: attempt.holder }, options);
  try {
    const state = await readState(dir);
    const before = JSON.stringify(state);
    await noteOutcome(reporter, stub, state, outcome, dir);
    await ensureDir(dir).catch(() => undefined);
    await saveState(options, stub, state, before, outcome);
    return finish(reporter, stub, outcome, options);
  } finally {
    if (attempt && 'lock' in attempt) await attempt.lock.release();
  }
}

async function prepareRun(
  options: PrepareOptions,
): Promise<{ instance: Instance; site: Site }> {
  {
    const site = await readSite(options.paths, options.env);
    if (site.apiKey) options.secrets.push(site.apiKey);
    const instance = options.name
      ? await loadInstance(options.name, options.paths, site)
      : await legacyInstance(options.env, options.paths, site);

    // The top is readable so that monitoring can read the status summaries;
    // each instance's own directory, with its copies of configs, is not. The
    // umask masks mkdir's mode, hence the chmod.
    const { stateDir } = options.paths;
    try {
      const created = await mkdir(stateDir, { recursive: true, mode: 0o755 });
      if (created) await chmod(stateDir, 0o755);
    } catch (error) {
      throw ioError('create', stateDir, error);
    }
    await ensureDir(instanceDir(options.paths.stateDir, instance.stateKey));
    return { instance, site };
  }
}

function pullContext(
  options: CycleOptions,
  instance: Instance,
  site: Site,
  dir: string,
  state: State,
  mode: PullMode,
): PullContext {
  const { reporter } = options;
  const context: PullContext = {
    instance,
    target: '',
    dir,
    state,
    mode,
    step: 'start',
    secrets: options.secrets,
    scratchDir: dir,
    apiKey: site.apiKey,
    keyOrigins: new Set(site.managerUrls.map((url) => new URL(url).origin)),
    version: options.version,
    debug: (message) => reporter.debug(`${instance.name}: ${context.step}: ${message}`),
    warn: (key, message, kind = 'warning') => {
      if (key && state.warned.includes(key) && !reporter.interactive) return;
      if (key && !state.warned.includes(key)) state.warned.push(key);
      reporter.err(`${instance.name}: warning: ${message}`);
      if (!mode.dryRun) {
        void logEvent(dir, kind, redactSecrets(message, options.secrets));
      }
    },
  };
  return context;
}

/**
 * Keeps failures quiet while they last: a line when one starts, when its
 * cause changes and when it ends, so an outage is a few lines, not 1,440 a
 * day. A run from a terminal always prints.
 */
async function noteOutcome(
  reporter: Reporter,
  instance: InstanceLabel,
  state: State,
  outcome: Outcome,
  dir: string,
): Promise<void> {
  const now = new Date().toISOString();
  if (outcome.kind === 'failed' || outcome.kind === 'rejected') {
    const code =
      outcome.kind === 'rejected' ? `rejected ${outcome.key}` : outcome.error.code;
    const same = state.failure?.code === code;
    // A new cause gets its own line, but the outage goes on: keep its start and count.
    state.failure = {
      code,
      since: state.failure?.since ?? now,
      count: (state.failure?.count ?? 0) + 1,
    };
    state.lastError = outcome.error.message;
    state.lastResult = outcome.kind;
    if (outcome.error.retryAfter)
      state.retryAfter = outcome.error.retryAfter.toISOString();

    if (!same) await logEvent(dir, outcome.kind, oneLine(outcome.error));
    if (!same || reporter.interactive || reporter.verbose) {
      const step = outcome.kind === 'failed' ? outcome.step : 'validate';
      reporter.err(`${instance.name}: ${step}: ${outcome.error.message}`);
      const detail = outcome.error.detail;
      if (detail && (reporter.interactive || reporter.verbose)) {
        for (const line of detail.split('\n')) reporter.err(`  ${line}`);
      }
    }
    return;
  }

  if (outcome.kind === 'unchanged' || outcome.kind === 'applied') {
    if (state.failure) {
      const runs = state.failure.count;
      const message = `recovered after ${runs} failed run${runs === 1 ? '' : 's'}`;
      // A change gets one line: its own, with the recovery at the end.
      if (outcome.kind === 'applied') outcome.recovered = message;
      else reporter.out(`${instance.name}: ${message}`);
      await logEvent(dir, 'recovered', message);
      delete state.failure;
      delete state.lastError;
    }
    if (outcome.kind === 'applied') {
      await logEvent(
        dir,
        'applied',
        `${outcome.etag ?? '(no ETag)'} (${outcome.bytes} bytes)`,
      );
    }
    state.lastResult = outcome.kind;
  }
  if (outcome.kind === 'disabled') state.lastResult = 'disabled';
}

function oneLine(error: PullError): string {
  return error.detail ? `${error.message} | ${error.detail}` : error.message;
}

async function saveState(
  options: CycleOptions,
  instance: InstanceLabel,
  state: State,
  before: string,
  outcome: Outcome,
): Promise<void> {
  const dir = instanceDir(options.paths.stateDir, instance.stateKey);
  const success = outcome.kind === 'unchanged' || outcome.kind === 'applied';
  const stateChanged = JSON.stringify(state) !== before;
  try {
    if (stateChanged) await writeState(dir, state);
    // Disabled and deferred runs change nothing: no write every minute.
    if (!stateChanged && !success) return;
    await updateSummary(options.paths.stateDir, instance, state, {
      success,
      stateChanged,
    });
  } catch (error) {
    // A check that found nothing to do must not fail because the state disk
    // is full; a run that changed something says so.
    if (outcome.kind === 'unchanged' && !options.reporter.interactive) return;
    // The run's one line already says the disk failed; a second would repeat it.
    if (outcome.kind === 'failed' && outcome.error.exitCode === EXIT.ioError) return;
    const message = error instanceof Error ? error.message : String(error);
    options.reporter.err(`${instance.name}: state: ${message}`);
  }
}

function finish(
  reporter: Reporter,
  instance: InstanceLabel,
  outcome: Outcome,
  options: CycleOptions,
): ExitCode {
  const name = instance.name;
  switch (outcome.kind) {
    case 'applied': {
      const tag = outcome.etag ?? '(no ETag)';
      const reloaded = outcome.reloaded ? ', reloaded' : '';
      const recovered = outcome.recovered ? `; ${outcome.recovered}` : '';
      reporter.out(
        `${name}: applied ${tag} (${outcome.bytes} bytes)${reloaded}${recovered}`,
      );
      break;
    }
    case 'would change':
      process.stdout.write(outcome.diff);
      break;
    case 'unchanged':
      if (options.mode?.dryRun) reporter.out(`${name}: no change`);
      break;
    case 'busy':
      if (reporter.interactive) {
        const who = outcome.holder ? `process ${outcome.holder}` : 'another process';
        reporter.err(`${name}: lock: ${who} is running this instance now`);
      }
      break;
    case 'disabled':
      if (reporter.interactive) {
        reporter.err(
          `${name}: disabled by ${outcome.by} at ${outcome.at}: ${outcome.reason}`,
        );
      }
      break;
    case 'deferred':
      if (reporter.interactive) {
        reporter.err(
          `${name}: fetch: the manager asked us to wait until ${outcome.until}`,
        );
      }
      break;
    case 'failed':
    case 'rejected':
      if (options.mode?.dryRun) reporter.err(`${name}: ${outcome.error.message}`);
      break;
  }

  const code = exitCodeOf(outcome, reporter.interactive);
  if (options.detailedExitCodes && outcome.kind === 'applied') return 2 as ExitCode;
  return code;
}
