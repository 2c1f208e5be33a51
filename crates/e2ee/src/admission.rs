//! Payloads carried inside MLS application messages.
//!
//! MLS already gives every application message confidentiality, integrity and an authenticated
//! sender leaf, so these payloads need no crypto of their own: just an unambiguous encoding.
//! (The host set and the proofs members check are in [`crate::proofs`].)

use crate::error::E2eeError;

const PAYLOAD_V1: u8 = 1;
const TAG_ADMISSION: u8 = 1;
const TAG_CHAT: u8 = 2;
const TAG_REACTION: u8 = 3;
const TAG_LOCK: u8 = 4;
const TAG_BAR: u8 = 5;

/// Reactions are a single emoji or short token; anything longer is a chat message in disguise.
pub(crate) const MAX_REACTION_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppPayload {
    /// A host lets the KeyPackage with this KeyPackageRef into the group.
    Admission([u8; 32]),
    Chat(String),
    Reaction(String),
    /// A host locks (true) or unlocks the meeting: while locked, members refuse every Add.
    Lock(bool),
    /// A host bars this device (see [`crate::continuity`]) from coming back without the lobby.
    Bar([u8; 32]),
}

impl AppPayload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let lock = [0u8, 1u8];
        let (tag, body): (u8, &[u8]) = match self {
            AppPayload::Lock(locked) => (TAG_LOCK, &lock[usize::from(*locked)..][..1]),
            AppPayload::Admission(h) => (TAG_ADMISSION, h),
            AppPayload::Bar(device) => (TAG_BAR, device),
            AppPayload::Chat(t) => (TAG_CHAT, t.as_bytes()),
            AppPayload::Reaction(r) => (TAG_REACTION, r.as_bytes()),
        };
        let mut out = Vec::with_capacity(2 + body.len());
        out.push(PAYLOAD_V1);
        out.push(tag);
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, E2eeError> {
        let [version, tag, body @ ..] = bytes else {
            return Err(E2eeError::Malformed("application payload too short"));
        };
        if *version != PAYLOAD_V1 {
            return Err(E2eeError::Malformed("application payload version"));
        }
        let text = || {
            std::str::from_utf8(body)
                .map(str::to_owned)
                .map_err(|_| E2eeError::Malformed("application payload utf-8"))
        };
        match *tag {
            TAG_ADMISSION => <[u8; 32]>::try_from(body)
                .map(AppPayload::Admission)
                .map_err(|_| E2eeError::Malformed("admission hash length")),
            TAG_BAR => <[u8; 32]>::try_from(body)
                .map(AppPayload::Bar)
                .map_err(|_| E2eeError::Malformed("device key length")),
            TAG_CHAT => text().map(AppPayload::Chat),
            TAG_REACTION if body.len() <= MAX_REACTION_LEN => text().map(AppPayload::Reaction),
            TAG_REACTION => Err(E2eeError::Malformed("reaction too long")),
            TAG_LOCK => match body {
                [0] => Ok(AppPayload::Lock(false)),
                [1] => Ok(AppPayload::Lock(true)),
                _ => Err(E2eeError::Malformed("lock flag")),
            },
            _ => Err(E2eeError::Malformed("application payload tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_reject_garbage() {
        for p in [
            AppPayload::Admission([7; 32]),
            AppPayload::Chat("hello \u{1F44B}".into()),
            AppPayload::Reaction("\u{1F44D}".into()),
            AppPayload::Lock(true),
            AppPayload::Lock(false),
            AppPayload::Bar([9; 32]),
        ] {
            assert_eq!(AppPayload::decode(&p.encode()).unwrap(), p);
        }
        assert!(AppPayload::decode(&[]).is_err());
        assert!(AppPayload::decode(&[1]).is_err());
        assert!(AppPayload::decode(&[2, 2]).is_err());
        assert!(AppPayload::decode(&[1, 1, 0]).is_err());
        assert!(AppPayload::decode(&[1, 2, 0xff]).is_err());
        assert!(AppPayload::decode(&[1, 9]).is_err());
        assert!(AppPayload::decode(&[1, 4]).is_err());
        assert!(AppPayload::decode(&[1, 4, 2]).is_err());
        assert!(AppPayload::decode(&[1, 5, 1, 2, 3]).is_err());
    }
}
