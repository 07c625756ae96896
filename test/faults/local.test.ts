import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  appendFile,
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import etag from 'etag';
import { describe, expect, it } from 'vitest';
import { track } from '../helpers/cleanup.js';
import { CLI_PATH, runCli, runParts, type CommandResult } from '../helpers/cli.js';
import { runCommand } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { startNginx, nginxConfig } from '../helpers/nginx.js';
import { waitFor } from '../helpers/processes.js';
import { freeTcpPort, makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { leftovers, lines, writeScript } from '../helpers/files.js';

// The shim the package installs in /etc/pull-config.d, named after its instance.
const SHIM = fileURLToPath(new URL('../../pull-config.d/nginx', import.meta.url));
const KEY = `key-${randomBytes(12).toString('hex')}`;

interface Site {
  box: Sandbox;
  manager: Manager;
  env: Record<string, string>;
}

interface Service {
  name: string;
  live: string;
  route: string;
  reloadLog: string;
}

// A sandbox, a manager that wants the key, and an environment file naming both.
async function makeSite(): Promise<Site> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(KEY);
  await writeEnvironment(box, manager.url);
  return { box, manager, env: { ...box.env } };
}

async function writeEnvironment(box: Sandbox, managerUrl: string): Promise<void> {
  await writeFile(
    box.envFile,
    `SITE_ID=lab-1\nMANAGER_URL=${managerUrl}\nAPI_KEY=${KEY}\n`,
  );
}

// The reload stands in for the service: it logs the first line of what it loads.
async function defineService(
  site: Site,
  name: string,
  settings: Record<string, string> = {},
  live = join(site.box.liveDir, `${name}.conf`),
): Promise<Service> {
  const { box } = site;
  const reloadLog = join(box.root, `${name}.reloads`);
  const reload = await writeScript(
    join(box.root, 'bin'),
    `reload-${name}`,
    `{ printf 'reload '; head -n 1 "$1"; } >> "$2"\n`,
  );

  const values = {
    CONF_URL: `/sites/\${SITE_ID}/${name}.conf`,
    CONF_FILE: live,
    RELOAD_COMMAND: `${reload} ${live} ${reloadLog}`,
    ...settings,
  };
  const text = Object.entries(values).map(([key, value]) => `${key}=${value}\n`);
  await writeFile(join(box.instancesDir, `${name}.env`), text.join(''));
  return { name, live, route: `/sites/lab-1/${name}.conf`, reloadLog };
}

function config(version: string, padding = 0): string {
  return `# version ${version}\nsetting ${version};\n${'#'.repeat(padding)}\n# end\n`;
}

async function storedEtag(site: Site, name: string): Promise<string | undefined> {
  const text = await readFile(
    join(site.env.PULL_CONFIG_STATE_DIR!, name, 'state.json'),
    'utf8',
  ).catch(() => '{}');
  return (JSON.parse(text) as { etag?: string }).etag;
}

async function reloads(service: Service): Promise<string[]> {
  const text = await readFile(service.reloadLog, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean);
}

interface Snapshot {
  live: Buffer;
  etag: string | undefined;
}

async function snapshot(site: Site, service: Service): Promise<Snapshot> {
  return {
    live: await readFile(service.live),
    etag: await storedEtag(site, service.name),
  };
}

// The failure invariants: exit code, one stderr line naming the instance and
// the cause, live file and ETag as before, nothing left behind.
async function expectFailure(
  site: Site,
  service: Service,
  before: Snapshot,
  result: CommandResult,
  expected: { code: number; cause: RegExp },
): Promise<void> {
  expect(result.code, result.stderr).toBe(expected.code);
  expect(lines(result.stderr)).toEqual([expect.stringMatching(expected.cause)]);
  expect(result.stderr.startsWith(`${service.name}: `)).toBe(true);
  expect(result.stdout).toBe('');
  expect(await readFile(service.live)).toEqual(before.live);
  expect(await storedEtag(site, service.name)).toBe(before.etag);
  expect(await leftovers(site.box.liveDir, site.env.PULL_CONFIG_STATE_DIR!)).toEqual([]);
  expect(`${result.stdout}${result.stderr}`).not.toContain(KEY);
}

