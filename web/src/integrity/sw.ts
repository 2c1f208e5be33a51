// The service worker that pins the web app this browser installed (served as `/sw.js`).
//
// On install it fetches `/api/bundle` and `/bundle-manifest.json`, checks that the manifest's
// files hash to the bundle hash the server names, fetches every file and checks its SHA-256,
// and keeps them in a cache of their own: the pinned app. From then on it answers every app
// page and every `/assets/` file from that cache, so a file the server changes is never run.
// At every page load the page asks it to check what the server offers now: the same app is
// fine; another one is taken only if the release key pinned with the app signed it (Ed25519,
// WebCrypto), else the pinned app stays and the page shows a red warning. A server that named
// no release key when the app was pinned gets trust on first use only: a changed app is taken,
// with a yellow warning naming both hashes.
//
// One self-contained script (a classic worker script): type imports only. See "Web app
// integrity" in docs/ARCHITECTURE.md for what this does and does not protect against.

import type { BundleInfo, BundleManifest, CheckResult, FromServiceWorker, Pin, ToServiceWorker } from './messages';

interface ExtendableEvent extends Event {
  waitUntil(promise: Promise<unknown>): void;
}
interface FetchEvent extends ExtendableEvent {
  request: Request;
  respondWith(response: Promise<Response> | Response): void;
}
interface ExtendableMessageEvent extends ExtendableEvent {
  data: ToServiceWorker;
  ports: readonly MessagePort[];
}
interface ServiceWorkerScope {
  location: Location;
  skipWaiting(): Promise<void>;
  clients: { claim(): Promise<void> };
  addEventListener(type: 'install' | 'activate', listener: (event: ExtendableEvent) => void): void;
  addEventListener(type: 'fetch', listener: (event: FetchEvent) => void): void;
  addEventListener(type: 'message', listener: (event: ExtendableMessageEvent) => void): void;
}
const sw = self as unknown as ServiceWorkerScope;

/** What the server says of signatures: the prefix, then the bundle hash in hex. */
const SIGNED_PREFIX = 'conclave web bundle v1\n';
/** The cache that holds the pin record (the pinned files are in a cache named after them). */
const PIN_CACHE = 'conclave-pin';
const PIN_KEY = '/conclave-pin.json';
/** The server's own policy (crates/server/src/http.rs), sent with every page from the pin. */
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'";

