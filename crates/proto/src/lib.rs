//! Conclave's signaling protocol: every message that crosses the `/ws` WebSocket, as serde
//! types shared by the server, the native client and (through JSON) the browser.
//!
//! Every message is a JSON object with a protocol version `v` and a `type` tag. Parsing is
//! split into steps so that the server can tell a sender *why* its message was refused:
//! not JSON, not an object with a known `type`, a version it does not speak, or fields that
//! do not fit the type.

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
        client_version: String,
    },
    /// SDP offer from the participant (its first offer publishes its tracks).
    Offer { sdp: String },
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
    MlsMessage { data: String },
    /// The participant leaves the meeting for good.
    Leave,
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping,
}

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
            ClientMessage::Leave => "leave",
            ClientMessage::Ping => "ping",
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
    "leave",
    "ping",
];

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
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub role: Role,
}

/// What a participant may do in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Participant,
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
    },
    ParticipantJoined {
        participant: ParticipantInfo,
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
    },
    /// Something the participant sent was refused. The session goes on unless a close follows.
    Error {
        code: ErrorCode,
        reason: String,
    },
    Pong,
    /// The server is going away; reconnect later.
    ServerShutdown,
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
    parse(text, CLIENT_TYPES)
}

/// Parses a message from the server (used by native clients).
pub fn parse_server_message(text: &str) -> Result<ServerMessage, ProtoError> {
    const SERVER_TYPES: &[&str] = &[
        "welcome",
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
