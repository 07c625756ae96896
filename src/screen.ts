import { PullError } from './errors.js';
import { EXIT } from './exit-codes.js';

/**
 * Refuses bodies that are not a config before they reach the validator or
 * the disk: validators do not catch these (dnsmasq --test accepts an empty
 * file, and an HTML login page is what a proxy sends when it wants a login).
 */
export function screenBody(body: Buffer, contentType: string, allowEmpty: boolean): void {
  const reject = (message: string, code: string) =>
    new PullError(message, { code, exitCode: EXIT.rejected });

  if (!allowEmpty && body.toString('latin1').trim() === '') {
    throw reject(
      'the manager sent an empty config (set ALLOW_EMPTY=yes if that is right)',
      'empty',
    );
  }
  if (/^\s*text\/html\b/i.test(contentType) || looksLikeHtml(body)) {
    throw reject('the manager sent an HTML page instead of a config', 'html');
  }
}

function looksLikeHtml(body: Buffer): boolean {
  const start = body.subarray(0, 512).toString('latin1').trimStart().toLowerCase();
  return start.startsWith('<!doctype html') || start.startsWith('<html');
}
