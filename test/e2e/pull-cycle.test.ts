import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import etag from 'etag';
import { afterEach, describe, expect, test } from 'vitest';
import { CLI_PATH, runCli } from '../helpers/cli.js';
import { runCommand, type CommandResult } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { nginxConfig, startNginx } from '../helpers/nginx.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

const SITE_ID = 'site-1';
const API_KEY = 'e2e-key-0123456789';
const SHIM = fileURLToPath(new URL('../../pull-config.d/nginx', import.meta.url));
const REFUSE = 'refused-by-the-service';
// Built-ins keep their own route, so a 404 can point at the newer one.
const BUILT_INS = ['nginx', 'dnsmasq'];

const weakTag = (body: Buffer | string) => etag(Buffer.from(body), { weak: true });

// Directories that must hold no candidate once a test is over.
let watchedDirs: string[] = [];

afterEach(async () => {
  const dirs = watchedDirs;
  watchedDirs = [];
  for (const dir of dirs) {
    const left = (await readdir(dir)).filter((name) => /^\..*\.pull-config-/.test(name));
    expect(left, `candidates left in ${dir}`).toEqual([]);
  }
});

interface World {
  box: Sandbox;
  manager: Manager;
  target: string;
  env: Record<string, string>;
  run(): Promise<CommandResult>;
  // The first line of the live file at each run of the reload command.
  reloads(): Promise<string[]>;
  etag(): Promise<string | undefined>;
}

interface WorldOptions {
  name?: string;
  // Definition keys; CONF_FILE defaults to the target and RELOAD_COMMAND to the logger.
  keys?: Record<string, string>;
  live?: Buffer | string;
  target?: string;
}

// A site with one instance, run through its shim as cron runs it.
async function makeWorld(options: WorldOptions = {}): Promise<World> {
  const name = options.name ?? 'web';
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(API_KEY);
  const target = options.target ?? join(box.liveDir, `${name}.conf`);
  const reloadLog = join(box.root, 'reloads.log');
  const reloadScript = join(box.root, 'reload-service');
  watchedDirs.push(box.liveDir);

  await writeFile(
    box.envFile,
    `SITE_ID=${SITE_ID}\nMANAGER_URL=${manager.url}\nAPI_KEY=${API_KEY}\n`,
  );
  await writeExecutable(reloadScript, reloadScriptText(target, reloadLog));
  await writeFile(reloadLog, '');
  await writeDefinition(box, name, {
    ...(BUILT_INS.includes(name) ? {} : { CONF_URL: `/sites/\${SITE_ID}/${name}.conf` }),
    CONF_FILE: target,
    RELOAD_COMMAND: reloadScript,
    ...options.keys,
  });
  if (options.live !== undefined) await writeFile(target, options.live);

  const shim = join(box.shimDir, name);
  await copyFile(SHIM, shim);
  const env = { ...box.env, PULL_CONFIG_BIN: CLI_PATH };

  return {
    box,
    manager,
    target,
    env,
    run: () => runCommand(shim, [], { env }),
    reloads: async () => lines(await readFile(reloadLog, 'utf8')),
    etag: async () => (await readState(box, name)).etag,
  };
}

// Stands in for a service that reloads, and refuses a config carrying REFUSE.
function reloadScriptText(target: string, log: string): string {
  return `#!/bin/sh
head -n 1 '${target}' >> '${log}'
if grep -q ${REFUSE} '${target}'; then
  echo 'the service refused the new config' >&2
  exit 1
fi
`;
}

async function writeExecutable(path: string, text: string): Promise<void> {
  await writeFile(path, text);
  await chmod(path, 0o755);
}

async function writeDefinition(
  box: Sandbox,
  name: string,
  keys: Record<string, string>,
): Promise<void> {
  const text = Object.entries(keys).map(([key, value]) => `${key}=${value}\n`);
  await writeFile(join(box.instancesDir, `${name}.env`), text.join(''));
}

async function readState(box: Sandbox, key: string): Promise<{ etag?: string }> {
  const text = await readFile(join(box.stateDir, key, 'state.json'), 'utf8').catch(
    () => '{}',
  );
  return JSON.parse(text) as { etag?: string };
}

function lines(text: string): string[] {
  return text.split('\n').filter(Boolean);
}

async function identity(path: string): Promise<{ ino: number; mtimeMs: number }> {
  const { ino, mtimeMs } = await stat(path);
  return { ino, mtimeMs };
}

