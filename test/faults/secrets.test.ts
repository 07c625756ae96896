import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { track } from '../helpers/cleanup.js';
import { CLI_PATH, runCli } from '../helpers/cli.js';
import { runCommand } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { waitFor } from '../helpers/processes.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { filesHolding, lines, writeScript } from '../helpers/files.js';

const KEY = `key-${randomBytes(16).toString('hex')}`;
const ROUTE = '/sites/lab-1/app.conf';

interface Site {
  box: Sandbox;
  manager: Manager;
  live: string;
  stateDir: string;
}

async function makeSite(settings: Record<string, string> = {}): Promise<Site> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(KEY);
  const live = join(box.liveDir, 'app.conf');
  await writeFile(
    box.envFile,
    `SITE_ID=lab-1\nMANAGER_URL=${manager.url}\nAPI_KEY=${KEY}\n`,
  );

  const reload = await writeScript(join(box.root, 'bin'), 'reload', 'exit 0\n');
  const values = {
    CONF_URL: '/sites/${SITE_ID}/app.conf',
    CONF_FILE: live,
    RELOAD_COMMAND: reload,
    ...settings,
  };
  const text = Object.entries(values).map(([key, value]) => `${key}=${value}\n`);
  await writeFile(join(box.instancesDir, 'app.env'), text.join(''));
  return { box, manager, live, stateDir: join(box.stateDir, 'app') };
}

function config(version: string): string {
  return `# version ${version}\nsetting ${version};\n`;
}

// A step that waits, touching `started`, until the test creates `release` or
// the sandbox is gone: a failed test must not leave it looping.
async function heldStep(box: Sandbox, name: string) {
  const started = join(box.root, `${name}-started`);
  const release = join(box.root, `${name}-release`);
  const path = await writeScript(
    join(box.root, 'bin'),
    name,
    `touch ${started}\n` +
      `while [ ! -e ${release} ] && [ -d ${box.root} ]; do sleep 0.05; done\n`,
  );
  const reached = () =>
    waitFor(`${name} to start`, () => (existsSync(started) ? true : undefined));
  return { path, reached, release: () => writeFile(release, '') };
}

// Pids whose argv or environment holds the text, as any local user could read them.
function processesHolding(text: string): { pid: number; where: string }[] {
  const found: { pid: number; where: string }[] = [];
  for (const name of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    for (const where of ['cmdline', 'environ']) {
      try {
        if (readFileSync(`/proc/${name}/${where}`).includes(text)) {
          found.push({ pid: Number(name), where });
        }
      } catch {
        // The process exited while we looked.
      }
    }
  }
  return found;
}

function startCli(env: Record<string, string>) {
  const child = spawn(CLI_PATH, ['run', 'app'], { env, cwd: '/', stdio: 'ignore' });
  const stop = () => void child.kill('SIGKILL');
  const untrack = track({ stop: async () => stop(), stopNow: stop });
  const done = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      untrack();
      resolve(code);
    }),
  );
  return { pid: child.pid!, done };
}

describe('the key in processes', () => {
  const placements = [
    { where: 'only in the environment file', inEnvironment: false },
    { where: 'also in the environment cron gives the run', inEnvironment: true },
  ];

  it.each(placements.map((row) => [row.where, row.inEnvironment] as const))(
    'when the key is %s then no validator or reload sees it in its argv or environment',
    async (_where, inEnvironment) => {
      const site = await makeSite();
      const validator = await heldStep(site.box, 'validator');
      const reload = await heldStep(site.box, 'reload');
      await writeFile(
        join(site.box.instancesDir, 'app.env'),
        `CONF_URL=/sites/\${SITE_ID}/app.conf\nCONF_FILE=${site.live}\n` +
          `TEST_COMMAND=${validator.path} {}\nRELOAD_COMMAND=${reload.path}\n`,
      );
      await writeFile(site.live, config('0'));
      site.manager.serve(ROUTE, config('1'));
      const env = inEnvironment ? { ...site.box.env, API_KEY: KEY } : site.box.env;

      const run = startCli(env);
      const expected = inEnvironment ? [{ pid: run.pid, where: 'environ' }] : [];
      await validator.reached();
      expect(processesHolding(KEY)).toEqual(expected);
      await validator.release();

      await reload.reached();
      expect(processesHolding(KEY)).toEqual(expected);
      for (const name of ['pending.json', 'pending.old']) {
        expect((await stat(join(site.stateDir, name))).mode & 0o777).toBe(0o600);
      }
      await reload.release();

      expect(await run.done).toBe(0);
      expect(await readFile(site.live, 'utf8')).toBe(config('1'));
    },
  );
});

