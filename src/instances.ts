import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parseCommand, shellCommand, type Command } from './command.js';
import { readEnvFile, type EnvEntries } from './env-file.js';
import { configError, PullError } from './errors.js';
import { EXIT } from './exit-codes.js';
import type { Paths, Site } from './settings.js';
import { resolveTunables, TUNABLE_KEYS, type Tunables } from './tunables.js';

/** Everything one pull cycle needs to know about the service it keeps. */
export interface Instance {
  name: string;
  origin: 'built-in' | 'definition file' | 'built-in + definition file' | 'legacy';
  definitionFile: string | undefined;
  /** Directory name under the state directory. */
  stateKey: string;
  /** One URL per manager, tried in order. */
  urls: string[];
  confFile: string;
  test: Command | undefined;
  reload: Command | undefined;
  verify: Command | undefined;
  /** Watch nginx's master after a reload: it can keep its old config silently. */
  reloadCheck: 'nginx' | 'none';
  tunables: Tunables;
  /** What to tell the admin when the manager answers 404 to a built-in route. */
  notFoundHint: string | undefined;
}

/** What reports and summaries need of an instance, even one that failed to load. */
export type InstanceLabel = Pick<Instance, 'name' | 'stateKey' | 'confFile' | 'urls'>;

type Definition = Record<string, string>;

const BUILT_INS: Record<string, Definition> = {
  nginx: {
    CONF_URL: '/sites/${SITE_ID}/nginx.conf',
    CONF_FILE: '/etc/nginx/nginx.conf',
    TEST_COMMAND: 'nginx -t -q -c {}',
    SERVICE_NAME: 'nginx',
    RELOAD_CHECK: 'nginx',
  },
  // dnsmasq re-reads host files on SIGHUP but never its main config, and
  // Debian's unit implements reload as SIGHUP: only a restart applies it.
  dnsmasq: {
    CONF_URL: '/sites/${SITE_ID}/dnsmasq.conf',
    CONF_FILE: '/etc/dnsmasq.conf',
    TEST_COMMAND: 'dnsmasq --test -C {}',
    RELOAD_COMMAND: 'systemctl restart dnsmasq',
  },
};

const NEWER_ROUTES: Record<string, string> = {
  nginx: '/sites/${SITE_ID}/nginx',
  dnsmasq: '/sites/${SITE_ID}/dnsmasq/conf',
};

const INSTANCE_KEYS = new Set([
  'CONF_URL',
  'CONF_FILE',
  'TEST_COMMAND',
  'RELOAD_COMMAND',
  'SERVICE_NAME',
  'VERIFY_COMMAND',
  'RELOAD_CHECK',
  ...TUNABLE_KEYS,
]);

export const NAME = /^[A-Za-z0-9_-]+$/;

export function builtInNames(): string[] {
  return Object.keys(BUILT_INS);
}

export function definitionPath(paths: Paths, name: string): string {
  return join(paths.confDir, 'instances', `${name}.env`);
}

export function globalTunablesPath(paths: Paths): string {
  return join(paths.confDir, 'pull-config.env');
}

/** Builds a named instance from its built-in values and its definition file. */
export async function loadInstance(
  name: string,
  paths: Paths,
  site: Site,
): Promise<Instance> {
  if (!NAME.test(name)) {
    throw new PullError(
      `"${name}" is not an instance name (letters, digits, _ and - only)`,
      {
        code: 'usage',
        exitCode: EXIT.usage,
      },
    );
  }

  const file = definitionPath(paths, name);
  const entries = await readEnvFile(file);
  const builtIn = BUILT_INS[name];
  if (!builtIn && entries.size === 0) {
    // Also what a mistyped command becomes, since `pull-config NAME` runs NAME.
    throw new PullError(
      `unknown instance "${name}": no built-in and no ${file} ` +
        '(pull-config --help lists the commands)',
      { code: 'unknown-instance', exitCode: EXIT.usage },
    );
  }

  for (const [key, { line }] of entries) {
    if (!INSTANCE_KEYS.has(key)) throw configError(`${file}:${line}: unknown key ${key}`);
  }

  const values: Definition = { ...builtIn };
  for (const [key, { value }] of entries) values[key] = value;
  const origin = !builtIn
    ? 'definition file'
    : entries.size
      ? 'built-in + definition file'
      : 'built-in';
  const where = (key: string) => {
    const entry = entries.get(key);
    return entry ? `${key} (${file}:${entry.line})` : `${key} (built-in ${name})`;
  };

  const overridesUrl = entries.has('CONF_URL');
  const instance = await buildInstance({
    name,
    values,
    where,
    site,
    paths,
    layers: [{ entries, file }],
    parse: parseCommand,
  });
  return {
    ...instance,
    origin,
    definitionFile: entries.size ? file : undefined,
    notFoundHint: builtIn && !overridesUrl ? newerRouteHint(name, file) : undefined,
  };
}

