// Prints how long the common paths take and how much memory they use, as
// cron runs them: a clean environment (NODE_EXTRA_CA_CERTS alone adds ~70 ms
// to every start), one process per run. Figures, not pass/fail: compare them
// across changes.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupFile } from '../test/helpers/cleanup.js';
import { CLI_PATH } from '../test/helpers/cli.js';
import { startManager } from '../test/helpers/manager.js';
import { makeSandbox } from '../test/helpers/sandbox.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 20);

interface Sample {
  ms: number;
  kib: number;
}

const run = promisify(execFile);

/**
 * Runs argv under env -i and /usr/bin/time; returns wall time and peak RSS.
 * Asynchronous, because the fixture manager answers from this process.
 */
async function measure(argv: string[], env: Record<string, string>): Promise<Sample> {
  const pairs = Object.entries(env).map(([key, value]) => `${key}=${value}`);
  const started = process.hrtime.bigint();
  const { stderr } = await run('/usr/bin/env', [
    '-i',
    ...pairs,
    '/usr/bin/time',
    '-f',
    '%M',
    ...argv,
  ]);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  return { ms, kib: Number(stderr.trim().split('\n').at(-1)) };
}

function report(label: string, samples: Sample[]): void {
  const times = samples.map((sample) => sample.ms).sort((a, b) => a - b);
  const at = (q: number) =>
    times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
  const rss = Math.max(...samples.map((sample) => sample.kib)) / 1024;
  const line = `${label.padEnd(40)} median ${at(0.5).toFixed(0).padStart(4)} ms`;
  process.stdout.write(
    `${line}   p90 ${at(0.9).toFixed(0).padStart(4)} ms   max RSS ${rss.toFixed(1)} MiB\n`,
  );
}

async function main(): Promise<void> {
  const sandbox = await makeSandbox();
  const manager = await startManager();
  const target = join(sandbox.liveDir, 'bench.conf');
  await writeFile(
    sandbox.envFile,
    `SITE_ID=bench\nMANAGER_URL=${manager.url}\nAPI_KEY=k\n`,
  );
  await writeFile(
    join(sandbox.instancesDir, 'bench.env'),
    `CONF_URL=/bench.conf\nCONF_FILE=${target}\nTEST_COMMAND=true {}\nRELOAD_COMMAND=true\n`,
  );
  const env: Record<string, string> = { ...sandbox.env };
  const repeat = async (make: (index: number) => Promise<Sample>) => {
    const samples: Sample[] = [];
    for (let index = 0; index < RUNS; index++) samples.push(await make(index));
    return samples;
  };

  process.stdout.write(`${RUNS} runs each, env -i, node ${process.version}\n`);
  report(
    'node -e 0 (the floor)',
    await repeat(async () => measure([process.execPath, '-e', '0'], {})),
  );
  report(
    'pull-config --version',
    await repeat(async () => measure([CLI_PATH, '--version'], env)),
  );

  manager.serve('/bench.conf', 'version 0\n');
  await measure([CLI_PATH, 'run', 'bench'], env);
  report(
    'run, manager answers 304 (the common case)',
    await repeat(() => measure([CLI_PATH, 'run', 'bench'], env)),
  );

  report(
    'run, new config applied',
    await repeat(async (index) => {
      manager.serve('/bench.conf', `version ${index + 1}\n`);
      return measure([CLI_PATH, 'run', 'bench'], env);
    }),
  );

  manager.serve('/bench.conf', `${'x'.repeat(1023)}\n`.repeat(8 * 1024));
  report(
    'run, 8 MiB config applied',
    await repeat(async (index) => {
      manager.serve('/bench.conf', `${index}${'x'.repeat(1023)}\n`.repeat(8 * 1024));
      return measure([CLI_PATH, 'run', 'bench'], env);
    }),
  );

  report('status', await repeat(async () => measure([CLI_PATH, 'status', 'bench'], env)));
  await cleanupFile();
}

await main();
