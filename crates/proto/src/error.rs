use serde::{Deserialize, Serialize};

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("message of {0} bytes is over the limit ({max} bytes, {sdp} for offer and answer)", max = crate::MAX_MESSAGE_BYTES, sdp = crate::MAX_SDP_MESSAGE_BYTES)]
    TooLarge(usize),
    #[error("not valid JSON: {0}")]
    MalformedJson(String),
    #[error("a message must be a JSON object")]
    NotAnObject,
    #[error("the message has no \"type\" string")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("the message has no protocol version \"v\"")]
    MissingVersion,
    #[error("protocol version {0} is not supported (this server speaks {v})", v = crate::PROTOCOL_VERSION)]
    UnsupportedVersion(u64),
    #[error("invalid {kind:?} message: {reason}")]
    InvalidMessage { kind: String, reason: String },
}

impl ProtoError {
    /// The code sent back to the peer and used as the metrics label.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::TooLarge(_) => ErrorCode::TooLarge,
            ProtoError::MalformedJson(_) | ProtoError::NotAnObject => ErrorCode::MalformedJson,
            ProtoError::MissingType | ProtoError::UnknownType(_) => ErrorCode::UnknownType,
            ProtoError::MissingVersion | ProtoError::UnsupportedVersion(_) => {
                ErrorCode::UnsupportedVersion
            }
            ProtoError::InvalidMessage { .. } => ErrorCode::InvalidMessage,
        }
    }
}

/// Machine-readable reason in an `error` message. Stable: clients switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    TooLarge,
    MalformedJson,
    UnknownType,
    UnsupportedVersion,
    InvalidMessage,
    /// A message other than `hello` arrived before `hello`.
    HelloRequired,
    /// A second `hello` on the same session.
    AlreadyJoined,
    /// No such meeting, or its passcode was missing or wrong: the two look alike on purpose,
    /// so that guessing ids and guessing passcodes learn nothing from each other.
    UnknownMeeting,
    /// The meeting has ended.
    MeetingEnded,
    /// The host secret did not match, or the sender's role may not do this.
    Forbidden,
    InvalidSdp,
    /// An answer arrived when no offer was pending.
    NoPendingOffer,
    /// The binary WebSocket frame type is not used by this protocol.
    BinaryNotSupported,
    /// The meeting is full.
    MeetingFull,
    /// Not decodable as the MLS message its type says (or not base64).
    MalformedMls,
    /// A Commit for an epoch the group has left: another Commit was first. Re-base and retry.
    StaleEpoch,
    /// Only members of the meeting's MLS group may send this.
    NotInGroup,
    /// Too many attempts from this address (or at this meeting): wait and retry.
    RateLimited,
    /// The meeting is locked: no one new gets in until a host unlocks it.
    Locked,
    /// This identity, device or invitation was removed from the meeting and may not return.
    Banned,
    /// The meeting admits only per-invitee links, or the invitation is expired, revoked or used.
    InvitationRequired,
    /// A host turned this off for the sender's role (screen share, chat, unmute), or the
    /// meeting is suspended.
    NotPermitted,
    /// The participant named in a host action is not in the meeting (or not in its lobby).
    UnknownParticipant,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::UnknownMeeting => "unknown_meeting",
            ErrorCode::MeetingEnded => "meeting_ended",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoPendingOffer => "no_pending_offer",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::MeetingFull => "meeting_full",
            ErrorCode::MalformedMls => "malformed_mls",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NotInGroup => "not_in_group",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Locked => "locked",
            ErrorCode::Banned => "banned",
            ErrorCode::InvitationRequired => "invitation_required",
            ErrorCode::NotPermitted => "not_permitted",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for metrics that list zero counts too.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::TooLarge,
        ErrorCode::MalformedJson,
        ErrorCode::UnknownType,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidMessage,
        ErrorCode::HelloRequired,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownMeeting,
        ErrorCode::MeetingEnded,
        ErrorCode::Forbidden,
        ErrorCode::InvalidSdp,
        ErrorCode::NoPendingOffer,
        ErrorCode::BinaryNotSupported,
        ErrorCode::MeetingFull,
        ErrorCode::MalformedMls,
        ErrorCode::StaleEpoch,
        ErrorCode::NotInGroup,
        ErrorCode::RateLimited,
        ErrorCode::Locked,
        ErrorCode::Banned,
        ErrorCode::InvitationRequired,
        ErrorCode::NotPermitted,
        ErrorCode::UnknownParticipant,
        ErrorCode::Internal,
    ];
}
