import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NGINX_BIN, nginxConfig, startNginx } from '../helpers/nginx.js';
import { type Ops, startOps, statusRow } from './app.js';

const TIME = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';

// Serves each body in turn with a cron run after each; returns the ETags applied.
async function applyInTurn(ops: Ops, bodies: string[], name = 'app'): Promise<string[]> {
  const etags: string[] = [];
  for (const body of bodies) {
    ops.serve(body, name);
    const cron = await ops.cron();
    const etag = new RegExp(`^${name}: applied (\\S+) `, 'm').exec(cron.stdout)?.[1];
    if (!etag)
      throw new Error(`${body.trim()} was not applied: ${cron.stdout}${cron.stderr}`);
    etags.push(etag);
  }
  return etags;
}

function historyLines(text: string): string[] {
  return text.split('\n').filter(Boolean);
}

describe('rollback', () => {
  it("when rolled back then nginx serves the previous config, cron keeps it, and after enable cron brings back the manager's", async () => {
    const ops = await startOps();
    const nginx = await startNginx(ops.box.root, {
      confPath: ops.live('web'),
      body: 'start',
    });
    const config = (body: string) =>
      nginxConfig({ port: nginx.port, prefix: nginx.prefix, body });
    await ops.define('web', {
      TEST_COMMAND: `${NGINX_BIN} -t -q -p ${nginx.prefix} -c {}`,
      RELOAD_COMMAND: nginx.reloadArgv.join(' '),
      RELOAD_CHECK: 'nginx',
    });
    const [one, two] = await applyInTurn(ops, [config('one'), config('two')], 'web');
    await nginx.waitForBody('/', 'two');

    const rollback = await ops.run(['rollback', 'web']);

    expect(rollback.stdout).toMatch(
      new RegExp(`^web: rolled back to ${escape(one!)} from ${TIME}; disabled\n$`),
    );
    expect(rollback.code).toBe(0);
    await nginx.waitForBody('/', 'one');
    expect(readFileSync(ops.live('web'), 'utf8')).toBe(config('one'));
    const rolledBack = await statusRow(ops, 'web');
    expect(rolledBack.etag).toBe(one);
    expect(rolledBack.disabled?.reason).toBe(
      `rolled back from ${two} to ${one}; enable to follow the manager again`,
    );

    const requests = ops.manager.requests.length;
    const kept = await ops.cron();
    expect(kept).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(ops.manager.requests.length).toBe(requests);
    expect(await nginx.get('/')).toEqual({ status: 200, body: 'one' });

    expect((await ops.run(['enable', 'web'])).stdout).toBe('web: enabled\n');
    const back = await ops.cron();
    expect(back.stdout).toBe(
      `web: applied ${two} (${config('two').length} bytes), reloaded\n`,
    );
    await nginx.waitForBody('/', 'two');
    expect((await statusRow(ops, 'web')).disabled).toBeNull();
  });

  it('when rolled back twice then the second goes one version further back, and a third has nowhere to go', async () => {
    const ops = await startOps();
    await ops.define('app');
    const etags = await applyInTurn(ops, ['v1;\n', 'v2;\n', 'v3;\n']);
    const reloads = await ops.reloads();

    const first = await ops.run(['rollback', 'app']);
    expect(first.code).toBe(0);
    expect(readFileSync(ops.live(), 'utf8')).toBe('v2;\n');

    const second = await ops.run(['rollback', 'app']);
    expect(second.stdout).toMatch(
      new RegExp(`^app: rolled back to ${escape(etags[0]!)} `),
    );
    expect(second.code).toBe(0);
    expect(readFileSync(ops.live(), 'utf8')).toBe('v1;\n');
    expect(await ops.reloads()).toBe(reloads + 2);
    expect((await statusRow(ops, 'app')).etag).toBe(etags[0]);

    const third = await ops.run(['rollback', 'app']);
    expect(third.stderr).toMatch(/^app: no earlier version is kept to roll back to$/m);
    expect(third.code).toBe(64);
    expect(readFileSync(ops.live(), 'utf8')).toBe('v1;\n');
    expect(await ops.reloads()).toBe(reloads + 2);
  });

  it('when the kept version no longer passes the validator then rollback refuses and nothing changes', async () => {
    const ops = await startOps();
    await ops.define('app');
    await ops.acceptAll();
    await applyInTurn(ops, ['BAD old;\n']);
    await ops.acceptAll(false);
    await applyInTurn(ops, ['v2;\n']);
    const reloads = await ops.reloads();

    const result = await ops.run(['rollback', 'app']);

    expect(result.stderr).toMatch(/unknown directive "BAD"/);
    expect(result.code).toBe(65);
    expect(readFileSync(ops.live(), 'utf8')).toBe('v2;\n');
    expect(await ops.reloads()).toBe(reloads);
    expect((await statusRow(ops, 'app')).disabled).toBeNull();
  });
});

