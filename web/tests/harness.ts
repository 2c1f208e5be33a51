// Test harness: a real `conclave serve` on free ports with a temp data dir, Chromium
// participants (Debian's package, the flags from DESIGN.md) and native `conclave bot`s.

import { spawn, execFile, execSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join as joinPath, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from '@playwright/test';
import type { MeetingController } from '../src/meeting/controller';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '../..');
export const testOutput = joinPath(repoRoot, 'target/web-test');

export const CHROMIUM_FLAGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

function conclaveBinary(): string {
  const bin = process.env['CONCLAVE_BIN'];
  if (!bin) throw new Error('set CONCLAVE_BIN to the conclave binary (cargo xtask test does)');
  return bin;
}

/** Runs a command to its end; its stdout, or an error with its stderr. */
function run(command: string, args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((ok, fail) => {
    execFile(command, args, { cwd: options.cwd, timeout: options.timeoutMs ?? 30_000, maxBuffer: 64 << 20, env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'warn' } }, (error, stdout, stderr) => {
      if (error) fail(new Error(`${command} ${args.join(' ')}: ${error.message}\n${stderr}`));
      else ok(stdout);
    });
  });
}

/**
 * A `conclave` built with the cargo feature `insecure-test-hooks` (`serve --test-lie`), in its
 * own target dir (target/lies) so the normal binary stays without the hooks. `CONCLAVE_LIES_BIN`
 * names one already built; otherwise this builds it (cargo's no-op when it is up to date).
 * Throws when the binary has no `--test-lie`: the lying-server test must run, never skip.
 */
export async function lyingServerBinary(): Promise<string> {
  let bin = process.env['CONCLAVE_LIES_BIN'];
  if (!bin) {
    const targetDir = joinPath(repoRoot, 'target/lies');
    console.log(`building conclave with insecure-test-hooks into ${targetDir} (the first build takes minutes)`);
    const started = Date.now();
    await run(process.env['CARGO'] ?? 'cargo', ['build', '-p', 'conclave', '--features', 'insecure-test-hooks', '--target-dir', targetDir], { cwd: repoRoot, timeoutMs: 1_500_000 });
    console.log(`built in ${Math.round((Date.now() - started) / 1000)} s`);
    bin = joinPath(targetDir, 'debug/conclave');
  }
  if (!existsSync(bin)) throw new Error(`no binary at ${bin}`);
  const help = await run(bin, ['serve', '--help']);
  if (!help.includes('--test-lie')) throw new Error(`${bin} has no --test-lie: build it with --features insecure-test-hooks`);
  return bin;
}

export interface MeetingLinks {
  id: string;
  /** For guests: `<server>/m/<id>#k=<meeting key>`. */
  join_url: string;
  /** `<server>/m/<id>#host=<seed>`. */
  host_url: string;
}

/**
 * Creates a meeting as a host's client does: `conclave meeting create` makes the host link
 * and sends the server only its host secret's digest, then prints both links.
 */
export async function createMeeting(base: string, extra: string[] = []): Promise<MeetingLinks> {
  const out = await run(conclaveBinary(), ['meeting', 'create', '--server', base, ...extra]);
  const join = /^join: (\S+)$/m.exec(out)?.[1];
  const host = /^host: (\S+)$/m.exec(out)?.[1];
  const id = join ? /\/m\/([a-z2-7]{26})/.exec(join)?.[1] : undefined;
  if (!join || !host || !id) throw new Error(`conclave meeting create printed no links: ${out}`);
  return { id, join_url: join, host_url: host };
}

function chromiumPath(): string {
  return process.env['CHROMIUM'] ?? execSync('command -v chromium', { shell: '/bin/sh' }).toString().trim();
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => ok(port));
    });
  });
}

/** Polls `check` until it returns a truthy value; never a fixed sleep. */
export async function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface RunningServer {
  base: string;
  port: number;
  /** The hash from the `web bundle sha256: ` line `conclave serve` printed at start. */
  bundleSha256: string;
  stop(): Promise<void>;
  createMeeting(): Promise<MeetingLinks>;
}

