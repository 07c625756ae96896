import { appendFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const LIMIT = 64 * 1024;

/**
 * A small per-instance log of what changed (applied, rejected, failed,
 * recovered, rolled back, disabled, drift), so history is there without
 * syslog. Bounded: past 64 KiB the older half is dropped.
 */
export async function logEvent(
  dir: string,
  kind: string,
  message: string,
): Promise<void> {
  const path = join(dir, 'events.log');
  const line = `${new Date().toISOString()} ${kind}: ${message.replace(/\s*\n\s*/g, ' ')}\n`;
  try {
    await appendFile(path, line, { mode: 0o600 });
    if ((await stat(path)).size > LIMIT) {
      const text = await readFile(path, 'utf8');
      const keep = text.slice(text.indexOf('\n', text.length - LIMIT / 2) + 1);
      await writeFile(path, keep, { mode: 0o600 });
    }
  } catch {
    // The event log is a convenience; a full disk must not fail the run.
  }
}

export async function readEvents(dir: string, count: number): Promise<string[]> {
  const text = await readFile(join(dir, 'events.log'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).slice(-count);
}