describe('the key in output and state', () => {
  it('when the manager quotes the key back in its errors then no output line and no state file holds it', async () => {
    const site = await makeSite();
    const outputs: string[] = [];
    const leaks: string[] = [];
    const run = async (args: string[]) => {
      const result = await runCli(args, site.box.env);
      outputs.push(`${result.stdout}${result.stderr}`);
      leaks.push(...(await filesHolding(site.box.stateDir, KEY)));
      return result.code;
    };
    // status shows the last error, so it runs after each failure.
    const runAndShow = async () => [
      await run(['run', 'app']),
      await run(['status', 'app']),
      await run(['status', '--json', 'app']),
    ];
    site.manager.serve(ROUTE, config('1'));
    expect(await runAndShow()).toEqual([0, 0, 0]);

    const echoes = [
      { fault: { status: 500, body: `invalid token: Bearer ${KEY}\n` }, code: 75 },
      { fault: { status: 401, body: `Unauthorized: ${KEY}\n` }, code: 77 },
      { fault: { status: 400, body: `<h1>Bad request from ${KEY}</h1>\n` }, code: 78 },
      {
        fault: {
          status: 302,
          headers: { Location: `${site.manager.url}/login?t=${KEY}` },
        },
        code: 77,
      },
      {
        fault: {
          status: 307,
          headers: { Location: `${site.manager.url}/other?t=${KEY}` },
        },
        code: 78,
      },
    ];
    for (const { fault, code } of echoes) {
      site.manager.misbehave(ROUTE, { kind: 'status', ...fault });
      expect(await runAndShow()).toEqual([code, 0, 0]);
    }
    site.manager.misbehave(ROUTE, undefined);
    site.manager.serve(ROUTE, config('2'));
    expect(await runAndShow()).toEqual([0, 0, 0]);
    expect(await run(['history', 'app'])).toBe(0);

    const output = outputs.join('');
    expect(output).toContain('Bearer [redacted]');
    expect(output).toContain('/other;');
    expect(output).not.toContain(KEY);
    expect(leaks).toEqual([]);
    expect(site.manager.requests.map((request) => request.path)).toEqual(
      Array<string>(7).fill(ROUTE),
    );
  });

  it('when MANAGER_URL carries the key as a password then exit 78 and the key is not echoed', async () => {
    const site = await makeSite();
    const url = new URL(site.manager.url);
    await writeFile(
      site.box.envFile,
      `SITE_ID=lab-1\nMANAGER_URL=http://admin:${KEY}@${url.host}\n`,
    );

    const result = await runCli(['run', 'app'], site.box.env);

    expect(result.code).toBe(78);
    expect(lines(result.stderr)).toEqual([
      expect.stringMatching(
        /^app: settings: MANAGER_URL in .*environment:2 must not carry credentials/,
      ),
    ]);
    expect(`${result.stdout}${result.stderr}`).not.toContain(KEY);
    expect(site.manager.requests).toEqual([]);
  });
});

describe('the key over plain http', () => {
  // Inside a network namespace with only loopback, the name fails at once.
  const cases = [
    {
      situation: 'the key would go over plain http:// to a host that is not loopback',
      then: 'one warning comes before the fetch fails, and only on the first run',
      url: 'http://manager.invalid:8080',
      key: true,
      warns: true,
    },
    {
      situation: 'the key goes over https://',
      then: 'no warning comes',
      url: 'https://manager.invalid',
      key: true,
      warns: false,
    },
    {
      situation: 'there is no key to send over plain http://',
      then: 'no warning comes',
      url: 'http://manager.invalid:8080',
      key: false,
      warns: false,
    },
  ];

  it.each(cases.map((row) => [row.situation, row.then, row] as const))(
    'when %s then %s',
    async (_situation, _then, { url, key, warns }) => {
      const site = await makeSite();
      await writeFile(
        site.box.envFile,
        `SITE_ID=lab-1\nMANAGER_URL=${url}\n${key ? `API_KEY=${KEY}\n` : ''}`,
      );
      const run = () =>
        runCommand('/usr/bin/unshare', ['-n', CLI_PATH, 'run', 'app'], {
          env: site.box.env,
        });

      const first = await run();
      const second = await run();

      const host = new URL(url).host;
      const warning = `app: warning: the key would go to ${host} over plain http://; use https://`;
      const failure = 'app: fetch: cannot resolve manager.invalid';
      expect(lines(first.stderr)).toEqual(warns ? [warning, failure] : [failure]);
      expect(first.code).toBe(75);
      expect(second).toMatchObject({ code: 75, stdout: '', stderr: '' });
    },
  );
});

describe('state file modes', () => {
  it('when configs are applied and a hand edit is saved then every state file is 0600 under 0700 directories', async () => {
    const site = await makeSite();
    site.manager.serve(ROUTE, config('1'));
    expect((await runCli(['run', 'app'], site.box.env)).code).toBe(0);
    await writeFile(site.live, '# edited by hand\n');
    site.manager.serve(ROUTE, config('2'));
    expect((await runCli(['run', 'app'], site.box.env)).code).toBe(0);

    const modes: Record<string, string> = {};
    for (const entry of ['', ...(await readdir(site.stateDir, { recursive: true }))]) {
      const info = await stat(join(site.stateDir, entry));
      modes[entry || '.'] =
        `${info.isDirectory() ? 'dir' : 'file'} ${(info.mode & 0o777).toString(8)}`;
    }

    expect(Object.keys(modes)).toEqual(
      expect.arrayContaining(['.', 'state.json', 'events.log', 'versions', 'drift']),
    );
    for (const [entry, mode] of Object.entries(modes)) {
      expect(`${entry}: ${mode}`).toMatch(/: (dir 700|file 600)$/);
    }
  });
});
