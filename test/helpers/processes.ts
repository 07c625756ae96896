import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

// Daemons here are orphans of PID 1, which in this VM reaps them only after a
// second or more: a stopped nginx or dnsmasq lingers as a zombie, for which
// kill(pid, 0) still succeeds. So "running" is read from the /proc state.

interface ProcStat {
  comm: string;
  state: string;
  ppid: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }

  // comm may hold spaces or parentheses; the fields after the last ")" are fixed.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const [state = '', ppid = '0'] = text.slice(close + 2).split(' ');
  return { comm: text.slice(open + 1, close), state, ppid: Number(ppid) };
}

// True while the process exists and has not exited (zombies count as exited).
export function isRunning(pid: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

// Live children of a process, from /proc: how nginx workers are found.
export function childPids(parent: number): number[] {
  const pids = readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
  return pids.filter((pid) => {
    const stat = readStat(pid);
    return stat !== undefined && stat.ppid === parent && stat.state !== 'Z';
  });
}

// The pid in a daemon's pid file, or undefined when the file is missing or empty.
export function readPidFile(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }

  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

// Polls probe until it returns something other than undefined, or throws on timeout.
export async function waitFor<T>(
  what: string | (() => string),
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const described = typeof what === 'string' ? what : what();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}`);
    }
    await sleep(25);
  }
}

// Sends SIGTERM, waits for the processes to exit, and SIGKILLs any that do not.
export async function terminate(pids: number[], timeoutMs = 5_000): Promise<void> {
  signal(pids, 'SIGTERM');
  const gone = () => (pids.some(isRunning) ? undefined : true);
  const exited = await waitFor('exit', gone, timeoutMs).catch(() => false);
  if (exited) return;

  signal(pids, 'SIGKILL');
  await waitFor(`exit of ${pids.join(', ')} after SIGKILL`, gone, timeoutMs);
}

// Signals whichever of pids still run; a pid that already exited is not an error.
export function signal(pids: number[], name: NodeJS.Signals): void {
  for (const pid of pids.filter(isRunning)) {
    try {
      process.kill(pid, name);
    } catch {
      // Exited between the check and the kill.
    }
  }
}
