import { describe, expect, it } from 'vitest';
import {
  parseCommand,
  shellCommand,
  usesCandidate,
  withCandidate,
} from '../../src/command.js';

describe('parseCommand', () => {
  it.each([
    ['nginx -t -q -c {}', ['nginx', '-t', '-q', '-c', '{}']],
    ['dnsmasq --test -C {}', ['dnsmasq', '--test', '-C', '{}']],
    [`sh -c 'nginx -t && echo ok'`, ['sh', '-c', 'nginx -t && echo ok']],
    ['check "--file={}" \'a b\'', ['check', '--file={}', 'a b']],
    ['echo $HOME', ['echo', '$HOME']],
    ['ls *.conf', ['ls', '*.conf']],
  ])('when the command is %j then argv is %j', (text, argv) => {
    expect(parseCommand(text, 'TEST_COMMAND').argv).toEqual(argv);
  });

  it.each([
    'a | b',
    'a && b',
    'a; b',
    'a > out',
    'a < in',
    'echo $(id)',
    'a & b',
    'a 2>&1',
    '',
    '  ',
  ])('when the command is %j then it is a configuration error', (text) => {
    expect(() => parseCommand(text, 'TEST_COMMAND (/etc/x.env:3)')).toThrow(
      /TEST_COMMAND \(\/etc\/x\.env:3\)/,
    );
  });
});

describe('withCandidate', () => {
  it('when {} is part of an argument then it is replaced there too', () => {
    const command = parseCommand('check --conf={} {}', 'TEST_COMMAND');
    expect(usesCandidate(command)).toBe(true);
    expect(withCandidate(command, '/etc/.x')).toEqual([
      'check',
      '--conf=/etc/.x',
      '/etc/.x',
    ]);
  });

  it('when there is no {} then the command checks the live path', () => {
    expect(usesCandidate(parseCommand('nginx -t', 'TEST_COMMAND'))).toBe(false);
  });

  it('when a legacy shell command has {} then the path is quoted for the shell', () => {
    const command = shellCommand('nginx -t -c {}', 'TEST_COMMAND');
    expect(withCandidate(command, "/etc/it's.conf")).toEqual([
      '/bin/sh',
      '-c',
      `nginx -t -c '/etc/it'\\''s.conf'`,
    ]);
  });
});
