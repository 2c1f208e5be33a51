// A server that lies: `conclave serve --test-lie host-link` (built only with the cargo feature
// `insecure-test-hooks`) runs a listener of its own, "Observer", and announces it as a host that
// came with the host link. The browser must refuse it and say so; the honest participants keep
// one group, one security code and their media; the listener decrypts nothing.

import { expect, test } from '@playwright/test';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { admit, join, lyingServerBinary, openBrowser, pageMedia, startBot, startServer, testOutput, verifiedHostBadge, waitFor, type Bot, type BotReport, type Participant, type RunningServer } from './harness';

const LISTENER = 'Observer';

test.describe('a server that lies about the host link', () => {
  let server: RunningServer | undefined;
  let host: Participant | undefined;
  let bot: Bot | undefined;
  const listenerReport = joinPath(testOutput, 'lie-host-link-listener.json');

  test.beforeAll(async () => {
    // The first build of the binary with the test hooks (its own target dir) takes minutes.
    test.setTimeout(1_500_000);
    const bin = await lyingServerBinary();
    mkdirSync(testOutput, { recursive: true });
    rmSync(listenerReport, { force: true });
    server = await startServer({ bin, args: ['--test-lie', 'host-link', '--test-lie-report', listenerReport] });
    host = await openBrowser('host');
  });

  test.afterAll(async () => {
    await bot?.stop();
    await host?.close();
    await server?.stop();
  });

  test('the browser refuses the smuggled listener, names it, and keeps media and code among the honest', async () => {
    if (!server || !host) throw new Error('no server');
    const m = await server.createMeeting();
    await join(host, m.host_url);
    await expect(host.page.locator('#e2ee-badge')).toHaveText(/End-to-end encrypted/);
    // A native guest, admitted by the host in the page.
    bot = startBot(m.join_url, 'guest', 30);
    await admit(host, 'guest');

    // The server says its listener came with the host link; its KeyPackage proves nothing.
    const alarm = host.page.locator('#security-alarm');
    await expect(alarm).toContainText('the server tried to add someone no host admitted', { timeout: 60_000 });
    await expect(alarm).toContainText(`"${LISTENER}"`);
    console.log(`host's alarm: ${await alarm.innerText()}`);

    // The honest two decode each other, in one group without the listener.
    const seen = await waitFor(
      'the host to decode the guest bot while the listener is kept out',
      async () => {
        const media = await pageMedia(host!.page);
        const guest = Object.entries(media.remote).find(([, r]) => r.name === 'guest');
        if (!guest) return null;
        const [id, r] = guest;
        const ok = r.framesDecoded > 0 && r.audioSamples > 0 && (media.decrypted[id]?.video ?? 0) > 0 && (media.decrypted[id]?.audio ?? 0) > 0;
        return ok ? media : null;
      },
      90_000,
      500,
    );
    const listenerId = Object.entries(seen.remote).find(([, r]) => r.name === LISTENER)?.[0];
    console.log(`host decodes ${Object.values(seen.remote).map((r) => `${r.name}: ${r.framesDecoded} frames`).join('; ')}; code ${seen.securityCode} at epoch ${seen.epoch}`);
    // Nothing from the listener was opened (it holds no group key), and the page does not
    // take the server's "Host" for it.
    if (listenerId) {
      expect(seen.decrypted[listenerId]).toBeUndefined();
      await host.page.click('#people-button');
      await expect(host.page.locator(`#participant-list li[data-participant-id="${listenerId}"]`)).toContainText(LISTENER);
      await expect(verifiedHostBadge(host, listenerId)).toHaveCount(0);
      await expect(verifiedHostBadge(host, seen.ownId)).toBeVisible();
      await host.page.click('#people-button');
    }

    // The guest bot's report: it verified the host's media, and held the same code and epoch.
    expect(await bot.done).toBe(0);
    const report = bot.report();
    console.log(`guest bot: ${report.received.map((r) => `${r.from} ${r.kind}: ${r.frames} frames, ${r.verified} verified`).join('; ')}; code ${report.e2ee.security_code} at epoch ${report.e2ee.epoch}`);
    for (const kind of ['audio', 'video']) {
      const track = report.received.find((r) => r.from === 'host' && r.kind === kind);
      expect((track?.frames ?? 0) + (track?.skipped_before_keyframe ?? 0), `the guest bot decrypted the host's ${kind}`).toBeGreaterThan(0);
    }
    expect(report.received.filter((r) => r.from === LISTENER && r.frames > 0)).toEqual([]);
    expect(report.e2ee.decrypt_failures).toBe(0);
    expect(report.e2ee.security_code).toBe(seen.securityCode);
    expect(report.e2ee.epoch).toBe(seen.epoch);

    // The listener's own report: not one frame decrypted or verified.
    const listener = await waitFor(
      "the server's listener to write its report",
      async () => (existsSync(listenerReport) ? (JSON.parse(readFileSync(listenerReport, 'utf8')) as Partial<BotReport> & { error?: string }) : null),
      60_000,
      500,
    );
    console.log(`listener: ${JSON.stringify({ error: listener.error, e2ee: listener.e2ee, received: listener.received?.map((r) => [r.from, r.kind, r.frames, r.verified]) })}`);
    expect(listener.error, 'the listener ran (and was kept out)').toBeUndefined();
    expect(listener.e2ee?.decrypted ?? 0).toBe(0);
    expect((listener.received ?? []).reduce((n, r) => n + r.verified, 0)).toBe(0);
  });
});
