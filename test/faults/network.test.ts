import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import etag from 'etag';
import { beforeEach, describe, expect, it } from 'vitest';
import { track } from '../helpers/cleanup.js';
import { startManager, type Fault, type Manager } from '../helpers/manager.js';
import { freeTcpPort } from '../helpers/sandbox.js';
import {
  applyFirst,
  expectFailure,
  KEY,
  line,
  makeSite,
  readState,
  ROUTE,
  runIsolated,
  timed,
  V2,
  type Site,
} from './site.js';

// Slow, dead and unreachable managers, and several managers tried in order.

let site: Site;
beforeEach(async () => {
  site = await makeSite();
});

describe('a slow or dead manager', () => {
  const stalls: [string, Fault][] = [
    ['accepts the request and never answers', { kind: 'stall-headers' }],
    ['sends headers and half the body, then stalls', { kind: 'stall-body' }],
    ['answers only after 5 s', { kind: 'slow', ms: 5000 }],
  ];

  it.each(stalls)(
    'when the manager %s then the request is cut off at FETCH_TIMEOUT with exit 75',
    async (_, fault) => {
      await site.define({ FETCH_TIMEOUT: '1' });
      const before = await applyFirst(site);
      site.manager.serve(ROUTE, V2);
      site.manager.misbehave(ROUTE, fault);

      const { value: result, seconds } = await timed(() => site.run());

      await expectFailure(site, result, before, {
        code: 75,
        line: line(`app: fetch: ${site.manager.url}${ROUTE} did not answer within 1 s`),
      });
      expect(seconds).toBeLessThan(4);
      expect(await site.validations()).toBe(1);
    },
  );

  it('when only pull-config.env sets FETCH_TIMEOUT then a stalled manager is cut off at that time', async () => {
    await site.define({ FETCH_TIMEOUT: undefined });
    await writeFile(join(site.box.confDir, 'pull-config.env'), 'FETCH_TIMEOUT=1\n');
    const before = await applyFirst(site);
    site.manager.misbehave(ROUTE, { kind: 'stall-body' });

    const { value: result, seconds } = await timed(() => site.run());

    await expectFailure(site, result, before, {
      code: 75,
      line: /did not answer within 1 s/,
    });
    expect(seconds).toBeLessThan(4);
  });

  it('when nothing listens on the manager port then the line names the host and exit is 75', async () => {
    const before = await applyFirst(site);
    const port = await freeTcpPort();
    await site.managers(`http://127.0.0.1:${port}`);

    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 75,
      line: line(`app: fetch: connection refused by 127.0.0.1:${port}`),
    });
  });

  it('when the config URL carries a query string then the failure line leaves it out', async () => {
    const before = await applyFirst(site);
    const port = await freeTcpPort();
    await site.define({
      CONF_URL: `http://127.0.0.1:${port}/app.conf?signature=Qs3cr3t`,
    });

    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 75,
      line: /connection refused by/,
    });
    expect(result.stderr).not.toContain('Qs3cr3t');
  });

  it('when the manager name does not resolve then one line names the host and exit is 75', async () => {
    const before = await applyFirst(site);
    await site.managers('https://manager.invalid:1');

    const result = await runIsolated(site, '/usr/sbin/ip link set lo up');

    await expectFailure(site, result, before, {
      code: 75,
      line: line('app: fetch: cannot resolve manager.invalid'),
    });
  });

  it('when no connection is made within CONNECT_TIMEOUT then the run gives up then', async () => {
    const before = await applyFirst(site);
    await site.define({ CONNECT_TIMEOUT: '1', FETCH_TIMEOUT: '8' });
    await site.managers('https://192.0.2.1:8080');

    // Inside the namespace, a route through lo to an address nobody holds
    // swallows the SYN: a connect that hangs, without a packet leaving it.
    const setup =
      '/usr/sbin/ip link set lo up && /usr/sbin/ip route add 192.0.2.0/24 dev lo';
    const { value: result, seconds } = await timed(() => runIsolated(site, setup));

    await expectFailure(site, result, before, {
      code: 75,
      line: line('app: fetch: cannot connect to 192.0.2.1:8080 within 1 s'),
    });
    expect(seconds).toBeLessThan(5);
  });

  describe('over TLS', () => {
    let tlsUrl: string;
    beforeEach(async () => {
      tlsUrl = await startSelfSignedServer(site.box.root);
    });

    it('when the manager certificate is not trusted then the line says TLS and exit is 75', async () => {
      const before = await applyFirst(site);
      await site.managers(tlsUrl);

      const result = await site.run();

      await expectFailure(site, result, before, {
        code: 75,
        line: line(
          `app: fetch: TLS failure with ${host(tlsUrl)}: DEPTH_ZERO_SELF_SIGNED_CERT`,
        ),
      });
    });

    it('when an https manager URL reaches a plain HTTP port then the line says TLS', async () => {
      const before = await applyFirst(site);
      const url = site.manager.url.replace('http:', 'https:');
      await site.managers(url);

      const result = await site.run();

      await expectFailure(site, result, before, {
        code: 75,
        line: line(`app: fetch: TLS failure with ${host(url)}: EPROTO`),
      });
    });
  });
});

