import { parse } from 'shell-quote';
import { configError } from './errors.js';

/** A command from a definition file, ready to run without a shell. */
export interface Command {
  argv: string[];
  /** The setting it came from, for messages: "TEST_COMMAND (/etc/...:3)". */
  origin: string;
}

const PLACEHOLDER = '{}';

/**
 * Splits a command into words as a shell would (quotes honoured) but refuses
 * anything only a shell could do: pipes, lists, redirections, substitutions.
 * Such commands must say `sh -c '...'` so that the shell is visible.
 */
export function parseCommand(text: string, origin: string): Command {
  const words = parse(text, (name) => `$${name}`);
  const argv: string[] = [];

  for (const word of words) {
    if (typeof word === 'string') argv.push(word);
    else if ('op' in word && word.op === 'glob') argv.push(word.pattern);
    else {
      const what = 'op' in word ? `shell operator "${word.op}"` : 'a comment';
      throw configError(`${origin}: ${what} needs an explicit sh -c '...'`);
    }
  }
  if (argv.length === 0) throw configError(`${origin}: empty command`);
  return { argv, origin };
}

/** A command written for the original shell script, which ran it with eval. */
export function shellCommand(text: string, origin: string): Command {
  return { argv: ['/bin/sh', '-c', text], origin };
}

export function usesCandidate(command: Command): boolean {
  return command.argv.some((word) => word.includes(PLACEHOLDER));
}

/** Puts the candidate's path wherever the command says `{}`. */
export function withCandidate(command: Command, path: string): string[] {
  const isShell = command.argv[0] === '/bin/sh' && command.argv[1] === '-c';
  const value = isShell ? `'${path.replaceAll("'", `'\\''`)}'` : path;
  return command.argv.map((word, index) =>
    isShell && index < 2 ? word : word.replaceAll(PLACEHOLDER, value),
  );
}
