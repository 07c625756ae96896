import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import etag from 'etag';
import { sendBody, sendLikeExpress } from './manager-send.js';

// Ways the manager (or something between it and us) can misbehave. Each one
// answers every request for its path until it is cleared.
export type Fault =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  | { kind: 'no-etag' }
  | { kind: 'truncate' }
  | { kind: 'truncate-chunked' }
  | { kind: 'stall-headers' }
  | { kind: 'stall-body' }
  | { kind: 'gzip-bomb'; bytes: number }
  | { kind: 'html' }
  | { kind: 'slow'; ms: number };

// What happened to one gzip bomb; fields update while it is being sent.
export interface BombRecord {
  path: string;
  bytes: number;
  // Uncompressed bytes generated so far; stops growing when the client hangs up.
  inflatedBytesSent: number;
  // True when the client closed the connection before the bomb was fully written.
  aborted: boolean;
  // Resolves once the response has finished or its connection has closed.
  settled: Promise<void>;
}

export interface FaultContext {
  path: string;
  body: Buffer;
  contentType: string;
  bombs: BombRecord[];
}

export const LOGIN_PAGE = Buffer.from(
  '<!doctype html>\n<html><head><title>Sign in</title></head>\n' +
    '<body><form method="post" action="/login"><input name="user">' +
    '<input name="password" type="password"><button>Sign in</button></form>' +
    '</body></html>\n',
);

export function answerWithFault(
  req: IncomingMessage,
  res: ServerResponse,
  fault: Fault,
  context: FaultContext,
): void {
  const { body, contentType } = context;

  switch (fault.kind) {
    case 'status':
      res.writeHead(fault.status, fault.headers);
      res.end(fault.body ?? '');
      return;
    case 'no-etag':
      res.setHeader('Content-Type', contentType);
      sendBody(req, res, body);
      return;
    case 'truncate':
      sendHalf(res, context, String(body.length + 1), () => res.socket?.destroy());
      return;
    case 'truncate-chunked':
      sendHalf(res, context, undefined, () => res.socket?.destroy());
      return;
    case 'stall-headers':
      return;
    case 'stall-body':
      sendHalf(res, context, String(body.length), () => undefined);
      return;
    case 'gzip-bomb':
      sendGzipBomb(res, fault.bytes, context);
      return;
    case 'html':
      sendLikeExpress(req, res, LOGIN_PAGE, 'text/html; charset=utf-8');
      return;
    case 'slow': {
      const timer = setTimeout(
        () => sendLikeExpress(req, res, body, contentType),
        fault.ms,
      );
      res.once('close', () => clearTimeout(timer));
      return;
    }
  }
}

// Starts a 200 with the real ETag, sends the first half of the body, then
// calls after() once those bytes are handed to the kernel. Without a length
// the response is chunked, and cutting it short omits the final chunk.
function sendHalf(
  res: ServerResponse,
  { body, contentType }: FaultContext,
  contentLength: string | undefined,
  after: () => void,
): void {
  res.setHeader('Content-Type', contentType);
  res.setHeader('ETag', etag(body, { weak: true }));
  if (contentLength !== undefined) res.setHeader('Content-Length', contentLength);

  res.write(body.subarray(0, Math.ceil(body.length / 2)), after);
}

// Streams gzip of `bytes` zeros with backpressure, so a 1 GiB bomb costs the
// server only what the client actually reads.
function sendGzipBomb(res: ServerResponse, bytes: number, context: FaultContext): void {
  let settle = () => {};
  const record: BombRecord = {
    path: context.path,
    bytes,
    inflatedBytesSent: 0,
    aborted: false,
    settled: new Promise((resolve) => (settle = resolve)),
  };
  context.bombs.push(record);

  res.once('close', () => {
    record.aborted = !res.writableFinished;
    settle();
  });
  res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Encoding': 'gzip',
  });

  const zeros = zeroStream(bytes, (n) => (record.inflatedBytesSent += n));
  pipeline(zeros, createGzip({ level: 9 }), res).catch(() => {
    // The client hanging up is the point of the test; the record says so.
  });
}

function zeroStream(bytes: number, onChunk: (n: number) => void): Readable {
  const block = Buffer.alloc(64 * 1024);
  let remaining = bytes;

  return new Readable({
    read() {
      const size = Math.min(block.length, remaining);
      remaining -= size;
      onChunk(size);
      this.push(size > 0 ? block.subarray(0, size) : null);
    },
  });
}
