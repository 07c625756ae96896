import { readFile } from 'node:fs/promises';
import { configError, errnoOf, ioError } from './errors.js';

export interface EnvEntry {
  value: string;
  line: number;
}

export type EnvEntries = Map<string, EnvEntry>;

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses KEY=VALUE text the way admins write /etc/environment: comments,
 * blank lines, optional `export `, single or double quotes, CRLF endings and
 * `=` inside values. Errors name the file and line but never the value,
 * which may be a secret.
 */
export function parseEnv(text: string, file: string): EnvEntries {
  const entries: EnvEntries = new Map();
  const lines = text.split('\n');

  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] ?? '').replace(/\r$/, '');
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;

    const where = `${file}:${index + 1}`;
    const body = trimmed.replace(/^export\s+/, '');
    const equals = body.indexOf('=');
    if (equals < 0) throw configError(`${where}: expected KEY=VALUE`);

    const key = body.slice(0, equals).trim();
    // Never echo the text: a line missing its "=" may be a bare secret.
    if (!KEY.test(key)) {
      throw configError(`${where}: the text before "=" is not a variable name`);
    }

    const value = parseValue(body.slice(equals + 1).trim(), key, where);
    entries.set(key, { value, line: index + 1 });
  }
  return entries;
}

function parseValue(raw: string, key: string, where: string): string {
  const quote = raw[0];
  if (quote !== '"' && quote !== "'") return raw;

  let value = '';
  let position = 1;
  for (; position < raw.length; position++) {
    const char = raw[position];
    if (char === quote) break;
    if (char === '\\' && quote === '"' && position + 1 < raw.length) position++;
    value += raw[position];
  }

  if (position >= raw.length)
    throw configError(`${where}: ${key} has an unterminated quote`);
  const rest = raw.slice(position + 1).trim();
  if (rest !== '' && !rest.startsWith('#')) {
    throw configError(`${where}: ${key} has text after its closing quote`);
  }
  return value;
}

/** Reads and parses a KEY=VALUE file; a missing file yields no entries. */
export async function readEnvFile(file: string): Promise<EnvEntries> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return new Map();
    throw ioError('read', file, error);
  }
  return parseEnv(text, file);
}
