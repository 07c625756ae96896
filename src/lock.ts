import { createHash } from 'node:crypto';
import { createConnection, createServer, type Server } from 'node:net';
import { resolve } from 'node:path';

export interface Lock {
  release(): Promise<void>;
}

export type LockAttempt = { lock: Lock } | { holder: number | undefined };

/**
 * One run per instance at a time. The lock is an abstract Unix socket: the
 * kernel frees it the moment its owner dies, even under kill -9, so no stale
 * lock file can ever block the next cron run. Whoever asks the holder is
 * told its pid.
 */
// LIMITATION: abstract sockets belong to a network namespace, so two runs in
// different namespaces on one state directory would not exclude each other.
export async function tryLock(stateDir: string, key: string): Promise<LockAttempt> {
  // The same directory however it is spelled (a trailing slash, say).
  const digest = createHash('sha256')
    .update(`${resolve(stateDir)}\0${key}`)
    .digest('hex');
  const address = `\0pull-config-${digest.slice(0, 32)}`;
  const server = createServer((socket) => socket.end(String(process.pid)));

  const bound = await new Promise<boolean>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(false) : reject(error),
    );
    server.listen(address, () => resolve(true));
  });

  if (bound) {
    server.unref();
    return { lock: { release: () => closeServer(server) } };
  }
  return { holder: await askHolder(address) };
}

/** Waits up to `waitMs` for the lock, for admin commands run by hand. */
export async function waitLock(
  stateDir: string,
  key: string,
  waitMs: number,
): Promise<LockAttempt> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const attempt = await tryLock(stateDir, key);
    if ('lock' in attempt || Date.now() >= deadline) return attempt;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function askHolder(address: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    let answer = '';
    const socket = createConnection(address);
    const timer = setTimeout(() => socket.destroy(), 1000);
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(/^\d+$/.test(answer) ? Number(answer) : undefined);
    });
    socket.on('error', () => undefined);
  });
}
