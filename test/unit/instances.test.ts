import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { legacyInstance, loadInstance } from '../../src/instances.js';
import { readSite, type Paths } from '../../src/settings.js';

let root: string;
let paths: Paths;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'pull-config-unit-'));
  paths = {
    envFile: join(root, 'environment'),
    confDir: join(root, 'conf'),
    stateDir: join(root, 'state'),
    shimDir: join(root, 'shims'),
  };
  mkdirSync(join(root, 'conf', 'instances'), { recursive: true });
});

afterEach(() => rmSync(root, { recursive: true, force: true }));

const environment = (text: string) => writeFileSync(paths.envFile, text);
const definition = (name: string, text: string) =>
  writeFileSync(join(paths.confDir, 'instances', `${name}.env`), text);
const load = async (name: string, env: NodeJS.ProcessEnv = {}) =>
  loadInstance(name, paths, await readSite(paths, env));

describe('built-in instances', () => {
  beforeEach(() =>
    environment('SITE_ID=lab-1\nMANAGER_URL=http://manager:3000/manager/\n'),
  );

  it('when nginx has no definition file then it uses the built-in route and validator', async () => {
    const nginx = await load('nginx');
    expect(nginx.urls).toEqual(['http://manager:3000/manager/sites/lab-1/nginx.conf']);
    expect(nginx.confFile).toBe('/etc/nginx/nginx.conf');
    expect(nginx.test?.argv).toEqual(['nginx', '-t', '-q', '-c', '{}']);
    expect(nginx.reload?.argv).toEqual(['systemctl', 'reload-or-restart', 'nginx']);
    expect(nginx.reloadCheck).toBe('nginx');
    expect(nginx.origin).toBe('built-in');
  });

  it('when dnsmasq is built in then it is restarted, not reloaded', async () => {
    expect((await load('dnsmasq')).reload?.argv).toEqual([
      'systemctl',
      'restart',
      'dnsmasq',
    ]);
  });

  it('when a definition file overrides one key then the others keep the built-in values', async () => {
    definition('nginx', 'CONF_URL=/sites/${SITE_ID}/nginx\n');
    const nginx = await load('nginx');
    expect(nginx.urls).toEqual(['http://manager:3000/manager/sites/lab-1/nginx']);
    expect(nginx.test?.argv[0]).toBe('nginx');
    expect(nginx.origin).toBe('built-in + definition file');
    expect(nginx.notFoundHint).toBeUndefined();
  });

  it('when the built-in route is used then a 404 hint names the newer route', async () => {
    expect((await load('dnsmasq')).notFoundHint).toContain(
      '/sites/${SITE_ID}/dnsmasq/conf',
    );
  });
});

