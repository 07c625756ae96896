import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { isValidating, startApplied, startOps, statusRow } from './app.js';

const V1 = 'listen 80;\n';
const V2 = 'listen 81;\n';
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

async function waitUntil(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('disable and enable', () => {
  it('when disabled then cron runs exit 0 quietly without a request, and after enable the next run applies', async () => {
    const ops = await startApplied(V1);

    const disable = await ops.run(['disable', 'app', '--reason', 'debugging TLS']);
    expect(disable).toMatchObject({ code: 0, stdout: 'app: disabled: debugging TLS\n' });
    ops.serve(V2);
    const requests = ops.manager.requests.length;
    for (let run = 0; run < 2; run++) {
      expect(await ops.cron()).toMatchObject({ code: 0, stdout: '', stderr: '' });
    }
    expect(ops.manager.requests.length).toBe(requests);
    expect(readFileSync(ops.live(), 'utf8')).toBe(V1);

    const enable = await ops.run(['enable', 'app']);
    expect(enable).toMatchObject({ code: 0, stdout: 'app: enabled\n' });
    const cron = await ops.cron();
    expect(cron.stdout).toMatch(/^app: applied W\/"\S+" \(11 bytes\), reloaded\n$/);
    expect(readFileSync(ops.live(), 'utf8')).toBe(V2);
    expect((await statusRow(ops)).disabled).toBeNull();
  });

  it('when a disabled instance is run from a terminal then it says who disabled it, when and why', async () => {
    const ops = await startApplied(V1);
    await ops.run(['disable', 'app', '--reason', 'debugging TLS'], {
      SUDO_USER: 'alice',
    });
    const requests = ops.manager.requests.length;

    const result = await ops.tty(['run', 'app']);

    const line = /^app: disabled by alice at (\S+): debugging TLS$/m.exec(result.stdout);
    expect(line?.[1]).toMatch(ISO);
    expect(result.code).toBe(0);
    expect(ops.manager.requests.length).toBe(requests);
  });

  it('when disabled then status shows who, when and why', async () => {
    const ops = await startApplied(V1);
    await ops.run(['disable', 'app', '--reason', 'debugging TLS'], {
      SUDO_USER: 'alice',
    });

    const text = await ops.run(['status', 'app']);
    const json = await statusRow(ops);

    expect(text.stdout).toMatch(/^app: disabled, /);
    expect(text.stdout).toMatch(/^ {2}disabled +by alice \d+ s ago: debugging TLS$/m);
    expect(json.result).toBe('disabled');
    expect(json.disabled).toEqual({
      reason: 'debugging TLS',
      by: 'alice',
      at: expect.any(String),
    });
    expect(json.disabled?.at).toMatch(ISO);
  });

  for (const { who, env, by } of [
    {
      who: 'an admin behind sudo',
      env: { SUDO_USER: 'alice', USER: 'root' },
      by: 'alice',
    },
    { who: 'a logged-in user', env: { USER: 'bob' }, by: 'bob' },
    { who: 'cron, with no user in its environment', env: {}, by: userInfo().username },
  ]) {
    it(`when disabled by ${who} then the record names ${by}`, async () => {
      const ops = await startApplied(V1);

      await ops.run(['disable', 'app', '--reason', 'why not'], env);

      expect((await statusRow(ops)).disabled?.by).toBe(by);
    });
  }

  it('when an instance that is not disabled is enabled then it says so', async () => {
    const ops = await startApplied(V1);

    const result = await ops.run(['enable', 'app']);

    expect(result).toMatchObject({ code: 0, stdout: 'app: was not disabled\n' });
  });

  it('when disable has no --reason then it is a usage error and nothing is disabled', async () => {
    const ops = await startApplied(V1);

    const result = await ops.run(['disable', 'app']);

    expect(result.stderr).toMatch(/--reason/);
    expect(result.code).toBe(64);
    expect((await statusRow(ops)).disabled).toBeNull();
  });
});

describe('admin commands and the lock', () => {
  for (const { command, live } of [
    { command: ['disable', 'app', '--reason', 'now'], live: 'v3;\n' },
    { command: ['rollback', 'app'], live: 'v2;\n' },
  ]) {
    it(`when a cron run holds the lock then ${command[0]} waits for it and then acts`, async () => {
      const ops = await startOps();
      await ops.define('app');
      for (const body of ['v1;\n', 'v2;\n']) {
        ops.serve(body);
        await ops.cron();
      }
      await ops.slowValidator();
      ops.serve('v3;\n');
      const cron = ops.cron();
      await waitUntil('the cron run to validate', () => isValidating(ops));
      await ops.slowValidator(false);

      const started = Date.now();
      const result = await ops.run(command);
      const waited = Date.now() - started;

      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(waited).toBeGreaterThan(1000);
      expect((await cron).stdout).toMatch(/^app: applied /);
      expect(readFileSync(ops.live(), 'utf8')).toBe(live);
      expect((await statusRow(ops)).disabled).not.toBeNull();
    });
  }
});
