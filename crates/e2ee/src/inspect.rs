//! Secret-free classification of MLS wire messages, for the server acting as MLS Delivery
//! Service.
//!
//! The server must order commits per epoch and route Welcomes, but must never hold group keys.
//! Everything here reads only fields RFC 9420 puts in the clear: the framing of
//! `MLSMessage`, the `group_id`/`epoch`/`content_type` of both `PublicMessage` and
//! `PrivateMessage` headers, and the `new_member` KeyPackageRefs of a `Welcome`. No signature
//! or MAC is checked: the DS cannot, and members check everything themselves.

use openmls::prelude::{tls_codec::Deserialize, ContentType, MlsMessageBodyIn, MlsMessageIn};

use crate::error::E2eeError;

/// What an MLS message is, as far as the delivery service is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A Commit (public or private framing): the DS must accept at most one per epoch.
    Commit,
    /// A standalone Proposal. Conclave clients never send these and refuse them.
    Proposal,
    /// An application message (chat, reaction, admission, ...): fan out as is.
    Application,
    /// A Welcome: route to the joiners named by `welcome_key_package_refs`.
    Welcome,
    /// A KeyPackage of a participant waiting in the lobby.
    KeyPackage,
    /// A GroupInfo. Conclave never publishes these (no external joins).
    GroupInfo,
}

/// Clear-text facts about an MLS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsMessageInfo {
    /// Kind of message.
    pub kind: MessageKind,
    /// Epoch the message was sent in (commits, proposals, application messages).
    pub epoch: Option<u64>,
    /// Group the message belongs to (commits, proposals, application messages).
    pub group_id: Option<Vec<u8>>,
    /// For a Welcome: KeyPackageRefs of the new members it is encrypted to. These are the same
    /// values [`crate::key_package_hash`] returns, so the DS can route Welcomes to lobby entries.
    pub welcome_key_package_refs: Vec<[u8; 32]>,
}

/// Classify `bytes` without any key material. Never panics.
pub fn inspect(bytes: &[u8]) -> Result<MlsMessageInfo, E2eeError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| E2eeError::Malformed("not an MLS message"))?;
    let mut info = MlsMessageInfo {
        kind: MessageKind::Application,
        epoch: None,
        group_id: None,
        welcome_key_package_refs: Vec::new(),
    };
    match msg.extract() {
        MlsMessageBodyIn::PublicMessage(m) => {
            info.kind = content_kind(m.content_type());
            info.epoch = Some(m.epoch().as_u64());
            info.group_id = Some(m.group_id().as_slice().to_vec());
        }
        MlsMessageBodyIn::PrivateMessage(m) => {
            info.kind = content_kind(m.content_type());
            info.epoch = Some(m.epoch().as_u64());
            info.group_id = Some(m.group_id().as_slice().to_vec());
        }
        MlsMessageBodyIn::Welcome(w) => {
            info.kind = MessageKind::Welcome;
            for secret in w.secrets() {
                // Refs of other hash sizes cannot be ours (suite 0x0001 uses SHA-256); skip
                // rather than fail so the DS can still see it is a Welcome.
                if let Ok(r) = <[u8; 32]>::try_from(secret.new_member().as_slice()) {
                    info.welcome_key_package_refs.push(r);
                }
            }
        }
        MlsMessageBodyIn::GroupInfo(_) => info.kind = MessageKind::GroupInfo,
        MlsMessageBodyIn::KeyPackage(_) => info.kind = MessageKind::KeyPackage,
    }
    Ok(info)
}

fn content_kind(ct: ContentType) -> MessageKind {
    match ct {
        ContentType::Application => MessageKind::Application,
        ContentType::Proposal => MessageKind::Proposal,
        ContentType::Commit => MessageKind::Commit,
    }
}
