import { open, readdir, readFile, stat } from 'node:fs/promises';

/** What we know of a running nginx before we ask it to reload. */
export interface NginxSnapshot {
  pidFile: string;
  master: number | undefined;
  workers: Set<number>;
  errorLog: string | undefined;
  errorLogSize: number;
}

/** Finds a top-level directive such as `pid` or `error_log` in nginx.conf. */
// LIMITATION: a pid or error_log set in an included file is not seen; the
// watch then assumes Debian's /run/nginx.pid and reads no error log.
export function topLevelDirective(config: string, name: string): string | undefined {
  let depth = 0;
  for (const rawLine of config.split('\n')) {
    const line = rawLine.replace(/#.*/, '').trim();
    if (depth === 0) {
      const match = new RegExp(`^${name}\\s+([^;\\s]+)`).exec(line);
      if (match) return match[1]!.replace(/^["']|["']$/g, '');
    }
    depth += (line.match(/\{/g)?.length ?? 0) - (line.match(/\}/g)?.length ?? 0);
  }
  return undefined;
}

export async function snapshotNginx(liveConfig: string): Promise<NginxSnapshot> {
  const pidFile = topLevelDirective(liveConfig, 'pid') ?? '/run/nginx.pid';
  const errorLog = topLevelDirective(liveConfig, 'error_log');
  const master = await readMaster(pidFile);
  return {
    pidFile,
    master,
    workers: master ? await childrenOf(master) : new Set(),
    errorLog: errorLog?.startsWith('/') ? errorLog : undefined,
    errorLogSize: errorLog ? await sizeOf(errorLog) : 0,
  };
}

/**
 * `nginx -s reload` and `systemctl reload nginx` return before the master has
 * tried the new config; when it cannot apply it, the master logs [emerg] and
 * keeps the old one. Success shows as new worker processes (or a new master).
 * Returns undefined on success, else why it failed.
 */
export async function awaitNginxReload(
  before: NginxSnapshot,
  timeoutMs: number,
): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const master = await readMaster(before.pidFile);
    if (master && master !== before.master) return undefined;
    if (master) {
      const workers = await childrenOf(master);
      if ([...workers].some((pid) => !before.workers.has(pid))) return undefined;
    }

    const emerg = await newEmergLine(before);
    if (emerg) return `nginx kept its old config: ${emerg}`;
    if (Date.now() >= deadline) {
      return master
        ? `nginx started no new workers within ${timeoutMs / 1000} s: it kept its old config`
        : `nginx is not running (no live master in ${before.pidFile})`;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function readMaster(pidFile: string): Promise<number | undefined> {
  const text = await readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

async function childrenOf(parent: number): Promise<Set<number>> {
  const children = new Set<number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The command name may hold spaces or parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === parent) children.add(Number(entry));
  }
  return children;
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}

async function newEmergLine(before: NginxSnapshot): Promise<string | undefined> {
  if (!before.errorLog) return undefined;
  const handle = await open(before.errorLog, 'r').catch(() => undefined);
  if (!handle) return undefined;
  try {
    const buffer = Buffer.alloc(64 * 1024);
    const { bytesRead } = await handle.read(
      buffer,
      0,
      buffer.length,
      before.errorLogSize,
    );
    const text = buffer.subarray(0, bytesRead).toString('utf8');
    const line = text.split('\n').find((candidate) => candidate.includes('[emerg]'));
    return line?.replace(/^.*?\[emerg\]\s*\d+#\d+:\s*/, '').trim();
  } finally {
    await handle.close();
  }
}
