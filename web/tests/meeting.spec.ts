// End-to-end browser tests: real server, Debian's Chromium, a native bot, all on 127.0.0.1.

import { expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { admit, join, openBrowser, pageMedia, startBot, startServer, testOutput, waitFor, waitForMedia, type Bot, type Participant, type RunningServer } from './harness';

test.describe.serial('a meeting of three browsers and a native bot', () => {
  let server: RunningServer;
  let host: Participant;
  let alice: Participant;
  let bob: Participant;
  let bot: Bot;
  let meeting: { id: string; join_url: string; host_url: string };

  test.beforeAll(async () => {
    server = await startServer();
    [host, alice, bob] = await Promise.all([openBrowser('host'), openBrowser('alice'), openBrowser('bob')]);
  });

  test.afterAll(async () => {
    await bot?.stop();
    await Promise.all([host, alice, bob].map((p) => p?.close()));
    await server?.stop();
  });

  test('everyone decodes everyone, shares one security code, and reads the chat', async () => {
    // The host creates the meeting from the landing page and opens its host link.
    await host.page.goto(`${server.base}/`);
    await host.page.getByRole('button', { name: 'Create a meeting' }).click();
    const guestLink = await host.page.locator('#guest-link').inputValue();
    const hostLink = await host.page.locator('#host-link').inputValue();
    expect(guestLink).toMatch(/\/m\/[a-z2-7]{26}$/);
    expect(hostLink).toContain('#host=');
    meeting = { id: guestLink.split('/m/')[1] ?? '', join_url: guestLink, host_url: hostLink };
    await join(host, hostLink);
    await expect(host.page.locator('#e2ee-badge')).toHaveText(/End-to-end encrypted/);

    // Two guests open the link: they wait in the lobby until the host admits them.
    await join(alice, guestLink);
    await join(bob, guestLink);
    await expect(alice.page.locator('#lobby-waiting')).toBeVisible();
    await admit(host, 'alice');
    await admit(host, 'bob');

    // A native bot joins too; the host admits it like anyone else.
    bot = startBot(guestLink, 'bot', 40);
    await admit(host, 'bot');

    const browsers = [host, alice, bob];
    const media = await Promise.all(browsers.map((p) => waitForMedia(p, 3)));
    for (const [i, m] of media.entries()) {
      const frames = Object.values(m.remote).map((r) => `${r.name}: ${r.framesDecoded} frames decoded, ${r.audioSamples} audio samples`);
      console.log(`${browsers[i]?.name} decodes ${frames.join('; ')}`);
    }

    // One security code for everyone (once the group has settled with all four in it).
    const codes = await waitFor(
      'the same security code on every page',
      async () => {
        const all = await Promise.all(browsers.map((p) => pageMedia(p.page)));
        const set = new Set(all.map((m) => m.securityCode));
        return set.size === 1 && all[0]?.securityCode ? all : null;
      },
      30_000,
    );
    const code = codes[0]?.securityCode ?? '';
    expect(code).toMatch(/^(\d{5} ){5}\d{5}$/);
    await host.page.click('#security-button');
    await expect(host.page.locator('#security-code')).toHaveText(code);

    // A screenshot of the meeting view with four participants.
    mkdirSync(testOutput, { recursive: true });
    const shot = joinPath(testOutput, 'meeting-4.png');
    await host.page.click('#security-button');
    await host.page.screenshot({ path: shot });
    console.log(`screenshot of the meeting with four participants: ${shot}`);

    // At phone width the meeting fits the screen: nothing scrolls sideways.
    await bob.page.setViewportSize({ width: 375, height: 740 });
    await expect.poll(() => bob.page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    const phoneShot = joinPath(testOutput, 'meeting-phone.png');
    await bob.page.screenshot({ path: phoneShot });
    console.log(`screenshot at phone width: ${phoneShot}`);

    // A chat message from one guest reaches everyone, decrypted.
    await alice.page.click('#chat-button');
    await alice.page.fill('#chat-input', 'hello from alice');
    await alice.page.click('#chat-send');
    for (const p of [host, bob]) {
      await waitFor(`${p.name} to read alice's message`, async () => (await pageMedia(p.page)).chat.includes('hello from alice'), 20_000);
    }
    await bob.page.click('#chat-button');
    await expect(bob.page.locator('#chat-log')).toContainText('hello from alice');
    await expect(bob.page.locator('#chat-log')).toContainText('alice');

    // The bot opened frames from every browser with that browser's key. (Its byte-for-byte
    // check is for bot clips; a browser's camera is not one, so it counts frames.) A frame that
    // failed to decrypt or came under another member's key would show in its failures or errors.
    await bot.done;
    const report = bot.report();
    const summary = report.received.map((r) => `${r.from} ${r.kind}: ${r.frames + (r.skipped_before_keyframe ?? 0)} frames decrypted`);
    console.log(`bot: ${summary.join('; ')}; ${report.e2ee.decrypted} in all, ${report.e2ee.decrypt_failures} failures`);
    for (const name of ['host', 'alice', 'bob']) {
      for (const kind of ['audio', 'video']) {
        const track = report.received.find((r) => r.from === name && r.kind === kind);
        expect((track?.frames ?? 0) + (track?.skipped_before_keyframe ?? 0), `bot decrypted ${kind} from ${name}`).toBeGreaterThan(0);
      }
    }
    expect(report.e2ee.decrypt_failures).toBe(0);
    expect(report.errors.filter((e) => e.includes('was sent by'))).toEqual([]);
  });

  test('a removed guest is told why, the code changes, and it cannot come back', async () => {
    const before = await pageMedia(host.page);
    const bobId = Object.entries(before.remote).find(([, r]) => r.name === 'bob')?.[0];
    expect(bobId).toBeDefined();

    await host.page.click('#people-button');
    await host.page.getByRole('button', { name: 'Remove bob' }).click();

    await expect(bob.page.locator('#ended-message')).toContainText('removed you', { timeout: 20_000 });

    for (const p of [host, alice]) {
      await waitFor(
        `${p.name}'s security code to change after the removal`,
        async () => {
          const m = await pageMedia(p.page);
          return m.securityCode !== '' && m.securityCode !== before.securityCode && !(bobId && bobId in m.remote);
        },
        30_000,
      );
    }
    const [h, a] = await Promise.all([pageMedia(host.page), pageMedia(alice.page)]);
    expect(h.securityCode).toBe(a.securityCode);

    // Bob opens the link again: refused.
    await join(bob, meeting.join_url);
    await expect(bob.page.locator('#ended-message')).toContainText(/removed|cannot join/, { timeout: 20_000 });
  });

  test('a host mutes a guest, and the guest is told', async () => {
    await host.page.getByRole('button', { name: 'Mute alice' }).click();
    await expect(alice.page.locator('.notices')).toContainText('A host muted your microphone', { timeout: 20_000 });
    await expect(alice.page.locator('#mic-button')).toHaveText('Unmute');
  });

  test('a locked meeting turns a newcomer away, in plain words', async () => {
    await host.page.locator('#lock-button').click();
    await expect(host.page.locator('#lock-button')).toHaveText('Unlock the meeting');
    const carol = await openBrowser('carol');
    try {
      await join(carol, meeting.join_url);
      await expect(carol.page.locator('#ended-message')).toContainText('locked', { timeout: 20_000 });
    } finally {
      await carol.close();
    }
  });
});

test.describe('media between browser and server is really encrypted', () => {
  let server: RunningServer;
  let host: Participant;
  let eve: Participant;

  test.beforeAll(async () => {
    server = await startServer();
    [host, eve] = await Promise.all([openBrowser('host'), openBrowser('eve')]);
  });

  test.afterAll(async () => {
    await Promise.all([host, eve].map((p) => p?.close()));
    await server?.stop();
  });

  test('without the decrypting transform, a page decodes no frame', async () => {
    const m = await server.createMeeting();
    await join(host, m.host_url);
    // TEST ONLY switch: this page's receivers get no decrypting transform.
    await join(eve, `${m.join_url}?e2ee_test_passthrough_receive=1`);
    await expect(eve.page.locator('.banner.test-only')).toBeVisible();
    await admit(host, 'eve');

    // The host decodes eve's video: the media path works and eve's sending side encrypts.
    await waitForMedia(host, 1);
    // Eve receives the host's frames (through the SFU, as the server forwards them) ...
    const seen = await waitFor(
      'eve to receive 60 video frames from the host',
      async () => {
        const media = await pageMedia(eve.page);
        const remote = Object.values(media.remote)[0];
        return remote && remote.framesReceived >= 60 ? media : null;
      },
      60_000,
    );
    // ... and decodes none of them: without the keys they are noise. (VP8 keyframes keep their
    // 10-byte header in the clear; now and then libvpx accepts one noise keyframe with an intact
    // header as a picture of garbage, so the bound allows one in twenty frames; delta frames,
    // which carry the picture, never decode. A decrypting page decodes all of them.)
    const remote = Object.values(seen.remote)[0];
    const received = remote?.framesReceived ?? 0;
    const decoded = remote?.framesDecoded ?? 0;
    console.log(`eve (no decryption): ${received} frames received, ${decoded} decoded`);
    expect(decoded).toBeLessThanOrEqual(Math.floor(received / 20));
    const hostView = await pageMedia(host.page);
    console.log(`host (decrypting): ${Object.values(hostView.remote)[0]?.framesDecoded} frames decoded from eve`);
  });
});

test.describe('browsers with older or no encoded-frame APIs', () => {
  let server: RunningServer;
  let host: Participant;
  let guest: Participant;

  test.beforeAll(async () => {
    server = await startServer();
    [host, guest] = await Promise.all([openBrowser('host'), openBrowser('guest')]);
  });

  test.afterAll(async () => {
    await Promise.all([host, guest].map((p) => p?.close()));
    await server?.stop();
  });

  test('with only createEncodedStreams, media is encrypted in the worker all the same', async () => {
    const m = await server.createMeeting();
    await join(host, `${m.host_url.replace('#', '?e2ee_test_force_api=encoded-streams#')}`);
    await join(guest, m.join_url);
    await admit(host, 'guest');
    const [h, g] = await Promise.all([waitForMedia(host, 1), waitForMedia(guest, 1)]);
    console.log(`encoded streams: host decodes ${Object.values(h.remote)[0]?.framesDecoded} frames, guest decodes ${Object.values(g.remote)[0]?.framesDecoded}`);
  });

  test('with neither API, the page explains and sends nothing', async () => {
    const m = await server.createMeeting();
    await guest.page.goto(`${m.join_url}?e2ee_test_force_api=none`);
    await expect(guest.page.getByRole('alert').filter({ hasText: 'cannot encrypt audio and video end to end' })).toBeVisible();
    await expect(guest.page.locator('#join-button')).toBeDisabled();
  });
});
