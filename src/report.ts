/** Prints lines for one command: product on stdout, diagnostics on stderr. */
export interface Reporter {
  out(line: string): void;
  err(line: string): void;
  /** Steps, shown with --verbose only. */
  debug(line: string): void;
  interactive: boolean;
  verbose: boolean;
}

export interface ReporterOptions {
  secrets: string[];
  verbose: boolean;
  quiet: boolean;
}

/** Hides each secret in text meant for output or for the state directory. */
export function redactSecrets(text: string, secrets: string[]): string {
  return secrets.reduce(
    (line, secret) => (secret ? line.replaceAll(secret, '[redacted]') : line),
    text,
  );
}

/** Every line passes through here, so no path can print the key. */
export function createReporter(options: ReporterOptions): Reporter {
  const redact = (line: string) => redactSecrets(line, options.secrets);

  return {
    out: (line) => {
      if (!options.quiet) process.stdout.write(redact(line) + '\n');
    },
    err: (line) => process.stderr.write(redact(line) + '\n'),
    debug: (line) => {
      if (options.verbose) process.stderr.write(redact(line) + '\n');
    },
    interactive: Boolean(process.stdout.isTTY || process.stderr.isTTY),
    verbose: options.verbose,
  };
}