function hex(bytes: ArrayBuffer | Uint8Array): string {
  return Array.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

function unhex(text: string, bytes: number): Uint8Array<ArrayBuffer> | null {
  if (text.length !== 2 * bytes || !/^[0-9a-fA-F]*$/.test(text)) return null;
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function sha256(data: ArrayBuffer | Uint8Array<ArrayBuffer>): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', data));
}

/** The bundle hash: SHA-256 of `sha256sum`'s listing of the files sorted by path (web_bundle.rs). */
async function bundleHash(files: Record<string, string>): Promise<string> {
  const paths = Object.keys(files).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const text = paths.map((path) => `${files[path]}  ${path}\n`).join('');
  return sha256(new TextEncoder().encode(text));
}

const PLAIN_PATH = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Whether `signature` is the release key's signature of `bundle` (false for anything malformed). */
async function signedBy(releaseKey: string, bundle: string, signature: string | null): Promise<boolean> {
  const key = unhex(releaseKey, 32);
  const sig = signature ? unhex(signature.trim(), 64) : null;
  if (!key || !sig) return false;
  const publicKey = await crypto.subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
  return crypto.subtle.verify({ name: 'Ed25519' }, publicKey, sig, new TextEncoder().encode(SIGNED_PREFIX + bundle));
}

async function fetchJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { cache: 'no-store', credentials: 'omit' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

/** Where the server serves a manifest path (the app pages are `index.html`). */
function urlOf(path: string): string {
  return path === 'index.html' ? '/' : `/${path}`;
}

function contentType(path: string): string {
  const ext = path.slice(path.lastIndexOf('.') + 1);
  const types: Record<string, string> = {
    js: 'text/javascript; charset=utf-8',
    mjs: 'text/javascript; charset=utf-8',
    css: 'text/css; charset=utf-8',
    html: 'text/html; charset=utf-8',
    wasm: 'application/wasm',
    json: 'application/json',
    map: 'application/json',
    svg: 'image/svg+xml',
    png: 'image/png',
    ico: 'image/x-icon',
    woff2: 'font/woff2',
  };
  return types[ext] ?? 'application/octet-stream';
}

/**
 * Fetches the app the server names `expected`, checks every byte against its manifest and the
 * manifest against `expected`, and keeps it in the cache `bundle-<hash>`. Throws, keeping
 * nothing, if anything does not match.
 */
async function download(expected: string): Promise<string> {
  const manifest = await fetchJson<BundleManifest>('/bundle-manifest.json');
  const computed = await bundleHash(manifest.files);
  if (computed !== expected || manifest.sha256 !== expected) {
    throw new Error(`the server's manifest hashes to ${computed.slice(0, 16)}…, not the ${expected.slice(0, 16)}… it names`);
  }
  const name = `bundle-${expected}`;
  await caches.delete(name);
  const cache = await caches.open(name);
  try {
    for (const [path, digest] of Object.entries(manifest.files)) {
      if (!PLAIN_PATH.test(path) || path.split('/').some((part) => part === '.' || part === '..')) throw new Error(`odd file name in the manifest: ${path}`);
      // The browser keeps this script itself; it is in the bundle hash all the same.
      if (path === 'sw.js') continue;
      const response = await fetch(urlOf(path), { cache: 'no-store', credentials: 'omit' });
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      const bytes = await response.arrayBuffer();
      const got = await sha256(bytes);
      if (got !== digest) throw new Error(`${path} does not match the manifest (${got.slice(0, 16)}…)`);
      const headers: Record<string, string> = { 'content-type': contentType(path), 'x-content-type-options': 'nosniff' };
      if (path.endsWith('.html')) Object.assign(headers, { 'content-security-policy': CSP, 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' });
      await cache.put(path === 'index.html' ? '/index.html' : urlOf(path), new Response(bytes, { status: 200, headers }));
    }
  } catch (e) {
    await caches.delete(name);
    throw e;
  }
  return name;
}

let pinned: Pin | null | undefined;

async function loadPin(): Promise<Pin | null> {
  if (pinned !== undefined) return pinned;
  const stored = await (await caches.open(PIN_CACHE)).match(PIN_KEY);
  pinned = stored ? ((await stored.json()) as Pin) : null;
  return pinned;
}

async function savePin(pin: Pin): Promise<void> {
  await (await caches.open(PIN_CACHE)).put(PIN_KEY, new Response(JSON.stringify(pin), { headers: { 'content-type': 'application/json' } }));
  pinned = pin;
  for (const name of await caches.keys()) {
    if (name.startsWith('bundle-') && name !== pin.cache) await caches.delete(name);
  }
}

/** Pins the app the server offers now: trust on first use. */
async function pinFirst(): Promise<Pin> {
  const info = await fetchJson<BundleInfo>('/api/bundle');
  if (!info.sha256) throw new Error('the server has no web app built');
  const cache = await download(info.sha256);
  const signed = info.release_key !== null && (await signedBy(info.release_key, info.sha256, info.signature).catch(() => false));
  const now = Date.now();
  const pin: Pin = { sha256: info.sha256, releaseKey: signed ? info.release_key : null, signed, since: now, firstPinned: now, cache };
  await savePin(pin);
  return pin;
}

/** What the server offers now against the pin; see `CheckState` in messages.ts. */
async function check(): Promise<CheckResult> {
  const pin = (await loadPin()) ?? (await pinFirst());
  let info: BundleInfo;
  try {
    info = await fetchJson<BundleInfo>('/api/bundle');
  } catch (e) {
    return { state: 'error', pin, reason: `cannot ask the server which app it serves: ${String(e)}` };
  }
  if (!info.sha256) return { state: 'error', pin, offered: null, reason: 'the server serves no web app now' };
  const signedByPinned = async () => {
    try {
      return pin.releaseKey !== null && (await signedBy(pin.releaseKey, info.sha256 ?? '', info.signature));
    } catch {
      return false;
    }
  };
  if (info.sha256 === pin.sha256) {
    // A release key named later for the very app pinned: pinned with it from now on.
    if (pin.releaseKey === null && info.release_key !== null && (await signedBy(info.release_key, pin.sha256, info.signature).catch(() => false))) {
      const next = { ...pin, releaseKey: info.release_key, signed: true };
      await savePin(next);
      return { state: 'pinned', pin: next };
    }
    return { state: 'pinned', pin };
  }
  if (pin.releaseKey !== null) {
    if (!(await signedByPinned())) {
      const why = info.signature === null ? 'it carries no signature' : info.release_key !== pin.releaseKey ? `it is signed by another key (${(info.release_key ?? '').slice(0, 16)}…), not the pinned one` : 'its signature does not verify';
      return { state: 'refused', pin, offered: info.sha256, reason: why };
    }
    try {
      const cache = await download(info.sha256);
      const next: Pin = { ...pin, sha256: info.sha256, signed: true, since: Date.now(), cache };
      await savePin(next);
      return { state: 'updated', pin: next, previous: pin, offered: info.sha256 };
    } catch (e) {
      return { state: 'refused', pin, offered: info.sha256, reason: `the signed release could not be fetched intact: ${String(e)}` };
    }
  }
  try {
    const cache = await download(info.sha256);
    const signed = info.release_key !== null && (await signedBy(info.release_key, info.sha256, info.signature).catch(() => false));
    const next: Pin = { ...pin, sha256: info.sha256, releaseKey: signed ? info.release_key : null, signed, since: Date.now(), cache };
    await savePin(next);
    return { state: 'changed', pin: next, previous: pin, offered: info.sha256 };
  } catch (e) {
    return { state: 'error', pin, offered: info.sha256, reason: `the changed app could not be fetched intact: ${String(e)}` };
  }
}

// One check at a time (several tabs may ask at once).
let queue: Promise<unknown> = Promise.resolve();
function serialized<T>(task: () => Promise<T>): Promise<T> {
  const next = queue.then(task, task);
  queue = next.catch(() => undefined);
  return next;
}

sw.addEventListener('install', (event) => {
  // A pin kept from an earlier worker stays: the next check judges what the server offers.
  event.waitUntil(serialized(async () => (await loadPin()) ?? (await pinFirst())).then(() => sw.skipWaiting()));
});

sw.addEventListener('activate', (event) => {
  event.waitUntil(sw.clients.claim());
});

function isAppPage(path: string): boolean {
  return path === '/' || /^\/m\/[^/]+$/.test(path);
}

async function fromPin(key: string, request: Request): Promise<Response> {
  const pin = await loadPin();
  if (!pin) return fetch(request);
  const hit = await (await caches.open(pin.cache)).match(key);
  if (hit) return hit;
  return new Response(`Not part of the web app this browser pinned (${pin.sha256.slice(0, 16)}…).`, { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}

sw.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== sw.location.origin) return;
  if (request.mode === 'navigate' && isAppPage(url.pathname)) event.respondWith(fromPin('/index.html', request));
  else if (url.pathname.startsWith('/assets/')) event.respondWith(fromPin(url.pathname, request));
});

sw.addEventListener('message', (event) => {
  const port = event.ports[0];
  if (event.data?.type !== 'check' || !port) return;
  const reply = (message: FromServiceWorker) => port.postMessage(message);
  event.waitUntil(
    serialized(check).then(
      (result) => reply({ type: 'checked', result }),
      (e: unknown) => reply({ type: 'unpinned', reason: String(e) }),
    ),
  );
});