// A run with a pid the test can name, left running in the background.
function startCli(args: string[], env: Record<string, string>) {
  const child = spawn(CLI_PATH, args, {
    env,
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  const untrack = track({
    stop: async () => void child.kill('SIGKILL'),
    stopNow: () => void child.kill('SIGKILL'),
  });
  const done = new Promise<CommandResult>((resolve) =>
    child.once('close', (code, signal) => {
      untrack();
      resolve({ code, signal, stdout, stderr, timedOut: false });
    }),
  );
  return { pid: child.pid!, done, running: () => child.exitCode === null };
}

// Runs the CLI on a pseudo-terminal, as an admin at a shell would; stdout and
// stderr arrive merged on the terminal.
function runInTerminal(args: string[], env: Record<string, string>) {
  const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`;
  const command = [CLI_PATH, ...args].map(quote).join(' ');
  return runCommand('/usr/bin/script', ['-qec', command, '/dev/null'], { env });
}

// A validator that holds the run until the test creates the release file, or
// its sandbox is gone: a failed test must not leave it looping.
async function heldValidator(
  box: Sandbox,
): Promise<{ command: string; started: string; release: string }> {
  const started = join(box.root, 'validator-started');
  const release = join(box.root, 'validator-release');
  const path = await writeScript(
    join(box.root, 'bin'),
    'held-validator',
    `touch ${started}\n` +
      `while [ ! -e ${release} ] && [ -d ${box.root} ]; do sleep 0.05; done\n`,
  );
  return { command: `${path} {}`, started, release };
}

describe('overlapping runs', () => {
  it('when a cron run finds its instance busy then it exits 0 quietly and asks nothing, while another instance runs', async () => {
    const site = await makeSite();
    const held = await heldValidator(site.box);
    const slow = await defineService(site, 'slow', { TEST_COMMAND: held.command });
    const quick = await defineService(site, 'quick');
    site.manager.serve(slow.route, config('slow-1'));
    site.manager.serve(quick.route, config('quick-1'));

    const first = startCli(['run', 'slow'], site.env);
    await waitFor('the validator to start', () =>
      existsSync(held.started) ? true : undefined,
    );
    const requests = site.manager.requests.length;

    const second = await runCli(['run', 'slow'], site.env);
    expect(second).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(site.manager.requests.length).toBe(requests);

    const other = await runCli(['run', 'quick'], site.env);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout).toMatch(/^quick: applied W\/"[^"]+" \(\d+ bytes\), reloaded\n$/);
    expect(first.running()).toBe(true);

    await writeFile(held.release, '');
    const result = await first.done;
    expect(result.code, result.stderr).toBe(0);
    expect(await readFile(slow.live, 'utf8')).toBe(config('slow-1'));
  });

  it('when a run from a terminal finds its instance busy then it names the process holding it', async () => {
    const site = await makeSite();
    const held = await heldValidator(site.box);
    const slow = await defineService(site, 'slow', { TEST_COMMAND: held.command });
    site.manager.serve(slow.route, config('slow-1'));

    const first = startCli(['run', 'slow'], site.env);
    await waitFor('the validator to start', () =>
      existsSync(held.started) ? true : undefined,
    );
    const requests = site.manager.requests.length;

    const second = await runInTerminal(['run', 'slow'], site.env);
    expect(lines(second.stdout)).toEqual([
      `slow: lock: process ${first.pid} is running this instance now`,
    ]);
    expect(second.code).toBe(75);
    expect(site.manager.requests.length).toBe(requests);

    await writeFile(held.release, '');
    expect((await first.done).code).toBe(0);
  });
});

// A small tmpfs, unmounted once the test is over.
async function mountTmpfs(dir: string, size = '64k'): Promise<string> {
  await mkdir(dir, { recursive: true });
  execFileSync('/usr/bin/mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  const unmount = () => execFileSync('/usr/bin/umount', ['-l', dir]);
  const untrack = track({
    stop: async () => {
      untrack();
      unmount();
    },
    stopNow: unmount,
  });
  return dir;
}

// Fills a filesystem, then frees `spare` bytes of it again.
async function fill(dir: string, spare = 0): Promise<void> {
  const filler = join(dir, 'filler');
  await writeFile(filler, Buffer.alloc(1024 * 1024)).catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOSPC') throw error;
    },
  );
  const { size } = await stat(filler);
  await truncate(filler, Math.max(0, size - spare));
}

describe('the disk', () => {
  it('when the target filesystem has less room than the new config then exit 74 names the path and the live file stays', async () => {
    const site = await makeSite();
    const disk = await mountTmpfs(join(site.box.root, 'small'));
    const app = await defineService(site, 'app', {}, join(disk, 'app.conf'));
    site.manager.serve(app.route, config('1'));
    expect((await runCli(['run', 'app'], site.env)).code).toBe(0);

    await fill(disk, 8 * 1024);
    site.manager.serve(app.route, config('2', 32 * 1024));
    const before = await snapshot(site, app);
    const result = await runCli(['run', 'app'], site.env);

    await expectFailure(site, app, before, result, {
      code: 74,
      cause: new RegExp(`^app: stage: .*${disk}/app\\.conf: no space left on device$`),
    });
    expect(await reloads(app)).toEqual(['reload # version 1']);
  });

  it('when the state filesystem is full then a 304 run exits 0 quietly and an apply exits 74', async () => {
    const site = await makeSite();
    site.env.PULL_CONFIG_STATE_DIR = await mountTmpfs(join(site.box.root, 'state-disk'));
    const app = await defineService(site, 'app');
    site.manager.serve(app.route, config('1'));
    expect((await runCli(['run', 'app'], site.env)).code).toBe(0);

    // Without its summary the 304 run has something it must write.
    const summary = join(site.env.PULL_CONFIG_STATE_DIR, 'status', 'app.json');
    await rm(summary);
    await fill(site.env.PULL_CONFIG_STATE_DIR);
    const unchanged = await runCli(['run', 'app'], site.env);
    expect(unchanged).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(existsSync(summary)).toBe(false);

    site.manager.serve(app.route, config('2'));
    const before = await snapshot(site, app);
    const result = await runCli(['run', 'app'], site.env);
    await expectFailure(site, app, before, result, {
      code: 74,
      cause: new RegExp(
        `^app: \\w+: .*${site.env.PULL_CONFIG_STATE_DIR}/.*: no space left`,
      ),
    });
    expect(await reloads(app)).toEqual(['reload # version 1']);
  });

  it('when the live file has its own mode, owner and group then a rewrite keeps them', async () => {
    const site = await makeSite();
    const app = await defineService(site, 'app');
    await writeFile(app.live, config('0'));
    await chown(app.live, 65534, 65534);
    await chmod(app.live, 0o640);
    site.manager.serve(app.route, config('1'));

    const result = await runCli(['run', 'app'], site.env);

    expect(result.code, result.stderr).toBe(0);
    expect(await readFile(app.live, 'utf8')).toBe(config('1'));
    const info = await stat(app.live);
    expect({ uid: info.uid, gid: info.gid, mode: info.mode & 0o7777 }).toEqual({
      uid: 65534,
      gid: 65534,
      mode: 0o640,
    });
  });

  it('when the target is a symlink then the link stays and the file it points to is updated', async () => {
    const site = await makeSite();
    const real = join(site.box.root, 'real.conf');
    await writeFile(real, config('0'));
    const app = await defineService(site, 'app');
    await symlink(real, app.live);
    site.manager.serve(app.route, config('1'));

    const result = await runCli(['run', 'app'], site.env);

    expect(result.code, result.stderr).toBe(0);
    expect((await lstat(app.live)).isSymbolicLink()).toBe(true);
    expect(await readlink(app.live)).toBe(real);
    expect(await readFile(real, 'utf8')).toBe(config('1'));
    expect(await leftovers(site.box.root)).toEqual([]);
  });

  it('when TMPDIR is on another filesystem then the apply is the same and leaves nothing there', async () => {
    const site = await makeSite();
    const tmp = await mountTmpfs(join(site.box.root, 'other-tmp'), '1m');
    const app = await defineService(site, 'app', { TEST_COMMAND: '/usr/bin/test -s {}' });
    site.manager.serve(app.route, config('1'));

    const result = await runCli(['run', 'app'], { ...site.env, TMPDIR: tmp });

    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^app: applied /);
    expect(await readFile(app.live, 'utf8')).toBe(config('1'));
    expect(await readdir(tmp)).toEqual([]);
  });

  it('when a crashed run left a candidate beside the target then the next run removes it', async () => {
    const site = await makeSite();
    const app = await defineService(site, 'app');
    site.manager.serve(app.route, config('1'));
    expect((await runCli(['run', 'app'], site.env)).code).toBe(0);
    const stale = join(site.box.liveDir, '.app.conf.pull-config-abc');
    const unrelated = join(site.box.liveDir, '.other.conf.pull-config-abc');
    await writeFile(stale, 'half a conf');
    await writeFile(unrelated, 'not ours');

    const result = await runCli(['run', 'app'], site.env);

    expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(unrelated)).toBe(true);
  });
});

describe('hand edits', () => {
  async function editedByHand() {
    const site = await makeSite();
    const validations = join(site.box.root, 'validations');
    const validator = await writeScript(
      join(site.box.root, 'bin'),
      'validate',
      `head -n 1 "$1" >> ${validations}\n`,
    );
    const app = await defineService(site, 'app', { TEST_COMMAND: `${validator} {}` });
    site.manager.serve(app.route, config('1'));
    expect((await runCli(['run', 'app'], site.env)).code).toBe(0);

    await writeFile(app.live, '# edited by an admin\n');
    const validated = async () => lines(await readFile(validations, 'utf8'));
    return { site, app, validated };
  }

  async function savedCopy(stderr: string): Promise<string> {
    const [warning] = lines(stderr);
    const saved = /\(saved as (\/[^)]+)\)/.exec(warning ?? '')?.[1] ?? '(none)';
    return readFile(saved, 'utf8');
  }

  it('when the live file was edited by hand then the edit is saved and the applied version is restored, validated and reloaded', async () => {
    const { site, app, validated } = await editedByHand();

    const result = await runCli(['run', 'app'], site.env);

    expect(result.code, result.stderr).toBe(0);
    expect(lines(result.stderr)).toEqual([
      expect.stringMatching(
        /^app: warning: .*app\.conf was edited by hand \(saved as \/.*\); restored the applied/,
      ),
    ]);
    expect(lines(result.stderr)[0]).toContain(join(site.box.stateDir, 'app'));
    expect(await savedCopy(result.stderr)).toBe('# edited by an admin\n');
    expect(await readFile(app.live, 'utf8')).toBe(config('1'));
    expect(await validated()).toEqual(['# version 1', '# version 1']);
    expect(await reloads(app)).toEqual(['reload # version 1', 'reload # version 1']);
    const conditional = site.manager.requests.at(-1)?.headers['if-none-match'];
    expect(conditional).toBe(etag(Buffer.from(config('1')), { weak: true }));
  });

  it('when the live file was edited by hand and the manager is down then it is restored all the same and the fetch fails with 75', async () => {
    const { site, app, validated } = await editedByHand();
    await site.manager.close();

    const result = await runCli(['run', 'app'], site.env);

    expect(result.code).toBe(75);
    expect(lines(result.stderr)).toEqual([
      expect.stringMatching(/^app: warning: .*edited by hand/),
      expect.stringMatching(/^app: fetch: connection refused by 127\.0\.0\.1:\d+$/),
    ]);
    expect(await savedCopy(result.stderr)).toBe('# edited by an admin\n');
    expect(await readFile(app.live, 'utf8')).toBe(config('1'));
    expect(await validated()).toHaveLength(2);
    expect(await reloads(app)).toEqual(['reload # version 1', 'reload # version 1']);
  });
});

describe('the environment file', () => {
  const url = (site: Site) => site.manager.url;

  // Each file is read by a run against a manager that serves under /manager/.
  const accepted: {
    situation: string;
    text: (site: Site) => string;
    auth: string | undefined;
  }[] = [
    {
      situation: 'values are quoted, exported, commented, CRLF-ended and hold "="',
      text: (site) =>
        '# Written on Windows\r\n' +
        'export SITE_ID="lab-1"\r\n' +
        '\r\n' +
        `MANAGER_URL='${url(site)}/manager/'   # trailing slash\r\n` +
        `API_KEY="${KEY}=a=b=="\r\n`,
      auth: `Bearer ${KEY}=a=b==`,
    },
    {
      situation: 'an unquoted value holds "=" and MANAGER_URL has no trailing slash',
      text: (site) =>
        `SITE_ID=lab-1\nMANAGER_URL=${url(site)}/manager\nAPI_KEY=${KEY}==\n`,
      auth: `Bearer ${KEY}==`,
    },
    {
      situation: 'there is no API_KEY',
      text: (site) => `SITE_ID=lab-1\nMANAGER_URL=${url(site)}/manager/\n`,
      auth: undefined,
    },
  ];

  it.each(accepted.map((row) => [row.situation, row] as const))(
    'when %s then the request goes to the prefixed path',
    async (_situation, row) => {
      const site = await makeSite();
      site.manager.requireKey(undefined);
      const app = await defineService(site, 'app');
      site.manager.serve(`/manager${app.route}`, config('1'));
      await writeFile(site.box.envFile, row.text(site));

      const result = await runCli(['run', 'app'], site.env);

      expect(result.code, result.stderr).toBe(0);
      expect(site.manager.requests.map((r) => r.path)).toEqual([
        '/manager/sites/lab-1/app.conf',
      ]);
      expect(site.manager.requests[0]?.headers.authorization).toBe(row.auth);
      expect(await readFile(app.live, 'utf8')).toBe(config('1'));
    },
  );

  it('when API_KEY_FILE names a root-only file then its key is sent', async () => {
    const site = await makeSite();
    const app = await defineService(site, 'app');
    site.manager.serve(app.route, config('1'));
    const keyFile = join(site.box.etcDir, 'pull-config.key');
    await writeFile(keyFile, `${KEY}\n`, { mode: 0o600 });
    await writeFile(
      site.box.envFile,
      `SITE_ID=lab-1\nMANAGER_URL=${site.manager.url}\nAPI_KEY_FILE=${keyFile}\n`,
    );

    const result = await runCli(['run', 'app'], site.env);

    expect(result.code, result.stderr).toBe(0);
    expect(site.manager.requests[0]?.headers.authorization).toBe(`Bearer ${KEY}`);
  });

  const refused = [
    {
      situation: 'a quote is left open',
      text: (site: Site) =>
        `SITE_ID=lab-1\nMANAGER_URL=${site.manager.url}\nAPI_KEY="${KEY}\n`,
      cause: /^app: .*environment:3: API_KEY has an unterminated quote$/,
    },
    {
      situation: 'SITE_ID holds a slash',
      text: (site: Site) =>
        `SITE_ID=lab/1\nMANAGER_URL=${site.manager.url}\nAPI_KEY=${KEY}\n`,
      cause:
        /^app: settings: SITE_ID in .*environment:1 does not fit in a URL path segment /,
    },
  ];

  it.each(refused.map((row) => [row.situation, row] as const))(
    'when %s then exit 78 names the line and asks nothing',
    async (_situation, row) => {
      const site = await makeSite();
      const app = await defineService(site, 'app');
      site.manager.serve(app.route, config('1'));
      expect((await runCli(['run', 'app'], site.env)).code).toBe(0);
      site.manager.serve(app.route, config('2'));
      await writeFile(site.box.envFile, row.text(site));
      const before = await snapshot(site, app);
      const requests = site.manager.requests.length;

      const result = await runCli(['run', 'app'], site.env);

      await expectFailure(site, app, before, result, { code: 78, cause: row.cause });
      expect(site.manager.requests.length).toBe(requests);
    },
  );
});

