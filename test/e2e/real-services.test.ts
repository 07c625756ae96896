import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import etag from 'etag';
import { afterEach, describe, expect, test } from 'vitest';
import { CLI_PATH, runParts } from '../helpers/cli.js';
import { dnsmasqConfig, startDnsmasq, type Dnsmasq } from '../helpers/dnsmasq.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { nginxConfig, startNginx, type Nginx } from '../helpers/nginx.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

const SITE_ID = 'site-1';
const API_KEY = 'e2e-key-0123456789';
const SHIMS = fileURLToPath(new URL('../../pull-config.d/', import.meta.url));

let liveDirs: string[] = [];

afterEach(async () => {
  const dirs = liveDirs;
  liveDirs = [];
  for (const dir of dirs) {
    const left = (await readdir(dir)).filter((name) => /^\..*\.pull-config-/.test(name));
    expect(left, `candidates left in ${dir}`).toEqual([]);
  }
});

interface Site {
  box: Sandbox;
  manager: Manager;
  // One run-parts pass over the shim dir, with the bare environment cron gives.
  cronPass(): ReturnType<typeof runParts>;
  // Installs the shim and the definition file of one instance.
  addInstance(name: string, keys: Record<string, string>): Promise<void>;
}

async function makeSite(): Promise<Site> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(API_KEY);
  liveDirs.push(box.liveDir);
  await writeFile(
    box.envFile,
    `SITE_ID=${SITE_ID}\nMANAGER_URL=${manager.url}\nAPI_KEY=${API_KEY}\n`,
  );

  const env = { ...box.env, PULL_CONFIG_BIN: CLI_PATH };
  expect(env.PATH).toBe('/usr/bin:/bin');
  return {
    box,
    manager,
    cronPass: () => runParts(box.shimDir, env),
    addInstance: async (name, keys) => {
      await copyFile(join(SHIMS, name), join(box.shimDir, name));
      const lines = Object.entries(keys).map(([key, value]) => `${key}=${value}\n`);
      await writeFile(join(box.instancesDir, `${name}.env`), lines.join(''));
    },
  };
}

const applied = (name: string, body: string) =>
  `${name}: applied ${etag(body, { weak: true })} (${Buffer.byteLength(body)} bytes), reloaded\n`;

async function withNginx(
  site: Site,
): Promise<{ nginx: Nginx; config: (body: string) => string }> {
  const nginx = await startNginx(site.box.root, {
    confPath: join(site.box.liveDir, 'nginx.conf'),
    body: 'started by the test',
  });
  await site.addInstance('nginx', {
    CONF_FILE: nginx.confPath,
    RELOAD_COMMAND: nginx.reloadArgv.join(' '),
    TEST_COMMAND: 'nginx -t -q -c {}',
  });
  const config = (body: string) =>
    nginxConfig({ port: nginx.port, prefix: nginx.prefix, body });
  return { nginx, config };
}

async function withDnsmasq(
  site: Site,
): Promise<{ dnsmasq: Dnsmasq; config: (ip: string, extra?: string) => string }> {
  const dnsmasq = await startDnsmasq(site.box.root, {
    confPath: join(site.box.liveDir, 'dnsmasq.conf'),
    records: { 'app.test': '192.0.2.10' },
  });
  await site.addInstance('dnsmasq', {
    CONF_FILE: dnsmasq.confPath,
    RELOAD_COMMAND: dnsmasq.restartScript,
    TEST_COMMAND: 'dnsmasq --test -C {}',
  });
  const { port, pidFile, logFile } = dnsmasq;
  const config = (ip: string, extra = '') =>
    dnsmasqConfig({ port, pidFile, logFile, records: { 'app.test': ip } }) + extra;
  return { dnsmasq, config };
}

const nginxRoute = `/sites/${SITE_ID}/nginx.conf`;
const dnsmasqRoute = `/sites/${SITE_ID}/dnsmasq.conf`;

