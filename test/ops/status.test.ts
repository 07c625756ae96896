import { readFileSync } from 'node:fs';
import { chmod, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI_PATH } from '../helpers/cli.js';
import { runCommand } from '../helpers/command.js';
import { API_KEY, configPath, startOps, type Ops } from './app.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const GOOD = 'listen 80;\n';

// The documented shape of one instance in `status --json`.
const FIELDS = [
  'active',
  'appliedAt',
  'disabled',
  'drift',
  'etag',
  'failingSince',
  'failures',
  'lastCheck',
  'lastError',
  'lastSuccess',
  'name',
  'origin',
  'problems',
  'result',
  'rejected',
  'settingsError',
  'shim',
  'target',
  'url',
];

interface Row {
  name: string;
  shim: string;
  result: string;
  etag: string | null;
  lastCheck: string | null;
  lastSuccess: string | null;
  lastError: string | null;
  disabled: { reason: string; by: string; at: string } | null;
  rejected: { etag: string | null; at: string; message: string } | null;
  problems: string[];
  [field: string]: unknown;
}

interface Report {
  version: number;
  generatedAt: string;
  stateReadable: boolean;
  instances: Row[];
}

async function statusJson(ops: Ops, args: string[] = []): Promise<Report> {
  const result = await ops.run(['status', '--json', ...args]);
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as Report;
}

function row(report: Report, name: string): Row {
  const found = report.instances.find((item) => item.name === name);
  if (!found) throw new Error(`no row for ${name} in ${JSON.stringify(report)}`);
  return found;
}

// The plain view, cut into one block of lines per instance.
function blocks(text: string): Record<string, string> {
  const found: Record<string, string> = {};
  for (const block of text.split(/\n(?=\S)/)) found[block.split(':')[0]!] = block;
  return found;
}

// app applied, bad rejected by the validator, down failing with a 503.
async function threeOutcomes(): Promise<{ ops: Ops; etag: string }> {
  const ops = await startOps();
  for (const name of ['app', 'bad', 'down']) await ops.define(name);
  ops.serve(GOOD);
  ops.serve('BAD\n', 'bad');
  ops.manager.misbehave(configPath('down'), { kind: 'status', status: 503 });

  const cron = await ops.cron();
  const etag = /^app: applied (\S+) /m.exec(cron.stdout)?.[1];
  if (!etag) throw new Error(`app was not applied: ${cron.stdout}${cron.stderr}`);
  return { ops, etag };
}