const route = (name: string) => `/sites/${SITE_ID}/${name}.conf`;
const applied = (name: string, body: Buffer | string) =>
  `${name}: applied ${weakTag(body)} (${Buffer.byteLength(body)} bytes), reloaded\n`;

// Bytes that are not UTF-8 (Latin-1 é, a lone 0xff, a broken sequence) and CRLF.
const V1 = Buffer.concat([
  Buffer.from('# v1: caf'),
  Buffer.from([0xe9, 0x20, 0xff, 0xc3, 0x28]),
  Buffer.from('\r\nlisten 80;\r\n'),
]);
const V2 = Buffer.from('# v2\nlisten 8080;\n');

describe('a run through the shim', () => {
  test('when the first run finds a config then it writes its exact bytes, reloads and prints one line', async () => {
    const world = await makeWorld();
    world.manager.serve(route('web'), V1, { contentType: 'application/octet-stream' });

    const result = await world.run();

    expect(result).toMatchObject({ code: 0, stdout: applied('web', V1), stderr: '' });
    expect(await readFile(world.target)).toEqual(V1);
    expect(await world.etag()).toBe(weakTag(V1));
    expect(await world.reloads()).toHaveLength(1);
    expect(world.manager.requests).toHaveLength(1);
    expect(world.manager.requests[0]?.headers).toMatchObject({
      authorization: `Bearer ${API_KEY}`,
    });
    expect(world.manager.requests[0]?.headers).not.toHaveProperty('if-none-match');
  });

  test('when the manager answers 304 then nothing is printed, written or reloaded', async () => {
    const world = await makeWorld();
    world.manager.serve(route('web'), V1);
    expect((await world.run()).code).toBe(0);
    const before = await identity(world.target);

    const result = await world.run();

    expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(world.manager.requests[1]?.headers['if-none-match']).toBe(weakTag(V1));
    expect(await identity(world.target)).toEqual(before);
    expect(await readFile(world.target)).toEqual(V1);
    expect(await world.reloads()).toHaveLength(1);
    expect(await world.etag()).toBe(weakTag(V1));
  });

  test('when the manager changes the config then the next run applies it', async () => {
    const world = await makeWorld();
    world.manager.serve(route('web'), V1);
    await world.run();
    await world.run();
    world.manager.serve(route('web'), V2);

    const result = await world.run();

    expect(result).toMatchObject({ code: 0, stdout: applied('web', V2), stderr: '' });
    expect(await readFile(world.target)).toEqual(V2);
    expect(await world.etag()).toBe(weakTag(V2));
    expect(await world.reloads()).toHaveLength(2);
    expect(world.manager.requests.map((r) => r.headers['if-none-match'])).toEqual([
      undefined,
      weakTag(V1),
      weakTag(V1),
    ]);
    for (const { headers } of world.manager.requests) {
      expect(headers).not.toHaveProperty('cache-control');
      expect(headers).not.toHaveProperty('pragma');
    }
  });

  test('when the reload fails then the previous file is back, reloaded, and exit is 69', async () => {
    const world = await makeWorld();
    world.manager.serve(route('web'), V1);
    await world.run();
    const refused = `# v2 ${REFUSE}\nlisten 8080;\n`;
    world.manager.serve(route('web'), refused);

    const result = await world.run();

    expect(result).toMatchObject({
      code: 69,
      stdout: '',
      stderr:
        'web: reload: reload exited with 1: the service refused the new config' +
        ' (previous config restored)\n',
    });
    expect(await readFile(world.target)).toEqual(V1);
    expect(await world.etag()).toBe(weakTag(V1));
    expect((await world.reloads()).map((line) => line.slice(0, 4))).toEqual([
      '# v1',
      '# v2',
      '# v1',
    ]);
  });

  test('when the body equals the live file then the ETag is recorded and nothing else happens', async () => {
    const world = await makeWorld({ live: V1 });
    world.manager.serve(route('web'), V1);
    const before = await identity(world.target);

    const result = await world.run();

    expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await identity(world.target)).toEqual(before);
    expect(await world.reloads()).toEqual([]);
    expect(await world.etag()).toBe(weakTag(V1));

    expect(await world.run()).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(world.manager.requests[1]?.headers['if-none-match']).toBe(weakTag(V1));
  });

  test('when the target is a symlink then the link stays and the file it points to changes', async () => {
    const box = await makeSandbox();
    const realDir = join(box.root, 'real');
    const real = join(realDir, 'web.conf');
    const link = join(box.liveDir, 'web.conf');
    await mkdir(realDir);
    await writeFile(real, V1);
    await symlink(real, link);
    watchedDirs.push(realDir);
    const world = await makeWorld({ target: link });
    world.manager.serve(route('web'), V2);

    const result = await world.run();

    expect(result).toMatchObject({ code: 0, stdout: applied('web', V2), stderr: '' });
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(real);
    expect(await readFile(real)).toEqual(V2);
  });
});

