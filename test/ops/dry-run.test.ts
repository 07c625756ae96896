import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { configPath, type Ops, startApplied, startOps } from './app.js';

const V1 = 'listen 80;\n';
const V2 = 'listen 81;\n';

// An instance that has applied V1, ready for the run under test.

// What a run must not touch: the state, the live file, the service.
async function untouched(ops: Ops) {
  const state = await ops.snapshot();
  const live = readFileSync(ops.live());
  const reloads = await ops.reloads();
  return async () => {
    expect(await ops.snapshot()).toEqual(state);
    expect(readFileSync(ops.live())).toEqual(live);
    expect(await ops.reloads()).toBe(reloads);
    expect(await readdir(ops.box.liveDir)).toEqual(['app.conf']);
  };
}

function lastRequest(ops: Ops) {
  const request = ops.manager.requests.at(-1);
  if (!request) throw new Error('the manager got no request');
  return request;
}

describe('run --dry-run', () => {
  it('when the manager would change the config then it prints a unified diff, exits 2 and changes nothing', async () => {
    const ops = await startApplied(V1);
    const check = await untouched(ops);
    const validations = await ops.validations();
    ops.serve(V2);

    const result = await ops.run(['run', 'app', '--dry-run']);

    expect(result.stdout).toContain(
      `--- ${ops.live()}\n+++ ${ops.live()} (from the manager)\n` +
        '@@ -1,1 +1,1 @@\n-listen 80;\n+listen 81;\n',
    );
    expect(result.code).toBe(2);
    expect(await ops.validations()).toBe(validations + 1);
    expect(lastRequest(ops).headers['if-none-match']).toBeUndefined();
    await check();
  });

  it('when the manager serves what is live then it says so and exits 0', async () => {
    const ops = await startApplied(V1);
    const check = await untouched(ops);

    const result = await ops.run(['run', 'app', '--dry-run']);

    expect(result.stdout).toBe('app: no change\n');
    expect(result.code).toBe(0);
    await check();
  });

  for (const { when, fault, code, message } of [
    {
      when: 'the validator rejects the candidate',
      fault: (ops: Ops) => ops.serve('BAD\n'),
      code: 65,
      message: /unknown directive "BAD"/,
    },
    {
      when: 'the manager sends an HTML page',
      fault: (ops: Ops) => ops.manager.misbehave(configPath('app'), { kind: 'html' }),
      code: 65,
      message: /HTML page/,
    },
    {
      when: 'the manager fails with 500',
      fault: (ops: Ops) =>
        ops.manager.misbehave(configPath('app'), { kind: 'status', status: 500 }),
      code: 75,
      message: /500/,
    },
    {
      when: 'the manager refuses the key',
      fault: (ops: Ops) => ops.manager.requireKey('another key'),
      code: 77,
      message: /401|refused|key/i,
    },
  ]) {
    it(`when ${when} then it exits ${code}, says why and changes nothing`, async () => {
      const ops = await startApplied(V1);
      const check = await untouched(ops);
      fault(ops);

      const result = await ops.run(['run', 'app', '--dry-run']);

      expect(result.stderr).toMatch(message);
      expect(result.stdout).toBe('');
      expect(result.code).toBe(code);
      await check();
    });
  }

  it('when the instance is disabled then a dry run still shows what would change', async () => {
    const ops = await startApplied(V1);
    await ops.run(['disable', 'app', '--reason', 'debugging']);
    const check = await untouched(ops);
    ops.serve(V2);

    const result = await ops.run(['run', 'app', '--dry-run']);

    expect(result.stdout).toContain('-listen 80;\n+listen 81;\n');
    expect(result.code).toBe(2);
    await check();
  });
});

