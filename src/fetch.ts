import { Agent as HttpAgent, type AgentOptions } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { PullError } from './errors.js';
import { EXIT, type ExitCode } from './exit-codes.js';
import type { Tunables } from './tunables.js';

export interface FetchRequest {
  urls: string[];
  apiKey: string | undefined;
  /** Origins allowed to receive the key: the managers', never a stranger's. */
  keyOrigins: Set<string>;
  /** Sent as If-None-Match: the live ETag and a recently rejected one. */
  etags: string[];
  tunables: Tunables;
  notFoundHint: string | undefined;
  version: string;
}

export type Fetched =
  | { notModified: true; etag: string | undefined; url: string }
  | {
      notModified: false;
      etag: string | undefined;
      url: string;
      body: Buffer;
      contentType: string;
    };

/**
 * GETs the config from the first manager that answers. Connection failures,
 * time-outs and 5xx move on to the next manager; any other answer is final.
 */
export async function fetchConfig(request: FetchRequest): Promise<Fetched> {
  let lastError: PullError | undefined;

  for (const url of request.urls) {
    try {
      return await fetchOne(url, request);
    } catch (error) {
      if (!(error instanceof PullError)) throw error;
      lastError = error;
      // Another manager helps only when this one is down: any 4xx is final.
      const final = error.code === 'rate-limited' || error.code === 'http-429';
      if (error.exitCode !== EXIT.tempFail || final) break;
    }
  }
  throw (
    lastError ??
    new PullError('no manager URL to fetch from', {
      code: 'no-url',
      exitCode: EXIT.config,
    })
  );
}

async function fetchOne(url: string, request: FetchRequest): Promise<Fetched> {
  const { default: fetch } = await import('node-fetch');
  const target = new URL(url);
  const where = describe(target);
  const { tunables } = request;

  const headers: Record<string, string> = {
    Accept: '*/*',
    'User-Agent': `pull-config/${request.version}`,
  };
  if (request.apiKey && request.keyOrigins.has(target.origin)) {
    headers.Authorization = `Bearer ${request.apiKey}`;
  }
  if (request.etags.length) headers['If-None-Match'] = request.etags.join(', ');

  const signal = AbortSignal.timeout(tunables.fetchTimeoutMs);
  try {
    const response = await fetch(target, {
      headers,
      redirect: 'manual',
      size: tunables.maxBytes,
      signal,
      agent: connectTimeoutAgent(target, tunables.connectTimeoutMs),
    });

    const etag = response.headers.get('etag') ?? undefined;
    if (response.status === 304) return { notModified: true, etag, url };
    if (response.status !== 200) {
      throw await statusError(response.status, response.headers, where, request, () =>
        response.text(),
      );
    }

    const body = Buffer.from(await response.arrayBuffer());
    const contentType = response.headers.get('content-type') ?? '';
    return { notModified: false, etag, url, body, contentType };
  } catch (error) {
    if (error instanceof PullError) throw error;
    throw networkError(error, where, tunables);
  }
}

/** Redacts what must not be printed: credentials and the query string. */
export function describe(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

const agents = new Map<string, HttpAgent>();

/** node-fetch has no connect time-out of its own: the agent provides one. */
function connectTimeoutAgent(url: URL, timeoutMs: number): HttpAgent {
  const key = `${url.protocol}${timeoutMs}`;
  const existing = agents.get(key);
  if (existing) return existing;

  const Base = url.protocol === 'https:' ? HttpsAgent : HttpAgent;
  const agent = new Base({ keepAlive: false } satisfies AgentOptions);
  const create = agent.createConnection.bind(agent) as (...args: unknown[]) => Socket;
  agent.createConnection = (...args: unknown[]) => {
    const socket = create(...args);
    const timer = setTimeout(() => {
      socket.destroy(
        Object.assign(new Error('connect timeout'), { code: 'ECONNECTTIMEOUT' }),
      );
    }, timeoutMs);
    socket.once('connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
    return socket;
  };
  agents.set(key, agent);
  return agent;
}

const TLS_CODES =
  /^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH)/;

function networkError(error: unknown, where: string, tunables: Tunables): PullError {
  const failure = error as {
    name?: string;
    code?: string;
    type?: string;
    message?: string;
  };
  const host = new URL(where).host;
  const temp = (message: string, code: string) =>
    new PullError(message, { code, exitCode: EXIT.tempFail, cause: error });

  if (failure.name === 'AbortError' || failure.name === 'TimeoutError') {
    return temp(
      `${where} did not answer within ${tunables.fetchTimeoutMs / 1000} s`,
      'fetch-timeout',
    );
  }
  if (failure.type === 'max-size') {
    return new PullError(
      `the config from ${where} is larger than MAX_SIZE (${tunables.maxBytes} bytes)`,
      {
        code: 'body-too-large',
        exitCode: EXIT.rejected,
        cause: error,
      },
    );
  }

  const code = failure.code ?? '';
  if (code === 'ECONNECTTIMEOUT') {
    return temp(
      `cannot connect to ${host} within ${tunables.connectTimeoutMs / 1000} s`,
      'fetch-connect-timeout',
    );
  }
  if (code === 'ECONNREFUSED')
    return temp(`connection refused by ${host}`, 'fetch-refused');
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return temp(`cannot resolve ${new URL(where).hostname}`, 'fetch-dns');
  }
  // EPROTO over https is a handshake that failed, e.g. a plain HTTP port.
  const handshake = code === 'EPROTO' && where.startsWith('https:');
  if (TLS_CODES.test(code) || handshake) {
    return temp(`TLS failure with ${host}: ${code}`, 'fetch-tls');
  }
  if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET') {
    return temp(`the response from ${where} was cut off`, 'body-truncated');
  }
  return temp(`cannot fetch ${where}: ${code || failure.message}`, 'fetch-failed');
}

