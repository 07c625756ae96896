import { dirname, join } from 'node:path';
import { PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import { describe, fetchConfig, type Fetched } from './fetch.js';
import { usesCandidate } from './command.js';
import {
  readLive,
  realTarget,
  removeFile,
  removeStaleCandidates,
  stageFile,
} from './files.js';
import { complete, hashOf, install, restore, type InstallContext } from './install.js';
import { endApply, readPending } from './journal.js';
import type { Outcome } from './outcome.js';
import { screenBody } from './screen.js';
import { assertReloadable, reload, validate } from './service.js';
import { ensureDir, sweepStateDir, writeAtomic } from './state.js';
import { sweepSummaryDir } from './summary.js';
import { pruneVersions, readVersion } from './versions.js';

export interface PullMode {
  /** Fetch and validate, show the diff, change nothing. */
  dryRun?: boolean;
  /** Ignore the stored ETag, the rejected mark and Retry-After. */
  force?: boolean;
}

export interface PullContext extends InstallContext {
  apiKey: string | undefined;
  keyOrigins: Set<string>;
  version: string;
  mode: PullMode;
  /** `key` makes a warning once-only; `kind` names it in the event log. */
  warn: (key: string | undefined, message: string, kind?: string) => void;
  debug: (message: string) => void;
}

/** One pull cycle, step by step; returns as soon as there is nothing to do. */
export async function pull(context: PullContext): Promise<Outcome> {
  const { state, instance, mode } = context;

  context.step = 'recover';
  context.target = await realTarget(instance.confFile);
  await recoverInterrupted(context);
  await removeStaleCandidates(context.target);
  await removeStaleCandidates(instance.confFile);
  await sweepStateDir(context.dir);
  await sweepSummaryDir(dirname(context.dir), instance.stateKey);
  await pruneVersions(context.dir, state);

  if (state.disabled) return { kind: 'disabled', ...state.disabled };
  if (!mode.force && state.retryAfter && Date.parse(state.retryAfter) > Date.now()) {
    return { kind: 'deferred', until: state.retryAfter };
  }

  context.step = 'drift';
  const live = await repairDrift(context, await readLive(context.target)).catch(
    async (error: unknown) => {
      // The kept copy may no longer pass (a certificate gone, say): the
      // manager may already have the fix, so go and ask it.
      if (!(error instanceof PullError)) throw error;
      context.warn(
        undefined,
        `cannot put back the applied version: ${error.message}`,
        'drift',
      );
      return readLive(context.target);
    },
  );

  context.step = 'fetch';
  const fetched = await fetchFor(
    context,
    mode.force ? [] : conditionalEtags(context, live),
  );
  delete state.retryAfter;
  if (fetched.notModified) return notModified(context, fetched.etag);

  context.step = 'check';
  screenBody(fetched.body, fetched.contentType, instance.tunables.allowEmpty);
  if (!fetched.etag) {
    context.warn(
      'no-etag',
      `${describe(new URL(fetched.url))} sends no ETag, so every run downloads the config`,
    );
  }
  if (live?.equals(fetched.body)) return adopt(context, fetched.body, fetched.etag);

  const hash = hashOf(fetched.body);
  if (!mode.force && stillRejected(context, hash)) {
    return { kind: 'rejected', error: rejection(state.rejected!.message), key: hash };
  }

  context.step = 'reload';
  assertReloadable(instance);
  try {
    await install(context, fetched.body, live, { kind: 'apply', etag: fetched.etag });
  } catch (error) {
    if (error instanceof PullError && error.code === 'rejected') {
      state.rejected = { etag: fetched.etag, hash, at: now(), message: error.message };
      return { kind: 'rejected', error, key: hash };
    }
    throw error;
  }
  return {
    kind: 'applied',
    etag: fetched.etag,
    bytes: fetched.body.length,
    reloaded: instance.reload !== undefined,
  };
}

const now = () => new Date().toISOString();

async function fetchFor(context: PullContext, etags: string[]): Promise<Fetched> {
  const { instance } = context;
  warnPlainHttp(context);
  const started = Date.now();
  const fetched = await fetchConfig({
    urls: instance.urls,
    apiKey: context.apiKey,
    keyOrigins: context.keyOrigins,
    etags,
    tunables: instance.tunables,
    notFoundHint: instance.notFoundHint,
    version: context.version,
  });
  if (fetched.notModified && etags.length === 0) {
    // Nothing was asked to be compared, so a 304 says nothing is there.
    throw new PullError(
      `${describe(new URL(fetched.url))} answered 304 to a request without If-None-Match`,
      { code: 'bogus-304', exitCode: EXIT.tempFail },
    );
  }
  const status = fetched.notModified ? '304' : `200, ${fetched.body.length} bytes`;
  context.debug(`${fetched.url}: ${status}, ${Date.now() - started} ms`);
  return fetched;
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

/** The key is a bearer token: whoever sees it on the wire can use it. */
function warnPlainHttp(context: PullContext): void {
  if (!context.apiKey) return;
  for (const url of context.instance.urls.map((text) => new URL(text))) {
    if (url.protocol !== 'http:' || LOOPBACK.test(url.hostname)) continue;
    if (!context.keyOrigins.has(url.origin)) continue;
    context.warn(
      `plain-http ${url.host}`,
      `the key would go to ${url.host} over plain http://; use https://`,
    );
  }
}

/**
 * A dry run: fetch unconditionally, validate, and show what would change as
 * a unified diff. Nothing is written but the candidate, which is removed.
 */
export async function preview(context: PullContext): Promise<Outcome> {
  const { instance } = context;
  context.step = 'fetch';
  context.target = await realTarget(instance.confFile);
  const live = await readLive(context.target);
  const fetched = await fetchFor(context, []);
  if (fetched.notModified) return { kind: 'unchanged' };

  context.step = 'check';
  screenBody(fetched.body, fetched.contentType, instance.tunables.allowEmpty);
  if (live?.equals(fetched.body)) return { kind: 'unchanged' };

  context.step = 'validate';
  if (instance.test && usesCandidate(instance.test)) {
    const staged = await stageFile(instance.confFile, fetched.body);
    try {
      await validate(instance, staged, context);
    } finally {
      await removeFile(staged);
    }
  } else if (instance.test) {
    // LIMITATION: such a validator needs the candidate at the live path, and
    // a dry run must not touch it, so a dry run cannot validate.
    context.warn(
      undefined,
      'TEST_COMMAND checks the live path only, so a dry run skips it',
    );
  }

  const { createTwoFilesPatch } = await import('diff');
  const diff = createTwoFilesPatch(
    instance.confFile,
    `${instance.confFile} (from the manager)`,
    live?.toString('utf8') ?? '',
    fetched.body.toString('utf8'),
  );
  return { kind: 'would change', diff };
}

function rejection(message: string): PullError {
  return new PullError(message, { code: 'rejected', exitCode: 65 });
}

/**
 * The live ETag only counts while the live file is what we applied. A
 * recently rejected ETag is sent too, so the manager answers 304 while it
 * still serves the config we refused, and that costs nothing.
 */
function conditionalEtags(context: PullContext, live: Buffer | undefined): string[] {
  const { state } = context;
  const etags: string[] = [];
  if (state.etag && live && hashOf(live) === state.hash) etags.push(state.etag);
  if (state.rejected?.etag && rejectionActive(context)) etags.push(state.rejected.etag);
  return etags;
}

function rejectionActive(context: PullContext): boolean {
  const { rejected } = context.state;
  if (!rejected) return false;
  return Date.now() - Date.parse(rejected.at) < context.instance.tunables.rejectTtlMs;
}

function stillRejected(context: PullContext, hash: string): boolean {
  return rejectionActive(context) && context.state.rejected?.hash === hash;
}

function notModified(context: PullContext, etag: string | undefined): Outcome {
  const { state } = context;
  const rejected = state.rejected;
  if (rejected && etag !== undefined && etag === state.etag) delete state.rejected;
  else if (rejected && rejectionActive(context)) {
    return { kind: 'rejected', error: rejection(rejected.message), key: rejected.hash };
  }
  return { kind: 'unchanged' };
}

/** The manager serves what is live already: remember its ETag, touch nothing. */
function adopt(context: PullContext, body: Buffer, etag: string | undefined): Outcome {
  const { state } = context;
  const hash = hashOf(body);
  if (state.hash !== hash || state.etag !== etag) {
    state.etag = etag;
    state.hash = hash;
    state.appliedAt ??= now();
  }
  delete state.rejected;
  return { kind: 'unchanged' };
}

/**
 * A run killed mid-apply left its journal. Before the reload was confirmed,
 * the previous file goes back and is reloaded; after, the service has the
 * new one and only the bookkeeping is finished.
 */
async function recoverInterrupted(context: PullContext): Promise<void> {
  const interrupted = await readPending(context.dir);
  if (!interrupted) return;

  const { pending, old } = interrupted;
  context.target = pending.target || context.target;
  const live = await readLive(context.target);
  const liveHash = live && hashOf(live);
  if (pending.reloaded && live && liveHash === pending.newHash) {
    await complete(context, live, pending.completion);
    await endApply(context.dir);
    return;
  }

  if (liveHash !== pending.oldHash) {
    if (pending.oldHash && !old) {
      // LIMITATION: without its copy of the previous file the journal cannot
      // be acted on; the live file stays, and drift repair or the next
      // fetch puts right what it holds.
      await endApply(context.dir);
      context.warn(undefined, 'an interrupted apply left no copy of the previous file');
      return;
    }
    await restore(context.target, old);
  }
  await endApply(context.dir);
  const what = pending.completion.kind === 'rollback' ? 'a rollback' : 'an earlier run';
  context.warn(
    undefined,
    `${what} was interrupted while applying; previous config restored`,
    'interrupted',
  );
  if (old) await reload(context.instance, old, context);
}

/**
 * The manager is the source of truth: a hand edit is saved for the admin and
 * the last applied version is put back, with no need for the network.
 * Returns what the live file holds afterwards, read once per run.
 */
async function repairDrift(
  context: PullContext,
  live: Buffer | undefined,
): Promise<Buffer | undefined> {
  const { state, target, dir } = context;
  const version = state.versions.at(-1);
  if (!version || !state.hash || version.hash !== state.hash) return live;

  if (live && hashOf(live) === state.hash) return live;
  const applied = await readVersion(dir, version);
  if (!applied) return live;

  let saved: string | undefined;
  if (live) {
    const driftDir = join(dir, 'drift');
    await ensureDir(driftDir);
    saved = join(driftDir, `${now().replace(/[:.]/g, '-')}.conf`);
    await writeAtomic(saved, live);
  }

  // The same guarded path as a new config: validated before it goes live,
  // journalled, and put back if the reload fails. The state already says so.
  await install(context, applied, live, { kind: 'repair' });
  const what = saved ? `was edited by hand (saved as ${saved})` : 'was missing';
  context.warn(undefined, `${target} ${what}; restored the applied version`, 'drift');
  return applied;
}
