import type { InstanceStatus, StatusReport } from './status.js';

/** "3 min ago" for a time, for people; --json carries the ISO form. */
export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (seconds < 0) return `in ${-seconds} s`;
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

const COLOURS: Record<string, string> = {
  applied: '32',
  unchanged: '32',
  rejected: '31',
  failed: '31',
  disabled: '33',
  'rolled back': '33',
};

/** Renders the report as one block per instance. */
export function renderStatus(report: StatusReport, colour: boolean): string {
  const paint = (text: string, code: string | undefined) =>
    colour && code ? `\x1b[${code}m${text}\x1b[0m` : text;
  const lines: string[] = [];

  for (const item of report.instances) {
    const when = item.lastCheck ? `${ago(item.lastCheck)} (${item.lastCheck})` : 'never';
    lines.push(
      `${paint(item.name, '1')}: ${paint(item.result, COLOURS[item.result])}, checked ${when}`,
    );
    lines.push(...details(item).map(([label, value]) => `  ${label.padEnd(8)} ${value}`));
  }
  if (!report.stateReadable) {
    lines.push('(state directory not readable: showing the public summary only)');
  }
  return lines.join('\n') + '\n';
}

function details(item: InstanceStatus): [string, string][] {
  const rows: [string, string][] = [];
  if (item.target) rows.push(['file', `${item.target} (drift: ${item.drift})`]);
  if (item.url) rows.push(['url', item.url]);
  if (item.lastSuccess)
    rows.push(['success', `${ago(item.lastSuccess)} (${item.lastSuccess})`]);
  if (item.etag || item.appliedAt) {
    rows.push([
      'live',
      `${item.etag ?? '(no ETag)'} applied ${ago(item.appliedAt)} (${item.appliedAt})`,
    ]);
  }
  if (item.disabled) {
    rows.push([
      'disabled',
      `by ${item.disabled.by} ${ago(item.disabled.at)}: ${item.disabled.reason}`,
    ]);
  }
  if (item.rejected) {
    rows.push([
      'rejected',
      `${item.rejected.etag ?? '(no ETag)'} ${ago(item.rejected.at)}`,
    ]);
  }
  if (item.lastError) {
    const runs = item.failures === 1 ? 'run' : 'runs';
    rows.push([
      'error',
      `${item.lastError} (${item.failures} failed ${runs} since ${item.failingSince})`,
    ]);
  }
  for (const problem of item.problems) rows.push(['problem', problem]);
  return rows;
}

/** Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. */
export function checkStatus(
  report: StatusReport,
  named: boolean,
  maxAgeMs: number,
): { code: 0 | 1 | 2 | 3; line: string } {
  // A shim that exists but that run-parts skips or cannot run is a mistake
  // to report, not an instance to forget; a removed shim is a decision.
  const broken = (item: InstanceStatus) =>
    item.lastCheck !== undefined && item.shim !== 'ok' && item.shim !== 'missing';
  const considered = named
    ? report.instances
    : report.instances.filter((item) => item.active || broken(item));
  if (considered.length === 0) {
    return {
      code: 3,
      line: 'PULL-CONFIG UNKNOWN - no active instance (no executable shim)',
    };
  }

  const critical: string[] = [];
  const warning: string[] = [];
  for (const item of considered) {
    const fresh =
      item.lastSuccess && Date.now() - Date.parse(item.lastSuccess) <= maxAgeMs;
    if (broken(item))
      critical.push(`${item.name}: cron no longer runs it (shim ${item.shim})`);
    else if (item.settingsError) critical.push(`${item.name}: ${item.settingsError}`);
    else if (item.disabled)
      warning.push(`${item.name} disabled: ${item.disabled.reason}`);
    else if (item.result === 'rejected' || item.result === 'failed') {
      critical.push(`${item.name} ${item.result}: ${item.lastError ?? 'no detail'}`);
    } else if (!fresh) {
      critical.push(
        `${item.name} has not checked successfully since ${item.lastSuccess ?? 'ever'}`,
      );
    }
  }

  const ok = considered.length - critical.length - warning.length;
  const tail = `${ok} of ${considered.length} OK`;
  if (critical.length) {
    return {
      code: 2,
      line: `PULL-CONFIG CRITICAL - ${[...critical, ...warning].join('; ')}; ${tail}`,
    };
  }
  if (warning.length)
    return { code: 1, line: `PULL-CONFIG WARNING - ${warning.join('; ')}; ${tail}` };
  return { code: 0, line: `PULL-CONFIG OK - ${tail}` };
}
