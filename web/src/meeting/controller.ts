// The meeting controller: joins through signaling, runs the E2EE worker and the peer
// connection, keeps the meeting's state for the views, and reconnects by itself.

import { E2eeClient, type E2eeSupport } from '../e2ee/e2ee-client';
import type { E2eeReport, FrameCounters } from '../e2ee/messages';
import type { LinkKeys } from '../link-secrets';
import { makeInvitationSecret, signInvitation } from '../link-secrets';
import { deviceId, fragmentValue, shareableLink, type MeetingLink } from '../links';
import { MediaPeer, type RemoteTrack } from '../media/peer';
import { explainMediaError } from '../media/devices';
import { concernsGroup, type ClientMessage, type VideoTile, type LobbyEntry, type MeetingState, type ParticipantInfo, type Role, type ServerMessage, type TrackSource } from '../protocol';
import { SignalingClient } from '../signaling';
import { TileHints } from './tile-hints';

export type Phase = 'connecting' | 'lobby' | 'meeting' | 'reconnecting' | 'ended';

export interface Participant {
  info: ParticipantInfo;
  audio?: MediaStreamTrack;
  camera?: MediaStreamTrack;
  screen?: MediaStreamTrack;
}

export interface ChatMessage {
  from: string;
  participantId: string;
  text: string;
  at: Date;
  own: boolean;
}

export interface Notice {
  id: number;
  text: string;
  tone: 'info' | 'warning' | 'error';
}

export interface MeetingSnapshot {
  phase: Phase;
  /** Why the meeting is over for us, or why we wait, in plain words. */
  message: string;
  ownId: number | null;
  ownName: string;
  role: Role | null;
  participants: Map<number, Participant>;
  lobby: LobbyEntry[];
  meetingState: MeetingState | null;
  securityCode: string;
  securityEmoji: string;
  epoch: number;
  encrypted: boolean;
  chat: ChatMessage[];
  notices: Notice[];
  micOn: boolean;
  cameraOn: boolean;
  sharingScreen: boolean;
  activeSpeaker: number | null;
  /** How media reaches the SFU: 'UDP', 'TCP' (ICE-TCP) or 'TURN/TLS' (relayed), once connected. */
  mediaPath: string | null;
  alarms: string[];
  /**
   * Participant ids the MLS group verified as hosts (host-link holders and the co-hosts they
   * promoted), from the last `keys_changed`: what every member checked, not the server's word.
   */
  verifiedHosts: Set<number>;
}

/** An invitation this host's client issued. */
export interface IssuedInvitation {
  id: string;
  label: string;
  url: string;
  expiresAt: Date;
  singleUse: boolean;
  skipLobby: boolean;
}

const CLIENT_VERSION = 'conclave-web/0.1.0';
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 3000, 5000];
const GIVE_UP_AFTER_MS = 120_000;
const SPEAKER_POLL_MS = 400;

/** Plain words for every way the server refuses or ends a session. */
const REFUSALS: Record<string, string> = {
  locked: 'This meeting is locked: the host is not letting anyone new in right now.',
  banned: 'You were removed from this meeting and cannot join it again.',
  unknown_meeting: 'This meeting does not exist. Check the link you were given.',
  meeting_ended: 'This meeting has ended.',
  meeting_full: 'This meeting is full.',
  invitation_required: 'This meeting needs a personal invitation link.',
  forbidden: 'You are not allowed to join this meeting with this link (a passcode may be missing or wrong).',
  rate_limited: 'Too many attempts. Wait a minute and try again.',
};

export class MeetingController {
  readonly state: MeetingSnapshot;
  private readonly listeners = new Set<() => void>();
  private signaling: SignalingClient | null = null;
  private peer: MediaPeer | null = null;
  private e2ee: E2eeClient | null = null;
  private final = false;
  private attempt = 0;
  private lostAt: number | null = null;
  private welcomed = false;
  private noticeId = 0;
  private speakerTimer: ReturnType<typeof setInterval> | null = null;
  private screenTrack: MediaStreamTrack | null = null;
  private lastFrames: FrameCounters | null = null;
  private lastReport: E2eeReport | null = null;
  /** Co-hosts this user (holding the host link) made, re-made in every new group session. */
  private readonly promoted = new Set<number>();
  /** What the meeting view tells the SFU about its remote tiles (sizes, visibility). */
  readonly tileHints = new TileHints((tiles) => this.send({ type: 'video_layout', tiles }));