describe("cron's environment", () => {
  const fullPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  const runs = [
    {
      how: 'run-parts under env -i with PATH=/usr/bin:/bin',
      run: (site: Site) =>
        runParts(site.box.shimDir, { ...site.box.env, PULL_CONFIG_BIN: CLI_PATH }),
    },
    {
      how: 'a login shell with sbin in PATH',
      run: (site: Site) => runCli(['run', 'nginx'], { ...site.env, PATH: fullPath }),
    },
  ];

  it.each(runs.map((row) => [row.how, row.run] as const))(
    'when nginx is pulled by %s then "nginx -t" is found and the new config is live',
    async (_how, run) => {
      const site = await makeSite();
      const confPath = join(site.box.liveDir, 'nginx.conf');
      const nginx = await startNginx(site.box.liveDir, { body: 'old\n', confPath });
      await copyFile(SHIM, join(site.box.shimDir, 'nginx'));
      await writeFile(
        join(site.box.instancesDir, 'nginx.env'),
        `CONF_FILE=${confPath}\nRELOAD_COMMAND=${nginx.reloadArgv.join(' ')}\n`,
      );
      const body = nginxConfig({ port: nginx.port, prefix: nginx.prefix, body: 'new\n' });
      site.manager.serve('/sites/lab-1/nginx.conf', body);

      const result = await run(site);

      expect(result.stderr).toBe('');
      expect(result.stdout).toBe(
        `nginx: applied ${etag(Buffer.from(body), { weak: true })} ` +
          `(${Buffer.byteLength(body)} bytes), reloaded\n`,
      );
      expect(result.code).toBe(0);
      await nginx.waitForBody('/', 'new\n');
    },
  );

  const unstartable = [
    {
      what: 'a validator path that does not exist',
      path: '/nonexistent/validate',
      reason: 'no such file',
    },
    { what: 'a validator that is not executable', path: '', reason: 'permission denied' },
  ];

  it.each(unstartable.map((row) => [row.what, row] as const))(
    'when TEST_COMMAND is %s then exit 78 names it and nothing changes',
    async (_what, row) => {
      const site = await makeSite();
      const app = await defineService(site, 'app');
      site.manager.serve(app.route, config('1'));
      expect((await runCli(['run', 'app'], site.env)).code).toBe(0);
      let validator = row.path;
      if (!validator) {
        validator = join(site.box.root, 'not-executable');
        await writeFile(validator, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
      }
      await appendFile(
        join(site.box.instancesDir, 'app.env'),
        `TEST_COMMAND=${validator} {}\n`,
      );
      site.manager.serve(app.route, config('2'));
      const before = await snapshot(site, app);

      const result = await runCli(['run', 'app'], site.env);

      await expectFailure(site, app, before, result, {
        code: 78,
        cause: new RegExp(
          `^app: validate: TEST_COMMAND .*: cannot run ${validator}: ${row.reason}$`,
        ),
      });
      expect(await reloads(app)).toEqual(['reload # version 1']);
    },
  );
});

// Stands in for the manager's address: it can go down (connection refused)
// and come back on the same port, forwarding to the fixture manager.
async function startRelay(
  target: string,
): Promise<{ url: string; down(): Promise<void>; up(): Promise<void> }> {
  const port = await freeTcpPort();
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  let server: Server | undefined;

  const up = async () => {
    server = createServer((socket) => {
      const peer = createConnection(Number(upstream.port), upstream.hostname);
      for (const end of [socket, peer]) {
        sockets.add(end);
        end.once('close', () => sockets.delete(end));
        end.on('error', () => undefined);
      }
      socket.pipe(peer).pipe(socket);
    });
    await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve));
  };
  const down = async () => {
    const closing = server;
    server = undefined;
    if (!closing) return;
    const closed = new Promise<void>((resolve) => closing.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  track({ stop: down, stopNow: () => undefined });

  await up();
  return { url: `http://127.0.0.1:${port}`, down, up };
}

describe('noise', () => {
  it('when the manager stays down then one line at the start, one when the cause changes, one on recovery', async () => {
    const site = await makeSite();
    const relay = await startRelay(site.manager.url);
    await writeEnvironment(site.box, relay.url);
    const app = await defineService(site, 'app');
    site.manager.serve(app.route, config('1'));
    expect((await runCli(['run', 'app'], site.env)).code).toBe(0);
    const before = await snapshot(site, app);
    const run = () => runCli(['run', 'app'], site.env);

    await relay.down();
    const refused = [await run(), await run(), await run()];
    expect(refused.map((r) => r.code)).toEqual([75, 75, 75]);
    expect(refused.map((r) => lines(r.stderr))).toEqual([
      [expect.stringMatching(/^app: fetch: connection refused by 127\.0\.0\.1:\d+$/)],
      [],
      [],
    ]);

    await relay.up();
    site.manager.misbehave(app.route, {
      kind: 'status',
      status: 500,
      body: 'database down\n',
    });
    const failing = [await run(), await run()];
    expect(failing.map((r) => r.code)).toEqual([75, 75]);
    expect(failing.map((r) => lines(r.stderr))).toEqual([
      [expect.stringMatching(/^app: fetch: .* answered HTTP 500: database down$/)],
      [],
    ]);
    for (const result of [...refused, ...failing]) expect(result.stdout).toBe('');
    expect(await readFile(app.live)).toEqual(before.live);
    expect(await storedEtag(site, app.name)).toBe(before.etag);

    site.manager.misbehave(app.route, undefined);
    const recovered = await run();
    expect(recovered).toMatchObject({
      code: 0,
      stdout: 'app: recovered after 5 failed runs\n',
      stderr: '',
    });
    expect(await run()).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('when a failure goes on and the run is from a terminal then it prints the line every time', async () => {
    const site = await makeSite();
    const app = await defineService(site, 'app');
    site.manager.misbehave(app.route, { kind: 'status', status: 503 });

    const cron = await runCli(['run', 'app'], site.env);
    const terminal = [
      await runInTerminal(['run', 'app'], site.env),
      await runInTerminal(['run', 'app'], site.env),
    ];

    expect(lines(cron.stderr)).toEqual([
      expect.stringMatching(/^app: fetch: .*HTTP 503/),
    ]);
    for (const result of terminal) {
      expect(result.code).toBe(75);
      expect(lines(result.stdout)).toEqual([
        expect.stringMatching(/^app: fetch: .*HTTP 503/),
      ]);
    }
  });
});