describe('the real nginx -t as validator', () => {
  // nginx -t opens the logs and creates the temp dirs that the config names.
  async function nginxWorld() {
    const world = await makeWorld({ name: 'nginx', keys: { RELOAD_CHECK: 'none' } });
    const prefix = join(world.box.root, 'nginx');
    await mkdir(join(prefix, 'logs'), { recursive: true });
    await mkdir(join(prefix, 'temp'), { recursive: true });
    const config = (body: string) => nginxConfig({ port: 40080, prefix, body });
    return { world, config };
  }

  test('when nginx -t rejects the candidate then exit 65 with its message and nothing changes', async () => {
    const { world, config } = await nginxWorld();
    const good = config('one');
    world.manager.serve(route('nginx'), good);
    expect(await world.run()).toMatchObject({
      stderr: '',
      stdout: applied('nginx', good),
    });
    const before = await identity(world.target);
    const bad = config('two').replace('events {', 'bogus_directive on;\nevents {');
    world.manager.serve(route('nginx'), bad);

    const result = await world.run();

    expect(result.code).toBe(65);
    expect(result.stdout).toBe('');
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toMatch(
      /^nginx: validate: the validator rejected the config: /,
    );
    expect(result.stderr).toMatch(/\[emerg\] unknown directive "bogus_directive" in /);
    // Named as the copy kept for the admin: the live file still holds the old config.
    const kept = join(world.box.stateDir, 'nginx', 'rejected.conf');
    expect(result.stderr).toMatch(new RegExp(` in ${kept}:\\d+\n$`));
    expect(await readFile(kept, 'utf8')).toBe(bad);
    expect(await readFile(world.target, 'utf8')).toBe(good);
    expect(await identity(world.target)).toEqual(before);
    expect(await world.reloads()).toHaveLength(1);
    expect(await world.etag()).toBe(weakTag(good));
  });

  test('when a rejected config is followed by a good one then the good one applies', async () => {
    const { world, config } = await nginxWorld();
    const bad = config('one').replace('events {', 'bogus_directive on;\nevents {');
    world.manager.serve(route('nginx'), bad);
    expect((await world.run()).code).toBe(65);
    expect(await world.etag()).toBeUndefined();
    const good = config('two');
    world.manager.serve(route('nginx'), good);

    const result = await world.run();

    expect(result).toMatchObject({
      code: 0,
      stdout: applied('nginx', good).replace(/\n$/, '; recovered after 1 failed run\n'),
      stderr: '',
    });
    expect(await readFile(world.target, 'utf8')).toBe(good);
    expect(await world.etag()).toBe(weakTag(good));
  });
});

describe('a real nginx that keeps its old config', () => {
  let holder: Server | undefined;

  afterEach(async () => {
    await new Promise((resolve) => (holder ? holder.close(resolve) : resolve(undefined)));
    holder = undefined;
  });

  // nginx -t does not bind, so only the master's reload finds the port taken.
  async function holdPort(): Promise<number> {
    const server = createServer();
    holder = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return address.port;
  }

  test('when nginx cannot bind the new port although its reload exits 0 then the watch rolls back', async () => {
    const box = await makeSandbox();
    const nginx = await startNginx(box.root, {
      confPath: join(box.liveDir, 'nginx.conf'),
      body: 'one',
    });
    const world = await makeWorld({
      name: 'nginx',
      target: nginx.confPath,
      keys: { RELOAD_COMMAND: nginx.reloadArgv.join(' ') },
    });
    const config = (port: number, body: string) =>
      nginxConfig({ port, prefix: nginx.prefix, body });
    const two = config(nginx.port, 'two');
    world.manager.serve(route('nginx'), two);
    expect(await world.run()).toMatchObject({ code: 0, stdout: applied('nginx', two) });
    await nginx.waitForBody('/', 'two');
    const busy = await holdPort();
    world.manager.serve(route('nginx'), config(busy, 'three'));

    const result = await world.run();

    expect(result).toMatchObject({
      code: 69,
      stdout: '',
      stderr:
        `nginx: reload: nginx kept its old config: bind() to 127.0.0.1:${busy} failed` +
        ' (98: Address already in use) (previous config restored)\n',
    });
    expect(await readFile(nginx.confPath, 'utf8')).toBe(two);
    expect(await world.etag()).toBe(weakTag(two));
    expect((await nginx.get('/')).body).toBe('two');
  });
});

