import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, rmdirSync } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rm,
  rmdir,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { track } from '../helpers/cleanup.js';
import { CLI_PATH, runCli, runParts, type CommandResult } from '../helpers/cli.js';
import { runChecked, runCommand } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

export const API_KEY = 'k3y-that-must-never-show';
export const SITE_ID = 'site-1';

// Instances defined in a sandbox and served by the fixture manager at
// /sites/site-1/NAME.conf. Their validator refuses any config that says BAD
// and logs each call; their reload only counts.
export interface Ops {
  box: Sandbox;
  manager: Manager;
  env: Record<string, string>;
  // Where the fixture validator and reload leave their marks.
  marks: string;
  define(name: string, settings?: Record<string, string>, shim?: boolean): Promise<void>;
  live(name?: string): string;
  serve(body: string, name?: string): void;
  run(args: string[], env?: Record<string, string>): Promise<CommandResult>;
  // A run-parts pass over the shims, as cron makes it every minute.
  cron(env?: Record<string, string>): Promise<CommandResult>;
  // Runs the CLI on a pseudo-terminal; stdout and stderr arrive merged.
  tty(args: string[], env?: Record<string, string>): Promise<CommandResult>;
  asNobody(args: string[], env?: Record<string, string>): Promise<CommandResult>;
  validations(): Promise<number>;
  reloads(): Promise<number>;
  // Whether the validator accepts BAD too, as after a fix on the host.
  acceptAll(accept?: boolean): Promise<void>;
  // Whether the validator takes 2 s (saying when it starts), to hold the lock.
  slowValidator(slow?: boolean): Promise<void>;
  // The state directory, entry by entry: see snapshotTree.
  snapshot(): Promise<Record<string, string>>;
}

export function configPath(name: string): string {
  return `/sites/${SITE_ID}/${name}.conf`;
}

// A sandbox with a manager and the fixture commands; no instance yet.
export async function startOps(): Promise<Ops> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(API_KEY);
  const marks = join(box.root, 'marks');
  const bin = join(box.root, 'bin');
  await mkdir(marks);
  await mkdir(bin);

  await writeFile(
    box.envFile,
    `SITE_ID=${SITE_ID}\nMANAGER_URL=${manager.url}\nAPI_KEY=${API_KEY}\n`,
    { mode: 0o600 },
  );
  await script(
    join(bin, 'check'),
    `echo "$1" >> ${marks}/validations
if [ -e ${marks}/slow ]; then touch ${marks}/validating; sleep 2; fi
if grep -q BAD "$1" && [ ! -e ${marks}/accept-all ]; then
  echo "$1:1: unknown directive \\"BAD\\"" >&2
  exit 1
fi`,
  );
  await script(join(bin, 'reload'), `echo reload >> ${marks}/reloads`);

  const env: Record<string, string> = { ...box.env };
  const count = async (file: string) => {
    const text = await readFile(join(marks, file), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).length;
  };
  const live = (name = 'app') => join(box.liveDir, `${name}.conf`);

  return {
    box,
    manager,
    env,
    marks,
    live,
    async define(name, settings = {}, shim = true) {
      const values: Record<string, string> = {
        CONF_URL: '/sites/${SITE_ID}/' + `${name}.conf`,
        CONF_FILE: live(name),
        TEST_COMMAND: `${join(bin, 'check')} {}`,
        RELOAD_COMMAND: join(bin, 'reload'),
        FETCH_TIMEOUT: '2',
        ...settings,
      };
      const text = Object.entries(values).map(([key, value]) => `${key}=${value}\n`);
      await writeFile(join(box.instancesDir, `${name}.env`), text.join(''));
      if (shim) await script(join(box.shimDir, name), `exec ${CLI_PATH} run ${name}`);
    },
    serve: (body, name = 'app') => manager.serve(configPath(name), body),
    run: (args, extra = {}) => runCli(args, { ...env, ...extra }),
    cron: (extra = {}) => runParts(box.shimDir, { ...env, ...extra }),
    async tty(args, extra = {}) {
      const command = [CLI_PATH, ...args].map(shellQuote).join(' ');
      const result = await runCommand('/usr/bin/script', ['-qec', command, '/dev/null'], {
        env: { ...env, ...extra },
      });
      return { ...result, stdout: result.stdout.replaceAll('\r\n', '\n') };
    },
    async asNobody(args, extra = {}) {
      // Monitoring reads from outside the private temp tree.
      await chmod(box.root, 0o755);
      const setpriv = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];
      const cli = await cliForNobody();
      const result = await runCommand('/usr/bin/setpriv', [...setpriv, cli, ...args], {
        env: { ...env, ...extra },
      });

      // Every command nobody runs here reports on stdout: nothing there means it
      // could not run at all, and only stderr says why.
      if (result.stdout === '') {
        const why = result.stderr.trim() || '(nothing on stderr)';
        throw new Error(
          `pull-config ${args.join(' ')} as nobody exited ${result.code}: ${why}`,
        );
      }
      return result;
    },
    validations: () => count('validations'),
    reloads: () => count('reloads'),
    acceptAll: async (accept = true) => {
      const path = join(marks, 'accept-all');
      await (accept ? writeFile(path, '') : rm(path, { force: true }));
    },
    async slowValidator(slow = true) {
      await rm(join(marks, 'validating'), { force: true });
      await (slow ? writeFile(join(marks, 'slow'), '') : rm(join(marks, 'slow')));
    },
    snapshot: () => snapshotTree(box.stateDir),
  };
}

