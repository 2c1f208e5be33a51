// Messages between the main thread and the E2EE worker. The worker owns the MLS group session
// (Rust, through wasm) and sees every encoded frame; the main thread only carries JSON.

export type FrameSide = 'send' | 'receive';
export type MediaKindName = 'audio' | 'video';

/** What the main thread tells the worker. */
export type ToWorker =
  /** `host`, `invite`, `meetingKey`: the link's `#host=`, `#invite=`, `#k=` (empty when absent). */
  | { type: 'start'; welcome: string; name: string; host: string; invite: string; meetingKey: string }
  /** This user (holding the host link) makes a participant co-host in the group, or takes it back. */
  | { type: 'cohost'; participantId: number; cohost: boolean }
  /** This user admits a participant from the lobby: only then does its client vouch for it. */
  | { type: 'admitting'; participantId: number }
  /** This user removes a participant: a host's client bars its device from coming back. */
  | { type: 'removing'; participantId: number }
  | { type: 'server'; json: string }
  | { type: 'tracks'; tracks: Array<[mid: string, participantId: number]> }
  | { type: 'chat'; text: string }
  | { type: 'stop' }
  | {
      // The older createEncodedStreams API: the streams come over, transferred.
      type: 'streams';
      side: FrameSide;
      kind: MediaKindName;
      mid: string | null;
      readable: ReadableStream;
      writable: WritableStream;
    };

/** Options of an RTCRtpScriptTransform, as the worker receives them. */
export interface TransformOptions {
  side: FrameSide;
  kind: MediaKindName;
  mid: string | null;
}

/** Counters of frames through the worker, for the UI and the tests. */
export interface FrameCounters {
  encrypted: { audio: number; video: number };
  /** Dropped on the way out: no group keys yet (never sent in the clear). */
  heldBack: { audio: number; video: number };
  /** Opened frames by sender participant id and kind, e.g. {"3": {"video": 120}}. */
  decrypted: Record<string, { audio: number; video: number }>;
  notForUs: number;
  failed: number;
  /** A frame opened with a key of someone other than the track's publisher. */
  wrongSender: number;
}

export interface E2eeReport {
  epoch: number;
  security_code: string;
  security_emoji: string;
  member: boolean;
  decrypted: number;
  decrypt_failures: number;
  undecryptable_before_join: number;
  alarms: string[];
  commits_made: number;
}

/** What the worker tells the main thread. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'send'; json: string }
  | { type: 'event'; json: string }
  | { type: 'report'; report: E2eeReport; frames: FrameCounters }
  | { type: 'error'; message: string; fatal: boolean };
