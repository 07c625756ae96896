// Every daemon or temp dir a helper creates is registered here, so a failed
// assertion cannot leave nginx or dnsmasq running into the next test file.
// setup.ts drains the registry: things made during a test (or its beforeEach)
// after that test, things made in beforeAll after the file.

export interface Resource {
  // Graceful teardown, awaited by the hooks.
  stop: () => Promise<void>;
  // Last resort when the worker exits without running hooks: must be synchronous.
  stopNow: () => void;
}

type Scope = 'test' | 'file';

const live = new Map<Resource, Scope>();
let currentScope: Scope = 'file';

// Registers a resource; returns the function that forgets it once stopped.
export function track(resource: Resource): () => void {
  live.set(resource, currentScope);
  return () => {
    live.delete(resource);
  };
}

export function enterTest(): void {
  currentScope = 'test';
}

// Stops what the finished test left behind, newest first (daemons before their dirs).
export async function leaveTest(): Promise<void> {
  currentScope = 'file';
  await stopAll('test');
}

export async function cleanupFile(): Promise<void> {
  await stopAll(undefined);
}

async function stopAll(scope: Scope | undefined): Promise<void> {
  const chosen = [...live].filter(([, s]) => scope === undefined || s === scope);
  const failures: unknown[] = [];

  for (const [resource] of chosen.reverse()) {
    live.delete(resource);
    await resource.stop().catch((error: unknown) => failures.push(error));
  }

  if (failures.length > 0) throw new AggregateError(failures, 'harness cleanup failed');
}

// The forks pool may end a worker abruptly (timeout, crash); daemonized
// processes would outlive it, so kill whatever is still registered.
// LIMITATION: a worker killed by SIGKILL runs no handler and leaks its daemons;
// a sweep by path from the main process could kill another run's daemons.
process.once('exit', () => {
  for (const resource of [...live.keys()].reverse()) {
    try {
      resource.stopNow();
    } catch {
      // Exiting anyway; one stuck resource must not keep the others alive.
    }
  }
});
