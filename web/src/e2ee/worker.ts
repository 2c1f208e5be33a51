// The E2EE worker: owns the participant's MLS group session (Rust `web-session` through wasm)
// and every media key, and seals or opens every encoded frame of the peer connection.
// No cryptography is written here: every frame goes through `encryptFrame` / `decryptFrame`.

import init, { WebDevice, WebSession } from '../wasm/web_session.js';
import type { FrameCounters, FromWorker, MediaKindName, ToWorker, TransformOptions } from './messages';

/** The parts of the dedicated worker scope this worker uses (the DOM typings describe a window). */
interface WorkerScope {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  onrtctransform?: (event: RtcTransformEvent) => void;
}
const scope = self as unknown as WorkerScope;

/** How long a received frame waits for keys still on their way (its Commit is in flight). */
const HOLD_FOR_KEYS_MS = 1000;
const RETRY_MS = 40;
const TICK_MS = 100;
const REPORT_MS = 500;

const ready = init();
let session: WebSession | null = null;
/**
 * This page's device key, the same for every session of the meeting: after a dropped
 * connection the hosts' clients recognise it and let this participant back into the group.
 */
let device: WebDevice | null = null;
/** Receiving m-line → the publisher the server says it carries. */
let publishers = new Map<string, number>();

const counters: FrameCounters = {
  encrypted: { audio: 0, video: 0 },
  heldBack: { audio: 0, video: 0 },
  decrypted: {},
  notForUs: 0,
  failed: 0,
  wrongSender: 0,
};

function post(msg: FromWorker): void {
  scope.postMessage(msg);
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Sends what the group session queued, and tells the UI what changed. */
function flush(): void {
  if (!session) return;
  for (let json = session.pollMessage(); json !== undefined; json = session.pollMessage()) {
    post({ type: 'send', json });
  }
  for (let json = session.pollEvent(); json !== undefined; json = session.pollEvent()) {
    post({ type: 'event', json });
  }
  const errors = JSON.parse(session.takeErrors()) as string[];
  for (const message of errors) post({ type: 'error', message, fatal: false });
}

function report(): void {
  if (!session) return;
  post({ type: 'report', report: JSON.parse(session.report()), frames: counters });
}

scope.onmessage = async (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  await ready;
  try {
    switch (msg.type) {
      case 'start':
        session?.free();
        device ??= new WebDevice();
        session = new WebSession(msg.welcome, msg.name, msg.host, msg.invite, msg.meetingKey, now(), device);
        flush();
        report();
        break;
      case 'server':
        session?.onServerMessage(msg.json, now());
        flush();
        break;
      case 'tracks':
        publishers = new Map(msg.tracks);
        break;
      case 'admitting': {
        // Older builds of the wasm vouched for every admission the server reported.
        const withAdmissions = session as (WebSession & { admissionRequested?: (participant: number) => void }) | null;
        withAdmissions?.admissionRequested?.(msg.participantId);
        break;
      }
      case 'removing':
        session?.removedByThisUser(msg.participantId);
        flush();
        break;
      case 'cohost':
        if (!session) throw new Error('not in the meeting yet');
        session.setCohost(msg.participantId, msg.cohost);
        flush();
        break;
      case 'chat':
        if (!session) throw new Error('not in the meeting yet');
        session.sendChat(msg.text);
        flush();
        break;
      case 'stop':
        session?.free();
        session = null;
        break;
      case 'streams':
        pipe(msg.readable, msg.writable, { side: msg.side, kind: msg.kind, mid: msg.mid });
        break;
    }
  } catch (e) {
    post({ type: 'error', message: e instanceof Error ? e.message : String(e), fatal: msg.type === 'start' });
  }
};

setInterval(() => {
  session?.tick(now());
  flush();
}, TICK_MS);
setInterval(report, REPORT_MS);

// RTCRtpScriptTransform: one event per sender or receiver the main thread attached.
interface RtcTransformEvent extends Event {
  transformer: { readable: ReadableStream; writable: WritableStream; options: TransformOptions };
}
scope.onrtctransform = (event) => {
  const t = event.transformer;
  pipe(t.readable, t.writable, t.options);
};

interface EncodedFrame {
  data: ArrayBuffer;
}

function codec(kind: MediaKindName): 'vp8' | 'opus' {
  return kind === 'video' ? 'vp8' : 'opus';
}

function pipe(readable: ReadableStream, writable: WritableStream, options: TransformOptions): void {
  const transform = options.side === 'send' ? sealer(options.kind) : opener(options.kind, options.mid);
  readable
    .pipeThrough(new TransformStream<EncodedFrame, EncodedFrame>({ transform }))
    .pipeTo(writable)
    .catch(() => {
      // The sender or receiver went away with its peer connection.
    });
}

type Transform = (frame: EncodedFrame, controller: TransformStreamDefaultController<EncodedFrame>) => Promise<void>;

/** Outgoing frames: sealed, or dropped while there are no keys. Never sent in the clear. */
function sealer(kind: MediaKindName): Transform {
  const name = codec(kind);
  return async (frame, controller) => {
    await ready;
    const sealed = session?.encryptFrame(name, new Uint8Array(frame.data));
    if (!sealed) {
      counters.heldBack[kind] += 1;
      return;
    }
    frame.data = sealed.buffer as ArrayBuffer;
    counters.encrypted[kind] += 1;
    controller.enqueue(frame);
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Incoming frames: opened and checked against the track's publisher, or dropped. */
function opener(kind: MediaKindName, mid: string | null): Transform {
  const name = codec(kind);
  return async (frame, controller) => {
    await ready;
    const bytes = new Uint8Array(frame.data);
    const arrived = now();
    for (;;) {
      if (!session) return;
      const result = session.decryptFrame(name, bytes, now());
      const status = result.status;
      if (status === 'opened') {
        const sender = result.sender;
        const plaintext = result.takePlaintext();
        result.free();
        const publisher = mid === null ? undefined : publishers.get(mid);
        if (publisher !== undefined && String(publisher) !== sender) {
          counters.wrongSender += 1;
          return;
        }
        const perSender = (counters.decrypted[sender] ??= { audio: 0, video: 0 });
        perSender[kind] += 1;
        frame.data = plaintext.buffer as ArrayBuffer;
        controller.enqueue(frame);
        return;
      }
      result.free();
      if (status === 'not_yet' && now() - arrived < HOLD_FOR_KEYS_MS) {
        await sleep(RETRY_MS);
        continue;
      }
      if (status === 'not_yet') session.countFailure();
      if (status === 'not_for_us') counters.notForUs += 1;
      else counters.failed += 1;
      return;
    }
  };
}

post({ type: 'ready' });