describe('status', () => {
  it('when runs applied, rejected and failed then each row shows its result, file, URL, live ETag and error', async () => {
    const { ops, etag } = await threeOutcomes();

    const result = await ops.run(['status']);

    expect(result.code).toBe(0);
    const { app, bad, down } = blocks(result.stdout);
    expect(app).toMatch(/^app: applied, checked \d+ s ago \(\S+Z\)/);
    expect(app).toContain(`file     ${ops.live('app')} (drift: none)`);
    expect(app).toContain(`url      ${ops.manager.url}${configPath('app')}`);
    expect(app).toMatch(new RegExp(`live +${escape(etag)} applied \\d+ s ago`));
    expect(app).not.toContain('error');
    expect(bad).toMatch(/^bad: rejected/);
    expect(bad).toMatch(
      /error +the validator rejected the config: .*unknown directive "BAD"/,
    );
    expect(bad).toMatch(/ \(1 failed run since \S+Z\)/);
    expect(down).toMatch(/^down: failed/);
    expect(down).toMatch(/error +.*503.* \(1 failed run since/);
    expect(result.stdout).not.toContain(API_KEY);
    expect(result.stdout).not.toContain('\x1b[');
  });

  it('when printed as JSON then it is one versioned document with every field, ISO times and null for what is unknown', async () => {
    const { ops, etag } = await threeOutcomes();

    const report = await statusJson(ops);

    expect(report.version).toBe(1);
    expect(report.generatedAt).toMatch(ISO);
    expect(report.stateReadable).toBe(true);
    expect(report.instances.map((item) => item.name)).toEqual([
      'app',
      'bad',
      'dnsmasq',
      'down',
      'nginx',
    ]);
    for (const item of report.instances) {
      expect(Object.keys(item).sort()).toEqual([...FIELDS].sort());
      for (const time of [
        item.lastCheck,
        item.lastSuccess,
        item.appliedAt,
        item.failingSince,
      ]) {
        if (time !== null) expect(time).toMatch(ISO);
      }
      if (item.rejected) expect(item.rejected.at).toMatch(ISO);
    }
    expect(row(report, 'app')).toMatchObject({
      origin: 'definition file',
      target: ops.live('app'),
      url: `${ops.manager.url}${configPath('app')}`,
      shim: 'ok',
      active: true,
      result: 'applied',
      etag,
      lastError: null,
      failures: 0,
      drift: 'none',
      disabled: null,
      rejected: null,
      problems: [],
    });
    expect(row(report, 'app').lastSuccess).toMatch(ISO);
    expect(row(report, 'bad')).toMatchObject({
      result: 'rejected',
      lastSuccess: null,
      failures: 1,
      rejected: { message: expect.stringMatching(/unknown directive "BAD"/) },
    });
    expect(row(report, 'down')).toMatchObject({
      result: 'failed',
      lastError: expect.stringMatching(/503/),
    });
    expect(row(report, 'nginx')).toMatchObject({
      origin: 'built-in',
      shim: 'missing',
      active: false,
      result: 'never run',
      lastCheck: null,
      lastSuccess: null,
      etag: null,
      appliedAt: null,
      lastError: null,
      failingSince: null,
      disabled: null,
      rejected: null,
      drift: 'unknown',
    });
  });

  it('when the manager answers 304 then the last check moves on with the last success', async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(GOOD);
    await ops.cron();
    // The first 304 still records that the result went from applied to unchanged.
    await ops.cron();
    const before = row(await statusJson(ops), 'app');

    await new Promise((resolve) => setTimeout(resolve, 20));
    await ops.cron();

    expect(ops.manager.requests.at(-1)?.headers['if-none-match']).toBeDefined();
    const after = row(await statusJson(ops), 'app');
    expect(Date.parse(after.lastSuccess!)).toBeGreaterThan(
      Date.parse(before.lastSuccess!),
    );
    expect(after.lastCheck).toBe(after.lastSuccess);
  });

  it('when the live file was edited by hand then status reports drift and leaves the edit alone', async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(GOOD);
    await ops.cron();
    await writeFile(ops.live(), 'listen 8080; # by hand\n');

    const text = await ops.run(['status', 'app']);
    const report = await statusJson(ops, ['app']);

    expect(text.stdout).toContain(`file     ${ops.live()} (drift: drifted)`);
    expect(row(report, 'app').drift).toBe('drifted');
    expect(readFileSync(ops.live(), 'utf8')).toBe('listen 8080; # by hand\n');
  });

  it('when CONF_URL carries a user, a password and a token then status shows it without them', async () => {
    const ops = await startOps();
    const address = new URL(ops.manager.url);
    address.username = 'admin';
    address.password = 'hunter2';
    await ops.define('app', { CONF_URL: `${address.href}app.conf?token=s3cret` });

    const text = await ops.run(['status', 'app']);
    const report = await statusJson(ops, ['app']);

    expect(row(report, 'app').url).toBe(`${ops.manager.url}/app.conf`);
    expect(text.stdout).toContain(`url      ${ops.manager.url}/app.conf\n`);
    for (const secret of ['admin', 'hunter2', 's3cret']) {
      expect(text.stdout + JSON.stringify(report)).not.toContain(secret);
    }
  });

  it('when status runs in any form then the state, the live file and the manager are left alone', async () => {
    const { ops } = await threeOutcomes();
    await ops.run(['disable', 'app', '--reason', 'testing']);
    const state = await ops.snapshot();
    const live = readFileSync(ops.live('app'));
    const requests = ops.manager.requests.length;

    for (const args of [
      ['status'],
      ['status', '--json'],
      ['status', '--check'],
      ['status', '--verbose', 'app'],
      ['status', '--verbose', 'nginx'],
      ['list'],
    ]) {
      const result = await ops.run(args);
      expect(result.stderr, args.join(' ')).toBe('');
    }

    expect(await ops.snapshot()).toEqual(state);
    expect(readFileSync(ops.live('app'))).toEqual(live);
    expect(ops.manager.requests.length).toBe(requests);
  });

  it('when asked with --verbose NAME then the event log shows changes, failures, recoveries and disables, and a 304 adds nothing', async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(GOOD);
    await ops.cron();
    const events = async () => {
      const result = await ops.run(['status', '--verbose', 'app']);
      return result.stdout.slice(result.stdout.indexOf('app events:'));
    };
    const afterApply = await events();

    await ops.cron();
    expect(await events()).toBe(afterApply);

    ops.serve('BAD\n');
    await ops.cron();
    ops.serve('listen 81;\n');
    await ops.cron();
    await ops.run(['disable', 'app', '--reason', 'night shift'], { SUDO_USER: 'alice' });

    const kinds = [...(await events()).matchAll(/^ {2}\S+Z (\w+): (.*)$/gm)];
    expect(kinds.map(([, kind]) => kind)).toEqual([
      'applied',
      'rejected',
      'recovered',
      'applied',
      'disabled',
    ]);
    expect(kinds[1]![2]).toMatch(/unknown directive "BAD"/);
    expect(kinds[4]![2]).toBe('by alice: night shift');
  });

  for (const { where, tty, noColor, colour } of [
    { where: 'on a pipe', tty: false, noColor: undefined, colour: false },
    { where: 'on a terminal', tty: true, noColor: undefined, colour: true },
    { where: 'on a terminal with NO_COLOR=1', tty: true, noColor: '1', colour: false },
  ]) {
    it(`when shown ${where} then it is ${colour ? '' : 'not '}in colour`, async () => {
      const ops = await startOps();
      await ops.define('app');
      ops.serve(GOOD);
      await ops.cron();
      const env: Record<string, string> =
        noColor === undefined ? {} : { NO_COLOR: noColor };

      const result = tty
        ? await ops.tty(['status'], env)
        : await ops.run(['status'], env);

      expect(result.stdout).toContain('app');
      expect(result.stdout.includes('\x1b[')).toBe(colour);
    });
  }
});

