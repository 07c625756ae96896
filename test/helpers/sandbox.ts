import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { track } from './cleanup.js';

export { freeTcpPort, freeUdpPort } from './ports.js';

// The environment cron gives pull-config: a bare PATH plus where things live.
export type CliEnv = {
  PATH: string;
  PULL_CONFIG_ENV_FILE: string;
  PULL_CONFIG_CONF_DIR: string;
  PULL_CONFIG_STATE_DIR: string;
  PULL_CONFIG_SHIM_DIR: string;
};

export interface Sandbox {
  root: string;
  etcDir: string;
  // Not created: each test writes the environment file it needs.
  envFile: string;
  confDir: string;
  instancesDir: string;
  stateDir: string;
  shimDir: string;
  // Where live configs and the daemons under test go.
  liveDir: string;
  env: CliEnv;
  cleanup(): Promise<void>;
}

// A fresh temp tree standing in for the host's /etc, state and service dirs.
export async function makeSandbox(): Promise<Sandbox> {
  const root = await mkdtemp(join(tmpdir(), 'pull-config-test-'));
  const etcDir = join(root, 'etc');
  const confDir = join(root, 'conf');
  const instancesDir = join(confDir, 'instances');
  const stateDir = join(root, 'state');
  const shimDir = join(root, 'shims');
  const liveDir = join(root, 'live');
  for (const dir of [etcDir, instancesDir, stateDir, shimDir, liveDir]) {
    await mkdir(dir, { recursive: true });
  }

  const cleanup = async () => {
    untrack();
    await rm(root, { recursive: true, force: true });
  };
  const untrack = track({
    stop: cleanup,
    stopNow: () => rmSync(root, { recursive: true, force: true }),
  });

  const envFile = join(etcDir, 'environment');
  const env: CliEnv = {
    PATH: '/usr/bin:/bin',
    PULL_CONFIG_ENV_FILE: envFile,
    PULL_CONFIG_CONF_DIR: confDir,
    PULL_CONFIG_STATE_DIR: stateDir,
    PULL_CONFIG_SHIM_DIR: shimDir,
  };
  return {
    root,
    etcDir,
    envFile,
    confDir,
    instancesDir,
    stateDir,
    shimDir,
    liveDir,
    env,
    cleanup,
  };
}
