import { defineConfig } from '@playwright/test';

// Browser tests: a real `conclave serve`, Debian's Chromium, native bots. One worker: the
// machine has two cores and each participant is a whole browser.
export default defineConfig({
  testDir: './tests',
  testMatch: /.*\.spec\.ts$/,
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 150_000,
  expect: { timeout: 30_000 },
  reporter: [['list']],
  outputDir: '../target/web-test/results',
  // The suite itself takes about five minutes; the rest is for tests/lies.spec.ts building the
  // binary with the test hooks into its own target dir (minutes the first time, then cargo's
  // no-op or an incremental build).
  globalTimeout: 1_800_000,
});
