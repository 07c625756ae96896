import { chmod, readdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { expect } from 'vitest';
import { CLI_PATH, runCli, type CommandResult } from '../helpers/cli.js';
import { runCommand } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

// One site with one instance, "app", kept in sync with a fixture manager:
// the common ground of the fault tests.

export const KEY = 'pcfg-key-F4ults-7Qx2';
export const ROUTE = '/sites/lab/app.conf';
// dnsmasq checks these, so a candidate really passes or fails a validator.
export const V1 = 'address=/web.test/192.0.2.10\n';
export const V2 = 'address=/web.test/192.0.2.20\n';
export const BAD = 'address=/web.test/192.0.2.30\nno-such-option=1\n';

type Settings = Record<string, string | undefined>;

export interface Site {
  box: Sandbox;
  manager: Manager;
  // CONF_FILE as last defined.
  live: string;
  // Writes the definition file: the defaults, changed by `extra`
  // (undefined leaves a key out).
  define(extra?: Settings): Promise<void>;
  // Rewrites /etc/environment with this MANAGER_URL.
  managers(urls: string): Promise<void>;
  run(): Promise<CommandResult>;
  // How often the recording validator and reload have run.
  validations(): Promise<number>;
  reloads(): Promise<number>;
}

export async function makeSite(): Promise<Site> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(KEY);
  manager.serve(ROUTE, V1);

  // Each records its argv and its environment, then does the real work.
  const log = join(box.root, 'commands.log');
  const validator = await script(box, 'validate', [
    `echo "validate: $*" >> ${log}`,
    `env >> ${log}`,
    'exec /usr/sbin/dnsmasq --test -C "$1"',
  ]);
  const reloader = await script(box, 'reload', [
    `echo "reload: $*" >> ${log}`,
    `env >> ${log}`,
  ]);
  const count = async (word: string) => {
    const text = await readFile(log, 'utf8').catch(() => '');
    return text.split('\n').filter((line) => line.startsWith(`${word}: `)).length;
  };

  const site: Site = {
    box,
    manager,
    live: '',
    async define(extra = {}) {
      const settings: Settings = {
        CONF_URL: '/sites/${SITE_ID}/app.conf',
        CONF_FILE: join(box.liveDir, 'app.conf'),
        TEST_COMMAND: `${validator} {}`,
        RELOAD_COMMAND: reloader,
        CONNECT_TIMEOUT: '1',
        FETCH_TIMEOUT: '2',
        ...extra,
      };
      site.live = settings.CONF_FILE ?? '';
      const lines = Object.entries(settings)
        .filter(([, value]) => value !== undefined)
        .map(([key, value]) => `${key}=${value}\n`);
      await writeFile(join(box.instancesDir, 'app.env'), lines.join(''));
    },
    async managers(urls) {
      await writeFile(
        box.envFile,
        `SITE_ID=lab\nMANAGER_URL="${urls}"\nAPI_KEY=${KEY}\n`,
      );
    },
    // Cron's pam_env puts /etc/environment into the job's environment too,
    // so the key is there for a careless child to inherit.
    run: () => runCli(['run', 'app'], { ...box.env, API_KEY: KEY }),
    validations: () => count('validate'),
    reloads: () => count('reload'),
  };
  await site.define();
  await site.managers(manager.url);
  return site;
}

// An executable sh script in the sandbox; returns its path.
export async function script(
  box: Sandbox,
  name: string,
  lines: string[],
): Promise<string> {
  const path = join(box.root, name);
  await writeFile(path, ['#!/bin/sh', ...lines, ''].join('\n'));
  await chmod(path, 0o755);
  return path;
}

export interface StoredState {
  etag?: string;
  rejected?: { etag?: string };
}

export async function readState(site: Site): Promise<StoredState> {
  const text = await readFile(join(site.box.stateDir, 'app', 'state.json'), 'utf8');
  return JSON.parse(text) as StoredState;
}

export interface Snapshot {
  live: Buffer;
  etag: string | undefined;
}

// A first successful run, so that a failure has a live file and an ETag to keep.
export async function applyFirst(site: Site): Promise<Snapshot> {
  const first = await site.run();
  expect(first.code, first.stderr).toBe(0);
  return { live: await readFile(site.live), etag: (await readState(site)).etag };
}

export function lines(text: string): string[] {
  return text.split('\n').filter(Boolean);
}

// What every failure must leave: its exit code, one line naming the instance
// and the cause, the old live file and ETag, no stray files, no key anywhere.
export async function expectFailure(
  site: Site,
  result: CommandResult,
  before: Snapshot,
  expected: { code: number; line: RegExp },
): Promise<void> {
  expect(result.code, result.stderr).toBe(expected.code);
  expect(result.stdout).toBe('');
  expect(lines(result.stderr)).toEqual([expect.stringMatching(/^app: /)]);
  expect(result.stderr).toMatch(expected.line);
  expect(await readFile(site.live)).toEqual(before.live);
  expect((await readState(site)).etag).toBe(before.etag);
  expect(await strayFiles(site)).toEqual([]);
  expect(await filesHolding(site, KEY)).toEqual([]);
  expect(result.stdout + result.stderr).not.toContain(KEY);
}

// Candidates beside the live file, and anything in the state directory
// besides the state, the event log, kept versions, the copy of a refused
// config and the public summary.
export async function strayFiles(site: Site): Promise<string[]> {
  const candidates = (await readdir(dirname(site.live))).filter((name) =>
    name.startsWith(`.${basename(site.live)}.pull-config-`),
  );
  const kept =
    /^(app\/(state\.json|events\.log|rejected\.conf|versions\/[^/]+)|status\/app\.json)$/;
  const state = await listFiles(site.box.stateDir);
  return [...candidates, ...state.filter((path) => !kept.test(path))];
}

// Files in the sandbox holding `text`, but for the environment file that sets it.
// The commands' logs are in the sandbox too: they record argv and environment.
async function filesHolding(site: Site, text: string): Promise<string[]> {
  const holding: string[] = [];
  for (const path of await listFiles(site.box.root)) {
    if (path === 'etc/environment') continue;
    const content = await readFile(join(site.box.root, path)).catch(() =>
      Buffer.alloc(0),
    );
    if (content.includes(text)) holding.push(path);
  }
  return holding;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1))
    .sort();
}

export async function timed<T>(
  action: () => Promise<T>,
): Promise<{ value: T; seconds: number }> {
  const started = performance.now();
  const value = await action();
  return { value, seconds: (performance.now() - started) / 1000 };
}

// A network namespace holding only loopback: nothing run in it can reach the
// machine's resolver or anything beyond this host. `setup` runs first, as root.
export function runIsolated(site: Site, setup: string): Promise<CommandResult> {
  const script = `${setup} && exec "$0" run app`;
  return runCommand(
    '/usr/bin/unshare',
    ['--net', '--', '/bin/sh', '-c', script, CLI_PATH],
    {
      env: { ...site.box.env, API_KEY: KEY },
    },
  );
}

// Matches exactly this line of output.
export function line(text: string): RegExp {
  return new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm');
}
