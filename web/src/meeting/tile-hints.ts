// Tile hints: tells the SFU how big each remote video is on this page and whether it is on
// screen at all (`video_layout`), so that it forwards the simulcast layer that fits the tile and
// nothing for a video nobody can see. Costs nothing when nothing changes: sizes come from
// ResizeObserver and IntersectionObserver, and a layout is sent only when it differs.

import type { VideoTile } from '../protocol';

/** Resizing a window fires many observations: one message once it has settled. */
const DEBOUNCE_MS = 150;

export interface ReceivedVideo {
  mid: string;
  track: MediaStreamTrack;
}

export class TileHints {
  /** Every remote video m-line, from the latest negotiation. */
  private received: ReceivedVideo[] = [];
  /** The video element that shows each remote track (the view says which). */
  private readonly elements = new Map<MediaStreamTrack, HTMLVideoElement>();
  private readonly onScreen = new WeakMap<Element, boolean>();
  private readonly resize: ResizeObserver | null;
  private readonly intersection: IntersectionObserver | null;
  private readonly onVisibility = () => this.schedule();
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Nothing is sent before the first negotiation of a media session: no m-lines to name yet. */
  private negotiated = false;
  /** The layout last sent, as JSON; null: send the next one whatever it is. */
  private lastSent: string | null = null;
  private lastTiles: VideoTile[] = [];

  constructor(private readonly send: (tiles: VideoTile[]) => void) {
    const schedule = () => this.schedule();
    this.resize = typeof ResizeObserver === 'undefined' ? null : new ResizeObserver(schedule);
    this.intersection =
      typeof IntersectionObserver === 'undefined'
        ? null
        : new IntersectionObserver((entries) => {
            for (const entry of entries) this.onScreen.set(entry.target, entry.isIntersecting);
            schedule();
          });
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** The remote videos after a renegotiation; the server hears the layout again in any case. */
  setReceived(received: ReceivedVideo[]): void {
    this.received = received;
    this.negotiated = true;
    this.lastSent = null;
    this.schedule();
  }

  /** A new media session: the server knows nothing of this page's layout yet. */
  reset(): void {
    this.received = [];
    this.negotiated = false;
    this.lastSent = null;
  }

  close(): void {
    this.reset();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.resize?.disconnect();
    this.intersection?.disconnect();
    this.elements.clear();
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  /** `video` shows `track` now (null: a local or empty tile, nothing to report for it). */
  show(video: HTMLVideoElement, track: MediaStreamTrack | null): void {
    for (const [shown, element] of this.elements) {
      if (element === video && shown !== track) this.elements.delete(shown);
    }
    if (!track) {
      this.unobserve(video);
      return;
    }
    if (this.elements.get(track) === video) return;
    this.elements.set(track, video);
    this.resize?.observe(video);
    this.intersection?.observe(video);
    this.schedule();
  }

  /** The tile is gone. */
  forget(video: HTMLVideoElement): void {
    for (const [track, element] of this.elements) if (element === video) this.elements.delete(track);
    this.unobserve(video);
  }

  /** For diagnostics: what the server was last told. */
  get lastLayout(): VideoTile[] {
    return this.lastTiles;
  }

  private unobserve(video: HTMLVideoElement): void {
    this.resize?.unobserve(video);
    this.intersection?.unobserve(video);
    this.onScreen.delete(video);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, DEBOUNCE_MS);
  }

  private flush(): void {
    if (!this.negotiated) return;
    const tiles = this.received.map(({ mid, track }) => this.measure(mid, this.elements.get(track)));
    const json = JSON.stringify(tiles);
    if (json === this.lastSent) return;
    this.lastSent = json;
    this.lastTiles = tiles;
    this.send(tiles);
  }

  private measure(mid: string, video: HTMLVideoElement | undefined): VideoTile {
    if (!video || !video.isConnected) return { mid, width: 0, height: 0, visible: false };
    const rect = video.getBoundingClientRect();
    const width = Math.round(rect.width);
    const height = Math.round(rect.height);
    const style = getComputedStyle(video);
    const visible =
      document.visibilityState !== 'hidden' &&
      width > 0 &&
      height > 0 &&
      style.display !== 'none' &&
      style.visibility !== 'hidden' &&
      // Until the first intersection report, a laid-out element counts as on screen.
      this.onScreen.get(video) !== false;
    return { mid, width, height, visible };
  }
}
