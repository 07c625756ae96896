import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import etag from 'etag';
import { beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { startManager, type Fault, type Manager } from '../helpers/manager.js';
import {
  applyFirst,
  BAD,
  expectFailure,
  line,
  lines,
  makeSite,
  readState,
  ROUTE,
  V1,
  V2,
  type Site,
} from './site.js';

// Answers from the manager that are not a config, statuses, redirects, ETag
// bookkeeping, and the memory of a rejected candidate.

const weakTag = (body: string | Buffer) => etag(body, { weak: true });

// Makes the manager answer differently.
type Change = (manager: Manager) => void;

let site: Site;
beforeEach(async () => {
  site = await makeSite();
});

describe('responses that are not a config', () => {
  const HTML = '<!DOCTYPE html>\n<html><body>Maintenance</body></html>\n';
  const empty =
    'check: the manager sent an empty config (set ALLOW_EMPTY=yes if that is right)';
  const html = 'check: the manager sent an HTML page instead of a config';
  const cutOff = (where: string) => `fetch: the response from ${where} was cut off`;
  const notConfigs: [string, Change, number, (where: string) => string][] = [
    ['an empty body', (m) => m.serve(ROUTE, ''), 65, () => empty],
    ['only white space', (m) => m.serve(ROUTE, ' \n\t\r\n'), 65, () => empty],
    [
      'an HTML page labelled text/html',
      (m) => m.misbehave(ROUTE, { kind: 'html' }),
      65,
      () => html,
    ],
    [
      'an HTML page labelled text/plain',
      (m) => m.serve(ROUTE, `  ${HTML}`, { contentType: 'text/plain' }),
      65,
      () => html,
    ],
    [
      'a body short of its Content-Length',
      (m) => m.misbehave(ROUTE, { kind: 'truncate' }),
      75,
      cutOff,
    ],
    [
      'a chunked body cut off before its last chunk',
      (m) => m.misbehave(ROUTE, { kind: 'truncate-chunked' }),
      75,
      cutOff,
    ],
    [
      'a body larger than MAX_SIZE',
      (m) => m.serve(ROUTE, `# ${'x'.repeat(70)}\n`.repeat(16 * 1024)),
      65,
      (where) =>
        `fetch: the config from ${where} is larger than MAX_SIZE (1048576 bytes)`,
    ],
  ];

  it.each(notConfigs)(
    'when the manager sends %s then it reaches neither the validator nor the disk',
    async (_, misbehave, code, cause) => {
      await site.define({ MAX_SIZE: '1M' });
      const before = await applyFirst(site);
      misbehave(site.manager);

      const result = await site.run();

      const where = `${site.manager.url}${ROUTE}`;
      await expectFailure(site, result, before, {
        code,
        line: line(`app: ${cause(where)}`),
      });
      expect(await site.validations()).toBe(1);
      expect(await site.reloads()).toBe(1);
    },
  );

  it('when the manager sends a gzip bomb then reading stops at MAX_SIZE and the connection closes', async () => {
    await site.define({ MAX_SIZE: '1M' });
    const before = await applyFirst(site);
    site.manager.misbehave(ROUTE, { kind: 'gzip-bomb', bytes: 1024 ** 3 });

    const result = await site.run();
    await site.manager.bombs[0]?.settled;

    await expectFailure(site, result, before, { code: 65, line: /larger than MAX_SIZE/ });
    expect(site.manager.bombAborted).toBe(true);
    expect(site.manager.bombs[0]?.inflatedBytesSent).toBeLessThan(64 * 1024 ** 2);
    expect(await site.validations()).toBe(1);
  });

  it.each([
    ['an empty body', ''],
    ['only white space', '\n \n'],
  ])(
    'when ALLOW_EMPTY=yes and the manager sends %s then it is applied',
    async (_, body) => {
      await site.define({ ALLOW_EMPTY: 'yes' });
      await applyFirst(site);
      site.manager.serve(ROUTE, body);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(await readFile(site.live, 'utf8')).toBe(body);
      expect(await site.validations()).toBe(2);
    },
  );
});

describe('statuses', () => {
  it('when the manager answers 304 without an ETag then the stored ETag is kept', async () => {
    const before = await applyFirst(site);
    site.manager.misbehave(ROUTE, { kind: 'status', status: 304 });

    const result = await site.run();

    expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect((await readState(site)).etag).toBe(before.etag);
    expect(site.manager.requests[1]?.headers['if-none-match']).toBe(before.etag);
  });

  // Each with what the line says in its parentheses, given the manager's URL.
  const refusals: [string, Change, (url: string) => string][] = [
    [
      'a wrong key with 401',
      (m) => m.requireKey('another-key'),
      (url) => `HTTP 401 from ${url}${ROUTE}`,
    ],
    [
      '403',
      (m) => m.misbehave(ROUTE, { kind: 'status', status: 403 }),
      (url) => `HTTP 403 from ${url}${ROUTE}`,
    ],
    [
      'a redirect to its login page',
      (m) => m.misbehave(ROUTE, redirect(302, '/login?next=%2Fsites%2Flab&token=T0k3n')),
      (url) => `redirect to ${url}/login`,
    ],
    [
      'a redirect to a sign-in page elsewhere',
      (m) => m.misbehave(ROUTE, redirect(303, 'https://sso.example/sign-in?sid=T0k3n')),
      () => 'redirect to https://sso.example/sign-in',
    ],
  ];

  it.each(refusals)(
    'when the manager answers %s then the line says it refused the key and exit is 77',
    async (_, refuse, detail) => {
      const before = await applyFirst(site);
      refuse(site.manager);

      const result = await site.run();

      await expectFailure(site, result, before, {
        code: 77,
        line: line(
          `app: fetch: the manager refused the key (${detail(site.manager.url)})`,
        ),
      });
      expect(site.manager.requests).toHaveLength(2);
    },
  );

  it('when the manager answers 404 then the line says the route is unknown and exit is 78', async () => {
    const before = await applyFirst(site);
    site.manager.misbehave(ROUTE, { kind: 'status', status: 404, body: 'Cannot GET' });

    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 78,
      line: line(
        `app: fetch: the manager does not know ${site.manager.url}${ROUTE} (HTTP 404)`,
      ),
    });
  });

  const otherStatuses: [number, string, number, string][] = [
    [
      500,
      '<h1>Internal Server Error</h1>\n<pre>at db.js:1</pre>',
      75,
      'Internal Server Error',
    ],
    [502, '\n\n   Bad Gateway   \n', 75, 'Bad Gateway'],
    [429, 'Too many requests, slow down', 75, 'Too many requests, slow down'],
    [400, 'unknown site "lab"\nmore', 78, 'unknown site "lab"'],
    [418, '', 78, ''],
  ];

  it.each(otherStatuses)(
    'when the manager answers %i then the line gives the code and the first line of the body',
    async (status, body, code, first) => {
      const before = await applyFirst(site);
      site.manager.misbehave(ROUTE, { kind: 'status', status, body });

      const result = await site.run();

      const where = `${site.manager.url}${ROUTE}`;
      const said = first ? `: ${first}` : '';
      await expectFailure(site, result, before, {
        code,
        line: line(`app: fetch: ${where} answered HTTP ${status}${said}`),
      });
    },
  );

  describe('Retry-After', () => {
    const waits: [number, string, () => string][] = [
      [429, 'seconds', () => '2'],
      [503, 'an HTTP date', () => new Date(Date.now() + 3000).toUTCString()],
    ];

    it.each(waits)(
      'when the manager answers %i with Retry-After in %s then runs before it send nothing',
      async (status, _, retryAfter) => {
        const before = await applyFirst(site);
        const headers = { 'Retry-After': retryAfter() };
        site.manager.misbehave(ROUTE, { kind: 'status', status, headers });

        const refused = await site.run();
        const early = await site.run();

        await expectFailure(site, refused, before, {
          code: 75,
          line: /^app: fetch: the manager asks to retry after \S+ \(HTTP \d+\)$/m,
        });
        expect(early).toMatchObject({ code: 75, stdout: '', stderr: '' });
        expect(site.manager.requests).toHaveLength(2);
      },
    );

    it.each([
      ['seconds', '99999999'],
      ['an HTTP date', 'Fri, 01 Jan 2100 00:00:00 GMT'],
    ])(
      'when Retry-After in %s asks for years then the wait is capped at an hour',
      async (_, retryAfter) => {
        await applyFirst(site);
        site.manager.misbehave(ROUTE, {
          kind: 'status',
          status: 429,
          headers: { 'Retry-After': retryAfter },
        });

        await site.run();

        const state = JSON.parse(
          await readFile(join(site.box.stateDir, 'app', 'state.json'), 'utf8'),
        ) as { retryAfter: string };
        const wait = Date.parse(state.retryAfter) - Date.now();
        expect(wait).toBeGreaterThan(55 * 60 * 1000);
        expect(wait).toBeLessThanOrEqual(60 * 60 * 1000);
      },
    );

    it('when the Retry-After time has passed then the next run asks again', async () => {
      await applyFirst(site);
      site.manager.misbehave(ROUTE, {
        kind: 'status',
        status: 429,
        headers: { 'Retry-After': '1' },
      });
      await site.run();
      site.manager.misbehave(ROUTE, undefined);
      site.manager.serve(ROUTE, V2);
      await sleep(1100);

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(site.manager.requests).toHaveLength(3);
      expect(await readFile(site.live, 'utf8')).toBe(V2);
    });
  });
});

