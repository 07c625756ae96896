import { chmod, mkdir, readFile, readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { describe } from './fetch.js';
import type { InstanceLabel } from './instances.js';
import { writeAtomic, type State } from './state.js';

/**
 * What `status` shows, without secrets or configs, readable by anyone:
 * monitoring agents often run unprivileged. The file's mtime is the time
 * of the last successful check, so a 304 run only touches it.
 */
export interface Summary {
  name: string;
  stateKey: string;
  target: string;
  url: string;
  result: State['lastResult'];
  lastAttemptAt: string | undefined;
  lastError: string | undefined;
  failures: number;
  failingSince: string | undefined;
  etag: string | undefined;
  appliedAt: string | undefined;
  disabled: State['disabled'];
  rejected: { etag: string | undefined; at: string; message: string } | undefined;
  retryAfter: string | undefined;
}

export function summaryDir(stateDir: string): string {
  return join(stateDir, 'status');
}

/** Records the run; `success` moves the last-successful-check time to now. */
export async function updateSummary(
  stateDir: string,
  instance: InstanceLabel,
  state: State,
  /** `checked`: false for admin commands, which change state but check nothing. */
  options: { success: boolean; stateChanged: boolean; checked?: boolean },
): Promise<void> {
  const dir = summaryDir(stateDir);
  const path = join(dir, `${instance.stateKey}.json`);
  const now = new Date();
  const previous = await stat(path).catch(() => undefined);

  if (previous && options.success && !options.stateChanged) {
    await utimes(path, now, now);
    return;
  }

  const earlier = instance.confFile
    ? undefined
    : await readSummary(stateDir, instance.stateKey);
  const summary: Summary = {
    name: instance.name,
    stateKey: instance.stateKey,
    // An instance whose settings do not load keeps what was last known.
    target: instance.confFile || (earlier?.target ?? ''),
    url: instance.urls[0] ? describe(new URL(instance.urls[0])) : (earlier?.url ?? ''),
    result: state.lastResult,
    lastAttemptAt:
      options.checked === false
        ? (await readSummary(stateDir, instance.stateKey))?.lastAttemptAt
        : now.toISOString(),
    lastError: state.lastError,
    failures: state.failure?.count ?? 0,
    failingSince: state.failure?.since,
    etag: state.etag,
    appliedAt: state.appliedAt,
    disabled: state.disabled,
    rejected: state.rejected && {
      etag: state.rejected.etag,
      at: state.rejected.at,
      message: state.rejected.message,
    },
    retryAfter: state.retryAfter,
  };
  await mkdir(dir, { recursive: true, mode: 0o755 });
  // Explicitly, as root's umask (often 077) would hide it from monitoring.
  await chmod(dir, 0o755);
  await writeAtomic(path, JSON.stringify(summary, null, 2) + '\n', 0o644);
  const lastSuccess = options.success ? now : (previous?.mtime ?? new Date(0));
  await utimes(path, now, lastSuccess);
}

/** Removes temporary files of a summary write that a killed run left. */
export async function sweepSummaryDir(stateDir: string, stateKey: string): Promise<void> {
  const leftover = new RegExp(`^${stateKey}\\.json\\.[0-9a-f]+$`);
  const dir = summaryDir(stateDir);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (leftover.test(name)) await rm(join(dir, name), { force: true });
  }
}

export interface SummaryWithTime extends Summary {
  /** Undefined when no check has succeeded yet. */
  lastSuccessAt: Date | undefined;
}

export async function readSummary(
  stateDir: string,
  stateKey: string,
): Promise<SummaryWithTime | undefined> {
  const path = join(summaryDir(stateDir), `${stateKey}.json`);
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    const summary = JSON.parse(text) as Summary;
    return {
      ...summary,
      lastSuccessAt: info.mtime.getTime() > 0 ? info.mtime : undefined,
    };
  } catch {
    return undefined;
  }
}

export async function listSummaries(stateDir: string): Promise<string[]> {
  const names = await readdir(summaryDir(stateDir)).catch(() => [] as string[]);
  return names.filter((name) => name.endsWith('.json')).map((name) => name.slice(0, -5));
}
