import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import etag from 'etag';
import { describe, expect, test } from 'vitest';
import { runParts } from './cli.js';
import { runChecked, runCommand } from './command.js';
import { DNSMASQ_BIN, dnsmasqConfig, startDnsmasq } from './dnsmasq.js';
import { httpGet } from './http-get.js';
import { startManager, type Fault, type Manager } from './manager.js';
import { NGINX_BIN, nginxConfig, startNginx } from './nginx.js';
import { isRunning } from './processes.js';
import { freeUdpPort, makeSandbox } from './sandbox.js';

const SYSTEM_PATH = { PATH: '/usr/sbin:/usr/bin:/bin' };

describe('binaries', () => {
  test.each([NGINX_BIN, DNSMASQ_BIN, '/usr/bin/run-parts'])(
    'when the harness runs then %s is installed',
    (path) => expect(existsSync(path)).toBe(true),
  );
});

describe('sandbox', () => {
  test('when a sandbox is made then it has the dirs and a cron-like env', async () => {
    const box = await makeSandbox();

    for (const dir of [
      box.etcDir,
      box.instancesDir,
      box.stateDir,
      box.shimDir,
      box.liveDir,
    ]) {
      expect(existsSync(dir)).toBe(true);
    }
    expect(box.root).toMatch(/\/pull-config-test-[^/]+$/);
    expect(Object.keys(box.env).sort()).toEqual([
      'PATH',
      'PULL_CONFIG_CONF_DIR',
      'PULL_CONFIG_ENV_FILE',
      'PULL_CONFIG_SHIM_DIR',
      'PULL_CONFIG_STATE_DIR',
    ]);

    await box.cleanup();
    expect(existsSync(box.root)).toBe(false);
  });

  test('when a UDP port is picked then it is free for dnsmasq on TCP as well', async () => {
    const port = await freeUdpPort();
    const server = createServer();

    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    await new Promise((resolve) => server.close(resolve));
    expect(port).toBeGreaterThan(1024);
  });
});

describe('runParts', () => {
  test('when run-parts runs a directory then the script sees only the env given', async () => {
    const box = await makeSandbox();
    const script = join(box.root, 'cron', 'pull-config');
    await mkdir(join(box.root, 'cron'));
    await writeFile(script, '#!/bin/sh\nenv | sort\necho oops >&2\nexit 3\n');
    await chmod(script, 0o755);

    const result = await runParts(join(box.root, 'cron'), { ...box.env, MARK: 'x' });

    expect(result.code).not.toBe(0);
    expect(result.stdout).toContain('MARK=x');
    expect(result.stdout).toContain(`PULL_CONFIG_STATE_DIR=${box.stateDir}`);
    expect(result.stdout).not.toContain('HOME=');
    expect(result.stderr).toContain('oops');
  });
});