type Setup = (ops: Ops) => Promise<unknown>;

const ageSummary =
  (seconds: number): Setup =>
  async (ops) => {
    const then = new Date(Date.now() - seconds * 1000);
    await utimes(join(ops.box.stateDir, 'status', 'app.json'), then, then);
  };

interface CheckCase {
  when: string;
  setup: Setup;
  args: string[];
  code: number;
  line: RegExp;
}

const CHECKS: CheckCase[] = [
  {
    when: 'the last run applied the config',
    setup: async () => undefined,
    args: [],
    code: 0,
    line: /^PULL-CONFIG OK - 1 of 1 OK$/,
  },
  {
    when: 'the last success is 11 minutes old and --max-age is an hour',
    setup: ageSummary(11 * 60),
    args: ['--max-age', '3600'],
    code: 0,
    line: /^PULL-CONFIG OK - /,
  },
  {
    when: 'the instance is disabled',
    setup: (ops) => ops.run(['disable', 'app', '--reason', 'maintenance']),
    args: [],
    code: 1,
    line: /^PULL-CONFIG WARNING - app disabled: maintenance; 0 of 1 OK$/,
  },
  {
    when: 'the validator rejected the latest config',
    setup: async (ops) => {
      ops.serve('BAD\n');
      await ops.cron();
    },
    args: [],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app rejected: .*unknown directive "BAD"/,
  },
  {
    when: 'the last run failed',
    setup: async (ops) => {
      ops.manager.misbehave(configPath('app'), { kind: 'status', status: 500 });
      await ops.cron();
    },
    args: [],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app failed: .*500/,
  },
  {
    when: 'the last success is 11 minutes old (default --max-age 10 minutes)',
    setup: ageSummary(11 * 60),
    args: [],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app has not checked successfully since \S+Z; 0 of 1 OK$/,
  },
  {
    when: 'the last success is 2 minutes old and --max-age is 60',
    setup: ageSummary(120),
    args: ['--max-age', '60'],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app has not checked/,
  },
  {
    when: 'the shim of an instance that ran is no longer executable',
    setup: (ops) => chmod(join(ops.box.shimDir, 'app'), 0o644),
    args: [],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app: cron no longer runs it \(shim not executable\); 0 of 1 OK$/,
  },
  {
    when: 'a definition file of an active instance no longer loads',
    setup: (ops) =>
      writeFile(join(ops.box.instancesDir, 'app.env'), 'CONF_URL=/x\nTEST_COMAND=true\n'),
    args: [],
    code: 2,
    line: /^PULL-CONFIG CRITICAL - app: \S+app\.env:2: unknown key TEST_COMAND; 0 of 1 OK$/,
  },
  {
    when: 'no shim is left, so no instance is active',
    setup: (ops) => rm(join(ops.box.shimDir, 'app')),
    args: [],
    code: 3,
    line: /^PULL-CONFIG UNKNOWN - no active instance/,
  },
];

