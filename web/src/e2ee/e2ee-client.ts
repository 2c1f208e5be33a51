// Main-thread side of end-to-end encryption: picks the browser's encoded-frame API, starts the
// E2EE worker, attaches it to every sender and receiver, and carries MLS JSON both ways.
// It holds no key and does no cryptography.

import type { E2eeReport, FrameCounters, FromWorker, MediaKindName, ToWorker, TransformOptions } from './messages';

/** How this browser lets us touch encoded frames; `none` means no media at all. */
export type E2eeSupport = 'script-transform' | 'encoded-streams' | 'none';

interface EncodedStreams {
  readable: ReadableStream;
  writable: WritableStream;
}
type WithEncodedStreams = { createEncodedStreams?: () => EncodedStreams };
type WithTransform = { transform: unknown };
declare const RTCRtpScriptTransform: {
  new (worker: Worker, options: TransformOptions, transfer?: Transferable[]): unknown;
};

/** The best API this browser has; `limitTo` (tests only) pretends the better ones are missing. */
export function detectE2eeSupport(limitTo: 'encoded-streams' | 'none' | null = null): E2eeSupport {
  if (limitTo === 'none') return 'none';
  if (typeof RTCRtpSender === 'undefined' || typeof Worker === 'undefined') return 'none';
  if (limitTo === null && 'RTCRtpScriptTransform' in globalThis) return 'script-transform';
  if ('createEncodedStreams' in RTCRtpSender.prototype) return 'encoded-streams';
  return 'none';
}

export interface E2eeHandlers {
  /** A message the group session wants sent on the WebSocket (JSON, ready to send). */
  send(json: string): void;
  /** A group event (JSON with a `type`): keys changed, chat, alarm, removed... */
  event(json: string): void;
  report(report: E2eeReport, frames: FrameCounters): void;
  error(message: string, fatal: boolean): void;
}

export class E2eeClient {
  private readonly worker: Worker;
  private readonly attached = new WeakSet<RTCRtpSender | RTCRtpReceiver>();

  constructor(
    readonly support: Exclude<E2eeSupport, 'none'>,
    handlers: E2eeHandlers,
    /** TEST ONLY: receivers get no decrypting transform (the page shows a red banner). */
    private readonly passthroughReceive = false,
  ) {
    this.worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'e2ee' });
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const msg = event.data;
      switch (msg.type) {
        case 'send':
          handlers.send(msg.json);
          break;
        case 'event':
          handlers.event(msg.json);
          break;
        case 'report':
          handlers.report(msg.report, msg.frames);
          break;
        case 'error':
          handlers.error(msg.message, msg.fatal);
          break;
        case 'ready':
          break;
      }
    };
    this.worker.onerror = (e) => handlers.error(`the encryption worker failed: ${e.message}`, true);
  }

  /** Extra peer connection settings the chosen API needs. */
  peerConnectionConfig(): RTCConfiguration {
    return this.support === 'encoded-streams'
      ? ({ encodedInsertableStreams: true } as RTCConfiguration)
      : {};
  }

  private post(msg: ToWorker, transfer: Transferable[] = []): void {
    this.worker.postMessage(msg, transfer);
  }

  /**
   * Starts a group session from the server's `welcome` (JSON as received) with the link's
   * secrets: `#host=`, `#invite=` and `#k=` (empty strings when absent). They stay in the worker.
   */
  start(welcomeJson: string, name: string, secrets: { host: string; invite: string; meetingKey: string }): void {
    this.post({ type: 'start', welcome: welcomeJson, name, ...secrets });
  }

  /** This user removes `participantId` (before the `remove` goes to the server). */
  removing(participantId: number): void {
    this.post({ type: 'removing', participantId });
  }

  /** This user admits `participantId` from the lobby (before the `admit` goes to the server). */
  admitting(participantId: number): void {
    this.post({ type: 'admitting', participantId });
  }

  /** This user, holding the host link, makes `participantId` a co-host in the group (or not). */
  setCohost(participantId: number, cohost: boolean): void {
    this.post({ type: 'cohost', participantId, cohost });
  }

  serverMessage(json: string): void {
    this.post({ type: 'server', json });
  }

  /** Which participant publishes what arrives on each receiving m-line. */
  setPublishers(tracks: Array<[mid: string, participantId: number]>): void {
    this.post({ type: 'tracks', tracks });
  }

  sendChat(text: string): void {
    this.post({ type: 'chat', text });
  }

  stopSession(): void {
    this.post({ type: 'stop' });
  }

  terminate(): void {
    this.worker.terminate();
  }

  attachSender(sender: RTCRtpSender, kind: MediaKindName): void {
    this.attach(sender, { side: 'send', kind, mid: null });
  }

  attachReceiver(receiver: RTCRtpReceiver, kind: MediaKindName, mid: string | null): void {
    this.attach(receiver, { side: 'receive', kind, mid });
  }

  private attach(target: RTCRtpSender | RTCRtpReceiver, options: TransformOptions): void {
    if (this.attached.has(target)) return;
    this.attached.add(target);
    const passthrough = options.side === 'receive' && this.passthroughReceive;
    if (this.support === 'script-transform') {
      if (!passthrough) (target as unknown as WithTransform).transform = new RTCRtpScriptTransform(this.worker, options);
      return;
    }
    const create = (target as unknown as WithEncodedStreams).createEncodedStreams;
    if (!create) throw new Error('this browser lost its encoded streams API');
    const streams = create.call(target);
    if (passthrough) {
      void streams.readable.pipeTo(streams.writable).catch(() => undefined);
      return;
    }
    this.post({ type: 'streams', ...options, readable: streams.readable, writable: streams.writable }, [
      streams.readable as unknown as Transferable,
      streams.writable as unknown as Transferable,
    ]);
  }
}
