import { access, constants, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PullError } from './errors.js';
import { describe } from './fetch.js';
import { readLive } from './files.js';
import { hashOf } from './install.js';
import { builtInNames, loadInstance, NAME, type Instance } from './instances.js';
import { readSite, type Paths, type Site } from './settings.js';
import { instanceDir, readState, type State } from './state.js';
import { listSummaries, readSummary, type SummaryWithTime } from './summary.js';

/** One instance as `status` shows it; also the shape of `status --json`. */
export interface InstanceStatus {
  name: string;
  origin: string | undefined;
  target: string | undefined;
  url: string | undefined;
  shim: 'ok' | 'missing' | 'not executable' | 'skipped by run-parts';
  active: boolean;
  lastCheck: string | undefined;
  lastSuccess: string | undefined;
  result: string;
  etag: string | undefined;
  appliedAt: string | undefined;
  lastError: string | undefined;
  failures: number;
  failingSince: string | undefined;
  drift: 'none' | 'drifted' | 'unknown';
  disabled: State['disabled'] | undefined;
  rejected: { etag: string | undefined; at: string; message: string } | undefined;
  /** Why the instance's settings do not load, if they do not. */
  settingsError: string | undefined;
  problems: string[];
}

export interface StatusReport {
  version: 1;
  generatedAt: string;
  stateReadable: boolean;
  instances: InstanceStatus[];
}

/** Reads everything `status` shows; changes nothing. */
export async function collectStatus(
  paths: Paths,
  env: NodeJS.ProcessEnv,
  only: string[],
): Promise<StatusReport> {
  const site = await readSite(paths, env).catch((error: unknown) => error as Error);
  const shims = await readShims(paths.shimDir);
  const names = new Set([
    ...builtInNames(),
    ...(await definedNames(paths)),
    ...shims.keys(),
    ...(await listSummaries(paths.stateDir)).filter((key) => !key.startsWith('legacy-')),
  ]);
  const wanted = only.length ? only : [...names].sort();

  // Unprivileged monitoring cannot read the state, only the public summaries:
  // the top of the state directory is readable by design, each instance's is not.
  const instances = [];
  let stateReadable = await isReadable(paths.stateDir);
  for (const name of wanted) {
    const readable =
      stateReadable && (await isReadable(instanceDir(paths.stateDir, name)));
    stateReadable &&= readable;
    instances.push(await statusOf(name, paths, site, shims.get(name), readable));
  }
  return { version: 1, generatedAt: new Date().toISOString(), stateReadable, instances };
}

function isReadable(path: string): Promise<boolean> {
  return access(path, constants.R_OK | constants.X_OK)
    .then(() => true)
    .catch((error: NodeJS.ErrnoException) => error.code !== 'EACCES');
}

async function statusOf(
  name: string,
  paths: Paths,
  site: Site | Error,
  shim: InstanceStatus['shim'] | undefined,
  stateReadable: boolean,
): Promise<InstanceStatus> {
  const problems: string[] = [];
  let settingsError: string | undefined;
  let instance: Instance | undefined;
  try {
    if (site instanceof Error) throw site;
    instance = await loadInstance(name, paths, site);
  } catch (error) {
    // Monitoring that may not read root's settings still has the summaries.
    const unreadable = error instanceof PullError && error.code === 'io-EACCES';
    if (!unreadable) {
      settingsError = error instanceof PullError ? error.message : String(error);
      problems.push(settingsError);
    }
  }

  const shimState = shim ?? 'missing';
  if (shimState === 'missing')
    problems.push(`no shim in ${paths.shimDir}: cron never runs it`);
  else if (shimState !== 'ok')
    problems.push(`shim ${join(paths.shimDir, name)}: ${shimState}`);

  const summary = await readSummary(paths.stateDir, instance?.stateKey ?? name);
  const dir = instanceDir(paths.stateDir, instance?.stateKey ?? name);
  const state = stateReadable ? await readState(dir).catch(() => undefined) : undefined;
  const rejected = state?.rejected ?? summary?.rejected;

  return {
    name,
    origin: instance?.origin,
    target: instance?.confFile ?? summary?.target,
    url: instance?.urls[0] ? describe(new URL(instance.urls[0])) : summary?.url,
    shim: shimState,
    active: shimState === 'ok',
    lastCheck: latest(summary?.lastAttemptAt, summary?.lastSuccessAt?.toISOString()),
    lastSuccess: summary?.lastSuccessAt?.toISOString(),
    result: resultOf(state, summary),
    etag: state ? state.etag : summary?.etag,
    appliedAt: state ? state.appliedAt : summary?.appliedAt,
    lastError: state ? state.lastError : summary?.lastError,
    failures: state ? (state.failure?.count ?? 0) : (summary?.failures ?? 0),
    failingSince: state ? state.failure?.since : summary?.failingSince,
    drift: instance && state ? await driftOf(instance, state) : 'unknown',
    disabled: state ? state.disabled : summary?.disabled,
    rejected: rejected && {
      etag: rejected.etag,
      at: rejected.at,
      message: rejected.message,
    },
    settingsError,
    problems,
  };
}

function latest(...times: (string | undefined)[]): string | undefined {
  return times
    .filter((time) => time !== undefined)
    .sort()
    .at(-1);
}

function resultOf(
  state: State | undefined,
  summary: SummaryWithTime | undefined,
): string {
  if (state?.disabled ?? summary?.disabled) return 'disabled';
  return state?.lastResult ?? summary?.result ?? 'never run';
}

async function driftOf(
  instance: Instance,
  state: State,
): Promise<InstanceStatus['drift']> {
  if (!state.hash) return 'unknown';
  const live = await readLive(instance.confFile).catch(() => undefined);
  return live && hashOf(live) === state.hash ? 'none' : 'drifted';
}

/** Each shim and whether run-parts would run it. */
async function readShims(dir: string): Promise<Map<string, InstanceStatus['shim']>> {
  const shims = new Map<string, InstanceStatus['shim']>();
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) continue;
    if (!NAME.test(name)) shims.set(name, 'skipped by run-parts');
    else if (!(info.mode & 0o111)) shims.set(name, 'not executable');
    else shims.set(name, 'ok');
  }
  return shims;
}

async function definedNames(paths: Paths): Promise<string[]> {
  const files = await readdir(join(paths.confDir, 'instances')).catch(
    () => [] as string[],
  );
  return files.filter((file) => file.endsWith('.env')).map((file) => file.slice(0, -4));
}
