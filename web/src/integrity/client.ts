// The page's side of web app integrity: registers the service worker (`sw.ts`) that pins the
// installed app, asks it at every load whether the server still offers that app, and shows the
// answer: a banner when the server offered another one, and "About this app" in the security
// panel.

import './integrity.css';
import { h } from '../dom';
import type { BundleInfo, CheckResult, FromServiceWorker, Pin } from './messages';

export interface IntegrityStatus {
  /** Still finding out. */
  checking: boolean;
  /** What the server says it serves now (`/api/bundle`). */
  server: BundleInfo | null;
  /** The pinned app, after this load's check. */
  pin: Pin | null;
  /** Why nothing is pinned. */
  unpinnedReason: string | null;
  /** This load's check. */
  check: CheckResult | null;
  /** This page itself came from the pinned app (not from the network: a first visit, a hard reload). */
  servedFromPin: boolean;
}

const servedFromPin = typeof navigator !== 'undefined' && !!navigator.serviceWorker?.controller;
let status: IntegrityStatus = { checking: true, server: null, pin: null, unpinnedReason: null, check: null, servedFromPin };
const listeners = new Set<() => void>();

export function integrityStatus(): IntegrityStatus {
  return status;
}

function update(change: Partial<IntegrityStatus>): void {
  status = { ...status, ...change };
  for (const listener of listeners) listener();
}

/** The hash of the app this page runs, as far as the page can know it. */
export function runningBundle(s: IntegrityStatus = status): string | null {
  if (s.servedFromPin && s.check) return s.check.previous?.sha256 ?? s.check.pin.sha256;
  return s.server?.sha256 ?? s.pin?.sha256 ?? null;
}

export function short(hash: string | null | undefined): string {
  return hash ? `${hash.slice(0, 16)}…` : 'unknown';
}

/** The active (or activating) worker of a registration, or null if it failed to install. */
function activeWorker(registration: ServiceWorkerRegistration): Promise<ServiceWorker | null> {
  if (registration.active) return Promise.resolve(registration.active);
  const worker = registration.installing ?? registration.waiting;
  if (!worker) return Promise.resolve(null);
  return new Promise((resolve) => {
    const settle = () => {
      if (worker.state === 'activating' || worker.state === 'activated') resolve(worker);
      else if (worker.state === 'redundant') resolve(registration.active);
    };
    worker.addEventListener('statechange', settle);
    settle();
  });
}

function ask(worker: ServiceWorker): Promise<FromServiceWorker> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event: MessageEvent<FromServiceWorker>) => resolve(event.data);
    worker.postMessage({ type: 'check' }, [channel.port2]);
  });
}

/** Registers the service worker and runs this load's check. */
export async function startIntegrity(): Promise<void> {
  const server = await fetch('/api/bundle', { cache: 'no-store' })
    .then((r) => (r.ok ? (r.json() as Promise<BundleInfo>) : null))
    .catch(() => null);
  update({ server });
  if (!('serviceWorker' in navigator)) {
    update({ checking: false, unpinnedReason: 'service worker unavailable' });
    return;
  }
  let registration: ServiceWorkerRegistration;
  try {
    registration = await navigator.serviceWorker.register('/sw.js', { scope: '/', updateViaCache: 'none' });
  } catch (e) {
    update({ checking: false, unpinnedReason: `service worker unavailable: ${String(e)}` });
    return;
  }
  const worker = await activeWorker(registration);
  if (!worker) {
    update({ checking: false, unpinnedReason: 'the service worker could not pin the app: the server was unreachable, or its files did not match their manifest' });
    return;
  }
  const answer = await ask(worker);
  if (answer.type === 'unpinned') update({ checking: false, unpinnedReason: answer.reason });
  else update({ checking: false, check: answer.result, pin: answer.result.pin });
}