describe('a real nginx kept in sync by cron', () => {
  test('when the manager changes the config then after a run-parts pass nginx serves the new body', async () => {
    const site = await makeSite();
    const { nginx, config } = await withNginx(site);
    site.manager.serve(nginxRoute, config('started by the test'));
    const masterPid = nginx.masterPid;
    const workers = nginx.workerPids();

    expect(await site.cronPass()).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(nginx.workerPids()).toEqual(workers);

    site.manager.serve(nginxRoute, config('changed on the manager'));
    const result = await site.cronPass();

    expect(result).toMatchObject({
      code: 0,
      stdout: applied('nginx', config('changed on the manager')),
      stderr: '',
    });
    await nginx.waitForBody('/', 'changed on the manager', 2_000);
    expect(nginx.workerPids()).not.toEqual(workers);
    expect(nginx.masterPid).toBe(masterPid);

    expect(await site.cronPass()).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(site.manager.requests.at(-1)?.headers['if-none-match']).toBe(
      etag(config('changed on the manager'), { weak: true }),
    );
  });
});

describe('a real dnsmasq kept in sync by cron', () => {
  test('when the manager changes a record then after a run-parts pass dnsmasq answers it', async () => {
    const site = await makeSite();
    const { dnsmasq, config } = await withDnsmasq(site);
    site.manager.serve(dnsmasqRoute, config('192.0.2.10'));
    const pid = dnsmasq.pid();

    expect(await site.cronPass()).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(dnsmasq.pid()).toBe(pid);

    site.manager.serve(dnsmasqRoute, config('192.0.2.20'));
    const result = await site.cronPass();

    expect(result).toMatchObject({
      code: 0,
      stdout: applied('dnsmasq', config('192.0.2.20')),
      stderr: '',
    });
    expect(dnsmasq.pid()).not.toBe(pid);
    expect(await dnsmasq.query('app.test')).toEqual(['192.0.2.20']);
  });

  test('when dnsmasq --test refuses an option then the old config keeps answering', async () => {
    const site = await makeSite();
    const { dnsmasq, config } = await withDnsmasq(site);
    const live = await readFile(dnsmasq.confPath, 'utf8');
    const pid = dnsmasq.pid();
    site.manager.serve(dnsmasqRoute, config('192.0.2.30', 'no-such-option=yes\n'));

    const result = await site.cronPass();

    const badLine = live.split('\n').length;
    expect(result).toMatchObject({
      code: 1,
      stdout: '',
      stderr:
        'dnsmasq: validate: the validator rejected the config: dnsmasq: bad option at line' +
        ` ${badLine} of ${join(site.box.stateDir, 'dnsmasq', 'rejected.conf')}\n` +
        `run-parts: ${join(site.box.shimDir, 'dnsmasq')} exited with return code 65\n`,
    });
    expect(await readFile(dnsmasq.confPath, 'utf8')).toBe(live);
    expect(dnsmasq.pid()).toBe(pid);
    expect(await dnsmasq.query('app.test')).toEqual(['192.0.2.10']);
  });
});

describe('one cron pass over several instances', () => {
  test('when the manager changes both configs then one run-parts pass applies both', async () => {
    const site = await makeSite();
    const web = await withNginx(site);
    const dns = await withDnsmasq(site);
    site.manager.serve(nginxRoute, web.config('both changed'));
    site.manager.serve(dnsmasqRoute, dns.config('192.0.2.40'));

    const result = await site.cronPass();

    expect(result).toMatchObject({
      code: 0,
      stdout:
        applied('dnsmasq', dns.config('192.0.2.40')) +
        applied('nginx', web.config('both changed')),
      stderr: '',
    });
    await web.nginx.waitForBody('/', 'both changed', 2_000);
    expect(await dns.dnsmasq.query('app.test')).toEqual(['192.0.2.40']);
  });
});
