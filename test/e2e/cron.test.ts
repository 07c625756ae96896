import { accessSync, constants } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import etag from 'etag';
import { parse } from 'shell-quote';
import { describe, expect, test } from 'vitest';
import { track } from '../helpers/cleanup.js';
import { CLI_PATH } from '../helpers/cli.js';
import { runCommand, type CommandResult } from '../helpers/command.js';
import { startManager, type Manager } from '../helpers/manager.js';
import { nginxConfig } from '../helpers/nginx.js';
import { freeTcpPort, makeSandbox } from '../helpers/sandbox.js';

const CRON_FILE = fileURLToPath(new URL('../../cron/pull-config', import.meta.url));
const SHIPPED_SHIMS = fileURLToPath(new URL('../../pull-config.d', import.meta.url));
const SITE_ID = 'site-1';
const API_KEY = 'cron-key-0123456789';
const SYSLOG = 'logger -t pull-config';

interface CronEntry {
  shell: string;
  path: string;
  user: string;
  command: string;
}

// The last line of the shipped /etc/cron.d file and the variables set above it.
async function readCronEntry(): Promise<CronEntry> {
  const text = await readFile(CRON_FILE, 'utf8');
  const lines = text.split('\n').filter((line) => line && !line.startsWith('#'));
  const variable = (name: string) =>
    lines.find((line) => line.startsWith(`${name}=`))?.slice(name.length + 1) ?? '';
  const entry = /^(?:\S+\s+){5}(\S+)\s+(.+)$/.exec(lines.at(-1) ?? '');

  return {
    shell: variable('SHELL'),
    path: variable('PATH'),
    user: entry?.[1] ?? '',
    command: entry?.[2] ?? '',
  };
}

// The first word of each stage of a pipeline.
function programsOf(command: string): string[] {
  const programs: string[] = [];
  let atStart = true;
  for (const token of parse(command)) {
    if (typeof token === 'string' && atStart) programs.push(token);
    atStart = typeof token === 'object' && 'op' in token && token.op === '|';
  }
  return programs;
}