describe('legacy mode', () => {
  test('when run with no name then CONF_FILE and CONF_URL drive it and its commands run through sh', async () => {
    const world = await makeWorld();
    const log = join(world.box.root, 'legacy.log');
    const target = join(world.box.liveDir, 'app.conf');
    world.manager.serve('/legacy/app.conf', V2);
    const env = {
      ...world.env,
      CONF_FILE: target,
      CONF_URL: '${MANAGER_URL}/legacy/app.conf',
      TEST_COMMAND: `grep -v '^#' {} | grep -q '^listen' && echo "tested $CONF_FILE" >> ${log}`,
      RELOAD_COMMAND: `echo "reloaded $CONF_FILE" >> ${log}`,
    };

    const result = await runCli([], env);

    expect(result).toMatchObject({
      code: 0,
      stdout: `legacy ${target}: applied ${weakTag(V2)} (${V2.length} bytes), reloaded\n`,
      stderr: '',
    });
    expect(await readFile(target)).toEqual(V2);
    expect(await readFile(log, 'utf8')).toBe(`tested ${target}\nreloaded ${target}\n`);
    expect(await readdir(world.box.stateDir)).toContainEqual(
      expect.stringMatching(/^legacy-[0-9a-f]{12}$/),
    );
    expect(world.manager.requests[0]?.headers.authorization).toBe(`Bearer ${API_KEY}`);

    expect(await runCli([], env)).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(world.manager.requests[1]?.headers['if-none-match']).toBe(weakTag(V2));
  });

  test('when the legacy validator pipeline fails then the candidate is rejected with 65', async () => {
    const world = await makeWorld();
    const target = join(world.box.liveDir, 'app.conf');
    await writeFile(target, V2);
    world.manager.serve('/legacy/app.conf', '# no listen line\n');
    const env = {
      ...world.env,
      CONF_FILE: target,
      CONF_URL: `${world.manager.url}/legacy/app.conf`,
      TEST_COMMAND: `cat {} | grep -q '^listen' || { echo "no listen in $CONF_FILE"; exit 3; }`,
    };

    const result = await runCli([], env);

    expect(result).toMatchObject({
      code: 65,
      stdout: '',
      stderr: `legacy ${target}: validate: the validator rejected the config: no listen in ${target}\n`,
    });
    expect(await readFile(target)).toEqual(V2);
  });
});

describe('built-in instances on this machine', () => {
  test('when the built-in nginx would reload through systemctl then exit 78 names systemd', async () => {
    const world = await makeWorld({ name: 'nginx', live: V1 });
    await writeDefinition(world.box, 'nginx', { CONF_FILE: world.target });
    world.manager.serve(route('nginx'), V2);
    const before = await identity(world.target);

    const result = await world.run();

    expect(result).toMatchObject({
      code: 78,
      stdout: '',
      stderr:
        'nginx: reload: SERVICE_NAME (built-in nginx): systemd is not running here,' +
        ' so systemctl cannot reload; set RELOAD_COMMAND\n',
    });
    expect(await identity(world.target)).toEqual(before);
    expect(await readFile(world.target)).toEqual(V1);
    expect(await world.etag()).toBeUndefined();
  });

  test.each([
    ['nginx', '/sites/${SITE_ID}/nginx'],
    ['dnsmasq', '/sites/${SITE_ID}/dnsmasq/conf'],
  ])(
    'when the manager answers 404 on the built-in %s route then the message names %s',
    async (name, newer) => {
      const world = await makeWorld({ name, live: V1 });
      const definition = join(world.box.instancesDir, `${name}.env`);

      const result = await world.run();

      expect(result).toMatchObject({
        code: 78,
        stdout: '',
        stderr:
          `${name}: fetch: the manager does not know ${world.manager.url}${route(name)}` +
          ` (HTTP 404); newer managers serve ${newer}: put CONF_URL=${newer} in ${definition}` +
          ' (README, "Instances")\n',
      });
      expect(await readFile(world.target)).toEqual(V1);
    },
  );
});
