import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import etag from 'etag';
import { beforeEach, describe, expect, it } from 'vitest';
import { CLI_PATH } from '../helpers/cli.js';
import { track } from '../helpers/cleanup.js';
import { isRunning, waitFor } from '../helpers/processes.js';
import { NGINX_BIN, nginxConfig, startNginx, type Nginx } from '../helpers/nginx.js';
import { freeTcpPort } from '../helpers/sandbox.js';
import {
  applyFirst,
  expectFailure,
  line,
  lines,
  makeSite,
  readState,
  ROUTE,
  script,
  strayFiles,
  timed,
  V1,
  V2,
  type Site,
} from './site.js';

// Validators and reloads that cannot start, fail, hang, or claim a success
// the service did not have.

const weakTag = (body: string) => etag(body, { weak: true });

let site: Site;
beforeEach(async () => {
  site = await makeSite();
});

// Pids written by the scripts below, killed after the test if still alive.
function pidsIn(file: string): Promise<number[]> {
  return readFile(file, 'utf8')
    .catch(() => '')
    .then((text) => lines(text).map(Number));
}

function killLater(file: string): void {
  const kill = (pids: number[]) => {
    for (const pid of pids.filter(isRunning)) process.kill(pid, 'SIGKILL');
  };
  const untrack = track({
    stop: async () => {
      untrack();
      kill(await pidsIn(file));
    },
    stopNow: () => undefined,
  });
}

// What the service saw at each reload: the address line of the live file.
async function reloadedWith(site: Site): Promise<string[]> {
  return lines(await readFile(join(site.box.root, 'reloaded'), 'utf8').catch(() => ''));
}

describe('commands that cannot be started', () => {
  const commands: [string, (root: string) => Record<string, string>, string, RegExp][] = [
    [
      'a validator that does not exist',
      () => ({ TEST_COMMAND: '/nonexistent/validator {}' }),
      'validate',
      /TEST_COMMAND \(\S+app\.env:3\): cannot run \/nonexistent\/validator: no such file$/m,
    ],
    [
      'a validator that is not executable',
      (root) => ({ TEST_COMMAND: `${root}/not-executable {}` }),
      'validate',
      /TEST_COMMAND \(\S+app\.env:3\): cannot run \S+\/not-executable: permission denied$/m,
    ],
    [
      'a reload that does not exist',
      () => ({ RELOAD_COMMAND: '/nonexistent/reload' }),
      'reload',
      /RELOAD_COMMAND \(\S+app\.env:4\): cannot run \/nonexistent\/reload: no such executable$/m,
    ],
  ];

  it.each(commands)(
    'when the definition names %s then exit is 78 with its path and nothing changes',
    async (_, settings, step, cause) => {
      const before = await applyFirst(site);
      await writeFile(join(site.box.root, 'not-executable'), '#!/bin/sh\n', {
        mode: 0o644,
      });
      await site.define(settings(site.box.root));
      site.manager.serve(ROUTE, V2);

      const result = await site.run();

      await expectFailure(site, result, before, { code: 78, line: cause });
      expect(result.stderr).toMatch(new RegExp(`^app: ${step}: `));
    },
  );
});

describe('a reload that fails', () => {
  beforeEach(async () => {
    const reloaded = join(site.box.root, 'reloaded');
    const reload = await script(site.box, 'reload-fails', [
      `grep address= ${site.live} >> ${reloaded}`,
      `if grep -q 192.0.2.20 ${site.live}; then`,
      '  echo "upstream web: host not found" >&2',
      '  exit 1',
      'fi',
    ]);
    await site.define({ RELOAD_COMMAND: reload });
  });

  it('when the reload exits non-zero then the old config is put back and reloaded, exit 69', async () => {
    const before = await applyFirst(site);
    site.manager.serve(ROUTE, V2);

    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 69,
      line: line(
        'app: reload: reload exited with 1: upstream web: host not found ' +
          '(previous config restored)',
      ),
    });
    expect(await reloadedWith(site)).toEqual([V1, V2, V1].map((text) => text.trim()));
  });

  it('when the manager still serves it then the next run tries again', async () => {
    await applyFirst(site);
    site.manager.serve(ROUTE, V2);
    await site.run();

    const result = await site.run();

    expect(result).toMatchObject({ code: 69, stdout: '', stderr: '' });
    expect(site.manager.requests[2]?.headers['if-none-match']).toBe(weakTag(V1));
    expect(await reloadedWith(site)).toHaveLength(5);
  });
});