function redirect(status: number, location: string): Fault {
  return { kind: 'status', status, headers: { Location: location } };
}

describe('redirects', () => {
  it.each([301, 302, 303, 307, 308])(
    'when the manager answers %i then it is not followed and the line names the target',
    async (status) => {
      const before = await applyFirst(site);
      site.manager.serve('/moved/app.conf', V2);
      site.manager.misbehave(ROUTE, redirect(status, '/moved/app.conf?sig=Qu3ry'));

      const result = await site.run();

      const from = `${site.manager.url}${ROUTE}`;
      await expectFailure(site, result, before, {
        code: 78,
        line: line(
          `app: fetch: ${from} redirects to ${site.manager.url}/moved/app.conf; ` +
            'redirects are not followed',
        ),
      });
      expect(site.manager.requests.map((request) => request.path)).toEqual([
        ROUTE,
        ROUTE,
      ]);
    },
  );

  it.each([
    [
      '/authority/app.conf',
      'redirects to URL/authority/app.conf; redirects are not followed',
    ],
    ['http://[bad', 'redirects to a malformed location'],
  ])(
    'when the manager redirects to %s then it is a plain redirect, exit 78',
    async (to, said) => {
      const before = await applyFirst(site);
      site.manager.misbehave(ROUTE, redirect(302, to));

      const result = await site.run();

      const from = `${site.manager.url}${ROUTE}`;
      await expectFailure(site, result, before, {
        code: 78,
        line: line(`app: fetch: ${from} ${said.replace('URL', site.manager.url)}`),
      });
    },
  );

  describe('to another origin', () => {
    let other: Manager;
    beforeEach(async () => {
      other = await startManager();
      other.serve(ROUTE, V2);
    });

    it('when the manager redirects to another port then nothing is sent there', async () => {
      const before = await applyFirst(site);
      site.manager.misbehave(ROUTE, redirect(307, `${other.url}${ROUTE}`));

      const result = await site.run();

      await expectFailure(site, result, before, {
        code: 78,
        line: new RegExp(`redirects to ${other.url}${ROUTE}; redirects are not followed`),
      });
      expect(other.requests).toEqual([]);
    });

    it('when CONF_URL names another origin than MANAGER_URL then the key is not sent there', async () => {
      await site.define({ CONF_URL: `${other.url}${ROUTE}` });

      const result = await site.run();

      expect(result.code, result.stderr).toBe(0);
      expect(await readFile(site.live, 'utf8')).toBe(V2);
      expect(other.requests).toHaveLength(1);
      expect(other.requests[0]?.headers.authorization).toBeUndefined();
      expect(site.manager.requests).toEqual([]);
    });
  });
});

