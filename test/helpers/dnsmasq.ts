import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { Resolver } from 'node:dns/promises';
import { dirname, join } from 'node:path';
import { track } from './cleanup.js';
import { runCommand } from './command.js';
import {
  dnsmasqConfig,
  restartScriptText,
  type DnsmasqConfigOptions,
} from './dnsmasq-config.js';
import { freeUdpPort, isPortClash } from './ports.js';
import { readPidFile, signal, terminate, waitFor } from './processes.js';

export { dnsmasqConfig } from './dnsmasq-config.js';
export type { DnsmasqConfigOptions } from './dnsmasq-config.js';

export const DNSMASQ_BIN = '/usr/sbin/dnsmasq';

const SYSTEM_PATH = { PATH: '/usr/sbin:/usr/bin:/bin' };

export interface StartDnsmasqOptions {
  records?: Record<string, string>;
  // Where the config lives, e.g. a sandbox's live/ dir; default DIR/dnsmasq/dnsmasq.conf.
  confPath?: string;
}

export interface Dnsmasq {
  confPath: string;
  pidFile: string;
  logFile: string;
  port: number;
  // Executable that restarts this dnsmasq, standing in for `systemctl restart dnsmasq`.
  restartScript: string;
  query(name: string): Promise<string[]>;
  // The pid now in the pid file; it changes on every restart.
  pid(): number | undefined;
  stop(): Promise<void>;
}

// Starts a real, daemonized dnsmasq under DIR/dnsmasq on a free UDP port.
export async function startDnsmasq(
  dir: string,
  options: StartDnsmasqOptions = {},
): Promise<Dnsmasq> {
  if (!existsSync(DNSMASQ_BIN))
    throw new Error(`${DNSMASQ_BIN} is missing: apt-get install dnsmasq`);

  const home = join(dir, 'dnsmasq');
  const confPath = options.confPath ?? join(home, 'dnsmasq.conf');
  const pidFile = join(home, 'dnsmasq.pid');
  const logFile = join(home, 'dnsmasq.log');
  const restartScript = join(home, 'restart-dnsmasq');
  const records = options.records ?? { 'harness.test': '192.0.2.1' };
  await mkdir(home, { recursive: true });
  await mkdir(dirname(confPath), { recursive: true });

  await writeFile(restartScript, restartScriptText(pidFile, confPath));
  await chmod(restartScript, 0o755);

  const pid = () => readPidFile(pidFile);
  const untrack = track({
    stop: () => stop(),
    stopNow: () => signal(live(pid()), 'SIGKILL'),
  });
  const stop = async () => {
    untrack();
    await terminate(live(pid()));
  };

  const port = await launch(confPath, { pidFile, records, logFile });
  const query = (name: string) => queryAt(port, name);
  await waitFor('dnsmasq to answer', () => answers(query));

  return { confPath, pidFile, logFile, port, restartScript, query, pid, stop };
}

function live(pid: number | undefined): number[] {
  return pid === undefined ? [] : [pid];
}

// Writes the config and starts dnsmasq, on another port if the free one was
// taken in between. The foreground dnsmasq returns only once the daemon has
// bound its sockets. Returns the port dnsmasq listens on.
async function launch(
  confPath: string,
  config: Omit<DnsmasqConfigOptions, 'port'>,
): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeUdpPort();
    await writeFile(confPath, dnsmasqConfig({ port, ...config }));

    const result = await runCommand(DNSMASQ_BIN, ['-C', confPath], { env: SYSTEM_PATH });
    if (result.code === 0) return port;
    if (attempt < 3 && isPortClash(result.stderr)) continue;

    throw new Error(
      `dnsmasq failed to start (exit ${result.code}): ${result.stderr.trim()}`,
    );
  }
}

// Asks this dnsmasq, never the machine's resolver, for the name's IPv4 addresses.
// A name it does not know yields []: with no upstream, dnsmasq answers REFUSED.
// address=/NAME/ also answers for every subdomain of NAME.
async function queryAt(port: number, name: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 1_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${port}`]);

  return resolver.resolve4(name).catch((error: NodeJS.ErrnoException) => {
    if (['EREFUSED', 'ENOTFOUND', 'ENODATA'].includes(error.code ?? '')) return [];
    throw error;
  });
}

async function answers(
  query: (name: string) => Promise<string[]>,
): Promise<true | undefined> {
  return query('harness-probe.test').then(
    () => true,
    () => undefined,
  );
}
