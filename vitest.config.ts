import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/helpers/setup.ts'],
    // Real nginx and dnsmasq start, reload and stop inside tests.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file in its own process: daemons and exit handlers stay per file.
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    // After-hooks in reverse order, so setup.ts's cleanup runs after a file's own.
    sequence: { hooks: 'stack' },
  },
});