type HeadersLike = { get(name: string): string | null };

// Where a manager or its proxy sends a client whose key it refused.
const LOGIN_PATH = /(^|\/)(log-?in|sign-?in|auth|sso)(\/|\.|$)/i;

async function statusError(
  status: number,
  headers: HeadersLike,
  where: string,
  request: FetchRequest,
  readBody: () => Promise<string>,
): Promise<PullError> {
  const fail = (message: string, code: string, exitCode: ExitCode, retryAfter?: Date) =>
    new PullError(message, { code, exitCode, retryAfter });

  if (status === 401 || status === 403) {
    return fail(
      `the manager refused the key (HTTP ${status} from ${where})`,
      'key-refused',
      EXIT.noPermission,
    );
  }
  if (status >= 300 && status < 400) {
    const location = headers.get('location') ?? '';
    let target: URL | undefined;
    try {
      target = location ? new URL(location, where) : undefined;
    } catch {
      return fail(`${where} redirects to a malformed location`, 'redirect', EXIT.config);
    }
    const next = target ? describe(target) : 'nowhere';
    if (target && LOGIN_PATH.test(target.pathname)) {
      return fail(
        `the manager refused the key (redirect to ${next})`,
        'key-refused',
        EXIT.noPermission,
      );
    }
    return fail(
      `${where} redirects to ${next}; redirects are not followed`,
      'redirect',
      EXIT.config,
    );
  }
  if (status === 404) {
    const hint = request.notFoundHint ? `; ${request.notFoundHint}` : '';
    return fail(
      `the manager does not know ${where} (HTTP 404)${hint}`,
      'not-found',
      EXIT.config,
    );
  }

  const retryAfter = parseRetryAfter(headers.get('retry-after'));
  if ((status === 429 || status === 503) && retryAfter) {
    return fail(
      `the manager asks to retry after ${retryAfter.toISOString()} (HTTP ${status})`,
      // A 503 is that manager's trouble: the next one is still worth asking.
      status === 429 ? 'rate-limited' : 'unavailable',
      EXIT.tempFail,
      retryAfter,
    );
  }

  const line = firstLine(await readBody().catch(() => ''));
  const summary = `${where} answered HTTP ${status}${line ? `: ${line}` : ''}`;
  const temporary = status >= 500 || status === 429;
  return fail(summary, `http-${status}`, temporary ? EXIT.tempFail : EXIT.config);
}

function firstLine(text: string): string {
  const line = text.split('\n').find((candidate) => candidate.trim() !== '') ?? '';
  const clean = line
    .replace(/<[^>]*>/g, '')
    .replace(/[\0-\x1f\x7f]/g, '')
    .trim();
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

// A proxy's Retry-After of days must not silence an instance that long.
const RETRY_AFTER_CAP_MS = 60 * 60 * 1000;

function parseRetryAfter(value: string | null): Date | undefined {
  if (!value) return undefined;
  const text = value.trim();
  const at = /^\d+$/.test(text) ? Date.now() + Number(text) * 1000 : Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return new Date(Math.min(at, Date.now() + RETRY_AFTER_CAP_MS));
}