describe('a reload that hangs', () => {
  it('when the reload and its child hang then both are killed at RELOAD_TIMEOUT, exit 69', async () => {
    const pids = join(site.box.root, 'pids');
    killLater(pids);
    const reload = await script(site.box, 'reload-hangs', [
      `grep -q 192.0.2.20 ${site.live} || exit 0`,
      `echo $$ >> ${pids}`,
      'sleep 60 &',
      `echo $! >> ${pids}`,
      'sleep 60',
    ]);
    await site.define({ RELOAD_COMMAND: reload, RELOAD_TIMEOUT: '1' });
    const before = await applyFirst(site);
    site.manager.serve(ROUTE, V2);

    const { value: result, seconds } = await timed(() => site.run());

    await expectFailure(site, result, before, {
      code: 69,
      line: line('app: reload: reload timed out after 1 s (previous config restored)'),
    });
    expect(seconds).toBeLessThan(5);
    const started = await pidsIn(pids);
    expect(started).toHaveLength(2);
    await waitFor('the hung reload to be gone', () =>
      started.some(isRunning) ? undefined : true,
    );
  });

  it('when the reload leaves a child behind that holds its output then the run does not wait', async () => {
    const pids = join(site.box.root, 'pids');
    killLater(pids);
    const reload = await script(site.box, 'reload-forks', [
      'sleep 30 &',
      `echo $! >> ${pids}`,
      'echo "reloaded, helper left running"',
    ]);
    await site.define({ RELOAD_COMMAND: reload, RELOAD_TIMEOUT: '20' });
    await applyFirst(site);
    site.manager.serve(ROUTE, V2);

    const { value: result, seconds } = await timed(() => site.run());

    expect(result.code, result.stderr).toBe(0);
    expect(seconds).toBeLessThan(5);
    expect((await pidsIn(pids)).filter(isRunning)).toHaveLength(2);
  });

  it('when the validator hangs then it is killed at TEST_TIMEOUT and the run fails for now, exit 75', async () => {
    const pids = join(site.box.root, 'pids');
    killLater(pids);
    const validator = await script(site.box, 'validate-hangs', [
      `grep -q 192.0.2.20 "$1" || exit 0`,
      `echo $$ >> ${pids}`,
      'sleep 60 &',
      `echo $! >> ${pids}`,
      'sleep 60',
    ]);
    await site.define({ TEST_COMMAND: `${validator} {}`, TEST_TIMEOUT: '1' });
    const before = await applyFirst(site);
    site.manager.serve(ROUTE, V2);

    const { value: result, seconds } = await timed(() => site.run());

    await expectFailure(site, result, before, {
      code: 75,
      line: /^app: validate: the validator timed out after 1 s$/m,
    });
    expect(seconds).toBeLessThan(4);
    const started = await pidsIn(pids);
    await waitFor('the hung validator to be gone', () =>
      started.some(isRunning) ? undefined : true,
    );
    expect(await site.reloads()).toBe(1);
  });
});

