import type { EnvEntries } from './env-file.js';
import { configError } from './errors.js';

/** Limits and switches that a definition file or pull-config.env may set. */
export interface Tunables {
  connectTimeoutMs: number;
  fetchTimeoutMs: number;
  maxBytes: number;
  allowEmpty: boolean;
  rejectTtlMs: number;
  testTimeoutMs: number;
  reloadTimeoutMs: number;
  keepVersions: number;
}

interface Spec {
  key: string;
  field: keyof Tunables;
  fallback: string;
  parse: (text: string) => number | boolean | undefined;
  meaning: string;
}

const seconds = (text: string) =>
  /^\d+(\.\d+)?$/.test(text) ? Math.round(Number(text) * 1000) : undefined;
const count = (text: string) => (/^\d+$/.test(text) ? Number(text) : undefined);
const yesNo = (text: string) =>
  /^(yes|true|1)$/i.test(text) ? true : /^(no|false|0)$/i.test(text) ? false : undefined;
const size = (text: string) => {
  const match = /^(\d+)([KMG]?)$/i.exec(text);
  if (!match) return undefined;
  const unit =
    { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2]!.toUpperCase()] ?? 1;
  return Number(match[1]) * unit;
};

// The defaults keep one instance's worst case near 20 s, so a run-parts pass
// over a few instances fits in the cron minute.
export const TUNABLES: Spec[] = [
  {
    key: 'CONNECT_TIMEOUT',
    field: 'connectTimeoutMs',
    fallback: '5',
    parse: seconds,
    meaning: 'seconds to wait for a connection to a manager',
  },
  {
    key: 'FETCH_TIMEOUT',
    field: 'fetchTimeoutMs',
    fallback: '10',
    parse: seconds,
    meaning: 'seconds for one whole request to a manager, body included',
  },
  {
    key: 'MAX_SIZE',
    field: 'maxBytes',
    fallback: '16M',
    parse: size,
    meaning: 'largest config accepted, after decompression (K, M, G suffixes)',
  },
  {
    key: 'ALLOW_EMPTY',
    field: 'allowEmpty',
    fallback: 'no',
    parse: yesNo,
    meaning: 'accept an empty or blank config (a DHCP host list, say)',
  },
  {
    key: 'REJECT_TTL',
    field: 'rejectTtlMs',
    fallback: '600',
    parse: seconds,
    meaning: 'seconds before a rejected config is downloaded and tested again',
  },
  {
    key: 'TEST_TIMEOUT',
    field: 'testTimeoutMs',
    fallback: '10',
    parse: seconds,
    meaning: 'seconds the validator may run before it is killed',
  },
  {
    key: 'RELOAD_TIMEOUT',
    field: 'reloadTimeoutMs',
    fallback: '10',
    parse: seconds,
    meaning: 'seconds for the reload and its verification',
  },
  {
    key: 'KEEP_VERSIONS',
    field: 'keepVersions',
    fallback: '5',
    parse: count,
    meaning: 'applied versions kept for rollback',
  },
];

export const TUNABLE_KEYS = new Set(TUNABLES.map((spec) => spec.key));

/** Resolves each tunable: definition file, then pull-config.env, then default. */
export function resolveTunables(
  layers: { entries: EnvEntries; file: string }[],
): Tunables {
  const result: Partial<Record<keyof Tunables, number | boolean>> = {};

  for (const spec of TUNABLES) {
    const layer = layers.find(({ entries }) => entries.has(spec.key));
    const entry = layer?.entries.get(spec.key);
    const value = spec.parse(entry?.value ?? spec.fallback);
    if (value === undefined) {
      throw configError(
        `${layer?.file}:${entry?.line}: ${spec.key} has an invalid value`,
      );
    }
    result[spec.field] = value;
  }
  return result as Tunables;
}
