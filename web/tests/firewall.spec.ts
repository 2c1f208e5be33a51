// A browser behind a firewall that drops UDP and lets only TCP 80 and 443 out: Chromium runs
// inside a network namespace with that nftables ruleset (tests/walled.ts) and meets a native
// bot on open UDP through a server whose ICE-TCP listens on 443. It decodes the bot's video
// and audio (opened by its E2EE worker), the bot decrypts the browser's, the selected
// candidate pair is TCP, the connection details say so, and the ruleset did drop UDP.

import { expect, test } from '@playwright/test';
import { chromiumExecutable, join, openBrowser, pageMedia, startBot, startServer, waitForMedia, type Bot, type Participant, type RunningServer } from './harness';
import { walledNetwork, type WalledNetwork } from './walled';

test.describe('a browser behind a firewall that drops UDP', () => {
  let net: WalledNetwork;
  let server: RunningServer;
  let walled: Participant;
  let bot: Bot;

  test.beforeAll(async () => {
    net = walledNetwork(0, [80, 443], chromiumExecutable());
    server = await startServer({
      host: net.serverIp,
      port: 80,
      webDir: null,
      args: ['--public-ip', net.serverIp, '--media-tcp-port', '443'],
    });
    // Plain HTTP on a non-loopback address is no secure context: let this one origin count as one.
    walled = await openBrowser('walled', {
      executablePath: net.chromium,
      args: [`--unsafely-treat-insecure-origin-as-secure=${server.base}`],
    });
  });

  test.afterAll(async () => {
    await walled?.close();
    await bot?.stop();
    await server?.stop();
    net?.close();
  });

  test('media flows over ICE-TCP on 443, end to end encrypted, both ways', async () => {
    const meeting = await server.createMeeting();
    // The host is a bot on open UDP that lets everyone in.
    bot = startBot(meeting.host_url, 'host', 30, undefined, ['--admit-all']);
    await join(walled, meeting.join_url);

    const media = await waitForMedia(walled, 1);
    const remote = Object.values(media.remote);
    console.log(`walled decodes ${remote.map((r) => `${r.name}: ${r.framesDecoded} frames, ${r.audioSamples} audio samples`).join('; ')}`);
    expect(remote[0]?.name).toBe('host');

    // The pair the browser chose is TCP to the server's 443, and the page says so.
    const pair = await walled.page.evaluate(async () => {
      const meeting = (window as unknown as { conclave?: { meeting: { diagnostics(): { pc: RTCPeerConnection | null } } } }).conclave?.meeting;
      const pc = meeting?.diagnostics().pc;
      if (!pc) return null;
      const stats = await pc.getStats();
      let pairId: string | undefined;
      stats.forEach((s: { type: string; selectedCandidatePairId?: string }) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const selected = pairId ? (stats.get(pairId) as { localCandidateId: string; remoteCandidateId: string }) : undefined;
      if (!selected) return null;
      const local = stats.get(selected.localCandidateId) as { protocol: string; candidateType: string };
      const remote = stats.get(selected.remoteCandidateId) as { protocol: string; port: number; address: string };
      return { local: local.protocol, localType: local.candidateType, remote: remote.protocol, port: remote.port, address: remote.address };
    });
    expect(pair, 'a selected candidate pair').not.toBeNull();
    expect(pair?.local).toBe('tcp');
    expect(pair?.remote).toBe('tcp');
    expect(pair?.port).toBe(443);
    expect(pair?.address).toBe(net.serverIp);
    await expect(walled.page.locator('#media-path')).toHaveText('Media: TCP');

    // The bot decrypted the walled browser's frames with the browser's own key.
    await bot.done;
    const report = bot.report();
    for (const kind of ['audio', 'video']) {
      const track = report.received.find((r) => r.from === 'walled' && r.kind === kind);
      expect((track?.frames ?? 0) + (track?.skipped_before_keyframe ?? 0), `bot decrypted ${kind} from walled`).toBeGreaterThan(0);
    }
    expect(report.e2ee.decrypt_failures).toBe(0);
    // The browser did try UDP: the firewall dropped it.
    expect(net.udpDropped()).toBeGreaterThan(0);
    expect((await pageMedia(walled.page)).phase).not.toBe('ended');
  });
});
