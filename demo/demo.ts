// A walk through one agent's life: a sample manager on 127.0.0.1 serves an
// nginx and a dnsmasq config, cron's run-parts pulls them into a real nginx
// and a real dnsmasq, the manager changes both, and a bad config is refused.
import { existsSync } from 'node:fs';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupFile } from '../test/helpers/cleanup.js';
import { runCli, runParts, CLI_PATH } from '../test/helpers/cli.js';
import { DNSMASQ_BIN, dnsmasqConfig, startDnsmasq } from '../test/helpers/dnsmasq.js';
import { startManager } from '../test/helpers/manager.js';
import { NGINX_BIN, nginxConfig, startNginx } from '../test/helpers/nginx.js';
import { makeSandbox } from '../test/helpers/sandbox.js';

const SHIMS = fileURLToPath(new URL('../pull-config.d/', import.meta.url));
const API_KEY = 'demo-key-not-secret';

function step(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

function show(label: string, text: string): void {
  const lines = text.trimEnd() || '(nothing: cron would mail nothing)';
  process.stdout.write(
    lines
      .split('\n')
      .map((line) => `   ${label} ${line}`)
      .join('\n') + '\n',
  );
}

async function main(): Promise<void> {
  for (const binary of [NGINX_BIN, DNSMASQ_BIN]) {
    if (!existsSync(binary)) {
      process.stderr.write(
        `The demo runs the real ${binary}: install it with scripts/install-deps\n`,
      );
      process.exitCode = 1;
      return;
    }
  }

  const sandbox = await makeSandbox();
  const manager = await startManager();
  manager.requireKey(API_KEY);
  const env = { ...sandbox.env, PULL_CONFIG_BIN: CLI_PATH };

  step(`A sandbox in ${sandbox.root}; a sample manager at ${manager.url}`);
  const nginx = await startNginx(sandbox.root, {
    body: 'hello from the image\n',
    confPath: join(sandbox.liveDir, 'nginx.conf'),
  });
  const dnsmasq = await startDnsmasq(sandbox.root, {
    records: { 'www.demo.test': '192.0.2.1' },
    confPath: join(sandbox.liveDir, 'dnsmasq.conf'),
  });
  const nginxVersion = (body: string) =>
    nginxConfig({ port: nginx.port, prefix: nginx.prefix, body });
  const dnsVersion = (address: string) =>
    dnsmasqConfig({
      port: dnsmasq.port,
      pidFile: dnsmasq.pidFile,
      records: { 'www.demo.test': address },
    });
  manager.serve('/sites/demo/nginx.conf', nginxVersion('hello from version 1\n'));
  manager.serve('/sites/demo/dnsmasq.conf', dnsVersion('192.0.2.10'));

  await writeFile(
    sandbox.envFile,
    `SITE_ID=demo\nMANAGER_URL=${manager.url}\nAPI_KEY=${API_KEY}\n`,
  );
  await writeFile(
    join(sandbox.instancesDir, 'nginx.env'),
    `CONF_FILE=${nginx.confPath}\nRELOAD_COMMAND=${nginx.reloadArgv.join(' ')}\n`,
  );
  await writeFile(
    join(sandbox.instancesDir, 'dnsmasq.env'),
    `CONF_FILE=${dnsmasq.confPath}\nRELOAD_COMMAND=${dnsmasq.restartScript}\n`,
  );
  for (const shim of ['nginx', 'dnsmasq']) {
    await copyFile(join(SHIMS, shim), join(sandbox.shimDir, shim));
  }
  show('nginx answers:', (await nginx.get('/')).body);
  show('www.demo.test is', (await dnsmasq.query('www.demo.test')).join(' '));

  const cronRun = async (title: string) => {
    step(`${title}: run-parts ${sandbox.shimDir}, as cron runs it`);
    const result = await runParts(sandbox.shimDir, env);
    show('stdout:', result.stdout);
    // The cron entry drops run-parts' own line about each failing shim: the
    // failure was reported when it began.
    const stderr = result.stderr.replace(
      /^run-parts: .* exited with return code \d+\n/gm,
      '',
    );
    if (stderr) show('stderr:', stderr);
  };

  // nginx finishes a reload gracefully: until the old worker has gone, a
  // request may still be answered from the old config.
  const nginxAnswer = async (expected: string) => {
    await nginx.waitForBody('/', expected);
    for (let tries = 0; nginx.workerPids().length > 1 && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return (await nginx.get('/')).body;
  };

  await cronRun('First run');
  show('nginx answers:', await nginxAnswer('hello from version 1\n'));
  show('www.demo.test is', (await dnsmasq.query('www.demo.test')).join(' '));

  await cronRun('A minute later, nothing changed on the manager (304)');

  step('The manager renders new configs');
  manager.serve('/sites/demo/nginx.conf', nginxVersion('hello from version 2\n'));
  manager.serve('/sites/demo/dnsmasq.conf', dnsVersion('192.0.2.20'));
  await cronRun('Next minute');
  show('nginx answers:', await nginxAnswer('hello from version 2\n'));
  show('www.demo.test is', (await dnsmasq.query('www.demo.test')).join(' '));

  step('The manager serves an nginx config with a typo');
  const broken = nginxVersion('hello from version 3\n').replace(
    'worker_connections',
    'worker_conections',
  );
  manager.serve('/sites/demo/nginx.conf', broken);
  await cronRun('Next minute');
  show('nginx answers:', (await nginx.get('/')).body);
  const live = await readFile(nginx.confPath, 'utf8');
  show('live file:', live.includes('version 2') ? 'still version 2' : 'CHANGED');
  await cronRun(
    'And the minute after (the refused config is not fetched or tested again)',
  );

  step('What the admin sees: pull-config status');
  const status = await runCli(['status', 'nginx', 'dnsmasq'], env);
  show('', status.stdout);

  await cleanupFile();
  step('Done; the sandbox, nginx, dnsmasq and the manager are gone');
}

await main();
