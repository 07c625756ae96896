import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import { createReporter, type Reporter } from './report.js';
import { pathsFrom } from './settings.js';

// Each command loads its modules when it runs: almost every run is a 304,
// and that path should not pay for status, rollback or diffs.
const admin = () => import('./admin.js');
const status = () => import('./status.js');
const view = () => import('./status-view.js');

const EXIT_HELP = `
Exit codes:
  0   done: nothing to do, or the new config is applied
  64  usage error
  65  candidate rejected (by the validator, or not a config at all)
  69  the service refused the reload; the previous config was restored
  74  local I/O error (disk full, permissions)
  75  temporary failure (manager unreachable, timed out, 5xx, 429)
  77  the manager refused the key
  78  configuration error

Example:
  pull-config status && pull-config run nginx --dry-run`;

interface GlobalOptions {
  verbose?: boolean;
  quiet?: boolean;
}

function version(): string {
  const url = new URL('../package.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}

function seconds(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('expected a number of seconds');
  return Number(text);
}

/** Builds the command line; each action sets its exit code. */
function program(secrets: string[], setExit: (code: number) => void): Command {
  const env = process.env;
  const paths = pathsFrom(env);
  const cli = new Command('pull-config')
    .description('Keep service configs in sync with a manager, safely, from cron.')
    .version(version())
    .addOption(new Option('-v, --verbose', 'show each step on stderr'))
    .addOption(new Option('-q, --quiet', 'print errors only').conflicts('verbose'))
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .showSuggestionAfterError();

  const reporter = (): Reporter => {
    const options = cli.opts<GlobalOptions>();
    return createReporter({
      secrets,
      verbose: !!options.verbose,
      quiet: !!options.quiet,
    });
  };
  const load = async (name: string) => ({
    ...(await (await import('./cycle.js')).prepare({ name, paths, env, secrets })),
    paths,
    secrets,
  });
  const example = (text: string) => `\nExample:\n  ${text}`;

  cli
    .command('run', { isDefault: true })
    .description('run the pull cycle for one instance (the shims call this)')
    .argument('[name]', 'instance; without it, legacy mode reads CONF_FILE and CONF_URL')
    .option(
      '--dry-run',
      'fetch and validate, print the diff, change nothing (exit 2: would change)',
    )
    .option('--force', 'ignore the stored ETag, the rejected mark and Retry-After')
    .option('--detailed-exitcodes', 'exit 2 when a change was applied')
    .addHelpText('after', example('pull-config run nginx --dry-run'))
    .action(async (name: string | undefined, options) => {
      // Without a name or the legacy variables there is nothing to run: show
      // a newcomer what there is, as a usage error.
      if (!name && !(env.CONF_FILE && env.CONF_URL)) cli.help({ error: true });
      const { runCycle } = await import('./cycle.js');
      const code = await runCycle({
        name,
        paths,
        env,
        reporter: reporter(),
        secrets,
        version: version(),
        mode: { dryRun: options.dryRun, force: options.force },
        detailedExitCodes: options.detailedExitcodes,
      });
      setExit(code);
    });

  cli
    .command('status')
    .description('show what every instance last did and why (changes nothing)')
    .argument('[names...]', 'instances to show; all by default')
    .option('--json', 'print one JSON document (version 1, ISO 8601 times)')
    .option('--check', 'monitoring probe: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN')
    .option(
      '--max-age <seconds>',
      'with --check: oldest acceptable successful check',
      seconds,
      600,
    )
    .addHelpText('after', example('pull-config status --check --max-age 300'))
    .action(async (names: string[], options) => {
      const report = await (await status()).collectStatus(paths, env, names);
      const { checkStatus, renderStatus } = await view();
      if (options.check) {
        const result = checkStatus(report, names.length > 0, options.maxAge * 1000);
        process.stdout.write(result.line + '\n');
        return setExit(result.code);
      }
      if (options.json) {
        // Absent facts are null, so every field of the documented shape is there.
        const json = JSON.stringify(report, (_key, value) => value ?? null, 2);
        return void process.stdout.write(json + '\n');
      }

      // no-color.org: a NO_COLOR that is set and not empty turns colour off.
      const colour = Boolean(process.stdout.isTTY) && !env.NO_COLOR;
      process.stdout.write(renderStatus(report, colour));
      if (cli.opts<GlobalOptions>().verbose) {
        const { readEvents } = await import('./events.js');
        const { instanceDir } = await import('./state.js');
        // Read as it is: status creates nothing, and runs unprivileged too.
        for (const name of names) {
          const events = await readEvents(instanceDir(paths.stateDir, name), 20);
          process.stdout.write(
            `\n${name} events:\n${events.map((e) => `  ${e}\n`).join('')}`,
          );
        }
      }
    });

  cli
    .command('list')
    .description('list the instances and where each definition comes from')
    .addHelpText('after', example('pull-config list'))
    .action(async () => {
      const report = await (await status()).collectStatus(paths, env, []);
      for (const item of report.instances) {
        const where = item.origin ?? item.problems[0] ?? 'unknown';
        process.stdout.write(`${item.name.padEnd(16)} ${where}\n`);
      }
    });

  cli
    .command('history')
    .description('list the kept versions of an instance, newest first')
    .argument('<name>')
    .addHelpText('after', example('pull-config history nginx'))
    .action(async (name: string) => {
      const { state } = await (await admin()).history(await load(name));
      const { ago } = await view();
      const versions = [...state.versions].reverse();
      if (versions.length === 0) process.stdout.write(`${name}: no version kept yet\n`);
      versions.forEach((version, index) => {
        const live = index === 0 ? '  (live)' : '';
        const tag = version.etag ?? '(no ETag)';
        const when = `${version.appliedAt} (${ago(version.appliedAt)})`;
        process.stdout.write(`${when}  ${tag}  ${version.size} bytes${live}\n`);
      });
    });

  cli
    .command('disable')
    .description('hold an instance still: cron runs skip it until enable')
    .argument('<name>')
    .requiredOption('--reason <text>', 'why, shown by status and to whoever runs it')
    .addHelpText('after', example(`pull-config disable nginx --reason "debugging TLS"`))
    .action(async (name: string, options: { reason: string }) => {
      const { actor, disable } = await admin();
      await disable(await load(name), options.reason, actor(env));
      process.stdout.write(`${name}: disabled: ${options.reason}\n`);
    });

  cli
    .command('enable')
    .description('let cron runs pull for an instance again')
    .argument('<name>')
    .addHelpText('after', example('pull-config enable nginx'))
    .action(async (name: string) => {
      const { actor, enable } = await admin();
      const changed = await enable(await load(name), actor(env));
      process.stdout.write(`${name}: ${changed ? 'enabled' : 'was not disabled'}\n`);
    });

  cli
    .command('rollback')
    .description('put back the previous applied version and disable the instance')
    .argument('<name>')
    .addHelpText(
      'after',
      example('pull-config rollback nginx && pull-config status nginx'),
    )
    .action(async (name: string) => {
      const { actor, rollback } = await admin();
      const version = await rollback(await load(name), actor(env));
      const tag = version.etag ?? '(no ETag)';
      process.stdout.write(
        `${name}: rolled back to ${tag} from ${version.appliedAt}; disabled\n`,
      );
    });

  return cli;
}

/** The one place that turns errors into a line and an exit code. */
export async function main(argv: string[]): Promise<void> {
  const secrets: string[] = [];
  const reporter = createReporter({ secrets, verbose: false, quiet: false });
  try {
    await program(secrets, (code) => (process.exitCode = code)).parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    } else if (error instanceof PullError) {
      reporter.err(error.message);
      process.exitCode = error.exitCode;
    } else {
      reporter.err(
        `pull-config: internal error: ${(error as Error)?.stack ?? String(error)}`,
      );
      process.exitCode = 70;
    }
  }
}

await main(process.argv);
