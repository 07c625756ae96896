import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import { track } from './cleanup.js';
import { answerWithFault, type BombRecord, type Fault } from './manager-faults.js';
import { sendLikeExpress } from './manager-send.js';

export type { BombRecord, Fault } from './manager-faults.js';

export interface RecordedRequest {
  method: string;
  // The request target as sent, query string included.
  path: string;
  headers: IncomingHttpHeaders;
}

export interface ServeOptions {
  contentType?: string;
}

export interface Manager {
  url: string;
  requests: RecordedRequest[];
  bombs: BombRecord[];
  // True once any gzip bomb's client hung up before the bomb was fully written.
  readonly bombAborted: boolean;
  serve(path: string, body: string | Buffer, options?: ServeOptions): void;
  misbehave(path: string, fault: Fault | undefined): void;
  requireKey(key: string | undefined): void;
  close(): Promise<void>;
}

interface Served {
  body: Buffer;
  contentType: string;
}

// Faults on a path nothing is served at still need bytes to cut short.
const FILLER = Buffer.from('# pull-config fixture filler\n'.repeat(64));

// A stand-in for the central manager, on 127.0.0.1 and an ephemeral port.
// Paths are matched without their query string.
export async function startManager(): Promise<Manager> {
  const served = new Map<string, Served>();
  const faults = new Map<string, Fault>();
  const sockets = new Set<Socket>();
  const requests: RecordedRequest[] = [];
  const bombs: BombRecord[] = [];
  let key: string | undefined;

  const answer = (req: IncomingMessage, res: ServerResponse) => {
    const target = req.url ?? '/';
    requests.push({ method: req.method ?? '', path: target, headers: req.headers });
    const path = new URL(target, 'http://manager').pathname;

    if (key !== undefined && req.headers.authorization !== `Bearer ${key}`) {
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer', 'Content-Type': 'text/plain' });
      res.end('Unauthorized');
      return;
    }

    const entry = served.get(path);
    const fault = faults.get(path);
    if (fault !== undefined) {
      const body = entry?.body.length ? entry.body : FILLER;
      const contentType = entry?.contentType ?? 'text/plain; charset=utf-8';
      answerWithFault(req, res, fault, { path, body, contentType, bombs });
    } else if (entry !== undefined && (req.method === 'GET' || req.method === 'HEAD')) {
      sendLikeExpress(req, res, entry.body, entry.contentType);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end(`Cannot ${req.method ?? 'GET'} ${path}`);
    }
  };

  const server = createServer(answer);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string')
    throw new Error('manager has no port');

  // Stalled responses never end on their own, so closing must cut every socket.
  const close = async () => {
    untrack();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  const untrack = track({ stop: close, stopNow: () => undefined });

  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    bombs,
    get bombAborted() {
      return bombs.some((bomb) => bomb.aborted);
    },
    serve(path, body, options = {}) {
      const bytes = typeof body === 'string' ? Buffer.from(body) : body;
      served.set(path, {
        body: bytes,
        contentType: options.contentType ?? 'text/plain; charset=utf-8',
      });
    },
    misbehave(path, fault) {
      if (fault === undefined) faults.delete(path);
      else faults.set(path, fault);
    },
    requireKey(newKey) {
      key = newKey;
    },
    close,
  };
}
