import { describe, expect, it } from 'vitest';
import { parseEnv } from '../../src/env-file.js';
import { PullError } from '../../src/errors.js';

const value = (text: string, key = 'KEY') =>
  parseEnv(text, '/etc/environment').get(key)?.value;

describe('parseEnv', () => {
  it.each([
    ['KEY=plain', 'plain'],
    ['KEY="double quoted"', 'double quoted'],
    ["KEY='single quoted'", 'single quoted'],
    ['export KEY=exported', 'exported'],
    ['KEY=with=equals==', 'with=equals=='],
    ['KEY=crlf\r', 'crlf'],
    ['  KEY = spaced  ', 'spaced'],
    ['KEY="a \\"quote\\" inside"', 'a "quote" inside'],
    ["KEY='no \\escapes'", 'no \\escapes'],
    ['KEY="quoted" # comment after', 'quoted'],
    ['KEY=', ''],
    ['KEY=http://host:3000/manager/', 'http://host:3000/manager/'],
  ])('when a line reads %j then the value is %j', (line, expected) => {
    expect(value(line)).toBe(expected);
  });

  it('when the file has comments, blank lines and CRLF endings then they are skipped', () => {
    const text =
      '# site settings\r\n\r\nSITE_ID=one\r\n  # indented comment\r\nAPI_KEY=k\r\n';
    const entries = parseEnv(text, '/etc/environment');
    expect([...entries.keys()]).toEqual(['SITE_ID', 'API_KEY']);
    expect(entries.get('API_KEY')).toEqual({ value: 'k', line: 5 });
  });

  it('when a key appears twice then the last one wins, as in a shell', () => {
    expect(value('KEY=first\nKEY=second')).toBe('second');
  });

  it.each([
    ['API_KEY="s3cret', 'unterminated quote', 2],
    ["API_KEY='s3cret\n", 'unterminated quote', 2],
    ['API_KEY="s3cret" trailing', 'text after its closing quote', 2],
    ['just words', 'expected KEY=VALUE', 2],
    ['1KEY=x', 'the text before "=" is not a variable name', 2],
    ['API_KEY s3cret==', 'the text before "=" is not a variable name', 2],
  ])(
    'when a line reads %j then the error names the line and not the value',
    (line, words, at) => {
      let caught: unknown;
      try {
        parseEnv(`SITE_ID=a\n${line}`, '/etc/environment');
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(PullError);
      const error = caught as PullError;
      expect(error.message).toContain(`/etc/environment:${at}`);
      expect(error.message).toContain(words);
      expect(error.message).not.toContain('s3cret');
      expect(error.exitCode).toBe(78);
    },
  );
});