describe('status --check', () => {
  for (const item of CHECKS) {
    it(`when ${item.when} then it exits ${item.code} with one summary line`, async () => {
      const ops = await startOps();
      await ops.define('app');
      ops.serve(GOOD);
      await ops.cron();
      await item.setup(ops);

      const result = await ops.run(['status', '--check', ...item.args]);

      expect(result.stdout.endsWith('\n')).toBe(true);
      expect(result.stdout.trimEnd().split('\n')).toHaveLength(1);
      expect(result.stdout.trimEnd()).toMatch(item.line);
      expect(result.code).toBe(item.code);
    });
  }
});

interface FlagCase {
  when: string;
  setup: Setup;
  name: string;
  shim: string;
  problem: RegExp;
  // Whether the real run-parts runs the shim; undefined when there is none.
  runs: boolean | undefined;
}

const FLAGS: FlagCase[] = [
  {
    when: 'a shim is named nginx.sh',
    setup: (ops) => shim(ops, 'nginx.sh', 0o755),
    name: 'nginx.sh',
    shim: 'skipped by run-parts',
    problem: /nginx\.sh: skipped by run-parts/,
    runs: false,
  },
  {
    when: 'a shim is not executable',
    setup: async (ops) => {
      await ops.define('app');
      await chmod(join(ops.box.shimDir, 'app'), 0o644);
    },
    name: 'app',
    shim: 'not executable',
    problem: /shims\/app: not executable/,
    runs: false,
  },
  {
    when: 'a shim has no instance',
    setup: (ops) => shim(ops, 'ghost', 0o755),
    name: 'ghost',
    shim: 'ok',
    problem: /unknown instance "ghost"/,
    runs: true,
  },
  {
    when: 'an instance has no shim',
    setup: (ops) => ops.define('app', {}, false),
    name: 'app',
    shim: 'missing',
    problem: /no shim in .*: cron never runs it/,
    runs: undefined,
  },
  {
    when: 'a setting is missing',
    setup: async (ops) => {
      await ops.define('app');
      await writeFile(ops.box.envFile, `MANAGER_URL=${ops.manager.url}\n`);
    },
    name: 'app',
    shim: 'ok',
    problem: /SITE_ID is not set/,
    runs: true,
  },
];

describe('status flags what would silently not run', () => {
  for (const item of FLAGS) {
    it(`when ${item.when} then its row says so`, async () => {
      const ops = await startOps();
      await item.setup(ops);

      const found = row(await statusJson(ops), item.name);
      const text = await ops.run(['status', item.name]);

      expect(found.shim).toBe(item.shim);
      expect(found.problems).toContainEqual(expect.stringMatching(item.problem));
      expect(text.stdout).toMatch(new RegExp(`problem +.*${item.problem.source}`));
      if (item.runs !== undefined) {
        const listed = await runCommand(
          '/usr/bin/run-parts',
          ['--test', ops.box.shimDir],
          {
            env: ops.env,
          },
        );
        expect(listed.stdout.includes(join(ops.box.shimDir, item.name))).toBe(item.runs);
      }
    });
  }
});