let nobodyCli: Promise<string> | undefined;

// The CLI as nobody can reach it. A clone may sit under a directory nobody
// cannot traverse (/root, a 0700 temp dir), so the repository is bound
// read-only onto a directory anyone can enter; the binding lasts one test.
function cliForNobody(): Promise<string> {
  nobodyCli ??= bindRepository().catch((error: unknown) => {
    nobodyCli = undefined;
    throw error;
  });
  return nobodyCli;
}

async function bindRepository(): Promise<string> {
  const repository = dirname(dirname(await realpath(CLI_PATH)));
  const mountPoint = await mkdtemp(join(tmpdir(), 'pull-config-repo-'));
  await chmod(mountPoint, 0o755);
  const system = { PATH: '/usr/sbin:/usr/bin:/bin' };

  // Registered before mounting, so a failure halfway is undone too. Only
  // rmdir: should the unmount fail, the repository must not be deleted.
  let mounted = false;
  const untrack = track({
    stop: async () => {
      untrack();
      nobodyCli = undefined;
      if (mounted) await runChecked('/usr/bin/umount', [mountPoint], system);
      mounted = false;
      await rmdir(mountPoint);
    },
    stopNow: () => {
      if (mounted) execFileSync('/usr/bin/umount', [mountPoint], { env: system });
      rmdirSync(mountPoint);
    },
  });

  await runChecked(
    '/usr/bin/mount',
    ['--bind', '-o', 'ro', repository, mountPoint],
    system,
  );
  mounted = true;
  return join(mountPoint, 'bin', 'pull-config');
}

/** True once the slow validator has started, that is the run holds its lock. */
export function isValidating(ops: Ops): boolean {
  return existsSync(join(ops.marks, 'validating'));
}

// Every entry under `root`: type, mode, and for files the size, mtime and
// content hash, so that a changed byte or a touched summary both show.
export async function snapshotTree(root: string): Promise<Record<string, string>> {
  const entries: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const info = await lstat(path);
      const mode = (info.mode & 0o7777).toString(8);
      if (info.isDirectory()) {
        entries[relative(root, path)] = `dir ${mode}`;
        await walk(path);
      } else {
        const hash = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
        entries[relative(root, path)] =
          `file ${mode} ${info.size} ${info.mtimeMs} ${hash}`;
      }
    }
  };
  await walk(root);
  return entries;
}

async function script(path: string, body: string): Promise<void> {
  await writeFile(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
}

function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

// An instance `app` that a first cron run has applied `body` to.
export async function startApplied(body: string): Promise<Ops> {
  const ops = await startOps();
  await ops.define('app');
  ops.serve(body);
  const cron = await ops.cron();
  if (cron.code !== 0) throw new Error(`first run failed: ${cron.stderr}`);
  return ops;
}

export interface StatusRow {
  etag: string | null;
  result: string;
  disabled: { reason: string; by: string; at: string } | null;
}

// One instance's row of `status --json`.
export async function statusRow(ops: Ops, name = 'app'): Promise<StatusRow> {
  const result = await ops.run(['status', '--json', name]);
  const report = JSON.parse(result.stdout) as { instances: StatusRow[] };
  return report.instances[0]!;
}
