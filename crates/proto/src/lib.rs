//! Conclave's signaling protocol: every message that crosses the `/ws` WebSocket, as serde
//! types shared by the server, the native client and (through JSON) the browser.
//!
//! Every message is a JSON object with a protocol version `v` and a `type` tag. Parsing is
//! split into steps so that the server can tell a sender *why* its message was refused:
//! not JSON, not an object with a known `type`, a version it does not speak, or fields that
//! do not fit the type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod error;
mod ids;

pub use error::{ErrorCode, ProtoError};
pub use ids::{MeetingId, ParticipantId, MEETING_ID_LEN};

/// The protocol version this build speaks. A peer sending another version is refused with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest signaling message the server reads, except for SDP: anything larger is refused
/// with [`ErrorCode::TooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest `offer` or `answer` message. SDP grows by about 1.7 KB per remote track (one
/// m-line each), so a 100-person meeting needs about 350 KB; nothing else may exceed
/// [`MAX_MESSAGE_BYTES`].
pub const MAX_SDP_MESSAGE_BYTES: usize = 1024 * 1024;

/// Message types that carry SDP and may use [`MAX_SDP_MESSAGE_BYTES`].
const SDP_TYPES: &[&str] = &["offer", "answer"];

/// RTP header extension id both the SFU and every participant map abs-capture-time to: it
/// carries the sender's capture clock end to end, so receivers can measure latency.
pub const ABS_CAPTURE_TIME_EXT_ID: u8 = 5;

/// WebSocket close code sent with a message over [`MAX_MESSAGE_BYTES`] (RFC 6455 "message too big").
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// WebSocket close code for a protocol violation that ends the session (RFC 6455 "policy violation").
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code when the server shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Messages a participant sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message of every session: which meeting, as whom.
    Hello {
        meeting: MeetingId,
        name: String,
        /// The secret from the host link; makes this participant a host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_secret: Option<String>,
        /// The meeting's passcode, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passcode: Option<String>,
        /// A per-invitee invitation token (from an invitation link).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
        /// A random id the client keeps across visits (browser storage), so that a ban also
        /// holds for the device and not only for the name it used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
        client_version: String,
    },
    /// SDP offer from the participant (its first offer publishes its tracks). `sources` says
    /// what each sending m-line carries (by `mid`); a video m-line not listed is a camera. A
    /// participant publishes at most one microphone, one camera and one screen.
    Offer {
        sdp: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sources: BTreeMap<String, TrackSource>,
    },
    /// SDP answer to an [`ServerMessage::Offer`] from the server.
    Answer { sdp: String },
    /// The participant's MLS KeyPackage (base64): hosts admit it, a member commits its Add.
    MlsKeyPackage { key_package: String },
    /// An MLS Commit (base64) for the group's current epoch, with the Welcome for anyone it adds.
    /// The server accepts the first Commit of each epoch and refuses later ones (`stale_epoch`).
    MlsCommit {
        commit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<String>,
    },
    /// An MLS application message (base64): admissions, chat, reactions. Relayed to the group.
    /// `purpose` lets the server apply the chat permission without reading the message;
    /// receivers check the decrypted content against it and drop a mislabelled chat.
    MlsMessage {
        data: String,
        #[serde(default)]
        purpose: AppMessagePurpose,
    },
    /// Host or co-host: let a participant in from the lobby.
    Admit { participant_id: ParticipantId },
    /// Host or co-host: refuse a participant waiting in the lobby.
    Deny { participant_id: ParticipantId },
    /// Host or co-host: remove a participant; it is banned from the meeting (identity, device
    /// and invitation). A co-host cannot remove a host.
    Remove { participant_id: ParticipantId },
    /// Host or co-host: send a participant back to the lobby.
    SendToLobby { participant_id: ParticipantId },
    /// Host only: change someone's role.
    SetRole {
        participant_id: ParticipantId,
        role: Role,
    },
    /// Host or co-host: lock (no one new gets in, even with a valid link) or unlock.
    SetLocked { locked: bool },
    /// Host or co-host: stop forwarding a participant's microphone, camera or screen.
    Mute {
        participant_id: ParticipantId,
        source: TrackSource,
    },
    /// The participant's own mute state for a source. Unmuting is refused (`not_permitted`)
    /// after a host muted it while the meeting disallows unmuting, or while it is suspended.
    SetMuted { source: TrackSource, muted: bool },
    /// Host or co-host: what non-hosts may do.
    SetPermissions { permissions: Permissions },
    /// Host or co-host, the panic button: mute everyone, stop every screen share, lock the
    /// meeting and pause chat, in one action. Undone piece by piece (unlock, permissions).
    SuspendAll,
    /// Host or co-host: lift a suspension (chat and unmuting allowed again; the lock and the
    /// mutes stay until undone one by one).
    ResumeAll,
    /// Host only: end the meeting for everyone.
    EndMeeting,
    /// The participant leaves the meeting for good.
    Leave,
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping,
    /// How the participant shows the video it receives, so that the SFU sends each track at
    /// the layer it needs: one entry per remote video m-line (by this participant's `mid`)
    /// with the tile's rendered size in CSS pixels and whether it is on screen. A hidden tile
    /// gets nothing, a small one a small layer. Tracks not listed get the layer the server
    /// picks. `max_kbps` caps what the participant wants to receive in total.
    VideoLayout {
        tiles: Vec<VideoTile>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_kbps: Option<u32>,
    },
}