describe('manager', () => {
  let manager: Manager;
  const config = Buffer.from('server { listen 80; }\n');

  async function fresh(): Promise<Manager> {
    manager = await startManager();
    manager.serve('/nginx.conf', config);
    return manager;
  }

  test('when a path is served then it answers 200 with the weak ETag of Express', async () => {
    const { url } = await fresh();

    const response = await httpGet(`${url}/nginx.conf`);

    expect(response.status).toBe(200);
    expect(response.body).toEqual(config);
    expect(response.headers.etag).toBe(etag(config, { weak: true }));
    expect(response.headers.etag).toMatch(/^W\//);
  });

  test.each([
    ['the current ETag', (tag: string) => tag],
    ['a list holding the current ETag', (tag: string) => `"other", ${tag}, W/"x"`],
    ['the current ETag without W/', (tag: string) => tag.slice(2)],
  ])(
    'when the manager is asked with %s then it answers 304 and still sends the ETag',
    async (_, ifNoneMatch) => {
      const { url } = await fresh();
      const tag = etag(config, { weak: true });

      const response = await httpGet(`${url}/nginx.conf`, {
        'If-None-Match': ifNoneMatch(tag),
      });

      expect(response.status).toBe(304);
      expect(response.headers.etag).toBe(tag);
      expect(response.body.length).toBe(0);
    },
  );

  test('when the ETag is stale then it answers 200 with the new body', async () => {
    const { url } = await fresh();

    const response = await httpGet(`${url}/nginx.conf`, { 'If-None-Match': 'W/"5-old"' });

    expect(response.status).toBe(200);
    expect(response.body).toEqual(config);
  });

  test('when the body is not UTF-8 then the exact bytes arrive', async () => {
    const { url } = await fresh();
    const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a, 0xff, 0x00]);
    manager.serve('/latin1', latin1, { contentType: 'application/octet-stream' });

    const response = await httpGet(`${url}/latin1`);

    expect(response.body).toEqual(latin1);
    expect(response.headers.etag).toBe(etag(latin1, { weak: true }));
  });

  test('when a key is required and the token differs then it answers 401', async () => {
    const { url } = await fresh();
    manager.requireKey('s3cret');

    const wrong = await httpGet(`${url}/nginx.conf`, { Authorization: 'Bearer nope' });
    const right = await httpGet(`${url}/nginx.conf`, { Authorization: 'Bearer s3cret' });

    expect([wrong.status, right.status]).toEqual([401, 200]);
    expect(manager.requests.map((r) => r.headers.authorization)).toEqual([
      'Bearer nope',
      'Bearer s3cret',
    ]);
    expect(manager.requests[0]).toMatchObject({ method: 'GET', path: '/nginx.conf' });
  });

  const answers: {
    fault: Fault;
    status: number;
    header: string;
    value: string | undefined;
  }[] = [
    {
      fault: { kind: 'status', status: 503, headers: { 'Retry-After': '7' } },
      status: 503,
      header: 'retry-after',
      value: '7',
    },
    {
      fault: { kind: 'status', status: 302, headers: { Location: '/login' } },
      status: 302,
      header: 'location',
      value: '/login',
    },
    { fault: { kind: 'no-etag' }, status: 200, header: 'etag', value: undefined },
    {
      fault: { kind: 'html' },
      status: 200,
      header: 'content-type',
      value: 'text/html; charset=utf-8',
    },
    {
      fault: { kind: 'slow', ms: 200 },
      status: 200,
      header: 'etag',
      value: etag(config, { weak: true }),
    },
  ];
  test.each(answers)(
    'when the fault is $fault.kind then it answers $status with $header $value',
    async ({ fault, status, header, value }) => {
      const { url } = await fresh();
      manager.misbehave('/nginx.conf', fault);

      const response = await httpGet(`${url}/nginx.conf`);

      expect(response.status).toBe(status);
      expect(response.headers[header]).toBe(value);
    },
  );

  test('when a fault is cleared then the path is served normally again', async () => {
    const { url } = await fresh();
    manager.misbehave('/nginx.conf', { kind: 'status', status: 500 });
    manager.misbehave('/nginx.conf', undefined);

    expect((await httpGet(`${url}/nginx.conf`)).status).toBe(200);
  });

  test.each(['truncate', 'truncate-chunked'] as const)(
    'when the fault is %s then the client sees the body cut short',
    async (kind) => {
      const { url } = await fresh();
      manager.misbehave('/nginx.conf', { kind });

      await expect(httpGet(`${url}/nginx.conf`)).rejects.toThrow();
    },
  );

  test.each(['stall-headers', 'stall-body'] as const)(
    'when the fault is %s then the client times out and close() still returns',
    async (kind) => {
      const { url } = await fresh();
      manager.misbehave('/nginx.conf', { kind });

      await expect(httpGet(`${url}/nginx.conf`, {}, 300)).rejects.toThrow();
      const pending = httpGet(`${url}/nginx.conf`, {}, 30_000).catch(
        (error: Error) => error,
      );
      await manager.close();

      expect(await pending).toBeInstanceOf(Error);
    },
  );

  test('when a gzip bomb is read to the end then it inflates to the stated size', async () => {
    const { url } = await fresh();
    manager.misbehave('/nginx.conf', { kind: 'gzip-bomb', bytes: 4 * 1024 * 1024 });

    const response = await httpGet(`${url}/nginx.conf`);
    const inflated = await gunzipSize(response.body);
    await manager.bombs[0]?.settled;

    expect(response.headers['content-encoding']).toBe('gzip');
    expect(response.body.length).toBeLessThan(64 * 1024);
    expect(inflated).toBe(4 * 1024 * 1024);
    expect(manager.bombAborted).toBe(false);
  });

  test('when a client gives up on a 1 GiB gzip bomb then the abort is recorded', async () => {
    const { url } = await fresh();
    manager.misbehave('/nginx.conf', { kind: 'gzip-bomb', bytes: 1024 ** 3 });

    await readInflatedUpTo(`${url}/nginx.conf`, 1024 * 1024);
    await manager.bombs[0]?.settled;

    expect(manager.bombAborted).toBe(true);
    // The server stops generating once the client stops reading.
    expect(manager.bombs[0]?.inflatedBytesSent).toBeLessThan(256 * 1024 ** 2);
  });
});

