// Web app integrity: the hash `conclave serve` prints is the hash of web/dist and the app shows
// it; the service worker keeps the installed app when the server changes it without the
// pinned release key's signature, and takes a signed release.

import { expect, test, type Page } from '@playwright/test';
import { execSync } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { freePort, join, openBrowser, repoRoot, startServer, type Participant, type RunningServer } from './harness';

const dist = joinPath(repoRoot, 'web/dist');

/** The bundle hash with coreutils, as README.md tells anyone to recompute it (not the server's code). */
function sha256sum(dir: string): string {
  const out = execSync("find . -type f ! -path ./bundle-manifest.json ! -path ./bundle.sig | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum", { cwd: dir, shell: '/bin/sh' }).toString();
  const hash = out.split(/\s/)[0] ?? '';
  expect(hash).toMatch(/^[0-9a-f]{64}$/);
  return hash;
}

interface ReleaseKey {
  publicHex: string;
  privateKey: KeyObject;
}

/** An Ed25519 release key made with Node's crypto (not the project's Rust). */
function releaseKey(): ReleaseKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  return { publicHex: spki.subarray(spki.length - 32).toString('hex'), privateKey };
}

/** Signs the app in `dir` as `cargo xtask web-sign` does: over "conclave web bundle v1\n" + hash. */
function signApp(dir: string, key: ReleaseKey): string {
  const hash = sha256sum(dir);
  const signature = sign(null, Buffer.from(`conclave web bundle v1\n${hash}`), key.privateKey);
  writeFileSync(joinPath(dir, 'bundle.sig'), `${signature.toString('hex')}\n`);
  return hash;
}

const work = mkdtempSync(joinPath(tmpdir(), 'conclave-integrity-'));

/** A copy of the built app, without its signature. */
function copyApp(from: string, name: string): string {
  const to = joinPath(work, name);
  cpSync(from, to, { recursive: true });
  rmSync(joinPath(to, 'bundle.sig'), { force: true });
  return to;
}

/** What a server that swaps the app would serve: a marker in the page, a line added to its script. */
function tamper(dir: string): void {
  const indexPath = joinPath(dir, 'index.html');
  const index = readFileSync(indexPath, 'utf8');
  writeFileSync(indexPath, index.replace('<head>', '<head>\n    <meta name="conclave-test" content="tampered" />'));
  const script = /src="\/assets\/(index-[^"]+\.js)"/.exec(index)?.[1];
  if (!script) throw new Error('no entry script in index.html');
  const scriptPath = joinPath(dir, 'assets', script);
  writeFileSync(scriptPath, `${readFileSync(scriptPath, 'utf8')}\ndocument.documentElement.dataset.tampered = '1';\n`);
}

/** Whether the page runs the tampered app (its HTML and its script). */
async function runsTampered(page: Page): Promise<{ html: boolean; script: boolean }> {
  return page.evaluate(() => ({ html: document.querySelector('meta[name="conclave-test"]') !== null, script: document.documentElement.dataset['tampered'] === '1' }));
}

async function landing(page: Page, server: RunningServer, state: string): Promise<void> {
  await page.goto(`${server.base}/`);
  await expect(page.locator('#integrity-banner')).toHaveAttribute('data-state', state);
}

const short = (hash: string) => `${hash.slice(0, 16)}…`;