function isOnPath(program: string, path: string): boolean {
  return path.split(':').some((dir) => {
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// The manager's address, which stops answering and comes back on the same
// port: a relay on 127.0.0.1 in front of the fixture manager.
interface Gate {
  url: string;
  down(): Promise<void>;
  up(): Promise<void>;
}

async function openGate(manager: Manager): Promise<Gate> {
  const upstream = Number(new URL(manager.url).port);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const relayed = connect(upstream, '127.0.0.1');
    for (const socket of [client, relayed]) {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      socket.once('error', () => [client, relayed].forEach((s) => s.destroy()));
    }
    client.pipe(relayed).pipe(client);
  });

  const listen = (port: number) =>
    new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const down = async () => {
    if (!server.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  track({ stop: down, stopNow: () => undefined });

  await listen(0);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, down, up: () => listen(port) };
}

// A config for the instance's built-in validator to accept, one per version.
type Config = (version: string) => string;

async function configsFor(name: string, root: string): Promise<Config> {
  if (name === 'dnsmasq') return (version) => `address=/web.test/192.0.2.${version}\n`;
  if (name !== 'nginx') throw new Error(`no fixture config for the shim ${name}`);

  // Run as root, nginx -t creates its temp dirs under the prefix, which must exist.
  const prefix = join(root, 'nginx');
  await mkdir(join(prefix, 'logs'), { recursive: true });
  await mkdir(join(prefix, 'temp'), { recursive: true });
  const port = await freeTcpPort();
  return (version) => nginxConfig({ port, prefix, body: `version ${version}` });
}

interface Host {
  shims: string[];
  gate: Gate;
  manager: Manager;
  // Serves this version of every instance's config.
  serve(version: string): Record<string, string>;
  // One pass of the cron entry, its output captured instead of sent to syslog.
  pass(): Promise<CommandResult>;
  runShim(name: string): Promise<CommandResult>;
}

// A host set up as installed: the shipped shims, a definition for each that
// keeps its built-in validator, and the shipped cron entry.
async function makeHost(): Promise<Host> {
  const box = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(API_KEY);
  const gate = await openGate(manager);
  const entry = await readCronEntry();
  const shims = (await readdir(SHIPPED_SHIMS)).sort();

  const configs: Record<string, Config> = {};
  for (const name of shims) {
    await copyFile(join(SHIPPED_SHIMS, name), join(box.shimDir, name));
    configs[name] = await configsFor(name, box.root);
    const definition = [
      `CONF_FILE=${join(box.liveDir, `${name}.conf`)}`,
      'RELOAD_COMMAND=/bin/true',
      'RELOAD_CHECK=none',
      'CONNECT_TIMEOUT=1',
      'FETCH_TIMEOUT=2',
    ];
    await writeFile(join(box.instancesDir, `${name}.env`), `${definition.join('\n')}\n`);
  }
  await writeFile(
    box.envFile,
    `SITE_ID=${SITE_ID}\nMANAGER_URL=${gate.url}\nAPI_KEY=${API_KEY}\n`,
  );

  expect(entry.command.endsWith(`| ${SYSLOG}`), entry.command).toBe(true);
  expect(entry.command).toContain(' /etc/pull-config.d ');
  const command = entry.command
    .replace('/etc/pull-config.d', box.shimDir)
    .slice(0, -SYSLOG.length)
    .concat('cat');
  // Exactly what cron gives the job: the file's variables, plus where the sandbox is.
  const env = {
    ...box.env,
    PATH: entry.path,
    SHELL: entry.shell,
    PULL_CONFIG_BIN: CLI_PATH,
  };

  return {
    shims,
    gate,
    manager,
    serve(version) {
      const served: Record<string, string> = {};
      for (const name of shims) {
        served[name] = configs[name]?.(version) ?? '';
        manager.serve(`/sites/${SITE_ID}/${name}.conf`, served[name]);
      }
      return served;
    },
    pass: () => runCommand(entry.shell, ['-c', command], { env }),
    runShim: (name) => runCommand(join(box.shimDir, name), [], { env }),
  };
}

function applied(name: string, body: string): string {
  const tag = etag(Buffer.from(body), { weak: true });
  return `${name}: applied ${tag} (${Buffer.byteLength(body)} bytes), reloaded`;
}

// A host whose instances applied version 10, then saw the manager go down.
async function hostAfterOutage(failedPasses: number): Promise<Host> {
  const host = await makeHost();
  host.serve('10');
  expect((await host.pass()).stderr).toBe('');
  await host.gate.down();
  for (let pass = 0; pass < failedPasses; pass++) await host.pass();
  return host;
}

describe('the shipped cron entry', () => {
  test('when the cron file is installed then cron reads it and can find its programs', async () => {
    const entry = await readCronEntry();

    expect(basename(CRON_FILE)).not.toContain('.');
    expect(entry.shell).toBe('/bin/sh');
    expect(entry.user).toBe('root');
    const programs = programsOf(entry.command);
    expect(programs[0]).toBe('run-parts');
    expect(programs.at(-1)).toBe('logger');
    for (const program of programs) {
      expect(isOnPath(program, entry.path), `${program} in ${entry.path}`).toBe(true);
    }
  });

  test('when the manager is down then only the first pass reports it, though each shim still exits 75', async () => {
    const host = await hostAfterOutage(0);
    const port = new URL(host.gate.url).port;

    const first = await host.pass();
    const second = await host.pass();
    const third = await host.pass();

    expect(first).toMatchObject({ code: 0, stderr: '' });
    expect(first.stdout).toBe(
      host.shims
        .map((name) => `${name}: fetch: connection refused by 127.0.0.1:${port}\n`)
        .join(''),
    );
    expect(second).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(third).toMatchObject({ code: 0, stdout: '', stderr: '' });
    for (const name of host.shims) {
      expect(await host.runShim(name), name).toMatchObject({
        code: 75,
        stdout: '',
        stderr: '',
      });
    }
  });

  test('when the manager comes back with a new config then the next pass prints each change ending with the recovery', async () => {
    const host = await hostAfterOutage(3);
    const served = host.serve('20');
    await host.gate.up();

    const result = await host.pass();

    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toBe(
      host.shims
        .map(
          (name) =>
            `${applied(name, served[name] ?? '')}; recovered after 3 failed runs\n`,
        )
        .join(''),
    );
  });

  test('when nothing changed then a pass prints nothing', async () => {
    const host = await makeHost();
    const served = host.serve('10');
    const before = await host.pass();
    const requests = host.manager.requests.length;

    const result = await host.pass();

    expect(before.stdout).toBe(
      host.shims.map((name) => `${applied(name, served[name] ?? '')}\n`).join(''),
    );
    expect(result).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(host.manager.requests.length).toBe(requests + host.shims.length);
  });
});