describe('a reload that lies', () => {
  describe('VERIFY_COMMAND', () => {
    let broken: string;
    beforeEach(async () => {
      // Stands in for a health check of the reloaded service, which fails
      // with the new config while the file `broken` exists.
      broken = join(site.box.root, 'service-broken');
      const verify = await script(site.box, 'verify', [
        `if [ -e ${broken} ] && grep -q 192.0.2.20 ${site.live}; then`,
        '  echo "health check: 503 from web.test" >&2',
        '  exit 1',
        'fi',
      ]);
      await site.define({ VERIFY_COMMAND: verify });
    });

    it('when the verification fails then the old config is restored, exit 69, ETag kept', async () => {
      const before = await applyFirst(site);
      site.manager.serve(ROUTE, V2);
      await writeFile(broken, '');

      const result = await site.run();

      await expectFailure(site, result, before, {
        code: 69,
        line: line(
          'app: reload: VERIFY_COMMAND exited with 1: health check: 503 from web.test ' +
            '(previous config restored)',
        ),
      });
      expect(await site.reloads()).toBe(3);
    });

    it('when the verification passes again then the next run applies and stores the ETag', async () => {
      await applyFirst(site);
      site.manager.serve(ROUTE, V2);
      await writeFile(broken, '');
      await site.run();
      await rm(broken);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toBe(
        `app: applied ${weakTag(V2)} (${V2.length} bytes), reloaded; ` +
          'recovered after 1 failed run\n',
      );
      expect((await readState(site)).etag).toBe(weakTag(V2));
    });

    it('when a run dies while verifying then the next run verifies again before storing the ETag', async () => {
      const before = await applyFirst(site);
      site.manager.serve(ROUTE, V2);
      const hold = join(site.box.root, 'hold');
      const verifying = join(site.box.root, 'verifying');
      const verify = await script(site.box, 'verify-slow', [
        `grep -q 192.0.2.20 ${site.live} || exit 0`,
        `echo $$ >> ${verifying}`,
        `[ -e ${hold} ] || exit 0`,
        'sleep 30',
      ]);
      killLater(verifying);
      await site.define({ VERIFY_COMMAND: verify, RELOAD_TIMEOUT: '40' });
      await writeFile(hold, '');

      const run = spawn(CLI_PATH, ['run', 'app'], { env: site.box.env, stdio: 'ignore' });
      const exited = new Promise((resolve) => run.once('exit', resolve));
      const [verifier = 0] = await waitFor('the verification to start', () =>
        pidsIn(verifying).then((pids) => (pids.length ? pids : undefined)),
      );
      run.kill('SIGKILL');
      await exited;
      process.kill(-verifier, 'SIGKILL');
      await rm(hold);
      expect(await readFile(site.live, 'utf8')).toBe(V2);
      expect((await readState(site)).etag).toBe(before.etag);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain(`app: applied ${weakTag(V2)}`);
      expect(await pidsIn(verifying)).toHaveLength(2);
      expect((await readState(site)).etag).toBe(weakTag(V2));
      expect(await strayFiles(site)).toEqual([]);
    });
  });

  describe('a real nginx', () => {
    let nginx: Nginx;
    let blocker: Server;
    beforeEach(async () => {
      nginx = await startNginx(site.box.liveDir, { body: 'v1\n' });
      blocker = await holdPort();
      site.manager.serve(ROUTE, await readFile(nginx.confPath));
      const { prefix, confPath } = nginx;
      await site.define({
        CONF_FILE: confPath,
        TEST_COMMAND: `${NGINX_BIN} -t -q -p ${prefix} -c {}`,
        RELOAD_COMMAND: nginx.reloadArgv.join(' '),
        RELOAD_CHECK: 'nginx',
        RELOAD_TIMEOUT: '8',
      });
    });

    const withListen = (port: number, body: string) => {
      const config = nginxConfig({ port: nginx.port, prefix: nginx.prefix, body });
      const listen = `listen 127.0.0.1:${nginx.port};`;
      return config.replace(listen, `${listen}\n        listen 127.0.0.1:${port};`);
    };

    it('when nginx accepts the new config then it serves it and the ETag is stored', async () => {
      await applyFirst(site);
      const config = withListen(await freeTcpPort(), 'v2\n');
      site.manager.serve(ROUTE, config);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      await nginx.waitForBody('/', 'v2\n');
      expect((await readState(site)).etag).toBe(weakTag(config));
    });

    it('when nginx keeps its old config after reload exits 0 then it is rolled back, exit 69', async () => {
      const before = await applyFirst(site);
      const port = (blocker.address() as { port: number }).port;
      site.manager.serve(ROUTE, withListen(port, 'v2\n'));

      const result = await site.run();

      // nginx -t does not bind, so only the master finds the port taken.
      await expectFailure(site, result, before, {
        code: 69,
        line: line(
          `app: reload: nginx kept its old config: bind() to 127.0.0.1:${port} failed ` +
            '(98: Address already in use) (previous config restored)',
        ),
      });
      expect(await nginx.get('/')).toEqual({ status: 200, body: 'v1\n' });
      expect(isRunning(nginx.masterPid)).toBe(true);
    });
  });
});

// A listening socket held by this process, as another daemon would hold it.
async function holdPort(): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const untrack = track({
    stop: async () => {
      untrack();
      await new Promise((resolve) => server.close(resolve));
    },
    stopNow: () => undefined,
  });
  return server;
}
