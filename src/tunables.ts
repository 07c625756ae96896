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

interface Kind {
  parse: (text: string) => number | boolean | undefined;
  /** Said when a value does not parse: what a valid one looks like. */
  expects: string;
}

interface Spec {
  key: string;
  field: keyof Tunables;
  fallback: string;
  kind: Kind;
}

const milliseconds = (text: string) =>
  /^\d+(\.\d+)?$/.test(text) ? Math.round(Number(text) * 1000) : undefined;

const seconds: Kind = {
  parse: (text) => {
    const value = milliseconds(text);
    return value ? value : undefined;
  },
  expects: 'a number of seconds above 0, such as 10 or 2.5',
};
const secondsOrZero: Kind = {
  parse: milliseconds,
  expects: 'a number of seconds, such as 600 (0: never)',
};
const count: Kind = {
  parse: (text) => (/^\d+$/.test(text) && Number(text) > 0 ? Number(text) : undefined),
  expects: 'a whole number above 0, such as 5',
};
const yesNo: Kind = {
  parse: (text) =>
    /^(yes|true|1)$/i.test(text)
      ? true
      : /^(no|false|0)$/i.test(text)
        ? false
        : undefined,
  expects: 'yes or no',
};
const size: Kind = {
  parse: (text) => {
    const match = /^(\d+)([KMG]?)$/i.exec(text);
    if (!match || Number(match[1]) === 0) return undefined;
    const unit =
      { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2]!.toUpperCase()] ?? 1;
    return Number(match[1]) * unit;
  },
  expects: 'a size in bytes, or with K, M or G, such as 16M',
};

// Each default bounds one step at 10 s or less; a run-parts pass over many
// instances may want them lower (the README counts the worst case).
export const TUNABLES: Spec[] = [
  {
    key: 'CONNECT_TIMEOUT',
    field: 'connectTimeoutMs',
    fallback: '5',
    kind: seconds,
  },
  {
    key: 'FETCH_TIMEOUT',
    field: 'fetchTimeoutMs',
    fallback: '10',
    kind: seconds,
  },
  {
    key: 'MAX_SIZE',
    field: 'maxBytes',
    fallback: '16M',
    kind: size,
  },
  {
    key: 'ALLOW_EMPTY',
    field: 'allowEmpty',
    fallback: 'no',
    kind: yesNo,
  },
  {
    key: 'REJECT_TTL',
    field: 'rejectTtlMs',
    fallback: '600',
    kind: secondsOrZero,
  },
  {
    key: 'TEST_TIMEOUT',
    field: 'testTimeoutMs',
    fallback: '10',
    kind: seconds,
  },
  {
    key: 'RELOAD_TIMEOUT',
    field: 'reloadTimeoutMs',
    fallback: '10',
    kind: seconds,
  },
  {
    key: 'KEEP_VERSIONS',
    field: 'keepVersions',
    fallback: '5',
    kind: count,
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
    const value = spec.kind.parse(entry?.value ?? spec.fallback);
    if (value === undefined) {
      const where = `${layer?.file}:${entry?.line}`;
      throw configError(`${where}: ${spec.key} must be ${spec.kind.expects}`);
    }
    result[spec.field] = value;
  }
  return result as Tunables;
}