describe('status read by an unprivileged user', () => {
  it('when nobody runs status then it works from the public summary and shows no secret', async () => {
    const { ops, etag } = await threeOutcomes();
    await ops.run(['disable', 'app', '--reason', 'maintenance']);
    const asRoot = await statusJson(ops);

    const check = await ops.asNobody(['status', '--check', 'app', 'bad']);
    const json = await ops.asNobody(['status', '--json']);
    const text = await ops.asNobody(['status']);

    expect(check.stdout).toMatch(
      /^PULL-CONFIG CRITICAL - bad rejected: .*unknown directive "BAD"/,
    );
    expect(check.stdout).toMatch(/; app disabled: maintenance; 0 of 2 OK\n$/);
    expect(check.code).toBe(2);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as Report;
    expect(report.stateReadable).toBe(false);
    expect(row(report, 'app')).toMatchObject({ result: 'disabled', etag });
    const publicFields = [
      'result',
      'etag',
      'appliedAt',
      'lastError',
      'failures',
      'failingSince',
    ];
    for (const name of ['app', 'bad', 'down']) {
      for (const field of [...publicFields, 'lastSuccess', 'disabled', 'rejected']) {
        expect(row(report, name)[field], `${name}.${field}`).toEqual(
          row(asRoot, name)[field],
        );
      }
    }
    expect(text.stdout).toContain('showing the public summary only');
    for (const output of [check, json, text]) {
      expect(output.stdout + output.stderr).not.toContain(API_KEY);
      expect(output.stdout).not.toContain(GOOD.trim());
    }
  });

  it("when root's umask is 077 at the first run then the summary is still readable by others", async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(GOOD);
    const stateDir = join(ops.box.root, 'state-077');
    const env = { ...ops.env, PULL_CONFIG_STATE_DIR: stateDir };
    // run-parts sets its own umask, but a first run by hand from a root shell does not.
    await runCommand('/bin/sh', ['-c', `umask 077; exec ${CLI_PATH} run app`], { env });

    const check = await ops.asNobody(['status', '--check'], {
      PULL_CONFIG_STATE_DIR: stateDir,
    });

    expect(check.stdout).toBe('PULL-CONFIG OK - 1 of 1 OK\n');
    expect(check.code).toBe(0);
  });
});

describe('list', () => {
  it('when listed then each instance shows where its definition comes from', async () => {
    const ops = await startOps();
    await ops.define('app');
    await writeFile(
      join(ops.box.instancesDir, 'nginx.env'),
      'CONF_FILE=/srv/nginx.conf\n',
    );

    const result = await ops.run(['list']);

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^app +definition file$/m);
    expect(result.stdout).toMatch(/^dnsmasq +built-in$/m);
    expect(result.stdout).toMatch(/^nginx +built-in \+ definition file$/m);
  });
});

describe('help and version', () => {
  for (const command of [
    'run',
    'status',
    'list',
    'history',
    'disable',
    'enable',
    'rollback',
  ]) {
    it(`when "pull-config ${command} --help" is asked then it exits 0 with an example`, async () => {
      const ops = await startOps();

      const result = await ops.run([command, '--help']);

      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/\nExample:\n {2}pull-config \S/);
    });
  }

  it('when "pull-config --help" is asked then it lists the commands, the exit codes and an example', async () => {
    const ops = await startOps();

    const result = await ops.run(['--help']);

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^ +status \[options\]/m);
    expect(result.stdout).toMatch(/^ +65 +candidate rejected/m);
    expect(result.stdout).toMatch(/\nExample:\n {2}pull-config \S/);
  });

  it('when run with no command and no legacy settings then it shows the help as a usage error', async () => {
    const ops = await startOps();

    const result = await ops.run([]);

    expect(result.code).toBe(64);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^Usage: pull-config /);
  });

  it('when a command is mistyped at a terminal then it is an unknown instance and a usage error', async () => {
    const ops = await startOps();

    const result = await ops.tty(['stauts']);

    expect(result.code).toBe(64);
    expect(result.stdout).toMatch(
      /^stauts: unknown instance "stauts": .*\(pull-config --help lists the commands\)\n$/,
    );
  });

  it('when cron runs a shim with no instance then it is reported once, not every run', async () => {
    const ops = await startOps();

    const first = await ops.run(['ghost']);
    const second = await ops.run(['ghost']);

    expect(first.code).toBe(64);
    expect(first.stderr).toMatch(/^ghost: settings: unknown instance "ghost"/);
    expect(second).toMatchObject({ code: 64, stdout: '', stderr: '' });
  });

  it('when asked for --version then it prints the package version', async () => {
    const ops = await startOps();
    const url = new URL('../../package.json', import.meta.url);
    const { version } = JSON.parse(readFileSync(url, 'utf8')) as { version: string };

    const result = await ops.run(['--version']);

    expect(result.stdout).toBe(`${version}\n`);
    expect(result.code).toBe(0);
  });
});

async function shim(ops: Ops, name: string, mode: number): Promise<void> {
  await writeFile(join(ops.box.shimDir, name), '#!/bin/sh\nexit 0\n', { mode });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