describe('rollback after an interrupted apply', () => {
  it('when a killed run left its journal then rollback refuses until a run resolves it', async () => {
    const ops = await startOps();
    await ops.define('app');
    await applyInTurn(ops, ['v1;\n', 'v2;\n']);
    const journal = join(ops.box.stateDir, 'app', 'pending.json');
    const pending = {
      target: ops.live(),
      oldHash: undefined,
      newHash: 'f'.repeat(64),
      startedAt: new Date().toISOString(),
      reloaded: false,
      completion: { kind: 'apply' },
    };
    writeFileSync(journal, JSON.stringify(pending));

    const result = await ops.run(['rollback', 'app']);

    expect(result).toMatchObject({
      code: 75,
      stderr: 'app: an interrupted apply is pending; run "pull-config run app" first\n',
    });
    expect(readFileSync(ops.live(), 'utf8')).toBe('v2;\n');
    expect(existsSync(journal)).toBe(true);
  });
});

describe('history', () => {
  it('when versions were applied then history lists them newest first with ETag and size, the live one marked', async () => {
    const ops = await startOps();
    await ops.define('app');
    const etags = await applyInTurn(ops, ['v1;\n', 'v22;\n', 'v333;\n']);

    const result = await ops.run(['history', 'app']);

    expect(result.code).toBe(0);
    const lines = historyLines(result.stdout);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(
      new RegExp(
        `^${TIME} \\(\\d+ s ago\\) {2}${escape(etags[2]!)} {2}6 bytes {2}\\(live\\)$`,
      ),
    );
    expect(lines[1]).toMatch(
      new RegExp(`^${TIME} .* {2}${escape(etags[1]!)} {2}5 bytes$`),
    );
    expect(lines[2]).toMatch(
      new RegExp(`^${TIME} .* {2}${escape(etags[0]!)} {2}4 bytes$`),
    );
  });

  it('when nothing was applied yet then history says so', async () => {
    const ops = await startOps();
    await ops.define('app');

    const result = await ops.run(['history', 'app']);

    expect(result.stdout).toBe('app: no version kept yet\n');
    expect(result.code).toBe(0);
  });

  for (const { keep, applied } of [
    { keep: '2', applied: 4 },
    { keep: undefined, applied: 6 },
  ]) {
    const kept = Number(keep ?? 5);
    it(`when KEEP_VERSIONS is ${keep ?? 'unset'} and ${applied} versions were applied then the newest ${kept} are kept`, async () => {
      const ops = await startOps();
      await ops.define('app', keep ? { KEEP_VERSIONS: keep } : {});
      const bodies = Array.from({ length: applied }, (_, index) => `v${index};\n`);
      const etags = await applyInTurn(ops, bodies);

      const result = await ops.run(['history', 'app']);

      const lines = historyLines(result.stdout);
      expect(lines).toHaveLength(kept);
      lines.forEach((line, index) => expect(line).toContain(etags.at(-1 - index)));
      const copies = await readdir(join(ops.box.stateDir, 'app', 'versions'));
      expect(copies).toHaveLength(kept);
    });
  }
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
