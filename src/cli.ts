import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { runCycle } from './cycle.js';
import { PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import { createReporter, type Reporter } from './report.js';
import { pathsFrom } from './settings.js';

const EXIT_HELP = `
Exit codes:
  0   done: nothing to do, or the new config is applied
  64  usage error
  65  candidate rejected (by the validator, or not a config at all)
  69  the service refused the reload; the previous config was restored
  74  local I/O error (disk full, permissions)
  75  temporary failure (manager unreachable, timed out, 5xx, 429)
  77  the manager refused the key
  78  configuration error`;

interface GlobalOptions {
  verbose?: boolean;
  quiet?: boolean;
}

function version(): string {
  const url = new URL('../package.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}

/** Builds the command line; each action returns its exit code. */
function program(secrets: string[], setExit: (code: number) => void): Command {
  const cli = new Command('pull-config')
    .description('Keep a service config in sync with a manager, safely, from cron.')
    .version(version())
    .addOption(new Option('-v, --verbose', 'show each step on stderr'))
    .addOption(new Option('-q, --quiet', 'print errors only').conflicts('verbose'))
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .showSuggestionAfterError();

  const reporterFor = (): Reporter => {
    const options = cli.opts<GlobalOptions>();
    return createReporter({ secrets, verbose: !!options.verbose, quiet: !!options.quiet });
  };

  cli
    .command('run', { isDefault: true })
    .description('run the pull cycle for one instance (the shims call this)')
    .argument('[name]', 'instance name; without it, legacy mode reads CONF_FILE and CONF_URL')
    .addHelpText('after', '\nExample:\n  pull-config run nginx')
    .action(async (name: string | undefined) => {
      if (!name && !(process.env.CONF_FILE && process.env.CONF_URL)) {
        throw new PullError('run needs an instance name (or CONF_FILE and CONF_URL)', {
          code: 'usage',
          exitCode: EXIT.usage,
        });
      }
      setExit(
        await runCycle({
          name,
          paths: pathsFrom(process.env),
          env: process.env,
          reporter: reporterFor(),
          secrets,
          version: version(),
        }),
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
      reporter.err(`pull-config: internal error: ${(error as Error)?.stack ?? String(error)}`);
      process.exitCode = 70;
    }
  }
}

await main(process.argv);
