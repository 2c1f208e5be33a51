// The media connection: one RTCPeerConnection to the SFU. This side sends the first offer
// (microphone, camera and a reserved screen-share m-line, all send-only); after that only the
// server offers, and this side answers. Every sender and receiver goes through the E2EE worker.
//
// The camera is sent as three simulcast layers, so that the SFU can give each viewer the one
// that fits its tile; the server names the layers anyone receives (`publish_layers`) and the
// others are paused, so nobody encodes 720p that no one watches.

import type { E2eeClient } from '../e2ee/e2ee-client';
import type { ClientMessage, TrackInfo, TrackSource } from '../protocol';

export interface RemoteTrack {
  info: TrackInfo;
  track: MediaStreamTrack;
}

export interface PeerHandlers {
  send(msg: ClientMessage): void;
  /** The full set of remote tracks after each renegotiation. */
  tracks(tracks: RemoteTrack[]): void;
  connectionState(state: RTCPeerConnectionState): void;
}

/**
 * The camera's simulcast layers, lowest first, named by RID. About 180p, 360p and 720p from a
 * 1280x720 capture; the bitrates are caps, the browser's bandwidth estimate decides the rest.
 */
export const CAMERA_LAYERS: readonly RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** A shared screen is mostly text: one sharp layer, allowed more bits than the camera's best. */
const SCREEN_MAX_BITRATE = 2_500_000;

export class MediaPeer {
  readonly pc: RTCPeerConnection;
  private readonly senders = new Map<TrackSource, RTCRtpSender>();
  /** Offers and answers are applied one at a time, in arrival order. */
  private queue: Promise<void> = Promise.resolve();
  /**
   * Sender parameter changes, one chain per sender: each reads `getParameters()` and writes it
   * back, so two at once would fail on a stale transaction id or undo each other.
   */
  private readonly parameterEdits = new Map<RTCRtpSender, Promise<void>>();
  /** For diagnostics: the layers the server last named for each of our m-lines. */
  readonly activeLayers = new Map<string, string[]>();