/// One remote video as a participant renders it (see [`ClientMessage::VideoLayout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoTile {
    pub mid: String,
    pub width: u32,
    pub height: u32,
    pub visible: bool,
}

/// Most tiles one [`ClientMessage::VideoLayout`] may describe.
pub const MAX_VIDEO_TILES: usize = 512;

impl ClientMessage {
    /// The `type` tag, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "hello",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::MlsKeyPackage { .. } => "mls_key_package",
            ClientMessage::MlsCommit { .. } => "mls_commit",
            ClientMessage::MlsMessage { .. } => "mls_message",
            ClientMessage::Admit { .. } => "admit",
            ClientMessage::Deny { .. } => "deny",
            ClientMessage::Remove { .. } => "remove",
            ClientMessage::SendToLobby { .. } => "send_to_lobby",
            ClientMessage::SetRole { .. } => "set_role",
            ClientMessage::SetLocked { .. } => "set_locked",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::SetMuted { .. } => "set_muted",
            ClientMessage::SetPermissions { .. } => "set_permissions",
            ClientMessage::SuspendAll => "suspend_all",
            ClientMessage::ResumeAll => "resume_all",
            ClientMessage::EndMeeting => "end_meeting",
            ClientMessage::Leave => "leave",
            ClientMessage::Ping => "ping",
            ClientMessage::VideoLayout { .. } => "video_layout",
        }
    }
}

/// The type tags [`ClientMessage`] knows, so an unknown one is told apart from a bad field.
const CLIENT_TYPES: &[&str] = &[
    "hello",
    "offer",
    "answer",
    "mls_key_package",
    "mls_commit",
    "mls_message",
    "admit",
    "deny",
    "remove",
    "send_to_lobby",
    "set_role",
    "set_locked",
    "mute",
    "set_muted",
    "set_permissions",
    "suspend_all",
    "resume_all",
    "end_meeting",
    "leave",
    "ping",
    "video_layout",
];

/// What an MLS application message is for, as its sender declares it to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppMessagePurpose {
    /// Admissions, lock state, reactions: not subject to the chat permission.
    #[default]
    Control,
    Chat,
}

/// What a published track carries. Host powers and permissions act per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

/// Who may do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Everyone in the meeting, guests included.
    Everyone,
    /// Hosts, co-hosts and invited participants: not guests.
    Participants,
    /// Hosts and co-hosts only.
    Hosts,
}

/// What non-hosts may do in a meeting; hosts and co-hosts may always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub screen_share: Audience,
    pub chat: Audience,
    /// May participants unmute themselves after a host muted them?
    pub allow_unmute: bool,
    /// Most people in the meeting at once (lobby not counted).
    pub max_participants: u32,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            screen_share: Audience::Participants,
            chat: Audience::Everyone,
            allow_unmute: true,
            max_participants: 200,
        }
    }
}

/// The meeting-wide state every participant is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingState {
    pub locked: bool,
    /// The panic button was pressed: chat paused, unmuting refused for non-hosts.
    pub suspended: bool,
    pub permissions: Permissions,
}

/// How a participant got past the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A host or co-host admitted it from the lobby (`admitted_by`).
    Lobby,
    /// It holds the host link, or an account that owns the meeting.
    HostLink,
    /// Its invitation lets it skip the lobby.
    Invitation,
}

/// Someone waiting in the lobby, as hosts see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyEntry {
    pub id: ParticipantId,
    pub name: String,
    /// The label of the invitation it came with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
}

/// Why the lobby holds someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LobbyReason {
    /// Everyone not pre-admitted waits for a host, even before any host arrived.
    WaitingForHost,
    /// A host sent this participant back to the lobby.
    SentBack,
}

