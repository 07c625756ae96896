import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { track } from './cleanup.js';
import { runCommand } from './command.js';
import { httpGet } from './http-get.js';
import { nginxConfig, nginxPaths } from './nginx-config.js';
import { freeTcpPort, isPortClash } from './ports.js';
import { childPids, readPidFile, signal, terminate, waitFor } from './processes.js';

export { nginxConfig, nginxPaths } from './nginx-config.js';
export type { NginxConfigOptions, NginxPaths } from './nginx-config.js';

export const NGINX_BIN = '/usr/sbin/nginx';

const SYSTEM_PATH = { PATH: '/usr/sbin:/usr/bin:/bin' };

export interface StartNginxOptions {
  body?: string;
  // Where the config lives, e.g. a sandbox's live/ dir; default PREFIX/conf/nginx.conf.
  confPath?: string;
}

export interface Nginx {
  prefix: string;
  // The body the started config answers with.
  body: string;
  confPath: string;
  pidFile: string;
  errorLog: string;
  port: number;
  masterPid: number;
  // What pull-config would run to reload this instance.
  reloadArgv: string[];
  get(path: string): Promise<{ status: number; body: string }>;
  // Reload is asynchronous: `nginx -s reload` only signals the master.
  waitForBody(path: string, expected: string, timeoutMs?: number): Promise<void>;
  workerPids(): number[];
  stop(): Promise<void>;
}

// Starts a real, daemonized nginx under DIR/nginx, answering on a free port.
export async function startNginx(
  dir: string,
  options: StartNginxOptions = {},
): Promise<Nginx> {
  if (!existsSync(NGINX_BIN))
    throw new Error(`${NGINX_BIN} is missing: apt-get install nginx`);

  const prefix = join(dir, 'nginx');
  const confPath = options.confPath ?? join(prefix, 'conf', 'nginx.conf');
  const body = options.body ?? 'harness nginx\n';
  const paths = nginxPaths(prefix);
  for (const path of [dirname(paths.pidFile), paths.tempDir, dirname(confPath)]) {
    await mkdir(path, { recursive: true });
  }

  const port = await launch(prefix, confPath, body);
  const masterPid = await waitFor('nginx pid file', () => readPidFile(paths.pidFile));
  const untrack = track({
    stop: () => stop(),
    stopNow: () => signal([masterPid, ...childPids(masterPid)], 'SIGKILL'),
  });

  const get = async (path: string) => {
    const response = await httpGet(`http://127.0.0.1:${port}${path}`);
    return { status: response.status, body: response.body.toString('utf8') };
  };
  const waitForBody = async (path: string, expected: string, timeoutMs = 10_000) => {
    let last = '(no answer)';
    const probe = async () => {
      last = await get(path).then((r) => `${r.status} ${r.body}`, String);
      return last === `200 ${expected}` ? true : undefined;
    };
    const what = () =>
      `nginx to answer ${JSON.stringify(expected)} on ${path}, last: ${last}`;
    await waitFor(what, probe, timeoutMs);
  };
  const stop = async () => {
    untrack();
    await terminate([masterPid, ...childPids(masterPid)]);
  };

  await waitForBody('/', body);
  return {
    prefix,
    body,
    confPath,
    ...paths,
    port,
    masterPid,
    reloadArgv: [NGINX_BIN, '-p', prefix, '-c', confPath, '-s', 'reload'],
    get,
    waitForBody,
    workerPids: () => childPids(masterPid),
    stop,
  };
}

// Writes the config and starts nginx, on another port if the free one was
// taken in between. Returns the port nginx listens on.
async function launch(prefix: string, confPath: string, body: string): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeTcpPort();
    await writeFile(confPath, nginxConfig({ port, prefix, body }));

    const result = await runCommand(NGINX_BIN, ['-p', prefix, '-c', confPath], {
      env: SYSTEM_PATH,
    });
    if (result.code === 0) return port;
    if (attempt < 3 && isPortClash(result.stderr)) continue;

    throw new Error(
      `nginx failed to start (exit ${result.code}): ${result.stderr.trim()}`,
    );
  }
}
