// A browser behind a firewall that drops UDP and lets only TCP 80 and 443 out: Chromium runs
// inside a network namespace with that nftables ruleset (tests/walled.ts) and meets a native
// bot on open UDP, through a server whose ICE-TCP listens on 443, then through the built-in
// TURN relay on TLS 443 with no ICE-TCP at all (a certificate from a test CA the browser
// trusts), then with HTTPS and the relay sharing 443 by server name, then with an HTTP proxy
// (tinyproxy) as the only way out. Each time it decodes the
// bot's video and audio (opened by its E2EE worker), the bot decrypts the browser's, the
// selected candidate pair is the path under test, the connection details say so, and the
// ruleset did drop UDP.
import { expect, test } from '@playwright/test';
import { chromiumExecutable, join, openBrowser, pageMedia, startBot, startServer, waitForMedia, type Bot, type Participant, type RunningServer } from './harness';
import { httpProxy, testCa, walledNetwork, type HttpProxy, type TestCa, type WalledNetwork } from './walled';

interface SelectedPair { local: string; localType: string; relayProtocol: string | undefined; relayUrl: string | undefined; remote: string; port: number; address: string }

/** The candidate pair the browser's peer connection selected, from getStats(). */
async function selectedPair(p: Participant): Promise<SelectedPair | null> {
  return p.page.evaluate(async () => {
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
    const local = stats.get(selected.localCandidateId) as { protocol: string; candidateType: string; relayProtocol?: string; url?: string };
    const remote = stats.get(selected.remoteCandidateId) as { protocol: string; port: number; address: string };
    return { local: local.protocol, localType: local.candidateType, relayProtocol: local.relayProtocol, relayUrl: local.url, remote: remote.protocol, port: remote.port, address: remote.address };
  });
}

/** The bot decrypted audio and video from `name` with that participant's own key. */
function expectDecryptedFrom(bot: Bot, name: string): void {
  const report = bot.report();
  for (const kind of ['audio', 'video']) {
    const track = report.received.find((r) => r.from === name && r.kind === kind);
    expect((track?.frames ?? 0) + (track?.skipped_before_keyframe ?? 0), `bot decrypted ${kind} from ${name}`).toBeGreaterThan(0);
  }
  expect(report.e2ee.decrypt_failures).toBe(0);
}

/**
 * The host is a bot on open UDP that lets everyone in; `walled` joins the meeting and decodes
 * the bot's video and audio. The bot, to read its report once it is done.
 */
async function meetUdpHost(server: RunningServer, walled: Participant): Promise<Bot> {
  const meeting = await server.createMeeting();
  const bot = startBot(meeting.host_url, 'host', 30, undefined, ['--admit-all']);
  await join(walled, meeting.join_url);
  const media = await waitForMedia(walled, 1);
  const remote = Object.values(media.remote);
  console.log(`${walled.name} decodes ${remote.map((r) => `${r.name}: ${r.framesDecoded} frames, ${r.audioSamples} audio samples`).join('; ')}`);
  expect(remote[0]?.name).toBe('host');
  return bot;
}

/** The browser's media goes through the relay over TLS, and its connection details say so. */
async function expectRelayedOverTls(walled: Participant): Promise<SelectedPair | null> {
  const pair = await selectedPair(walled);
  expect(pair, 'a selected candidate pair').not.toBeNull();
  expect(pair?.localType).toBe('relay');
  expect(pair?.relayProtocol).toBe('tls');
  await expect(walled.page.locator('#media-path')).toHaveText('Media: TURN/TLS');
  return pair;
}

interface RelayServer {
  server: RunningServer;
  ca: TestCa;
  stop(): Promise<void>;
}

/** The relay's own name when it shares 443 with HTTPS. */
const RELAY_NAME = 'turn.conclave.test';

/**
 * A server on `net`'s outside address with HTTPS on 80 and the TURN relay on TLS 443, no
 * ICE-TCP, its certificate from a test CA; with `shared`, HTTPS and the relay both on 443, the
 * relay by its name (RELAY_NAME). The bots and `conclave meeting create` (children of this
 * process) trust the CA through `SSL_CERT_FILE` until `stop`.
 */
