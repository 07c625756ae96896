import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import etag from 'etag';
import { describe, expect, it } from 'vitest';
import { track } from '../helpers/cleanup.js';
import { CLI_PATH, runCli, type CommandResult } from '../helpers/cli.js';
import { startManager } from '../helpers/manager.js';
import { waitFor } from '../helpers/processes.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { leftovers, writeScript } from '../helpers/files.js';

const KILLS = 20;
const BUDGET_MS = 35_000;

// Whole files only: each version ends with a marker line, and is big enough
// that writing it is not a single instant.
function config(version: string): string {
  const body = `# filler for version ${version}\n`.repeat(200);
  return `# version ${version}\n${body}# end\n`;
}

interface Crashable {
  box: Sandbox;
  live: string;
  stateDir: string;
  events: string;
  reloadLog: string;
  serve(body: string): void;
}

// An instance whose validator and reload each take 200 ms and log when they
// start, so the test can aim its kills inside the apply.
async function crashable(validates: 'candidate' | 'live path'): Promise<Crashable> {
  const box = await makeSandbox();
  const manager = await startManager();
  const live = join(box.liveDir, 'app.conf');
  const events = join(box.root, 'events');
  const reloadLog = join(box.root, 'reloads');

  const validator = await writeScript(
    join(box.root, 'bin'),
    'validate',
    `echo validate >> ${events}\nsleep 0.2\n[ "$(tail -n 1 "$1")" = '# end' ]\n`,
  );
  const reload = await writeScript(
    join(box.root, 'bin'),
    'reload',
    `echo reload >> ${events}\nsleep 0.2\n` +
      `{ printf 'reload '; head -n 1 ${live}; } >> ${reloadLog}\n`,
  );
  const target = validates === 'candidate' ? '{}' : live;
  await writeFile(box.envFile, `SITE_ID=lab-1\nMANAGER_URL=${manager.url}\n`);
  await writeFile(
    join(box.instancesDir, 'app.env'),
    `CONF_URL=/sites/\${SITE_ID}/app.conf\nCONF_FILE=${live}\n` +
      `TEST_COMMAND=${validator} ${target}\nRELOAD_COMMAND=${reload}\n`,
  );

  return {
    box,
    live,
    stateDir: join(box.stateDir, 'app'),
    events,
    reloadLog,
    serve: (body) => manager.serve('/sites/lab-1/app.conf', body),
  };
}

function startCli(env: Record<string, string>) {
  const child = spawn(CLI_PATH, ['run', 'app'], { env, cwd: '/', stdio: 'ignore' });
  const stop = () => void child.kill('SIGKILL');
  const untrack = track({ stop: async () => stop(), stopNow: stop });
  const done = new Promise<void>((resolve) =>
    child.once('close', () => {
      untrack();
      resolve();
    }),
  );
  return {
    child,
    done,
    running: () => child.exitCode === null && child.signalCode === null,
  };
}

async function count(path: string, line: string): Promise<number> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').filter((entry) => entry === line).length;
}

// A killed run's validator or reload lives on in its own process group.
function orphansOf(box: Sandbox): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${box.root}/bin/`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

interface Kill {
  run: number;
  after: string;
  delayMs: number;
  journal: boolean;
}

// One run, killed with -9 a random moment after the validator or the reload
// started. Returns undefined when the run finished before the moment came.
async function killDuringApply(site: Crashable, run: number): Promise<Kill | undefined> {
  const after = run % 2 === 0 ? 'validate' : 'reload';
  const delayMs = Math.floor(Math.random() * 300);
  const seen = await count(site.events, after);
  const cli = startCli(site.box.env);

  const started = async () =>
    !cli.running() || (await count(site.events, after)) > seen ? true : undefined;
  await waitFor(`the ${after} step of run ${run}`, started, 10_000);
  await sleep(delayMs);
  if (!cli.running()) return undefined;

  const journal = existsSync(join(site.stateDir, 'pending.json'));
  cli.child.kill('SIGKILL');
  await cli.done;
  return { run, after, delayMs, journal };
}

describe('crashes at any point', () => {
  it.each(['candidate', 'live path'] as const)(
    'when runs whose validator checks the %s are killed with -9 again and again then the live file stays whole and one run converges',
    async (validates) => {
      const site = await crashable(validates);
      site.serve(config('0'));
      expect((await runCli(['run', 'app'], site.box.env)).code).toBe(0);

      const kills: Kill[] = [];
      const deadline = Date.now() + BUDGET_MS;
      for (let run = 1; run <= KILLS && Date.now() < deadline; run++) {
        const old = await readFile(site.live, 'utf8');
        const journaled = await readFile(
          join(site.stateDir, 'pending.old'),
          'utf8',
        ).catch(() => old);
        site.serve(config(String(run)));

        const kill = await killDuringApply(site, run);
        if (kill) kills.push(kill);

        const live = await readFile(site.live, 'utf8');
        const history = JSON.stringify(kills);
        expect([old, journaled, config(String(run))], history).toContain(live);
      }

      // Enough of the kills must have hit an open journal to prove the point.
      expect(kills.length).toBeGreaterThanOrEqual(KILLS / 2);
      expect(kills.filter((kill) => kill.journal).length).toBeGreaterThanOrEqual(3);

      await waitFor('the orphans to finish', () =>
        orphansOf(site.box).length === 0 ? true : undefined,
      );
      const final = config('final');
      site.serve(final);
      const result: CommandResult = await runCli(['run', 'app'], site.box.env);

      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/^app: applied W\/"[^"]+" \(\d+ bytes\), reloaded$/m);
      expect(await readFile(site.live, 'utf8')).toBe(final);
      const state = JSON.parse(await readFile(join(site.stateDir, 'state.json'), 'utf8'));
      expect(state.etag).toBe(etag(Buffer.from(final), { weak: true }));
      const reloads = (await readFile(site.reloadLog, 'utf8')).trim().split('\n');
      expect(reloads.at(-1)).toBe('reload # version final');
      expect(existsSync(join(site.stateDir, 'pending.json'))).toBe(false);
      // A crash is not a hand edit: nothing was saved as one.
      expect(existsSync(join(site.stateDir, 'drift'))).toBe(false);
      expect(await leftovers(site.box.liveDir, site.box.stateDir)).toEqual([]);
      const kept = (state.versions as { file: string }[]).map((version) => version.file);
      expect((await readdir(join(site.stateDir, 'versions'))).sort()).toEqual(
        kept.sort(),
      );
    },
  );
});
