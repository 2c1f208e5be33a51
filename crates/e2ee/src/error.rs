//! One error type for the whole crate, so callers (server, native client and the wasm shell)
//! can match on *why* something was refused instead of parsing strings.

/// Everything that can go wrong in this crate. None of these is a panic: every byte string that
/// arrives from the network ends up either accepted or as one of these variants.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum E2eeError {
    /// The bytes do not decode as what they claim to be (MLS message, KeyPackage, our
    /// application payload, credential).
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// Input ended before a complete structure could be read (e.g. a media frame shorter than
    /// its clear prefix plus SFrame header and tag).
    #[error("truncated input")]
    Truncated,
    /// The media frame is shorter than the clear prefix its codec needs, so it cannot be sent
    /// with the layout a depacketizer expects.
    #[error("frame too short for its codec's clear prefix")]
    FrameTooShort,
    /// AEAD authentication failed: wrong key, bit flip, forged header or clear prefix.
    #[error("authentication failed")]
    Authentication,
    /// The SFrame KID names no (epoch, sender) this member holds keys for.
    #[error("unknown SFrame key id {0}")]
    UnknownKid(u64),
    /// The SFrame counter was already accepted for this sender key, or is older than the
    /// replay window.
    #[error("replayed or too old frame counter {0}")]
    Replay(u64),
    /// The frame or message belongs to an epoch whose keys are gone (grace period over) or
    /// that this member never had.
    #[error("wrong epoch: message epoch {got}, group epoch {current}")]
    WrongEpoch {
        /// Epoch carried by the message.
        got: u64,
        /// Epoch this member is in.
        current: u64,
    },
    /// A commit for an epoch this member already left: the delivery service ordered another
    /// commit first. Not an attack by itself.
    #[error("stale commit for epoch {got}, group is at epoch {current}")]
    StaleEpoch {
        /// Epoch carried by the commit.
        got: u64,
        /// Epoch this member is in.
        current: u64,
    },
    /// The message is for another group.
    #[error("message is for another group")]
    WrongGroup,
    /// The sender is not (or no longer) a member, or this member was removed.
    #[error("not a member of the group")]
    NotMember,
    /// A host-only action (admission, host grant) was attempted or received from a non-host.
    #[error("sender is not a host")]
    NotHost,
    /// SECURITY ALARM: a commit adds a KeyPackage no host admitted and that carries no valid
    /// proof of a host link or a skip-lobby invitation (or adds through an external commit). It
    /// was refused and not merged; the caller should warn the participants, naming `name`, the
    /// display name the refused KeyPackage claims.
    #[error("commit adds {name:?}, whom no host admitted")]
    UnadmittedAdd {
        /// The name in the refused KeyPackage's credential (a claim, not a fact).
        name: String,
    },
    /// An admission proof (host link, invitation) that does not verify: forged, copied from
    /// another key, or issued under another meeting key.
    #[error("admission proof refused: {0}")]
    ForgedProof(&'static str),
    /// A group a joiner must not enter: its record is not signed by the meeting key, or its
    /// meeting key is not the one in the joiner's link, or its host set carries a promotion no
    /// host signed. Refused before joining; an alarm.
    #[error("refused the group: {0}")]
    ForgedGroup(&'static str),
    /// A KeyPackage does not come back from the device of a member who just left.
    #[error("not a returning member: {0}")]
    NotReturning(&'static str),
    /// A host locked the meeting: no one may be admitted or added until a host unlocks it.
    /// Refused Commits are an alarm like [`E2eeError::UnadmittedAdd`].
    #[error("the meeting is locked: no one may be added")]
    Locked,
    /// A commit carries a proposal type this application never issues (PSK, ReInit, external
    /// init, custom), so it is refused rather than trusted.
    #[error("commit carries an unsupported proposal")]
    UnsupportedProposal,
    /// An operation needs a pending commit and there is none, or needs none and there is one.
    #[error("pending commit state: {0}")]
    PendingCommit(&'static str),
    /// A leaf index that names no member.
    #[error("no member at leaf {0}")]
    NoSuchLeaf(u32),
    /// Any other failure reported by OpenMLS; the text is for logs only.
    #[error("mls: {0}")]
    Mls(String),
    /// Failure in the SFrame layer that is not one of the cases above.
    #[error("sframe: {0}")]
    Sframe(String),
}

pub(crate) fn mls<E: std::fmt::Display>(e: E) -> E2eeError {
    E2eeError::Mls(e.to_string())
}
