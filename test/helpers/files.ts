import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// Writes an executable sh script into dir and returns its path.
export async function writeScript(
  dir: string,
  name: string,
  body: string,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}`);
  await chmod(path, 0o755);
  return path;
}

// The non-empty lines of a command's output.
export function lines(text: string): string[] {
  return text.split(/\r?\n/).filter(Boolean);
}

// Candidates, write-file-atomic temps and command output files, anywhere under dirs.
export async function leftovers(...dirs: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of dirs) {
    const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
    for (const entry of entries) {
      if (/\.pull-config-|(^|\/)\.output-|\.\d+$/.test(entry))
        found.push(join(dir, entry));
    }
  }
  return found;
}

// Every file under dir whose bytes contain text.
export async function filesHolding(dir: string, text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry);
    if ((await stat(path)).isFile() && (await readFile(path)).includes(text)) {
      found.push(path);
    }
  }
  return found;
}