const host = (url: string) => new URL(url).host;
const weakTag = (body: string) => etag(body, { weak: true });

// A TLS server whose certificate nobody signed, on 127.0.0.1; returns its URL.
async function startSelfSignedServer(dir: string): Promise<string> {
  const key = join(dir, 'tls.key');
  const cert = join(dir, 'tls.crt');
  const request = 'req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1';
  const args = [...request.split(' '), '-keyout', key, '-out', cert];
  execFileSync('/usr/bin/openssl', args, { stdio: 'ignore' });

  const server = createHttpsServer(
    { key: await readFile(key), cert: await readFile(cert) },
    (_req, res) => res.end(V2),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const stop = async () => {
    untrack();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  const untrack = track({ stop, stopNow: () => undefined });

  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TLS port');
  return `https://127.0.0.1:${address.port}`;
}

describe('several managers', () => {
  let second: Manager;
  beforeEach(async () => {
    second = await startManager();
    second.requireKey(KEY);
    second.serve(ROUTE, V2);
  });

  it.each([' ', ',', ', ', ' ,\t'])(
    'when MANAGER_URL lists managers separated by %j and the first is down then the second serves',
    async (separator) => {
      const port = await freeTcpPort();
      await site.managers(`http://127.0.0.1:${port}${separator}${second.url}`);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toBe(
        `app: applied ${weakTag(V2)} (${V2.length} bytes), reloaded\n`,
      );
      expect(await readFile(site.live, 'utf8')).toBe(V2);
      expect(second.requests).toHaveLength(1);
    },
  );

  const retryLater = { 'Retry-After': '300' };
  const movesOn: [string, Fault | 'down'][] = [
    ['refuses connections', 'down'],
    ['never answers', { kind: 'stall-headers' }],
    ['answers 500', { kind: 'status', status: 500, body: 'boom' }],
    ['answers 502', { kind: 'status', status: 502 }],
    ['answers 503', { kind: 'status', status: 503 }],
    [
      'answers 503 with Retry-After',
      { kind: 'status', status: 503, headers: retryLater },
    ],
  ];

  it.each(movesOn)(
    'when the first manager %s then the second is asked and its config applied',
    async (_, fault) => {
      await site.define({ FETCH_TIMEOUT: '1' });
      await site.managers(`${site.manager.url} ${second.url}`);
      await applyFirst(site);
      const stored = (await readState(site)).etag;
      if (fault === 'down') await site.manager.close();
      else site.manager.misbehave(ROUTE, fault);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toBe('');
      expect(await readFile(site.live, 'utf8')).toBe(V2);
      expect(second.requests).toHaveLength(1);
      expect(second.requests[0]?.headers).toMatchObject({
        authorization: `Bearer ${KEY}`,
        'if-none-match': stored,
      });
    },
  );

  const final: { status: number; headers?: Record<string, string>; code: number }[] = [
    { status: 400, code: 78 },
    { status: 401, code: 77 },
    { status: 403, code: 77 },
    { status: 404, code: 78 },
    { status: 429, headers: { 'Retry-After': '60' }, code: 75 },
  ];

  it.each(final)(
    'when the first manager answers $status then that is final and the second is not asked',
    async ({ status, headers, code }) => {
      await site.managers(`${site.manager.url},${second.url}`);
      const before = await applyFirst(site);
      site.manager.misbehave(ROUTE, { kind: 'status', status, headers: headers ?? {} });

      const result = await site.run();

      await expectFailure(site, result, before, {
        code,
        line: new RegExp(String(status)),
      });
      expect(second.requests).toEqual([]);
    },
  );

  it('when every manager fails then one line names the last one tried and exit is 75', async () => {
    await site.managers(`${site.manager.url} ${second.url}`);
    const before = await applyFirst(site);
    site.manager.misbehave(ROUTE, { kind: 'status', status: 502 });
    second.misbehave(ROUTE, {
      kind: 'status',
      status: 500,
      body: 'database down\nstack',
    });

    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 75,
      line: line(`app: fetch: ${second.url}${ROUTE} answered HTTP 500: database down`),
    });
    expect(site.manager.requests).toHaveLength(2);
    expect(second.requests).toHaveLength(1);
  });
});