export interface ServerOptions {
  /** Listen on this port (a restarted server keeps its origin, and so a browser's service worker). */
  port?: number;
  /** Listen on this address instead of 127.0.0.1. */
  host?: string;
  /** The built app to serve (default: web/dist); `null` serves the one built into the binary. */
  webDir?: string | null;
  /** More `conclave serve` flags. */
  args?: string[];
  /** Another `conclave` to run (say the one of `lyingServerBinary`). */
  bin?: string;
  /** Serve HTTPS with this certificate and key (PEM files), from a CA this process does not know. */
  tls?: { cert: string; key: string };
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const port = options.port ?? (await freePort());
  const dataDir = mkdtempSync(joinPath(tmpdir(), 'conclave-web-test-'));
  const host = options.host ?? '127.0.0.1';
  const base = `${options.tls ? 'https' : 'http'}://${host}:${port}`;
  const tlsArgs = options.tls ? ['--tls-cert', options.tls.cert, '--tls-key', options.tls.key] : [];
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: process.env['RUST_LOG'] ?? 'warn', NO_COLOR: '1', CONCLAVE_WEB_DIR: options.webDir ?? joinPath(repoRoot, 'web/dist') };
  delete env['CONCLAVE_WEB_RELEASE_KEY'];
  if (options.webDir === null) delete env['CONCLAVE_WEB_DIR'];
  const child = spawn(options.bin ?? conclaveBinary(), ['serve', '--listen', `${host}:${port}`, '--media-port', '0', '--data-dir', dataDir, ...tlsArgs, ...(options.args ?? [])], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    process.stdout.write(chunk);
  });
  if (options.tls) {
    // This process does not trust the test CA: the line printed once media is bound, after HTTP.
    await waitFor('conclave serve to bind its sockets', async () => /^media: /m.test(stdout), 30_000);
  } else {
    await waitFor('conclave serve to answer /healthz', async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 30_000);
  }
  const bundleSha256 = await waitFor('conclave serve to print its web bundle hash', async () => /^web bundle sha256: (.*)$/m.exec(stdout)?.[1], 10_000);
  return {
    base,
    port,
    bundleSha256,
    async stop() {
      await stopProcess(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
    createMeeting: () => createMeeting(base),
  };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export interface Participant {
  name: string;
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

export function chromiumExecutable(): string {
  return chromiumPath();
}

export interface BrowserOptions {
  /** Another Chromium to start (say one wrapped to run inside a network namespace). */
  executablePath?: string;
  /** More Chromium flags. */
  args?: string[];
  /** The browser's home (where its NSS certificate database lives, `.pki/nssdb`). */
  home?: string;
}

/** A participant in its own browser (its own profile, so its own device id). */
export async function openBrowser(name: string, options: BrowserOptions = {}): Promise<Participant> {
  const profile = mkdtempSync(joinPath(tmpdir(), `conclave-chromium-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: options.executablePath ?? chromiumPath(),
    headless: true,
    args: [...CHROMIUM_FLAGS, ...(options.args ?? [])],
    ...(options.home ? { env: { ...process.env, HOME: options.home } as Record<string, string> } : {}),
    viewport: { width: 1280, height: 720 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') console.log(`[${name}] ${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on('dialog', (d) => void d.accept());
  return {
    name,
    context,
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** `url` with a query string added before its #fragment (where the link's secrets are). */
export function withQuery(url: string, query: string): string {
  const hash = url.indexOf('#');
  return hash < 0 ? `${url}?${query}` : `${url.slice(0, hash)}?${query}${url.slice(hash)}`;
}

/** Opens a link, fills in the pre-join form and joins. */
export async function join(p: Participant, url: string): Promise<void> {
  // Only the #fragment differs (or nothing): the browser would stay on the same document.
  const samePage = p.page.url().split('#')[0] === url.split('#')[0];
  await p.page.goto(url);
  if (samePage) await p.page.reload();
  await p.page.fill('#display-name', p.name);
  await p.page.click('#join-button');
}

export interface PageMedia {
  ownId: number | null;
  securityCode: string;
  epoch: number;
  phase: string;
  /**
   * Remote participants by id: name, frames decoded on their camera track (and the size of the
   * last one, so which simulcast layer arrives), audio received.
   */
  remote: Record<string, { name: string; framesDecoded: number; framesReceived: number; frameWidth: number; frameHeight: number; audioSamples: number; audioBytes: number }>;
  /** E2EE worker counters: frames opened per sender id. */
  decrypted: Record<string, { audio: number; video: number }>;
  chat: string[];
  ended: string;
}

/** What a page decodes, from getStats() of its peer connection. */
export async function pageMedia(page: Page): Promise<PageMedia> {
  return page.evaluate(async () => {
    const meeting = (window as unknown as { conclave?: { meeting: MeetingController } }).conclave?.meeting;
    if (!meeting) throw new Error('not in a meeting');
    const s = meeting.state;
    const { pc, frames } = meeting.diagnostics();
    const byTrack = new Map<string, { framesDecoded: number; framesReceived: number; frameWidth: number; frameHeight: number; totalSamplesReceived: number; bytesReceived: number }>();
    if (pc) {
      const stats = await pc.getStats();
      stats.forEach((r: { type: string; trackIdentifier?: string; framesDecoded?: number; framesReceived?: number; frameWidth?: number; frameHeight?: number; totalSamplesReceived?: number; bytesReceived?: number }) => {
        if (r.type === 'inbound-rtp' && r.trackIdentifier) {
          byTrack.set(r.trackIdentifier, {
            framesDecoded: r.framesDecoded ?? 0,
            framesReceived: r.framesReceived ?? 0,
            frameWidth: r.frameWidth ?? 0,
            frameHeight: r.frameHeight ?? 0,
            totalSamplesReceived: r.totalSamplesReceived ?? 0,
            bytesReceived: r.bytesReceived ?? 0,
          });
        }
      });
    }
    const remote: PageMedia['remote'] = {};
    for (const [id, p] of s.participants) {
      const video = p.camera ? byTrack.get(p.camera.id) : undefined;
      const audio = p.audio ? byTrack.get(p.audio.id) : undefined;
      remote[String(id)] = {
        name: p.info.name,
        framesDecoded: video?.framesDecoded ?? 0,
        framesReceived: video?.framesReceived ?? 0,
        frameWidth: video?.frameWidth ?? 0,
        frameHeight: video?.frameHeight ?? 0,
        audioSamples: audio?.totalSamplesReceived ?? 0,
        audioBytes: audio?.bytesReceived ?? 0,
      };
    }
    return {
      ownId: s.ownId,
      securityCode: s.securityCode,
      epoch: s.epoch,
      phase: s.phase,
      remote,
      decrypted: frames?.decrypted ?? {},
      chat: s.chat.map((m) => m.text),
      ended: s.phase === 'ended' ? s.message : '',
    };
  });
}

/** Whether `p`'s participant list marks participant `id` as a host the group verified. */
export function verifiedHostBadge(p: Participant, id: number | string | null) {
  return p.page.locator(`#participant-list li[data-participant-id="${id}"] .verified-host`);
}

/** Lets a waiting participant in from the host's lobby panel. */
export async function admit(host: Participant, name: string): Promise<void> {
  const button = host.page.getByRole('button', { name: `Admit ${name}` });
  await button.waitFor({ timeout: 30_000 });
  await button.click();
}

/** Waits until `p` sees `others` with decoded video and received audio from each. */
export async function waitForMedia(p: Participant, others: number): Promise<PageMedia> {
  return waitFor(
    `${p.name} to decode video and receive audio from ${others} others`,
    async () => {
      const m = await pageMedia(p.page);
      const remote = Object.values(m.remote);
      // Decoded by the browser, and opened by the E2EE worker with the sender's own key.
      const ok =
        remote.length === others &&
        Object.entries(m.remote).every(([id, r]) => r.framesDecoded > 0 && r.audioSamples > 0 && (m.decrypted[id]?.video ?? 0) > 0 && (m.decrypted[id]?.audio ?? 0) > 0);
      return ok ? m : null;
    },
    90_000,
    500,
  );
}

export interface PageLayers {
  /** What this page last told the SFU about the remote video `mid` it shows for a participant. */
  told: { mid: string; width: number; height: number; visible: boolean } | null;
  /** The layers the SFU last asked this page to send, by its own m-line. */
  asked: Record<string, string[]>;
  /** What this page's camera sends, layer by layer (outbound-rtp by RID). */
  sending: Array<{ rid: string; frameWidth: number; frameHeight: number; framesEncoded: number; active: boolean }>;
}

/** Simulcast as one page sees it: its tile hint for `participantId`, and its own layers. */
export async function pageLayers(page: Page, participantId: string | null): Promise<PageLayers> {
  return page.evaluate(async (id) => {
    const meeting = (window as unknown as { conclave?: { meeting: MeetingController } }).conclave?.meeting;
    if (!meeting) throw new Error('not in a meeting');
    const { pc, videoLayout, activeLayers } = meeting.diagnostics();
    const camera = id === null ? undefined : meeting.state.participants.get(Number(id))?.camera;
    const mid = camera ? pc?.getTransceivers().find((t) => t.receiver.track === camera)?.mid : undefined;
    const sending: PageLayers['sending'] = [];
    if (pc) {
      const stats = await pc.getStats();
      stats.forEach((r: { type: string; kind?: string; rid?: string; frameWidth?: number; frameHeight?: number; framesEncoded?: number; active?: boolean }) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid) {
          sending.push({ rid: r.rid, frameWidth: r.frameWidth ?? 0, frameHeight: r.frameHeight ?? 0, framesEncoded: r.framesEncoded ?? 0, active: r.active ?? true });
        }
      });
    }
    return { told: videoLayout.find((t) => t.mid === mid) ?? null, asked: activeLayers, sending };
  }, participantId);
}

export interface Bot {
  reportPath: string;
  done: Promise<number | null>;
  report(): BotReport;
  stop(): Promise<void>;
}

export interface BotReport {
  name: string;
  participant_id: number | null;
  received: Array<{ from: string; kind: string; frames: number; verified: number; skipped_before_keyframe?: number; participant_id: number }>;
  errors: string[];
  e2ee: { epoch: number; security_code: string; decrypted: number; decrypt_failures: number };
}

/** A native participant (`conclave bot`) that publishes known clips and checks every frame. */
export function startBot(joinUrl: string, name: string, durationSeconds: number, bin = conclaveBinary(), extraArgs: string[] = []): Bot {
  mkdirSync(testOutput, { recursive: true });
  const reportPath = joinPath(testOutput, `bot-${name}-report.json`);
  rmSync(reportPath, { force: true });
  const child = spawn(bin, ['bot', '--join', joinUrl, '--name', name, '--duration', String(durationSeconds), '--report', reportPath, ...extraArgs], {
    env: { ...process.env, RUST_LOG: 'warn', NO_COLOR: '1' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    reportPath,
    done,
    report: () => JSON.parse(readFileSync(reportPath, 'utf8')) as BotReport,
    stop: () => stopProcess(child),
  };
}