/// Media kind of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// A remote track as a subscriber sees it: which m-line (`mid`) of its own PeerConnection
/// carries which participant's media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub mid: String,
    pub participant_id: ParticipantId,
    pub kind: TrackKind,
    /// What the publisher said the track carries (camera when it did not say).
    #[serde(default = "TrackInfo::default_source")]
    pub source: TrackSource,
}

impl TrackInfo {
    fn default_source() -> TrackSource {
        TrackSource::Camera
    }
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub role: Role,
    /// Sources it muted itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted: Vec<TrackSource>,
    /// Sources a host stopped: the server forwards nothing from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<TrackSource>,
}

/// What a participant may do in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every power, and the only one who grants roles and ends the meeting.
    Host,
    /// A host's powers over the lobby and participants, except over hosts and roles.
    CoHost,
    /// Came with an invitation (or was promoted by a host).
    Participant,
    /// Came with the meeting's plain link.
    Guest,
}

impl Role {
    /// Hosts and co-hosts moderate.
    pub fn moderates(self) -> bool {
        matches!(self, Role::Host | Role::CoHost)
    }

    pub fn may(self, audience: Audience) -> bool {
        match audience {
            Audience::Everyone => true,
            Audience::Participants => self != Role::Guest,
            Audience::Hosts => self.moderates(),
        }
    }
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// Its connection vanished (WebSocket gone past the reconnect window, or ICE timed out).
    Disconnected,
    /// The server is shutting down.
    ServerShutdown,
    /// A host removed it (it is banned from the meeting).
    Removed,
    /// A host sent it back to the lobby.
    SentToLobby,
    /// A host ended the meeting.
    MeetingEnded,
}

/// A WebRTC `RTCIceServer`: TURN URLs (`turns:host:443?transport=tcp`) and their credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    /// SHA-256 of the certificate the built-in relay presents (`ab:cd:…`): bots pin it, so a
    /// self-signed relay works for them; browsers ignore it and need a certificate they trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

/// Messages the server sends to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `hello`: the participant is in.
    Welcome {
        participant_id: ParticipantId,
        meeting: MeetingId,
        role: Role,
        /// Everyone else already in the meeting.
        participants: Vec<ParticipantInfo>,
        /// Set for the first host in a meeting without an MLS group: create it with this id
        /// (base64). Everyone else publishes a KeyPackage and waits for a Welcome.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_group: Option<String>,
        #[serde(default)]
        meeting_state: MeetingState,
        /// Who waits in the lobby (for hosts and co-hosts; empty for others).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lobby: Vec<LobbyEntry>,
        /// TURN relays for networks that pass neither UDP nor ICE-TCP, with credentials made
        /// for this participant that expire (handed only to admitted participants).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Answer to `hello` for someone not pre-admitted (and sent to a participant a host moved
    /// back): wait here until a host admits (then `welcome`) or denies (then `denied`).
    Lobby {
        participant_id: ParticipantId,
        meeting: MeetingId,
        reason: LobbyReason,
    },
    /// A host refused this participant in the lobby; the connection closes.
    Denied {
        reason: String,
    },
    /// A host removed this participant; it may not come back. The connection closes.
    Removed {
        reason: String,
    },
    /// A host ended the meeting; the connection closes.
    MeetingEnded,
    /// To hosts and co-hosts: everyone now waiting in the lobby.
    LobbyChanged {
        waiting: Vec<LobbyEntry>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
        /// How it got in; hosts' clients sign its MLS admission only for entries they can
        /// vouch for (see the `session` crate).
        entry: Entry,
        /// The host or co-host who admitted it from the lobby.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        admitted_by: Option<ParticipantId>,
    },
    /// Someone's role changed (this participant's own included).
    RoleChanged {
        participant_id: ParticipantId,
        role: Role,
    },
    /// Lock, suspension or permissions changed.
    MeetingStateChanged {
        meeting_state: MeetingState,
    },
    /// Who speaks now, most recent first (from the audio levels in the clear RTP header
    /// extension, never from the media). Sent when it changes, at most every 300 ms.
    ActiveSpeakers {
        speakers: Vec<ParticipantId>,
    },
    /// Someone's mute state for a source changed. `blocked` is set when a host stopped it;
    /// the server then forwards nothing from that source.
    MediaChanged {
        participant_id: ParticipantId,
        source: TrackSource,
        muted: bool,
        blocked: bool,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    /// Answer to the participant's offer.
    Answer {
        sdp: String,
    },
    /// The server renegotiates (remote tracks came or went). `tracks` lists every remote track
    /// this participant receives once the offer is applied.
    Offer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// This participant is the first host in a meeting with no MLS group: it creates the group
    /// with this id (base64) and then admits and adds the others.
    MlsCreateGroup {
        group_id: String,
    },
    /// A participant waiting to enter the group published its KeyPackage (sent to members).
    MlsKeyPackage {
        participant_id: ParticipantId,
        key_package: String,
    },
    /// A Commit the server accepted, from another member: process it.
    MlsCommit {
        from: ParticipantId,
        commit: String,
    },
    /// The participant's own Commit was accepted: merge it. The group is now at `epoch`.
    MlsCommitAccepted {
        epoch: u64,
    },
    /// The Welcome that adds this participant to the group.
    MlsWelcome {
        welcome: String,
    },
    /// An MLS application message from another member.
    MlsMessage {
        from: ParticipantId,
        data: String,
        #[serde(default)]
        purpose: AppMessagePurpose,
    },
    /// Something the participant sent was refused. The session goes on unless a close follows.
    Error {
        code: ErrorCode,
        reason: String,
    },
    Pong,
    /// The server is going away; reconnect later.
    ServerShutdown,
    /// Which simulcast layers (by RID) of the participant's video m-line `mid` someone
    /// receives: encode those and pause the others until they are named again.
    PublishLayers {
        mid: String,
        active: Vec<String>,
    },
}

/// A message with the protocol version in front, as it goes on the wire.
#[derive(Debug, Serialize)]
struct Envelope<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Serializes a message for the wire, adding the protocol version.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Our own types always serialize: they hold only strings, numbers and enums.
    serde_json::to_string(&Envelope {
        v: PROTOCOL_VERSION,
        body: msg,
    })
    .unwrap_or_else(|e| format!("{{\"v\":{PROTOCOL_VERSION},\"type\":\"error\",\"code\":\"internal\",\"reason\":\"{e}\"}}"))
}