  constructor(
    private readonly link: MeetingLink,
    /** What the link's secrets derive to (see `linkKeys`). */
    private readonly keys: LinkKeys,
    readonly support: E2eeSupport,
    private readonly local: { microphone: MediaStreamTrack | null; camera: MediaStreamTrack | null },
    name: string,
    joinMuted: { mic: boolean; camera: boolean },
    private readonly passthroughReceive: boolean,
  ) {
    this.state = {
      phase: 'connecting',
      message: 'Connecting…',
      ownId: null,
      ownName: name,
      role: null,
      participants: new Map(),
      lobby: [],
      meetingState: null,
      securityCode: '',
      securityEmoji: '',
      epoch: 0,
      encrypted: false,
      chat: [],
      notices: [],
      micOn: !!local.microphone && !joinMuted.mic,
      cameraOn: !!local.camera && !joinMuted.camera,
      sharingScreen: false,
      activeSpeaker: null,
      mediaPath: null,
      alarms: [],
      verifiedHosts: new Set(),
    };
    if (local.microphone) local.microphone.enabled = this.state.micOn;
    if (local.camera) local.camera.enabled = this.state.cameraOn;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** Whether the server lets this participant act as a host (lobby, mute, lock...). */
  get isHost(): boolean {
    return this.state.role === 'host' || this.state.role === 'co_host';
  }

  /** Whether this page holds the host link: only then can it promote co-hosts and invite. */
  get holdsHostLink(): boolean {
    return !!this.link.hostSeed;
  }

  /** Whether the group verified this participant (or `id`) as a host. */
  isVerifiedHost(id: number | null = this.state.ownId): boolean {
    return id !== null && this.state.verifiedHosts.has(id);
  }

  /** The link to hand to guests: with the meeting key (`#k=`), without any host secret. */
  get guestLink(): string | null {
    return this.keys.meetingKey ? shareableLink(this.link, location.origin, this.keys.meetingKey) : null;
  }

  get localCamera(): MediaStreamTrack | null {
    return this.local.camera;
  }

  get localScreen(): MediaStreamTrack | null {
    return this.screenTrack;
  }

  /**
   * For tests and diagnostics: the live peer connection, E2EE counters, the tile layout last
   * sent to the SFU and the simulcast layers it last asked of each of our m-lines.
   */
  diagnostics(): {
    pc: RTCPeerConnection | null;
    report: E2eeReport | null;
    frames: FrameCounters | null;
    videoLayout: VideoTile[];
    activeLayers: Record<string, string[]>;
  } {
    return {
      pc: this.peer?.pc ?? null,
      report: this.lastReport,
      frames: this.lastFrames,
      videoLayout: this.tileHints.lastLayout,
      activeLayers: Object.fromEntries(this.peer?.activeLayers ?? []),
    };
  }

  join(): void {
    if (this.support === 'none') {
      this.end('Your browser cannot encrypt audio and video end to end, so this meeting cannot send or receive any media with it. Use a current version of Chrome, Edge, Safari or Firefox.');
      return;
    }
    this.e2ee = new E2eeClient(
      this.support,
      {
        send: (json) => this.signaling?.sendJson(json),
        event: (json) => this.onGroupEvent(json),
        report: (report, frames) => this.onReport(report, frames),
        error: (message, fatal) => {
          console.warn('e2ee:', message);
          if (fatal) this.end(`End-to-end encryption could not start: ${message}`);
        },
      },
      this.passthroughReceive,
    );
    this.connect();
    this.speakerTimer = setInterval(() => void this.pollSpeakers(), SPEAKER_POLL_MS);
  }

  private connect(): void {
    this.welcomed = false;
    const signaling = new SignalingClient({
      open: () => signaling.send(this.hello()),
      message: (msg, json) => this.onMessage(msg, json),
      closed: (code, reason) => this.onClosed(code, reason),
    });
    this.signaling = signaling;
    signaling.connect();
  }

  private hello(): ClientMessage {
    return {
      type: 'hello',
      meeting: this.link.meetingId,
      name: this.state.ownName,
      // Derived one-way from the fragment's secrets: never the link's own values.
      ...(this.keys.hello.host_secret ? { host_secret: this.keys.hello.host_secret } : {}),
      ...(this.link.passcode ? { passcode: this.link.passcode } : {}),
      ...(this.keys.hello.invite ? { invite: this.keys.hello.invite } : {}),
      device_id: deviceId(),
      client_version: CLIENT_VERSION,
    };
  }

  send(msg: ClientMessage): void {
    this.signaling?.send(msg);
  }

  private onMessage(msg: ServerMessage, json: string): void {
    if (msg.type === 'welcome') this.onWelcome(msg, json);
    else if (this.welcomed && concernsGroup(msg)) this.e2ee?.serverMessage(json);
    switch (msg.type) {
      case 'welcome':
        break;
      case 'lobby':
        this.state.phase = 'lobby';
        this.state.ownId = msg.participant_id;
        this.state.message =
          msg.reason === 'sent_back'
            ? 'A host moved you back to the waiting room. Please wait until a host lets you in again.'
            : 'Waiting for a host to let you in. Please stay on this page.';
        this.teardownMedia();
        break;
      case 'denied':
        this.end(`A host did not let you into this meeting.${msg.reason ? ` (${msg.reason})` : ''}`);
        return;
      case 'removed':
        this.end(`A host removed you from this meeting. You cannot join it again.${msg.reason ? ` (${msg.reason})` : ''}`);
        return;
      case 'meeting_ended':
        this.end('The host ended the meeting for everyone.');
        return;
      case 'lobby_changed':
        this.state.lobby = msg.waiting;
        break;
      case 'participant_joined':
        if (msg.participant.id !== this.state.ownId) {
          const existing = this.state.participants.get(msg.participant.id);
          this.state.participants.set(msg.participant.id, { ...existing, info: msg.participant });
          this.state.lobby = this.state.lobby.filter((l) => l.id !== msg.participant.id);
        }
        break;
      case 'participant_left': {
        const gone = this.state.participants.get(msg.participant_id);
        this.state.participants.delete(msg.participant_id);
        this.promoted.delete(msg.participant_id);
        if (gone && msg.reason === 'removed') this.notice(`${gone.info.name} was removed by a host.`, 'info');
        break;
      }
      case 'role_changed':
        if (msg.participant_id === this.state.ownId) this.state.role = msg.role;
        else {
          const p = this.state.participants.get(msg.participant_id);
          if (p) p.info = { ...p.info, role: msg.role };
        }
        break;
      case 'meeting_state_changed':
        this.state.meetingState = msg.meeting_state;
        break;
      case 'media_changed':
        this.onMediaChanged(msg.participant_id, msg.source, msg.muted, msg.blocked);
        break;
      case 'answer':
        this.peer?.onAnswer(msg.sdp);
        break;
      case 'offer':
        this.peer?.onOffer(msg.sdp, msg.tracks);
        break;
      case 'publish_layers':
        // Nothing on the page changes; a malformed message is ignored rather than thrown on.
        if (typeof msg.mid === 'string' && Array.isArray(msg.active)) {
          this.peer?.setActiveLayers(msg.mid, msg.active.filter((rid): rid is string => typeof rid === 'string'));
        }
        return;
      case 'error':
        this.onError(msg.code, msg.reason);
        return;
      case 'server_shutdown':
        this.notice('The server is restarting. Reconnecting…', 'warning');
        break;
      default:
        break;
    }
    this.changed();
  }

  private onWelcome(msg: Extract<ServerMessage, { type: 'welcome' }>, json: string): void {
    this.welcomed = true;
    this.attempt = 0;
    if (this.lostAt !== null) this.notice('Reconnected.', 'info');
    this.lostAt = null;
    this.state.phase = 'meeting';
    this.state.message = '';
    this.state.ownId = msg.participant_id;
    this.state.role = msg.role;
    this.state.meetingState = msg.meeting_state ?? null;
    this.state.lobby = msg.lobby ?? [];
    this.state.participants = new Map(msg.participants.map((p) => [p.id, { info: p }]));
    this.state.encrypted = false;
    this.state.verifiedHosts = new Set();
    this.e2ee?.start(json, this.state.ownName, { host: this.link.hostSeed ?? '', invite: this.link.invite ?? '', meetingKey: this.link.meetingKey ?? '' });
    // A new group session (say after a reconnection) knows nothing of the co-hosts this user made.
    for (const id of this.promoted) {
      if (this.state.participants.has(id)) this.e2ee?.setCohost(id, true);
      else this.promoted.delete(id);
    }
    this.iceServers = msg.ice_servers ?? [];
    this.startMedia();
  }

  /** The TURN relays of the last welcome (credentials expire: each welcome brings fresh ones). */
  private iceServers: RTCIceServer[] = [];

  private startMedia(): void {
    if (!this.e2ee) return;
    this.peer?.close();
    this.tileHints.reset();
    const peer = new MediaPeer(this.e2ee, {
      send: (m) => this.send(m),
      tracks: (tracks) => this.onRemoteTracks(tracks),
      connectionState: (s) => {
        if (s === 'failed' && !this.final) {
          this.notice('The media connection failed. Reconnecting…', 'warning');
          this.signaling?.close();
          this.onClosed(4000, 'media failed');
        }
      },
    }, this.iceServers);
    this.peer = peer;
    void peer.publish(this.local.microphone, this.local.camera).then(async () => {
      if (this.screenTrack) await peer.replaceTrack('screen', this.screenTrack);
      // Nothing on the screen-share m-line until a share starts: say so, so no tile shows.
      else this.send({ type: 'set_muted', source: 'screen', muted: true });
      if (!this.state.micOn && this.local.microphone) this.send({ type: 'set_muted', source: 'microphone', muted: true });
      if (!this.state.cameraOn && this.local.camera) this.send({ type: 'set_muted', source: 'camera', muted: true });
    });
  }

  private onRemoteTracks(tracks: RemoteTrack[]): void {
    for (const p of this.state.participants.values()) {
      delete p.audio;
      delete p.camera;
      delete p.screen;
    }
    for (const { info, track } of tracks) {
      // A remote track starts or stops flowing: tiles follow (a screen share shows only then).
      track.onmute = () => this.changed();
      track.onunmute = () => this.changed();
      const p = this.state.participants.get(info.participant_id);
      if (!p) continue;
      if (info.kind === 'audio') p.audio = track;
      else if (info.source === 'screen') p.screen = track;
      else p.camera = track;
    }
    this.changed();
    this.tileHints.setReceived(tracks.filter((t) => t.info.kind === 'video').map((t) => ({ mid: t.info.mid, track: t.track })));
  }

  private onMediaChanged(id: number, source: TrackSource, muted: boolean, blocked: boolean): void {
    if (id === this.state.ownId) {
      if (blocked && source === 'microphone' && this.state.micOn) {
        this.setMic(false, false);
        this.notice('A host muted your microphone.', 'warning');
      } else if (blocked && source === 'camera' && this.state.cameraOn) {
        this.setCamera(false, false);
        this.notice('A host turned off your camera.', 'warning');
      } else if (blocked && source === 'screen' && this.state.sharingScreen) {
        void this.stopScreenShare(false);
        this.notice('A host stopped your screen share.', 'warning');
      }
      return;
    }
    const p = this.state.participants.get(id);
    if (!p) return;
    const set = (list: TrackSource[] | undefined, on: boolean) => {
      const without = (list ?? []).filter((s) => s !== source);
      return on ? [...without, source] : without;
    };
    p.info = { ...p.info, muted: set(p.info.muted, muted), blocked: set(p.info.blocked, blocked) };
  }

  private onError(code: string, reason: string): void {
    if (!this.welcomed && this.state.phase !== 'lobby') {
      this.end(REFUSALS[code] ?? `The server refused to let you in: ${reason}`);
      return;
    }
    if (code === 'stale_epoch') return;
    // A server older than this page refusing a newer message (say `video_layout`): nothing the
    // person can act on, and the meeting goes on without it.
    if (code === 'unknown_type') {
      console.info('server does not know:', reason);
      return;
    }
    if (code === 'not_permitted') this.notice(`Not permitted: ${reason}`, 'warning');
    else this.notice(reason || code, 'warning');
    this.changed();
  }

  private onClosed(code: number, reason: string): void {
    this.teardownMedia();
    if (this.final) return;
    if (code === 1008 && !this.welcomed && this.state.phase !== 'lobby') {
      this.end(`The server refused to let you in${reason ? `: ${reason}` : '.'}`);
      return;
    }
    const now = Date.now();
    this.lostAt ??= now;
    if (now - this.lostAt > GIVE_UP_AFTER_MS) {
      this.end('The connection to the meeting was lost and could not be restored. Check your network, then reload this page.');
      return;
    }
    this.state.phase = 'reconnecting';
    this.state.message = 'Connection lost — reconnecting…';
    this.changed();
    const delay = RECONNECT_DELAYS_MS[Math.min(this.attempt, RECONNECT_DELAYS_MS.length - 1)] ?? 5000;
    this.attempt += 1;
    setTimeout(() => {
      if (!this.final) this.connect();
    }, delay);
  }

  private teardownMedia(): void {
    this.peer?.close();
    this.peer = null;
    this.tileHints.reset();
    this.e2ee?.stopSession();
    this.state.encrypted = false;
    for (const p of this.state.participants.values()) {
      delete p.audio;
      delete p.camera;
      delete p.screen;
    }
  }

  private end(message: string): void {
    this.final = true;
    this.state.phase = 'ended';
    this.state.message = message;
    this.signaling?.close();
    this.teardownMedia();
    this.e2ee?.terminate();
    this.e2ee = null;
    this.tileHints.close();
    if (this.speakerTimer !== null) clearInterval(this.speakerTimer);
    this.changed();
  }

  leave(): void {
    this.send({ type: 'leave' });
    this.end('You left the meeting.');
  }

  private onGroupEvent(json: string): void {
    const event = JSON.parse(json) as { type: string } & Record<string, unknown>;
    const text = (key: string) => (typeof event[key] === 'string' ? (event[key] as string) : '');
    switch (event.type) {
      case 'keys_changed': {
        const changedCode = this.state.securityCode !== '' && this.state.securityCode !== text('security_code');
        this.state.securityCode = text('security_code');
        const emoji = text('security_emoji');
        if (emoji) this.state.securityEmoji = emoji;
        this.state.epoch = Number(event['epoch'] ?? 0);
        this.state.encrypted = true;
        if (Array.isArray(event['hosts'])) {
          this.state.verifiedHosts = new Set((event['hosts'] as unknown[]).map(Number).filter((id) => Number.isSafeInteger(id)));
        }
        if (changedCode) this.notice('The security code changed because someone joined or left.', 'info');
        break;
      }
      case 'chat':
        this.state.chat.push({
          from: text('sender_name') || text('from') || 'someone',
          participantId: String(event['participant_id'] ?? event['sender_participant_id'] ?? ''),
          text: text('text'),
          at: new Date(),
          own: false,
        });
        break;
      case 'alarm':
        this.state.alarms.push(text('message') || text('reason') || 'A security alarm was raised.');
        break;
      case 'removed':
        // Out of the MLS group: the server's `removed` message says why.
        this.state.encrypted = false;
        break;
      default:
        break;
    }
    this.changed();
  }

  private onReport(report: E2eeReport, frames: FrameCounters): void {
    this.lastReport = report;
    this.lastFrames = frames;
    if (report.member && report.security_code && report.security_code !== this.state.securityCode) {
      this.onGroupEvent(JSON.stringify({ type: 'keys_changed', epoch: report.epoch, security_code: report.security_code, security_emoji: report.security_emoji }));
    }
    if (report.alarms.length > this.state.alarms.length) {
      this.state.alarms = [...report.alarms];
      this.changed();
    }
  }

  /** Removes a participant for good: this client bars its device in the group, then asks the server. */
  remove(id: number): void {
    this.e2ee?.removing(id);
    this.send({ type: 'remove', participant_id: id });
  }

  /** Lets a waiting participant in: this client vouches for it in the group, then asks the server. */
  admit(id: number): void {
    this.e2ee?.admitting(id);
    this.send({ type: 'admit', participant_id: id });
  }

  /**
   * Makes a participant co-host or takes it back. The server's role gives powers at the server
   * (lobby, mute); the group's host set, which only a host-link holder's client changes with a
   * promotion signed by the meeting key, is what members check for admissions.
   */
  setCohost(id: number, cohost: boolean): void {
    if (!this.holdsHostLink) {
      this.notice('Only a host holding the host link can make co-hosts.', 'warning');
      return;
    }
    this.send({ type: 'set_role', participant_id: id, role: cohost ? 'co_host' : 'guest' });
    if (cohost) this.promoted.add(id);
    else this.promoted.delete(id);
    this.e2ee?.setCohost(id, cohost);
  }

  /**
   * Issues an invitation: its secret is made here, the server registers only its token's
   * digest, and the link is signed with the host link's meeting key. Needs the host link.
   */
  async createInvitation(options: { label: string; expiresInSecs: number; singleUse: boolean; skipLobby: boolean }): Promise<IssuedInvitation> {
    const seed = this.link.hostSeed;
    const bearer = this.keys.hello.host_secret;
    const meetingKey = this.keys.meetingKey;
    if (!seed || !bearer || !meetingKey) throw new Error('only a host holding the host link can invite');
    const secret = await makeInvitationSecret();
    const response = await fetch(`/api/meetings/${this.link.meetingId}/invitations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
      body: JSON.stringify({
        label: options.label,
        expires_in_secs: options.expiresInSecs,
        single_use: options.singleUse,
        skip_lobby: options.skipLobby,
        token_sha256: secret.token_sha256,
      }),
    });
    const answer = (await response.json().catch(() => ({}))) as { id?: unknown; expires_at?: unknown; reason?: unknown; error?: unknown };
    if (!response.ok) {
      const why = typeof answer.reason === 'string' ? answer.reason : typeof answer.error === 'string' ? answer.error : `the server answered ${response.status}`;
      throw new Error(why);
    }
    if (typeof answer.id !== 'string' || typeof answer.expires_at !== 'number') throw new Error('the server answered without an invitation id');
    const invite = await signInvitation(seed, secret.secret, answer.id, answer.expires_at, options.skipLobby);
    return {
      id: answer.id,
      label: options.label,
      url: `${location.origin}/m/${this.link.meetingId}#invite=${fragmentValue(invite)}&k=${fragmentValue(meetingKey)}`,
      expiresAt: new Date(answer.expires_at * 1000),
      singleUse: options.singleUse,
      skipLobby: options.skipLobby,
    };
  }

  sendChat(text: string): void {
    const trimmed = text.trim();
    if (!trimmed || !this.e2ee) return;
    this.e2ee.sendChat(trimmed);
    this.state.chat.push({ from: this.state.ownName, participantId: String(this.state.ownId ?? ''), text: trimmed, at: new Date(), own: true });
    this.changed();
  }

  setMic(on: boolean, tell = true): void {
    if (!this.local.microphone) return;
    this.local.microphone.enabled = on;
    this.state.micOn = on;
    if (tell) this.send({ type: 'set_muted', source: 'microphone', muted: !on });
    this.changed();
  }

  setCamera(on: boolean, tell = true): void {
    if (!this.local.camera) return;
    this.local.camera.enabled = on;
    this.state.cameraOn = on;
    if (tell) this.send({ type: 'set_muted', source: 'camera', muted: !on });
    this.changed();
  }

  async startScreenShare(): Promise<void> {
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = stream.getVideoTracks()[0];
      if (!track) return;
      track.onended = () => void this.stopScreenShare();
      this.screenTrack = track;
      await this.peer?.replaceTrack('screen', track);
      this.state.sharingScreen = true;
      this.send({ type: 'set_muted', source: 'screen', muted: false });
    } catch (e) {
      this.notice(explainMediaError(e, 'screen'), 'warning');
    }
    this.changed();
  }