describe('nginx', () => {
  test('when nginx is started by the harness then it serves the configured body', async () => {
    const box = await makeSandbox();

    const nginx = await startNginx(box.liveDir, { body: 'hello from v1\n' });

    expect(await nginx.get('/anything')).toEqual({
      status: 200,
      body: 'hello from v1\n',
    });
    expect(nginx.workerPids()).toHaveLength(1);
    expect(await readFile(nginx.pidFile, 'utf8')).toBe(`${nginx.masterPid}\n`);
  });

  test('when a new config is reloaded then the same master serves the new body', async () => {
    const box = await makeSandbox();
    const nginx = await startNginx(box.liveDir, { body: 'v1' });
    const { port, prefix } = nginx;
    await writeFile(nginx.confPath, nginxConfig({ port, prefix, body: 'v2 "quoted"\n' }));

    await runChecked(NGINX_BIN, ['-t', '-p', prefix, '-c', nginx.confPath], SYSTEM_PATH);
    const [file = '', ...args] = nginx.reloadArgv;
    await runChecked(file, args, SYSTEM_PATH);

    await nginx.waitForBody('/', 'v2 "quoted"\n', 10_000);
    expect(isRunning(nginx.masterPid)).toBe(true);
  });

  test('when nginx -t checks a broken config then it fails and names the problem', async () => {
    const box = await makeSandbox();
    const nginx = await startNginx(box.liveDir);
    const broken = join(box.liveDir, 'broken.conf');
    await writeFile(
      broken,
      nginxConfig(nginx).replace('worker_processes 1;', 'worker_procs 1;'),
    );

    const result = await runCommand(NGINX_BIN, ['-t', '-p', nginx.prefix, '-c', broken], {
      env: SYSTEM_PATH,
    });

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('unknown directive "worker_procs"');
  });

  test('when nginx is stopped then its master and workers are gone', async () => {
    const box = await makeSandbox();
    const nginx = await startNginx(box.liveDir);
    const pids = [nginx.masterPid, ...nginx.workerPids()];

    await nginx.stop();

    expect(pids.filter(isRunning)).toEqual([]);
    await expect(nginx.get('/')).rejects.toThrow();
  });
});

describe('dnsmasq', () => {
  test('when dnsmasq is started by the harness then a query returns the record', async () => {
    const box = await makeSandbox();

    const dns = await startDnsmasq(box.liveDir, { records: { 'web.test': '10.1.2.3' } });

    expect(await dns.query('web.test')).toEqual(['10.1.2.3']);
    expect(await dns.query('unknown.test')).toEqual([]);
  });

  test('when dnsmasq restarts with a changed record then a query returns the new IP', async () => {
    const box = await makeSandbox();
    const dns = await startDnsmasq(box.liveDir, { records: { 'web.test': '10.1.2.3' } });
    const before = dns.pid();
    const { port, pidFile } = dns;
    const records = { 'web.test': '10.9.9.9' };
    await writeFile(dns.confPath, dnsmasqConfig({ port, pidFile, records }));

    await runChecked(DNSMASQ_BIN, ['--test', '-C', dns.confPath], SYSTEM_PATH);
    await runChecked(dns.restartScript, [], { PATH: '/usr/bin:/bin' });

    expect(await dns.query('web.test')).toEqual(['10.9.9.9']);
    expect(dns.pid()).not.toBe(before);
    expect(isRunning(before ?? 0)).toBe(false);
  });

  test('when dnsmasq is stopped then it no longer runs', async () => {
    const box = await makeSandbox();
    const dns = await startDnsmasq(box.liveDir);
    const pid = dns.pid() ?? 0;

    await dns.stop();

    expect(isRunning(pid)).toBe(false);
  });
});

describe('cleanup', () => {
  const left: { nginx?: number; dnsmasq?: number | undefined; root?: string } = {};

  test('when a test leaves daemons running and its sandbox behind', async () => {
    const box = await makeSandbox();
    left.root = box.root;
    left.nginx = (await startNginx(box.liveDir)).masterPid;
    left.dnsmasq = (await startDnsmasq(box.liveDir)).pid();
  });

  test('then the harness has stopped them and removed the sandbox by the next test', () => {
    expect(isRunning(left.nginx ?? 0)).toBe(false);
    expect(isRunning(left.dnsmasq ?? 0)).toBe(false);
    expect(existsSync(left.root ?? '/nonexistent')).toBe(false);
  });
});

function gunzipSize(body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const gunzip = createGunzip();
    gunzip.on('data', (chunk: Buffer) => (size += chunk.length));
    gunzip.once('end', () => resolve(size));
    gunzip.once('error', reject);
    gunzip.end(body);
  });
}

// Streams and inflates the response, hanging up once `limit` bytes came out,
// as a careful client would.
async function readInflatedUpTo(url: string, limit: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let size = 0;
      const gunzip = res.pipe(createGunzip());
      gunzip.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size < limit) return;
        req.destroy();
        gunzip.destroy();
        resolve();
      });
      gunzip.once('end', () => reject(new Error(`body ended before ${limit} bytes`)));
      gunzip.once('error', reject);
    });
    req.once('error', () => undefined);
    req.end();
  });
}