/// Parses a message from a participant, telling apart every way it can be wrong.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtoError> {
    let msg: ClientMessage = parse(text, CLIENT_TYPES)?;
    if let ClientMessage::VideoLayout { tiles, .. } = &msg {
        let invalid = |reason: String| ProtoError::InvalidMessage {
            kind: "video_layout".into(),
            reason,
        };
        if tiles.len() > MAX_VIDEO_TILES {
            return Err(invalid(format!(
                "{} tiles; at most {MAX_VIDEO_TILES}",
                tiles.len()
            )));
        }
        if let Some(tile) = tiles
            .iter()
            .find(|t| t.mid.is_empty() || t.mid.len() > 16 || t.width > 32_768 || t.height > 32_768)
        {
            return Err(invalid(format!(
                "tile {:?} has an empty or overlong mid or a size over 32768 px",
                truncate(&tile.mid, 20)
            )));
        }
    }
    Ok(msg)
}

/// Parses a message from the server (used by native clients).
pub fn parse_server_message(text: &str) -> Result<ServerMessage, ProtoError> {
    const SERVER_TYPES: &[&str] = &[
        "welcome",
        "lobby",
        "denied",
        "removed",
        "meeting_ended",
        "lobby_changed",
        "role_changed",
        "meeting_state_changed",
        "media_changed",
        "active_speakers",
        "participant_joined",
        "participant_left",
        "answer",
        "offer",
        "mls_create_group",
        "mls_key_package",
        "mls_commit",
        "mls_commit_accepted",
        "mls_welcome",
        "mls_message",
        "error",
        "pong",
        "server_shutdown",
        "publish_layers",
    ];
    parse(text, SERVER_TYPES)
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, known: &[&str]) -> Result<T, ProtoError> {
    if text.len() > MAX_SDP_MESSAGE_BYTES {
        return Err(ProtoError::TooLarge(text.len()));
    }
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtoError::MalformedJson(e.to_string()))?;
    let object = value.as_object_mut().ok_or(ProtoError::NotAnObject)?;
    let kind = match object.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ => return Err(ProtoError::MissingType),
    };
    if !known.contains(&kind.as_str()) {
        return Err(ProtoError::UnknownType(truncate(&kind, 64)));
    }
    if text.len() > MAX_MESSAGE_BYTES && !SDP_TYPES.contains(&kind.as_str()) {
        return Err(ProtoError::TooLarge(text.len()));
    }
    match object.remove("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(ProtoError::UnsupportedVersion(v)),
        None => return Err(ProtoError::MissingVersion),
    }
    serde_json::from_value(value).map_err(|e| ProtoError::InvalidMessage {
        kind,
        reason: e.to_string(),
    })
}

/// Base64 (standard alphabet, padded) for the binary MLS messages carried in JSON.
pub fn b64_encode(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64.decode(text.as_bytes()).ok()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests;