describe('ETag bookkeeping', () => {
  const lastModified = { 'Last-Modified': 'Tue, 01 Dec 2026 10:00:00 GMT' };
  const tags: [string, string][] = [
    ['a weak ETag', 'W/"1d-5DjAipoBAcAivsY8xKq+/w=="'],
    ['a strong ETag', '"v1.2:4f/a+b=c~d!e*f"'],
    // RFC 9110 allows bytes above 0x7f (obs-text); Node carries them as Latin-1.
    ['an ETag with a Latin-1 byte', 'W/"caf\u00e9"'],
  ];

  it.each(tags)(
    'when the manager sends %s then the next request returns it byte for byte',
    async (_, tag) => {
      const headers = { ETag: tag, 'Content-Type': 'text/plain', ...lastModified };
      site.manager.misbehave(ROUTE, { kind: 'status', status: 200, headers, body: V1 });
      await applyFirst(site);
      site.manager.misbehave(ROUTE, {
        kind: 'status',
        status: 304,
        headers: { ETag: tag },
      });

      const result = await site.run();

      expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
      expect((await readState(site)).etag).toBe(tag);
      expect(site.manager.requests[1]?.headers['if-none-match']).toBe(tag);
      for (const request of site.manager.requests) {
        expect(request.headers['if-modified-since']).toBeUndefined();
      }
    },
  );

  // Each turns the state file a good run left into a damaged one.
  const corruptions: [string, (text: string) => string][] = [
    ['is cut off halfway', (text) => text.slice(0, text.length / 2)],
    ['holds null', () => 'null'],
    ['holds a list', () => '[]'],
    ['has an ETag with a line break', (text) => withEtag(text, 'W/"x"\r\nX-Injected: 1')],
    ['has an ETag that is a number', (text) => withEtag(text, 7)],
  ];

  it.each(corruptions)(
    'when the state file %s then the request is unconditional and the run succeeds',
    async (_, damage) => {
      await applyFirst(site);
      const path = join(site.box.stateDir, 'app', 'state.json');
      await writeFile(path, damage(await readFile(path, 'utf8')));

      const result = await site.run();

      expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
      const request = site.manager.requests[1]?.headers ?? {};
      expect(request['if-none-match']).toBeUndefined();
      expect(request['x-injected']).toBeUndefined();
      expect((await readState(site)).etag).toBe(weakTag(V1));
    },
  );

  it('when the state file is a directory then the run still fetches and succeeds', async () => {
    await applyFirst(site);
    const path = join(site.box.stateDir, 'app', 'state.json');
    await rm(path);
    await mkdir(path);

    const result = await site.run();

    expect(result.code, result.stderr).toBe(0);
    expect(site.manager.requests[1]?.headers['if-none-match']).toBeUndefined();
  });

  it('when the manager sends no ETag then an unchanged body is neither written nor reloaded', async () => {
    site.manager.misbehave(ROUTE, { kind: 'no-etag' });
    const first = await site.run();
    const written = await stat(site.live);

    const later = [await site.run(), await site.run(), await site.run()];

    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe(`app: applied (no ETag) (${V1.length} bytes), reloaded\n`);
    expect(lines(first.stderr)).toEqual([
      `app: warning: ${site.manager.url}${ROUTE} sends no ETag, so every run downloads the config`,
    ]);
    for (const result of later)
      expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const after = await stat(site.live);
    expect([after.ino, after.mtimeMs]).toEqual([written.ino, written.mtimeMs]);
    expect(await site.reloads()).toBe(1);
    expect(await site.validations()).toBe(1);
  });
});