async function startRelayServer(net: WalledNetwork, shared = false): Promise<RelayServer> {
  const trusted = process.env['SSL_CERT_FILE'];
  const ca = testCa(net.serverIp, shared ? [RELAY_NAME] : []);
  process.env['SSL_CERT_FILE'] = ca.caPem;
  const relay = shared ? ['--turn-server-name', RELAY_NAME] : ['--turn-port', '443'];
  const server = await startServer({
    host: net.serverIp,
    port: shared ? 443 : 80,
    webDir: null,
    tls: { cert: ca.cert, key: ca.key },
    args: ['--public-ip', net.serverIp, '--media-tcp-port', '0', ...relay],
  });
  return {
    server,
    ca,
    async stop() {
      await server.stop();
      if (trusted === undefined) delete process.env['SSL_CERT_FILE'];
      else process.env['SSL_CERT_FILE'] = trusted;
      ca.close();
    },
  };
}

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
    bot = await meetUdpHost(server, walled);

    // The pair the browser chose is TCP to the server's 443, and the page says so.
    const pair = await selectedPair(walled);
    expect(pair, 'a selected candidate pair').not.toBeNull();
    expect(pair?.local).toBe('tcp');
    expect(pair?.remote).toBe('tcp');
    expect(pair?.port).toBe(443);
    expect(pair?.address).toBe(net.serverIp);
    await expect(walled.page.locator('#media-path')).toHaveText('Media: TCP');

    // The bot decrypted the walled browser's frames with the browser's own key.
    await bot.done;
    expectDecryptedFrom(bot, 'walled');
    // The browser did try UDP: the firewall dropped it.
    expect(net.udpDropped()).toBeGreaterThan(0);
    expect((await pageMedia(walled.page)).phase).not.toBe('ended');
  });
});

/** The relay cases: its own port 443 beside HTTPS on 80, or 443 shared with HTTPS by name. */
const relayCases = [
  {
    title: 'a browser whose network passes only TCP 80 and 443, with no ICE-TCP',
    claim: 'media flows through the built-in TURN relay on TLS 443, end to end encrypted',
    slot: 1,
    openPorts: [80, 443],
    shared: false,
    browser: 'walled-turn',
  },
  {
    title: 'a browser whose network passes TCP 443 alone, to one address serving both HTTPS and TURN/TLS',
    claim: 'the page and the relay share 443, routed by server name, and media flows',
    slot: 3,
    openPorts: [443],
    shared: true,
    browser: 'walled-shared',
  },
];

for (const c of relayCases) {
  test.describe(c.title, () => {
    let net: WalledNetwork;
    let relay: RelayServer;
    let walled: Participant;
    let bot: Bot;

    test.beforeAll(async () => {
      net = walledNetwork(c.slot, c.openPorts, chromiumExecutable(), c.shared ? [RELAY_NAME] : []);
      relay = await startRelayServer(net, c.shared);
      walled = await openBrowser(c.browser, { executablePath: net.chromium, home: relay.ca.browserHome });
    });

    test.afterAll(async () => {
      await walled?.close();
      await bot?.stop();
      await relay?.stop();
      net?.close();
    });

    test(c.claim, async () => {
      // The web app on 80, or on 443 (the URL's default) beside the relay.
      expect(new URL(relay.server.base).port).toBe(c.shared ? '' : '80');
      bot = await meetUdpHost(relay.server, walled);
      const pair = await expectRelayedOverTls(walled);
      expect(pair?.relayUrl).toBe(`turns:${c.shared ? RELAY_NAME : net.serverIp}:443?transport=tcp`);

      await bot.done;
      expectDecryptedFrom(bot, c.browser);
      expect(net.udpDropped()).toBeGreaterThan(0);
    });
  });
}

test.describe('a browser whose only way out is an HTTP proxy', () => {
  let net: WalledNetwork;
  let proxy: HttpProxy;
  let relay: RelayServer;
  let walled: Participant;
  let bot: Bot;

  test.beforeAll(async () => {
    net = walledNetwork(2, [8888], chromiumExecutable());
    proxy = await httpProxy(net, 8888);
    relay = await startRelayServer(net);
    walled = await openBrowser('proxied', { executablePath: net.chromium, home: relay.ca.browserHome, args: [`--proxy-server=${proxy.url}`] });
  });

  test.afterAll(async () => {
    await walled?.close();
    await bot?.stop();
    await relay?.stop();
    await proxy?.stop();
    net?.close();
  });

  test('the page, signaling and TURN/TLS all go through CONNECT, and media flows', async () => {
    bot = await meetUdpHost(relay.server, walled);
    await expectRelayedOverTls(walled);
    // The proxy carried the page and its WebSocket (port 80 here) and the relay (443).
    const connects = proxy.connects();
    console.log(`the proxy served CONNECT to ${[...new Set(connects)].join(', ')}`);
    expect(connects).toContain(`${net.serverIp}:80`);
    expect(connects).toContain(`${net.serverIp}:443`);
    // Whatever else the browser asked for, the proxy refused: no test traffic left the machine.
    const elsewhere = connects.map((c) => c.replace(/:\d+$/, '')).filter((host) => host !== net.serverIp);
    expect(elsewhere.filter((host) => !proxy.filtered().includes(host))).toEqual([]);

    await bot.done;
    expectDecryptedFrom(bot, 'proxied');
    expect(net.udpDropped()).toBeGreaterThan(0);
  });
});