function bannerContent(s: IntegrityStatus): HTMLElement | null {
  const check = s.check;
  // A pin from before this load, yet this page did not come from it: a hard reload (or the
  // worker lost its control) loaded what the server serves now.
  const bypassed = !s.servedFromPin && s.pin !== null && s.pin.firstPinned < performance.timeOrigin;
  const pinnedBefore = check?.previous?.sha256 ?? s.pin?.sha256;
  if (bypassed && s.server?.sha256 && s.server.sha256 !== pinnedBefore) {
    return h(
      'div',
      { class: 'banner warn', role: 'alert', id: 'integrity-bypassed' },
      `This page was loaded past the web app this browser pinned (a hard reload?): it runs what the server serves now (${short(s.server.sha256)}), not the pinned ${short(pinnedBefore)}. Reload normally to run the pinned app.`,
    );
  }
  if (check?.state === 'refused') {
    return h(
      'div',
      { class: 'banner error', role: 'alert', id: 'integrity-refused' },
      h('strong', {}, "The server offered a web app that was not signed by this meeting server's release key. "),
      `Conclave kept the version you installed (${short(check.pin.sha256)}). Tell the server's operator.`,
      h('span', { class: 'integrity-detail' }, ` Offered: ${short(check.offered)}; ${check.reason ?? ''}.`),
    );
  }
  if (check?.state === 'changed') {
    return h(
      'div',
      { class: 'banner warn', role: 'alert', id: 'integrity-changed' },
      `The server changed its web app from ${short(check.previous?.sha256)} to ${short(check.pin.sha256)}. It names no release key, so nobody vouches for the change, and this browser uses the new version from the next load. If you did not expect an update, tell the server's operator.`,
    );
  }
  if (check?.state === 'updated') {
    return h('div', { class: 'banner info', role: 'status', id: 'integrity-updated' }, `Updated to signed release ${short(check.pin.sha256)}: it runs from the next load.`);
  }
  return null;
}

/** The banner above every page; fills itself in when the check is done. */
export function integrityBanner(): HTMLElement {
  const el = h('div', { id: 'integrity-banner' });
  const render = () => {
    el.dataset['state'] = status.checking ? 'checking' : (status.check?.state ?? 'unpinned');
    el.replaceChildren(...[bannerContent(status)].filter((c): c is HTMLElement => c !== null));
  };
  listeners.add(render);
  render();
  return el;
}

let about: HTMLElement | null = null;

/** "About this app" for the security panel: one live element, kept up to date. */
export function aboutThisApp(): HTMLElement {
  if (about) return about;
  const el = h('section', { class: 'about-app', id: 'about-app', 'aria-label': 'About this app' });
  const render = () => {
    const s = status;
    const hash = runningBundle(s);
    el.dataset['state'] = s.checking ? 'checking' : (s.check?.state ?? 'unpinned');
    if (hash) el.dataset['bundleSha256'] = hash;
    else delete el.dataset['bundleSha256'];
    const pin = s.pin;
    const pinned = s.checking
      ? 'Checking whether this browser pinned it…'
      : pin
        ? `Pinned by this browser since ${new Date(pin.since).toLocaleString()}.`
        : `Not pinned (${s.unpinnedReason ?? 'service worker unavailable'}).`;
    const key = pin ? pin.releaseKey : (s.server?.release_key ?? null);
    const release = key
      ? `Updates must be signed by release key ${short(key)}${pin?.signed ? '; this version is signed by it' : ''}.`
      : 'This server names no release key: a changed app is taken with a warning (trust on first use).';
    el.replaceChildren(
      h('h3', {}, 'About this app'),
      h('p', {}, 'Web app: ', h('code', { id: 'bundle-sha256', title: hash ?? 'unknown' }, short(hash))),
      h('p', { id: 'bundle-pin' }, pinned),
      h('p', { id: 'bundle-release' }, release),
      h('p', { class: 'hint' }, "The web app's SHA-256 (conclave serve prints it at start). Compare it with the one the operator publishes for the release."),
    );
  };
  listeners.add(render);
  render();
  about = el;
  return el;
}
