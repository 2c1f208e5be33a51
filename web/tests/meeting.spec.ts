// End-to-end browser tests: real server, Debian's Chromium, a native bot, all on 127.0.0.1.

import { expect, test } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { admit, join, openBrowser, pageMedia, startBot, startServer, testOutput, verifiedHostBadge, waitFor, waitForMedia, withQuery, type Bot, type MeetingLinks, type Participant, type RunningServer } from './harness';

/** A meeting's public key in a link: 32 bytes, base64url without padding. */
const MEETING_KEY = /[A-Za-z0-9_-]{43}/;

test.describe.serial('a meeting of three browsers and a native bot', () => {
  let server: RunningServer;
  let host: Participant;
  let alice: Participant;
  let bob: Participant;
  let bot: Bot;
  let meeting: MeetingLinks;

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
    // The guest link carries the meeting key the page made (the server never had it), and no
    // host secret; the host link carries the seed the server never got.
    expect(guestLink).toMatch(new RegExp(`/m/[a-z2-7]{26}#k=${MEETING_KEY.source}$`));
    expect(hostLink).toMatch(/\/m\/[a-z2-7]{26}#host=[A-Za-z0-9_-]{43}$/);
    expect(guestLink.split('#')[0]).toBe(hostLink.split('#')[0]);
    meeting = { id: /\/m\/([a-z2-7]{26})#/.exec(guestLink)?.[1] ?? '', join_url: guestLink, host_url: hostLink };
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

    // The group verified the host (host link) and no one else; each page shows it, apart from
    // the role the server reports. The host's page shares the guest link, never its #host=.
    const hostId = codes[0]?.ownId ?? null;
    const aliceId = codes[1]?.ownId ?? null;
    await host.page.click('#people-button');
    await expect(verifiedHostBadge(host, hostId)).toBeVisible();
    await expect(host.page.locator('#participant-list .verified-host')).toHaveCount(1);
    await expect(host.page.locator('#share-link')).toHaveValue(guestLink);
    await host.page.click('#people-button');
    await alice.page.click('#people-button');
    await expect(verifiedHostBadge(alice, hostId)).toBeVisible();
    await expect(verifiedHostBadge(alice, aliceId)).toHaveCount(0);
    await expect(alice.page.locator('#share-link')).toHaveValue(guestLink);
    await alice.page.click('#people-button');

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

  test('the host makes a guest co-host: the group, not the server, makes her a verified host', async () => {
    const before = await Promise.all([host, alice, bob].map((p) => pageMedia(p.page)));
    const aliceId = before[1]?.ownId ?? null;
    await host.page.click('#people-button');
    await alice.page.click('#people-button');
    await expect(verifiedHostBadge(alice, aliceId)).toHaveCount(0);
    await host.page.getByRole('button', { name: 'Make alice co-host' }).click();

    // The host's client signed the promotion with the meeting key and committed it: alice's own
    // client verified it, and shows her as a host of the encrypted meeting.
    await expect(verifiedHostBadge(alice, aliceId)).toBeVisible({ timeout: 30_000 });
    await expect(verifiedHostBadge(host, aliceId)).toBeVisible();
    await expect(host.page.getByRole('button', { name: 'Remove alice as co-host' })).toBeVisible();
    // The promotion is a Commit: a new epoch, and still one security code for everyone.
    const after = await waitFor(
      'one security code on every page after the promotion',
      async () => {
        const all = await Promise.all([host, alice, bob].map((p) => pageMedia(p.page)));
        const codes = new Set(all.map((m) => m.securityCode));
        return codes.size === 1 && all.every((m) => m.epoch > (before[0]?.epoch ?? 0)) ? all : null;
      },
      30_000,
    );
    console.log(`alice promoted at epoch ${after[0]?.epoch}: one code on all pages`);
    // The server's role follows too (its powers there: alice now sees the host actions).
    await expect(alice.page.locator('#lock-button')).toBeVisible();
    await alice.page.click('#people-button');
    await host.page.click('#people-button');
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

  test('a host invites someone by name: the page signs the link, which skips the lobby', async () => {
    // The host's participant panel is open (from the tests above); so is its invitation form.
    await expect(host.page.locator('#invite-panel')).toBeVisible();
    await host.page.fill('#invite-label', 'dave');
    await host.page.check('#invite-skip-lobby');
    await host.page.click('#invite-create');
    const link = await host.page.locator('#invite-link-1').inputValue();
    const key = meeting.join_url.split('#k=')[1] ?? '';
    expect(link.startsWith(`${server.base}/m/${meeting.id}#invite=`)).toBe(true);
    expect(link.endsWith(`&k=${key}`)).toBe(true);
    expect(link).not.toContain('host=');
    const dave = await openBrowser('dave');
    try {
      await join(dave, link);
      // Nobody admits dave: his KeyPackage proves the invitation, and the group adds him.
      const seen = await waitFor(
        'dave to decode the host in one group with it, admitted by no one',
        async () => {
          const [d, h] = await Promise.all([pageMedia(dave.page), pageMedia(host.page)]);
          const id = String(h.ownId);
          const fromHost = d.remote[id];
          const ok = d.phase === 'meeting' && h.securityCode !== '' && d.securityCode === h.securityCode && (fromHost?.framesDecoded ?? 0) > 0 && (d.decrypted[id]?.video ?? 0) > 0;
          return ok ? d : null;
        },
        60_000,
      );
      console.log(`dave (invited, skipped the lobby) decodes the host: ${Object.values(seen.remote).map((r) => `${r.name} ${r.framesDecoded} frames`).join(', ')}`);
    } finally {
      await dave.close();
    }
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
    await join(eve, withQuery(m.join_url, 'e2ee_test_passthrough_receive=1'));
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
    await join(host, withQuery(m.host_url, 'e2ee_test_force_api=encoded-streams'));
    await join(guest, m.join_url);
    await admit(host, 'guest');
    const [h, g] = await Promise.all([waitForMedia(host, 1), waitForMedia(guest, 1)]);
    console.log(`encoded streams: host decodes ${Object.values(h.remote)[0]?.framesDecoded} frames, guest decodes ${Object.values(g.remote)[0]?.framesDecoded}`);
  });

  test('with neither API, the page explains and sends nothing', async () => {
    const m = await server.createMeeting();
    await guest.page.goto(withQuery(m.join_url, 'e2ee_test_force_api=none'));
    await expect(guest.page.getByRole('alert').filter({ hasText: 'cannot encrypt audio and video end to end' })).toBeVisible();
    await expect(guest.page.locator('#join-button')).toBeDisabled();
  });
});