  constructor(
    private readonly e2ee: E2eeClient,
    private readonly handlers: PeerHandlers,
    iceServers: RTCIceServer[] = [],
  ) {
    // With TURN servers, ICE tries every path at once and keeps the best that works: UDP to
    // the SFU, then ICE-TCP, then the relay over TLS, without the user doing anything.
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers, ...e2ee.peerConnectionConfig() });
    this.pc.ontrack = (event) => {
      const kind = event.track.kind === 'audio' ? 'audio' : 'video';
      this.e2ee.attachReceiver(event.receiver, kind, event.transceiver.mid);
    };
    this.pc.onconnectionstatechange = () => this.handlers.connectionState(this.pc.connectionState);
  }

  /** Publishes: the first offer, with what each sending m-line carries. */
  async publish(microphone: MediaStreamTrack | null, camera: MediaStreamTrack | null): Promise<void> {
    const add = (source: TrackSource, kind: 'audio' | 'video', track: MediaStreamTrack | null, sendEncodings?: RTCRtpEncodingParameters[]) => {
      const transceiver = this.pc.addTransceiver(track ?? kind, { direction: 'sendonly', ...(sendEncodings ? { sendEncodings } : {}) });
      if (kind === 'video') preferVp8(transceiver);
      // One transform per sender: with simulcast all three layers' frames pass through it.
      this.e2ee.attachSender(transceiver.sender, kind);
      this.senders.set(source, transceiver.sender);
      return transceiver;
    };
    const transceivers: Array<[TrackSource, RTCRtpTransceiver]> = [
      ['microphone', add('microphone', 'audio', microphone)],
      ['camera', add('camera', 'video', camera, CAMERA_LAYERS.map((layer) => ({ ...layer })))],
      ['screen', add('screen', 'video', null, [{ maxBitrate: SCREEN_MAX_BITRATE }])],
    ];
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const screen = this.senders.get('screen');
    if (screen) {
      // Text that stays readable matters more than motion: drop frames, never resolution.
      this.editParameters(screen, (params) => {
        params.degradationPreference = 'maintain-resolution';
        return true;
      });
    }
    const sources: Record<string, TrackSource> = {};
    for (const [source, transceiver] of transceivers) {
      if (transceiver.mid !== null) sources[transceiver.mid] = source;
    }
    this.handlers.send({ type: 'offer', sdp: this.pc.localDescription?.sdp ?? offer.sdp ?? '', sources });
  }

  onAnswer(sdp: string): void {
    this.enqueue(async () => {
      await this.pc.setRemoteDescription({ type: 'answer', sdp });
    });
  }

  onOffer(sdp: string, tracks: TrackInfo[]): void {
    this.enqueue(async () => {
      this.e2ee.setPublishers(tracks.map((t) => [t.mid, t.participant_id]));
      await this.pc.setRemoteDescription({ type: 'offer', sdp });
      const answer = await this.pc.createAnswer();
      await this.pc.setLocalDescription(answer);
      this.handlers.send({ type: 'answer', sdp: this.pc.localDescription?.sdp ?? answer.sdp ?? '' });
      this.handlers.tracks(this.remoteTracks(tracks));
    });
  }

  private remoteTracks(tracks: TrackInfo[]): RemoteTrack[] {
    const byMid = new Map(tracks.map((t) => [t.mid, t]));
    const out: RemoteTrack[] = [];
    for (const transceiver of this.pc.getTransceivers()) {
      const info = transceiver.mid === null ? undefined : byMid.get(transceiver.mid);
      if (info) out.push({ info, track: transceiver.receiver.track });
    }
    return out;
  }

  /** Swaps what a source sends (camera change, screen share start or stop). */
  async replaceTrack(source: TrackSource, track: MediaStreamTrack | null): Promise<void> {
    // Tells the encoder the screen is detail (text, lines), not motion.
    if (source === 'screen' && track) track.contentHint = 'detail';
    await this.senders.get(source)?.replaceTrack(track);
  }

  /**
   * The server names the simulcast layers (RIDs) of our m-line `mid` that someone receives:
   * encode those, pause the rest (an empty list pauses all). Unknown m-lines are ignored.
   */
  setActiveLayers(mid: string, active: string[]): void {
    const transceiver = this.pc.getTransceivers().find((t) => t.mid === mid);
    const sender = transceiver?.sender;
    if (!sender || ![...this.senders.values()].includes(sender)) return;
    this.activeLayers.set(mid, [...active]);
    this.editParameters(sender, (params) => {
      let changed = false;
      for (const encoding of params.encodings) {
        // A layer without a RID is an m-line without simulcast (the screen, or a camera whose
        // simulcast the answer refused): it runs while any layer at all is wanted.
        const on = encoding.rid === undefined ? active.length > 0 : active.includes(encoding.rid);
        if (encoding.active !== on) {
          encoding.active = on;
          changed = true;
        }
      }
      return changed;
    });
  }

  /**
   * Queues a change of a sender's parameters behind the previous one and behind the current
   * negotiation (which can change the encodings under us); `edit` says whether it changed
   * anything. A change that still meets a stale transaction is retried once; none ever throws.
   */
  private editParameters(sender: RTCRtpSender, edit: (params: RTCRtpSendParameters) => boolean): void {
    const apply = async () => {
      if (this.pc.signalingState === 'closed') return;
      const params = sender.getParameters();
      if (params.encodings.length > 0 && edit(params)) await sender.setParameters(params);
    };
    const previous = this.parameterEdits.get(sender) ?? Promise.resolve();
    const next = previous
      .then(() => this.queue)
      .then(apply)
      .catch(() => this.queue.then(apply))
      .catch((e: unknown) => {
        console.warn('sender parameters not applied', e);
      });
    this.parameterEdits.set(sender, next);
  }

  private enqueue(step: () => Promise<void>): void {
    this.queue = this.queue.then(step).catch((e: unknown) => {
      console.error('negotiation failed', e);
    });
  }

  close(): void {
    this.pc.close();
  }
}

/** Video is VP8: the E2EE clear-prefix rules are per codec. */
function preferVp8(transceiver: RTCRtpTransceiver): void {
  const capabilities = RTCRtpSender.getCapabilities?.('video');
  if (!capabilities || !('setCodecPreferences' in transceiver)) return;
  const vp8 = capabilities.codecs.filter((c) => /vp8|rtx/i.test(c.mimeType));
  try {
    transceiver.setCodecPreferences(vp8);
  } catch {
    // Older browsers refuse preferences on send-only transceivers; the server picks VP8.
  }
}