describe('run --force', () => {
  it('when forced then it fetches without If-None-Match, and a config already live changes nothing', async () => {
    const ops = await startApplied(V1);
    await ops.cron();
    expect(lastRequest(ops).headers['if-none-match']).toMatch(/^W\/"/);
    const reloads = await ops.reloads();

    const result = await ops.run(['run', 'app', '--force']);

    expect(lastRequest(ops).headers['if-none-match']).toBeUndefined();
    expect(result.stdout).toBe('');
    expect(result.code).toBe(0);
    expect(await ops.reloads()).toBe(reloads);
  });

  it('when a rejected config would now pass then cron still skips it but --force validates and applies it', async () => {
    const ops = await startApplied(V1);
    ops.serve('BAD\n');
    expect((await ops.cron()).code).not.toBe(0);
    await ops.acceptAll();
    const validations = await ops.validations();

    const cron = await ops.cron();
    expect(cron.code).not.toBe(0);
    expect(await ops.validations()).toBe(validations);
    expect(readFileSync(ops.live(), 'utf8')).toBe(V1);

    const forced = await ops.run(['run', 'app', '--force']);
    expect(forced.stdout).toMatch(
      /^app: applied W\/"\S+" \(4 bytes\), reloaded; recovered after \d+ failed runs?$/m,
    );
    expect(forced.code).toBe(0);
    expect(await ops.validations()).toBe(validations + 1);
    expect(readFileSync(ops.live(), 'utf8')).toBe('BAD\n');
  });

  it('when forced then the candidate is still validated and a bad one is refused', async () => {
    const ops = await startApplied(V1);
    const reloads = await ops.reloads();
    ops.serve('BAD\n');

    const result = await ops.run(['run', 'app', '--force']);

    expect(result.stderr).toMatch(/^app: validate: .*unknown directive "BAD"/m);
    expect(result.code).toBe(65);
    expect(readFileSync(ops.live(), 'utf8')).toBe(V1);
    expect(await ops.reloads()).toBe(reloads);
  });

  it('when the instance is disabled then --force does not override it', async () => {
    const ops = await startApplied(V1);
    await ops.run(['disable', 'app', '--reason', 'hands off'], { SUDO_USER: 'alice' });
    ops.serve(V2);
    const requests = ops.manager.requests.length;

    const quiet = await ops.run(['run', 'app', '--force']);
    const terminal = await ops.tty(['run', 'app', '--force']);

    expect(quiet).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(terminal.stdout).toMatch(/^app: disabled by alice at \S+Z: hands off$/m);
    expect(terminal.code).toBe(0);
    expect(ops.manager.requests.length).toBe(requests);
    expect(readFileSync(ops.live(), 'utf8')).toBe(V1);
  });
});

describe('run --detailed-exitcodes', () => {
  for (const { when, args, change, code } of [
    {
      when: 'a change is applied',
      args: ['--detailed-exitcodes'],
      change: true,
      code: 2,
    },
    {
      when: 'the manager answers 304',
      args: ['--detailed-exitcodes'],
      change: false,
      code: 0,
    },
    { when: 'a change is applied without the flag', args: [], change: true, code: 0 },
  ]) {
    it(`when ${when} then it exits ${code}`, async () => {
      const ops = await startApplied(V1);
      if (change) ops.serve(V2);

      const result = await ops.run(['run', 'app', ...args]);

      expect(result.stdout).toEqual(
        change ? expect.stringMatching(/^app: applied /) : '',
      );
      expect(result.code).toBe(code);
    });
  }
});

describe('run --verbose and --quiet', () => {
  it('when run with --verbose then stderr shows the fetch with status and timing, the validator, the apply and the reload', async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(V1);

    const result = await ops.run(['--verbose', 'run', 'app']);

    expect(result.code).toBe(0);
    const steps = result.stderr;
    expect(steps).toMatch(
      /^app: fetch: http:\/\/127\.0\.0\.1:\d+\S+: 200, 11 bytes, \d+ ms$/m,
    );
    expect(steps).toMatch(/^app: validate: \S+\/bin\/check \S+: ok$/m);
    expect(steps).toMatch(
      new RegExp(`^app: apply: ${ops.live()} replaced \\(11 bytes\\)$`, 'm'),
    );
    expect(steps).toMatch(/^app: reload: \S+\/bin\/reload: ok$/m);
    expect(steps.indexOf('fetch:')).toBeLessThan(steps.indexOf('validate:'));
    expect(steps.indexOf('apply:')).toBeLessThan(steps.indexOf('reload:'));
  });

  it('when the validator refuses under --verbose then its own output is shown', async () => {
    const ops = await startApplied(V1);
    ops.serve('BAD\n');

    const result = await ops.run(['--verbose', 'run', 'app']);

    expect(result.stderr).toMatch(
      /^ {2}\S+(app|rejected)\.conf:1: unknown directive "BAD"$/m,
    );
    expect(result.code).toBe(65);
  });

  it('when run with --quiet then a change prints nothing but an error still does', async () => {
    const ops = await startOps();
    await ops.define('app');
    ops.serve(V1);

    const applied = await ops.run(['--quiet', 'run', 'app']);
    ops.serve('BAD\n');
    const rejected = await ops.run(['--quiet', 'run', 'app']);

    expect(applied).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(readFileSync(ops.live(), 'utf8')).toBe(V1);
    expect(rejected.stderr).toMatch(/^app: validate: .*unknown directive "BAD"$/m);
    expect(rejected.code).toBe(65);
  });
});
