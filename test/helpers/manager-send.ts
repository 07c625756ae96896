import type { IncomingMessage, ServerResponse } from 'node:http';
import etag from 'etag';
import fresh from 'fresh';

// The real manager is an Express app, and pull-config must cope with exactly
// what Express does: a weak ETag (W/"len-hash") computed by the etag package,
// and a 304 decided by the fresh package, which compares weakly and accepts
// a comma-separated If-None-Match. A 304 still carries the ETag header.

// Answers like Express's res.send(body), including the conditional 304.
export function sendLikeExpress(
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
  contentType: string,
): void {
  res.setHeader('Content-Type', contentType);
  res.setHeader('ETag', etag(body, { weak: true }));

  if (isFresh(req, res)) {
    res.statusCode = 304;
    res.removeHeader('Content-Type');
    res.removeHeader('Content-Length');
    res.removeHeader('Transfer-Encoding');
    res.end();
    return;
  }

  sendBody(req, res, body);
}

// Writes the body with its length; HEAD gets the headers only, as in Express.
export function sendBody(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  res.setHeader('Content-Length', body.length);
  res.end(req.method === 'HEAD' ? undefined : body);
}

// Express's req.fresh: only GET/HEAD, only for 2xx or 304, then fresh().
function isFresh(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;

  const status = res.statusCode;
  if ((status < 200 || status >= 300) && status !== 304) return false;

  return fresh(req.headers, {
    etag: res.getHeader('ETag'),
    'last-modified': res.getHeader('Last-Modified'),
  });
}