describe('definition files', () => {
  beforeEach(() => environment('SITE_ID=lab-1\nMANAGER_URL=http://a:1, http://b:2/\n'));

  it('when MANAGER_URL lists several managers then each gets the path', async () => {
    definition('hosts', 'CONF_URL=/sites/${SITE_ID}/hosts\nCONF_FILE=/etc/hosts.d/x\n');
    expect((await load('hosts')).urls).toEqual([
      'http://a:1/sites/lab-1/hosts',
      'http://b:2/sites/lab-1/hosts',
    ]);
  });

  it('when CONF_URL is absolute then it is used as it is', async () => {
    definition('hosts', 'CONF_URL=https://other/x?y=${SITE_ID}\nCONF_FILE=/etc/x\n');
    expect((await load('hosts')).urls).toEqual(['https://other/x?y=lab-1']);
  });

  it('when SERVICE_NAME is set without RELOAD_COMMAND then systemctl reloads it', async () => {
    definition('web', 'CONF_URL=/w\nCONF_FILE=/etc/w\nSERVICE_NAME=apache2\n');
    expect((await load('web')).reload?.argv).toEqual([
      'systemctl',
      'reload-or-restart',
      'apache2',
    ]);
  });

  it.each([
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nRELOAD_COMAND=true\n',
      /x\.env:3: unknown key RELOAD_COMAND/,
    ],
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nTEST_COMMAND=a | b\n',
      /TEST_COMMAND \(.*x\.env:3\).*"\|"/,
    ],
    ['CONF_URL=/x\nCONF_FILE=etc/x\n', /CONF_FILE .* must be an absolute path/],
    ['CONF_URL=x\nCONF_FILE=/etc/x\n', /CONF_URL .* must be an http\(s\) URL or a path/],
    ['CONF_URL=/${NOPE}\nCONF_FILE=/etc/x\n', /unknown variable \$\{NOPE\}/],
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nFETCH_TIMEOUT=soon\n',
      /x\.env:3: FETCH_TIMEOUT must be a number of seconds above 0, such as 10/,
    ],
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nCONNECT_TIMEOUT=0\n',
      /x\.env:3: CONNECT_TIMEOUT must be/,
    ],
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nMAX_SIZE=16MB\n',
      /MAX_SIZE must be a size .* such as 16M/,
    ],
    [
      'CONF_URL=/x\nCONF_FILE=/etc/x\nALLOW_EMPTY=maybe\n',
      /ALLOW_EMPTY must be yes or no/,
    ],
    ['CONF_FILE=/etc/x\n', /CONF_URL is not set/],
  ])('when the file reads %j then the error is %s', async (text, message) => {
    definition('x', text);
    await expect(load('x')).rejects.toMatchObject({
      exitCode: 78,
      message: expect.stringMatching(message),
    });
  });

  it('when an instance has neither built-in nor definition then it is unknown', async () => {
    await expect(load('nope')).rejects.toMatchObject({
      exitCode: 64,
      message: expect.stringMatching(/unknown instance "nope".*pull-config --help/),
    });
  });

  it('when a name has characters run-parts would skip then it is a usage error', async () => {
    await expect(load('nginx.conf')).rejects.toMatchObject({ exitCode: 64 });
  });

  it('when a tunable is set in both places then the definition file wins', async () => {
    writeFileSync(
      join(paths.confDir, 'pull-config.env'),
      'FETCH_TIMEOUT=3\nMAX_SIZE=1M\n',
    );
    definition('x', 'CONF_URL=/x\nCONF_FILE=/etc/x\nFETCH_TIMEOUT=7\n');
    const { tunables } = await load('x');
    expect(tunables.fetchTimeoutMs).toBe(7000);
    expect(tunables.maxBytes).toBe(1024 * 1024);
    expect(tunables.connectTimeoutMs).toBe(5000);
  });
});

describe('site settings', () => {
  it.each([
    ['SITE_ID=a/b\nMANAGER_URL=http://m\n', /SITE_ID in .*environment:1 does not fit/],
    [
      'SITE_ID=a\nMANAGER_URL=ftp://m\n',
      /MANAGER_URL in .*environment:2 must start with http/,
    ],
    ['SITE_ID=a\nMANAGER_URL=http://user:pw@m\n', /must not carry credentials/],
    ['SITE_ID=a\nAPI_KEY="abc\n', /environment:2: API_KEY has an unterminated quote/],
    ['SITE_ID=a\nAPI_KEY="a key"\n', /API_KEY in .*environment:2 holds characters/],
    ['SITE_ID=a\nAPI_KEY=clé\n', /API_KEY in .*environment:2 holds characters/],
  ])('when the environment file reads %j then the error is %s', async (text, message) => {
    environment(text);
    await expect(readSite(paths, {})).rejects.toThrow(message);
  });

  it('when the file lacks a setting then the process environment fills it', async () => {
    environment('SITE_ID=from-file\n');
    const site = await readSite(paths, { SITE_ID: 'from-env', MANAGER_URL: 'http://m' });
    expect(site.siteId).toBe('from-file');
    expect(site.managerUrls).toEqual(['http://m']);
  });

  it('when API_KEY_FILE names a file then the key is read from it', async () => {
    writeFileSync(join(root, 'key'), 'from-file-key\n', { mode: 0o600 });
    environment(`API_KEY_FILE=${join(root, 'key')}\n`);
    expect((await readSite(paths, {})).apiKey).toBe('from-file-key');
  });

  it('when SITE_ID is missing then loading a built-in names the file', async () => {
    environment('MANAGER_URL=http://m\n');
    await expect(load('nginx')).rejects.toThrow(/SITE_ID is not set in .*environment/);
  });
});

describe('legacy mode', () => {
  it('when CONF_FILE and CONF_URL come from the environment then commands run through sh', async () => {
    environment('SITE_ID=a\nMANAGER_URL=http://m\n');
    const env = {
      CONF_FILE: '/etc/x.conf',
      CONF_URL: 'http://m/x',
      TEST_COMMAND: 'test -s $CONF_FILE',
    };
    const instance = await legacyInstance(env, paths, await readSite(paths, env));
    expect(instance.test?.argv).toEqual(['/bin/sh', '-c', 'test -s $CONF_FILE']);
    expect(instance.stateKey).toMatch(/^legacy-[0-9a-f]{12}$/);
    expect(instance.urls).toEqual(['http://m/x']);
  });
});