function withEtag(stateText: string, etagValue: unknown): string {
  return JSON.stringify({ ...(JSON.parse(stateText) as object), etag: etagValue });
}

describe('a rejected candidate', () => {
  let before: { live: Buffer; etag: string | undefined };
  beforeEach(async () => {
    before = await applyFirst(site);
    site.manager.serve(ROUTE, BAD);
  });

  it('when the validator rejects a config then exit is 65 and nothing changes', async () => {
    const result = await site.run();

    await expectFailure(site, result, before, {
      code: 65,
      line: line(
        `app: validate: the validator rejected the config: ` +
          `dnsmasq: bad option at line 2 of ${join(site.box.stateDir, 'app', 'rejected.conf')}`,
      ),
    });
    expect(await site.validations()).toBe(2);
    expect(await site.reloads()).toBe(1);
  });

  it('when the manager still serves it then the next run gets 304 and tests nothing', async () => {
    await site.run();

    const result = await site.run();

    expect(result).toMatchObject({ code: 65, stdout: '', stderr: '' });
    expect(site.manager.requests[2]?.headers['if-none-match']).toBe(
      `${weakTag(V1)}, ${weakTag(BAD)}`,
    );
    expect(await site.validations()).toBe(2);
  });

  it('when status is asked then it shows the config as rejected', async () => {
    await site.run();

    const entry = await statusOf(site);

    expect(entry.result).toBe('rejected');
    expect(entry.rejected).toMatchObject({ etag: weakTag(BAD) });
    expect(entry.rejected?.message).toContain('bad option at line 2');
  });

  it('when REJECT_TTL has passed then the same config is tested again', async () => {
    await site.define({ REJECT_TTL: '1' });
    await site.run();
    await sleep(1100);

    const result = await site.run();

    expect(result.code).toBe(65);
    expect(site.manager.requests[2]?.headers['if-none-match']).toBe(weakTag(V1));
    expect(await site.validations()).toBe(3);
  });

  it('when the manager serves a new config then it is tried at once', async () => {
    await site.run();
    site.manager.serve(ROUTE, V2);

    const result = await site.run();

    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`app: applied ${weakTag(V2)}`);
    expect(await readFile(site.live, 'utf8')).toBe(V2);
    expect(await readState(site)).toMatchObject({ etag: weakTag(V2) });
    expect((await readState(site)).rejected).toBeUndefined();
  });

  it('when the manager goes back to the applied config then the mark is dropped', async () => {
    await site.run();
    site.manager.serve(ROUTE, V1);

    const result = await site.run();

    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect((await readState(site)).rejected).toBeUndefined();
    expect(await site.validations()).toBe(2);
  });
});

interface StatusEntry {
  result?: string;
  rejected?: { etag?: string; message?: string };
}

async function statusOf(target: Site): Promise<StatusEntry> {
  const result = await runCli(['status', 'app', '--json'], target.box.env);
  expect(result.code, result.stderr).toBe(0);
  const report = JSON.parse(result.stdout) as { instances: StatusEntry[] };
  return report.instances[0] ?? {};
}
