// What the page and the service worker (`sw.ts`) say to each other about the pinned web app.
// Types only: the service worker is one self-contained script and imports nothing at run time.

/** `GET /api/bundle`: the web app the server hands out now. */
export interface BundleInfo {
  sha256: string | null;
  release_key: string | null;
  signature: string | null;
}

/** `GET /bundle-manifest.json`: every file of the app and its SHA-256. */
export interface BundleManifest {
  files: Record<string, string>;
  sha256: string;
}

/** What this browser pinned: the app it runs, whatever the server offers. */
export interface Pin {
  /** The bundle hash of the pinned app. */
  sha256: string;
  /** The release key updates must be signed by (null: the server named none when pinned). */
  releaseKey: string | null;
  /** Whether the pinned app itself carries a valid signature by `releaseKey`. */
  signed: boolean;
  /** When this browser pinned this app (ms since the epoch). */
  since: number;
  /** When this browser first pinned an app of this server. */
  firstPinned: number;
  /** The Cache API cache holding the pinned files. */
  cache: string;
}

/**
 * The outcome of the check the page asks for at every load:
 * - `pinned`: the server offers the pinned app;
 * - `updated`: it offered another, signed by the pinned release key, which is now pinned (used
 *   from the next load);
 * - `refused`: it offered another, not signed by the pinned release key: kept the pinned one;
 * - `changed`: it offered another and no release key was pinned: that one is pinned now (trust
 *   on first use only);
 * - `error`: the check could not be made (the server is unreachable, its files do not match
 *   its manifest); the pinned app stays.
 */
export type CheckState = 'pinned' | 'updated' | 'refused' | 'changed' | 'error';

export interface CheckResult {
  state: CheckState;
  /** The pin after the check. */
  pin: Pin;
  /** The pin before it, when it changed. */
  previous?: Pin;
  /** What the server offered, when it was not the pinned app. */
  offered?: string | null;
  /** Why, in plain words (refused, error). */
  reason?: string;
}

export type ToServiceWorker = { type: 'check' };

export type FromServiceWorker = { type: 'checked'; result: CheckResult } | { type: 'unpinned'; reason: string };
