// The signaling contract, as TypeScript types. The source of truth is crates/proto/src/lib.rs:
// every message is a JSON object with "v": 1 and a "type". Types only, no logic.

export const PROTOCOL_VERSION = 1;

export type Role = 'host' | 'co_host' | 'participant' | 'guest';
export type TrackSource = 'microphone' | 'camera' | 'screen';
export type TrackKind = 'audio' | 'video';
export type Audience = 'everyone' | 'participants' | 'hosts';
export type LeaveReason =
  | 'left'
  | 'disconnected'
  | 'server_shutdown'
  | 'removed'
  | 'sent_to_lobby'
  | 'meeting_ended';

export interface ParticipantInfo {
  id: number;
  name: string;
  role: Role;
  muted?: TrackSource[];
  blocked?: TrackSource[];
}

export interface TrackInfo {
  mid: string;
  participant_id: number;
  kind: TrackKind;
  source: TrackSource;
}

/** One remote video as this page renders it: CSS pixels, and whether any of it is on screen. */
export interface VideoTile {
  mid: string;
  width: number;
  height: number;
  visible: boolean;
}

export interface LobbyEntry {
  id: number;
  name: string;
  invitation?: string;
}

export interface Permissions {
  screen_share: Audience;
  chat: Audience;
  allow_unmute: boolean;
  max_participants: number;
}

export interface MeetingState {
  locked: boolean;
  suspended: boolean;
  permissions: Permissions;
}

export type ServerMessage =
  | {
      type: 'welcome';
      participant_id: number;
      meeting: string;
      role: Role;
      participants: ParticipantInfo[];
      create_group?: string;
      meeting_state?: MeetingState;
      lobby?: LobbyEntry[];
      /** TURN relays with credentials minted for this participant (RTCIceServer fields). */
      ice_servers?: { urls: string[]; username: string; credential: string }[];
    }
  | { type: 'lobby'; participant_id: number; meeting: string; reason: 'waiting_for_host' | 'sent_back' }
  | { type: 'denied'; reason: string }
  | { type: 'removed'; reason: string }
  | { type: 'meeting_ended' }
  | { type: 'lobby_changed'; waiting: LobbyEntry[] }
  | {
      type: 'participant_joined';
      participant: ParticipantInfo;
      entry: 'lobby' | 'host_link' | 'invitation';
      admitted_by?: number;
    }
  | { type: 'role_changed'; participant_id: number; role: Role }
  | { type: 'meeting_state_changed'; meeting_state: MeetingState }
  | { type: 'media_changed'; participant_id: number; source: TrackSource; muted: boolean; blocked: boolean }
  | { type: 'participant_left'; participant_id: number; reason: LeaveReason }
  | { type: 'answer'; sdp: string }
  | { type: 'offer'; sdp: string; tracks: TrackInfo[] }
  | { type: 'mls_create_group'; group_id: string }
  | { type: 'mls_key_package'; participant_id: number; key_package: string }
  | { type: 'mls_commit'; from: number; commit: string }
  | { type: 'mls_commit_accepted'; epoch: number }
  | { type: 'mls_welcome'; welcome: string }
  | { type: 'mls_message'; from: number; data: string; purpose?: 'control' | 'chat' }
  | { type: 'error'; code: string; reason: string }
  | { type: 'pong' }
  | { type: 'server_shutdown' }
  /** Which simulcast layers (RIDs) of our own sending video m-line `mid` someone receives. */
  | { type: 'publish_layers'; mid: string; active: string[] };

export type ClientMessage =
  | {
      type: 'hello';
      meeting: string;
      name: string;
      host_secret?: string;
      passcode?: string;
      invite?: string;
      device_id?: string;
      client_version: string;
    }
  | { type: 'offer'; sdp: string; sources?: Record<string, TrackSource> }
  | { type: 'answer'; sdp: string }
  | { type: 'admit'; participant_id: number }
  | { type: 'deny'; participant_id: number }
  | { type: 'remove'; participant_id: number }
  | { type: 'send_to_lobby'; participant_id: number }
  | { type: 'set_role'; participant_id: number; role: Role }
  | { type: 'set_locked'; locked: boolean }
  | { type: 'mute'; participant_id: number; source: TrackSource }
  | { type: 'set_muted'; source: TrackSource; muted: boolean }
  | { type: 'set_permissions'; permissions: Permissions }
  | { type: 'suspend_all' }
  | { type: 'end_meeting' }
  | { type: 'leave' }
  | { type: 'ping' }
  /** Every remote video m-line this page receives, with its tile's size and visibility. */
  | { type: 'video_layout'; tiles: VideoTile[]; max_kbps?: number };

/**
 * Server messages the E2EE worker's group session is fed: everything but SDP, simulcast layer
 * choices and keep-alives.
 * It reads what it needs (MLS messages, who joined or left and how, roles, lock state) and
 * ignores the rest.
 */
export function concernsGroup(msg: ServerMessage): boolean {
  return msg.type !== 'offer' && msg.type !== 'answer' && msg.type !== 'pong' && msg.type !== 'welcome' && msg.type !== 'publish_layers';
}