function newerRouteHint(name: string, file: string): string | undefined {
  const route = NEWER_ROUTES[name];
  return (
    route &&
    `newer managers serve ${route}: put CONF_URL=${route} in ${file} ` +
      '(README, "Instances")'
  );
}

/**
 * The original shell script was driven by CONF_FILE and CONF_URL in its
 * environment and ran its commands with eval, so this mode keeps both.
 */
export async function legacyInstance(
  env: NodeJS.ProcessEnv,
  paths: Paths,
  site: Site,
): Promise<Instance> {
  const values: Definition = {};
  for (const key of [
    'CONF_URL',
    'CONF_FILE',
    'TEST_COMMAND',
    'RELOAD_COMMAND',
    'SERVICE_NAME',
  ]) {
    const value = env[key];
    if (value) values[key] = value;
  }

  const confFile = values.CONF_FILE ?? '';
  const digest = createHash('sha256').update(confFile).digest('hex').slice(0, 12);
  const instance = await buildInstance({
    name: 'legacy',
    values,
    where: (key) => `${key} (environment)`,
    site,
    paths,
    layers: [],
    parse: shellCommand,
  });
  return {
    ...instance,
    name: `legacy ${confFile}`,
    stateKey: `legacy-${digest}`,
    origin: 'legacy',
    definitionFile: undefined,
    notFoundHint: undefined,
  };
}

interface BuildInput {
  name: string;
  values: Definition;
  where: (key: string) => string;
  site: Site;
  paths: Paths;
  layers: { entries: EnvEntries; file: string }[];
  parse: (text: string, origin: string) => Command;
}

type Built = Omit<Instance, 'origin' | 'definitionFile' | 'notFoundHint'>;

async function buildInstance(input: BuildInput): Promise<Built> {
  const { values, where } = input;
  const command = (key: string) =>
    values[key] ? input.parse(values[key], where(key)) : undefined;

  if (!values.CONF_FILE) throw configError('CONF_FILE is not set');
  if (!values.CONF_FILE.startsWith('/')) {
    throw configError(`${where('CONF_FILE')} must be an absolute path`);
  }
  if (!values.CONF_URL) throw configError('CONF_URL is not set');

  let reload = command('RELOAD_COMMAND');
  if (!reload && values.SERVICE_NAME) {
    reload = {
      argv: ['systemctl', 'reload-or-restart', values.SERVICE_NAME],
      origin: where('SERVICE_NAME'),
    };
  }

  const reloadCheck = values.RELOAD_CHECK ?? 'none';
  if (reloadCheck !== 'nginx' && reloadCheck !== 'none') {
    throw configError(`${where('RELOAD_CHECK')} must be nginx or none`);
  }

  const globalFile = globalTunablesPath(input.paths);
  const globalEntries = await readEnvFile(globalFile);
  for (const [key, { line }] of globalEntries) {
    if (!TUNABLE_KEYS.has(key))
      throw configError(`${globalFile}:${line}: unknown key ${key}`);
  }

  return {
    name: input.name,
    stateKey: input.name,
    urls: resolveUrls(values.CONF_URL, where('CONF_URL'), input.site),
    confFile: values.CONF_FILE,
    test: command('TEST_COMMAND'),
    reload,
    verify: command('VERIFY_COMMAND'),
    reloadCheck,
    tunables: resolveTunables([
      ...input.layers,
      { entries: globalEntries, file: globalFile },
    ]),
  };
}

/**
 * An absolute CONF_URL is used as it is; a path is appended to each manager
 * base URL, so a base such as http://host:3000/manager keeps its prefix.
 */
function resolveUrls(template: string, origin: string, site: Site): string[] {
  const expanded = template.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g,
    (_, key: string) => {
      if (key === 'SITE_ID') {
        if (!site.siteId)
          throw configError(`SITE_ID is not set in ${site.origins.SITE_ID}`);
        return site.siteId;
      }
      if (key === 'MANAGER_URL') {
        if (!site.managerUrls[0]) throw missingManager(site);
        return site.managerUrls[0];
      }
      throw configError(`${origin}: unknown variable \${${key}}`);
    },
  );

  if (/^https?:\/\//.test(expanded)) {
    try {
      new URL(expanded);
    } catch {
      throw configError(`${origin} is not a valid URL`);
    }
    return [expanded];
  }
  if (!expanded.startsWith('/')) {
    throw configError(`${origin} must be an http(s) URL or a path starting with /`);
  }
  if (site.managerUrls.length === 0) throw missingManager(site);
  return site.managerUrls.map((base) => base + expanded);
}

function missingManager(site: Site): PullError {
  return configError(`MANAGER_URL is not set in ${site.origins.MANAGER_URL}`);
}