test.describe.serial('the web app is pinned under the operator release key', () => {
  const release = releaseKey();
  let port: number;
  let server: RunningServer | undefined;
  let browser: Participant;
  let original: string;
  let v1: string;
  let v2: string;

  test.beforeAll(async () => {
    port = await freePort();
    browser = await openBrowser('pinning');
  });

  test.afterAll(async () => {
    await server?.stop();
    await browser?.close();
    rmSync(work, { recursive: true, force: true });
  });

  async function restart(webDir: string, args: string[] = []): Promise<RunningServer> {
    await server?.stop();
    server = await startServer({ port, webDir, args });
    return server;
  }

  test('conclave serve prints the hash of web/dist, and the security panel shows it', async () => {
    // web/dist was built twice from a clean output by `cargo xtask test` (web_reproducible),
    // which compared the two; this is the second.
    original = sha256sum(dist);
    const manifest = JSON.parse(readFileSync(joinPath(dist, 'bundle-manifest.json'), 'utf8')) as { sha256: string; files: Record<string, string> };
    expect(manifest.sha256).toBe(original);
    expect(Object.keys(manifest.files)).toContain('sw.js');
    expect(readdirSync(joinPath(dist, 'assets')).some((f) => f.endsWith('.wasm'))).toBe(true);

    v1 = copyApp(dist, 'v1');
    expect(signApp(v1, release)).toBe(original);
    const s = await restart(v1, ['--web-release-key', release.publicHex]);
    expect(s.bundleSha256).toBe(original);

    const meeting = await s.createMeeting();
    await join(browser, meeting.host_url);
    await browser.page.click('#security-button');
    const about = browser.page.locator('#about-app');
    await expect(about).toHaveAttribute('data-state', 'pinned');
    await expect(about).toHaveAttribute('data-bundle-sha256', original);
    await expect(browser.page.locator('#bundle-sha256')).toHaveText(short(original));
    await expect(browser.page.locator('#bundle-sha256')).toHaveAttribute('title', original);
    await expect(browser.page.locator('#bundle-pin')).toContainText('Pinned by this browser since');
    await expect(browser.page.locator('#bundle-release')).toContainText(`release key ${short(release.publicHex)}; this version is signed by it`);
    // From now on the service worker serves this browser's pages.
    await expect.poll(() => browser.page.evaluate(() => navigator.serviceWorker.controller !== null)).toBe(true);
  });

  test('a changed app not signed by the pinned release key is not run, and the page says why', async () => {
    v2 = copyApp(v1, 'v2');
    tamper(v2);
    const changed = sha256sum(v2);
    expect(changed).not.toBe(original);

    // The server's own key, its own signature: not the key this browser pinned.
    const intruder = releaseKey();
    signApp(v2, intruder);
    let s = await restart(v2, ['--web-release-key', intruder.publicHex]);
    expect(s.bundleSha256).toBe(changed);
    await landing(browser.page, s, 'refused');
    const refused = browser.page.locator('#integrity-refused');
    await expect(refused).toContainText("The server offered a web app that was not signed by this meeting server's release key. Conclave kept the version you installed");
    await expect(refused).toContainText(`(${short(original)}). Tell the server's operator.`);
    await expect(refused).toContainText('signed by another key');
    expect(await runsTampered(browser.page)).toEqual({ html: false, script: false });

    // No key and no signature at all: the same.
    rmSync(joinPath(v2, 'bundle.sig'));
    s = await restart(v2);
    await landing(browser.page, s, 'refused');
    await expect(browser.page.locator('#integrity-refused')).toContainText('it carries no signature');
    expect(await runsTampered(browser.page)).toEqual({ html: false, script: false });

    // A hard reload (Shift+Reload) bypasses every service worker: the page then runs what the
    // server serves. The honest copy says so; a hostile server's copy would not.
    const cdp = await browser.context.newCDPSession(browser.page);
    await cdp.send('Page.reload', { ignoreCache: true });
    await expect(browser.page.locator('#integrity-bypassed')).toContainText(`it runs what the server serves now (${short(changed)}), not the pinned ${short(original)}`);
    expect(await runsTampered(browser.page)).toEqual({ html: true, script: true });
    expect(await browser.page.evaluate(() => navigator.serviceWorker.controller === null)).toBe(true);
    await cdp.detach();
    // A normal load afterwards is the pinned app again.
    await landing(browser.page, s, 'refused');
    expect(await runsTampered(browser.page)).toEqual({ html: false, script: false });
  });

  test('a changed app signed by the pinned release key is taken, from the next load on', async () => {
    const signed = signApp(v2, release);
    const s = await restart(v2, ['--web-release-key', release.publicHex]);
    expect(s.bundleSha256).toBe(signed);
    await landing(browser.page, s, 'updated');
    await expect(browser.page.locator('#integrity-updated')).toHaveText(`Updated to signed release ${short(signed)}: it runs from the next load.`);
    expect(await runsTampered(browser.page)).toEqual({ html: false, script: false });

    await landing(browser.page, s, 'pinned');
    expect(await runsTampered(browser.page)).toEqual({ html: true, script: true });
    const meeting = await s.createMeeting();
    await join(browser, meeting.host_url);
    await browser.page.click('#security-button');
    await expect(browser.page.locator('#about-app')).toHaveAttribute('data-bundle-sha256', signed);
  });
});

test.describe.serial('a server with no release key: trust on first use only', () => {
  let port: number;
  let server: RunningServer | undefined;
  let browser: Participant;

  test.beforeAll(async () => {
    port = await freePort();
    browser = await openBrowser('tofu');
  });

  test.afterAll(async () => {
    await server?.stop();
    await browser?.close();
  });

  test('a changed app is taken with a warning naming both hashes', async () => {
    const dir = mkdtempSync(joinPath(tmpdir(), 'conclave-tofu-'));
    try {
      const first = joinPath(dir, 'first');
      cpSync(dist, first, { recursive: true });
      rmSync(joinPath(first, 'bundle.sig'), { force: true });
      server = await startServer({ port, webDir: first });
      await landing(browser.page, server, 'pinned');
      await expect.poll(() => browser.page.evaluate(() => navigator.serviceWorker.controller !== null)).toBe(true);
      const before = server.bundleSha256;

      const second = joinPath(dir, 'second');
      cpSync(first, second, { recursive: true });
      tamper(second);
      await server.stop();
      server = await startServer({ port, webDir: second });
      const after = server.bundleSha256;
      expect(after).toBe(sha256sum(second));
      await landing(browser.page, server, 'changed');
      await expect(browser.page.locator('#integrity-changed')).toContainText(`from ${short(before)} to ${short(after)}. It names no release key`);
      await landing(browser.page, server, 'pinned');
      expect(await runsTampered(browser.page)).toEqual({ html: true, script: true });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('the binary carries the app: without --web-dir it serves web/dist byte for byte under its hash', async () => {
  // `cargo xtask web-test` built this binary after web/dist, so build.rs compiled that app in.
  const server = await startServer({ webDir: null });
  try {
    expect(server.bundleSha256).toBe(sha256sum(dist));
    const files = ['index.html', 'sw.js', ...readdirSync(joinPath(dist, 'assets')).map((f) => `assets/${f}`)];
    for (const file of files) {
      const response = await fetch(`${server.base}/${file === 'index.html' ? '' : file}`);
      expect(response.status, file).toBe(200);
      expect(Buffer.from(await response.arrayBuffer()).equals(readFileSync(joinPath(dist, file))), file).toBe(true);
    }
    const bundle = (await (await fetch(`${server.base}/api/bundle`)).json()) as { sha256: string };
    expect(bundle.sha256).toBe(server.bundleSha256);
  } finally {
    await server.stop();
  }
});
