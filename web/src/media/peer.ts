// The media connection: one RTCPeerConnection to the SFU. This side sends the first offer
// (microphone, camera and a reserved screen-share m-line, all send-only); after that only the
// server offers, and this side answers. Every sender and receiver goes through the E2EE worker.

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

export class MediaPeer {
  readonly pc: RTCPeerConnection;
  private readonly senders = new Map<TrackSource, RTCRtpSender>();
  /** Offers and answers are applied one at a time, in arrival order. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly e2ee: E2eeClient,
    private readonly handlers: PeerHandlers,
  ) {
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...e2ee.peerConnectionConfig() });
    this.pc.ontrack = (event) => {
      const kind = event.track.kind === 'audio' ? 'audio' : 'video';
      this.e2ee.attachReceiver(event.receiver, kind, event.transceiver.mid);
    };
    this.pc.onconnectionstatechange = () => this.handlers.connectionState(this.pc.connectionState);
  }

  /** Publishes: the first offer, with what each sending m-line carries. */
  async publish(microphone: MediaStreamTrack | null, camera: MediaStreamTrack | null): Promise<void> {
    const add = (source: TrackSource, kind: 'audio' | 'video', track: MediaStreamTrack | null) => {
      const transceiver = this.pc.addTransceiver(track ?? kind, { direction: 'sendonly' });
      if (kind === 'video') preferVp8(transceiver);
      this.e2ee.attachSender(transceiver.sender, kind);
      this.senders.set(source, transceiver.sender);
      return transceiver;
    };
    const transceivers: Array<[TrackSource, RTCRtpTransceiver]> = [
      ['microphone', add('microphone', 'audio', microphone)],
      ['camera', add('camera', 'video', camera)],
      ['screen', add('screen', 'video', null)],
    ];
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
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
    await this.senders.get(source)?.replaceTrack(track);
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
