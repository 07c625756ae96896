import { readFile } from 'node:fs/promises';
import { readEnvFile, type EnvEntries } from './env-file.js';
import { configError, errnoOf, ioError } from './errors.js';

/** Where pull-config looks for its files; each is overridable for tests. */
export interface Paths {
  envFile: string;
  confDir: string;
  stateDir: string;
  shimDir: string;
}

export function pathsFrom(env: NodeJS.ProcessEnv): Paths {
  return {
    envFile: env.PULL_CONFIG_ENV_FILE || '/etc/environment',
    confDir: env.PULL_CONFIG_CONF_DIR || '/etc/pull-config',
    stateDir: env.PULL_CONFIG_STATE_DIR || '/var/lib/pull-config',
    shimDir: env.PULL_CONFIG_SHIM_DIR || '/etc/pull-config.d',
  };
}

/** The site-wide settings every instance shares. */
export interface Site {
  siteId: string | undefined;
  managerUrls: string[];
  apiKey: string | undefined;
  /** Where each setting was read, for error messages. */
  origins: Record<'SITE_ID' | 'MANAGER_URL' | 'API_KEY', string>;
}

type SiteKey = 'SITE_ID' | 'MANAGER_URL' | 'API_KEY' | 'API_KEY_FILE';
const SEGMENT = /^[A-Za-z0-9._~-]+$/;

/**
 * Reads SITE_ID, MANAGER_URL and API_KEY. The environment file wins: cron
 * gives its jobs almost no environment, so the file is the one truth; the
 * process environment only fills what the file leaves out.
 */
export async function readSite(paths: Paths, env: NodeJS.ProcessEnv): Promise<Site> {
  const file = await readEnvFile(paths.envFile);
  const pick = (key: SiteKey) => lookup(file, env, key, paths.envFile);

  const siteId = pick('SITE_ID');
  if (siteId.value !== undefined && !SEGMENT.test(siteId.value)) {
    throw configError(
      `SITE_ID in ${siteId.origin} does not fit in a URL path segment ` +
        '(letters, digits, . _ ~ - only)',
    );
  }

  const manager = pick('MANAGER_URL');
  const managerUrls = manager.value
    ? parseManagerUrls(manager.value, manager.origin)
    : [];
  const apiKey = await readApiKey(pick('API_KEY'), pick('API_KEY_FILE'));

  return {
    siteId: siteId.value,
    managerUrls,
    apiKey: apiKey.value,
    origins: {
      SITE_ID: siteId.origin,
      MANAGER_URL: manager.origin,
      API_KEY: apiKey.origin,
    },
  };
}

interface Found {
  value: string | undefined;
  origin: string;
}

function lookup(
  file: EnvEntries,
  env: NodeJS.ProcessEnv,
  key: string,
  path: string,
): Found {
  const entry = file.get(key);
  if (entry) return { value: entry.value || undefined, origin: `${path}:${entry.line}` };
  if (env[key]) return { value: env[key], origin: 'the environment' };
  return { value: undefined, origin: path };
}

/** MANAGER_URL may list several base URLs, tried in order. */
export function parseManagerUrls(text: string, origin: string): string[] {
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((base) => {
      let url: URL;
      try {
        url = new URL(base);
      } catch {
        throw configError(
          `MANAGER_URL in ${origin} is not a URL (expected https://host[:port][/prefix])`,
        );
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw configError(`MANAGER_URL in ${origin} must start with http:// or https://`);
      }
      if (url.username || url.password) {
        throw configError(
          `MANAGER_URL in ${origin} must not carry credentials; use API_KEY`,
        );
      }
      return base.replace(/\/+$/, '');
    });
}

// LIMITATION: a key file that others can read is used without a warning; a
// warning on every run would be noise, and settings have no state to keep it.
async function readApiKey(key: Found, keyFile: Found): Promise<Found> {
  let found = key;
  if (key.value === undefined && keyFile.value !== undefined) {
    const path = keyFile.value;
    try {
      const text = await readFile(path, 'utf8');
      found = { value: text.split('\n')[0]?.trim() || undefined, origin: path };
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') {
        throw configError(
          `API_KEY_FILE in ${keyFile.origin} names ${path}, which does not exist`,
        );
      }
      throw ioError('read API_KEY_FILE', path, error);
    }
  }

  // A bearer token is visible ASCII; anything else makes an invalid header.
  if (found.value !== undefined && !/^[\x21-\x7e]+$/.test(found.value)) {
    throw configError(
      `API_KEY in ${found.origin} holds characters a bearer token cannot ` +
        '(spaces, control or non-ASCII characters)',
    );
  }
  return found;
}