  async stopScreenShare(tell = true): Promise<void> {
    this.screenTrack?.stop();
    this.screenTrack = null;
    await this.peer?.replaceTrack('screen', null);
    this.state.sharingScreen = false;
    if (tell) this.send({ type: 'set_muted', source: 'screen', muted: true });
    this.changed();
  }

  async switchDevice(kind: 'audio' | 'video', track: MediaStreamTrack): Promise<void> {
    if (kind === 'audio') {
      this.local.microphone?.stop();
      this.local.microphone = track;
      track.enabled = this.state.micOn;
      await this.peer?.replaceTrack('microphone', track);
    } else {
      this.local.camera?.stop();
      this.local.camera = track;
      track.enabled = this.state.cameraOn;
      await this.peer?.replaceTrack('camera', track);
    }
    this.changed();
  }

  notice(text: string, tone: Notice['tone']): void {
    const notice = { id: ++this.noticeId, text, tone };
    this.state.notices = [...this.state.notices.filter((n) => n.text !== text).slice(-3), notice];
    setTimeout(() => {
      this.state.notices = this.state.notices.filter((n) => n.id !== notice.id);
      this.changed();
    }, 8000);
  }

  /** The loudest participant (decoded audio levels, so after decryption) is the active speaker. */
  private async pollSpeakers(): Promise<void> {
    const pc = this.peer?.pc;
    if (!pc || this.state.phase !== 'meeting') return;
    const mids = new Map<string, number>();
    for (const t of pc.getTransceivers()) {
      const track = t.receiver.track;
      for (const [id, p] of this.state.participants) if (p.audio === track && t.mid) mids.set(t.mid, id);
    }
    let best: number | null = null;
    let level = 0.02;
    const stats = await pc.getStats();
    stats.forEach((s: { type: string; kind?: string; mid?: string; audioLevel?: number }) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio' && s.mid && (s.audioLevel ?? 0) > level) {
        const id = mids.get(s.mid);
        if (id !== undefined) {
          best = id;
          level = s.audioLevel ?? 0;
        }
      }
      if (s.type === 'media-source' && s.kind === 'audio' && this.state.micOn && (s.audioLevel ?? 0) > level) {
        best = this.state.ownId;
        level = s.audioLevel ?? 0;
      }
    });
    const path = selectedPath(stats);
    if (best !== this.state.activeSpeaker || path !== this.state.mediaPath) {
      this.state.activeSpeaker = best;
      this.state.mediaPath = path;
      this.changed();
    }
  }
}

/** The path of the selected ICE candidate pair, named as the connection details show it. */
function selectedPath(stats: RTCStatsReport): string | null {
  let pairId: string | undefined;
  stats.forEach((s: { type: string; selectedCandidatePairId?: string }) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  // Firefox has no transport stats: its selected pair says so itself.
  stats.forEach((s: { type: string; id: string; selected?: boolean; nominated?: boolean; state?: string }) => {
    if (!pairId && s.type === 'candidate-pair' && s.selected) pairId = s.id;
  });
  const pair = pairId ? (stats.get(pairId) as { localCandidateId?: string } | undefined) : undefined;
  const local = pair?.localCandidateId
    ? (stats.get(pair.localCandidateId) as { candidateType?: string; protocol?: string; relayProtocol?: string } | undefined)
    : undefined;
  if (!local) return null;
  if (local.candidateType === 'relay') return `TURN/${(local.relayProtocol ?? 'udp').toUpperCase()}`;
  return (local.protocol ?? 'udp').toUpperCase();
}
