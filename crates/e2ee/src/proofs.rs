//! Proofs members check themselves, so that no admission and no host power rests on the
//! server's word. Each is a signature by the meeting key (see [`crate::link_secrets`]), which
//! only host-link holders have:
//!
//! - **Group record** (GroupContext extension [`GROUP_RECORD_EXTENSION_TYPE`]): the meeting's
//!   public key and the creator's leaf signature key, signed over the group id. A joiner checks
//!   it against the `#k=` of its own link before it accepts a Welcome, so a group the server
//!   made for itself (without the meeting key) is refused, and every member knows the group was
//!   opened by a host-link holder. The delivery service cannot change it: members refuse a
//!   GroupContext change to anything but the host set.
//! - **Admission proof** (LeafNode extension [`ADMISSION_PROOF_EXTENSION_TYPE`], in the
//!   joiner's KeyPackage and then in the ratchet tree): either the meeting key's signature over
//!   the joiner's leaf signature key (it holds the host link), or an invitation: the meeting
//!   key's certificate over an invitation key, expiry and "skips the lobby", plus the invitation
//!   key's signature over the joiner's leaf signature key. KeyPackages cross the server in the
//!   clear; binding each proof to the leaf's own key is what keeps the server from copying it
//!   into a KeyPackage of its own listener.
//! - **Host set** (GroupContext extension [`HOSTS_EXTENSION_TYPE`]): co-hosts a host-link
//!   holder promoted, each entry the member's signature key and the meeting key's signature
//!   over (group id, key). Host-link holders are hosts by their admission proof and need no
//!   entry; a promotion can be taken back by a commit that drops the entry.

use crate::error::E2eeError;
use crate::link_secrets::{
    invitation_certified, verify, HostLinkSecret, Invitation, MeetingKey, MeetingPublicKey,
    Purpose, PUBLIC_KEY_LEN, SIGNATURE_LEN,
};
use ed25519_dalek::Signer;

/// Private-use (0xF000..=0xFFFF, RFC 9420 §17.3) GroupContext extension holding the host set.
pub const HOSTS_EXTENSION_TYPE: u16 = 0xF0C1;
/// GroupContext extension holding the group record.
pub const GROUP_RECORD_EXTENSION_TYPE: u16 = 0xF0C2;
/// LeafNode extension holding a member's admission proof.
pub const ADMISSION_PROOF_EXTENSION_TYPE: u16 = 0xF0C3;

const PROOF_V1: u8 = 1;
const TAG_HOST_LINK: u8 = 1;
const TAG_INVITATION: u8 = 2;

/// What a joiner proves with its KeyPackage, built from its link.
pub enum EntryProof<'a> {
    /// It holds the host link.
    HostLink(&'a HostLinkSecret),
    /// It holds an invitation a host's client issued.
    Invitation(&'a Invitation),
}

impl EntryProof<'_> {
    /// The LeafNode extension bytes for a leaf whose signature key is `leaf_key`.
    pub(crate) fn encode_for(&self, leaf_key: &[u8]) -> Vec<u8> {
        match self {
            EntryProof::HostLink(secret) => {
                let sig = secret.meeting_key().sign(Purpose::HostLinkProof, leaf_key);
                let mut out = vec![PROOF_V1, TAG_HOST_LINK];
                out.extend_from_slice(&sig);
                out
            }
            EntryProof::Invitation(inv) => {
                let key = inv.secret().key();
                let binding = key
                    .sign(&Purpose::InvitationBinding.message(leaf_key))
                    .to_bytes();
                let mut out = vec![PROOF_V1, TAG_INVITATION];
                out.extend_from_slice(&inv.secret().public());
                out.extend_from_slice(&inv.expires_at.to_be_bytes());
                out.push(u8::from(inv.skip_lobby));
                out.extend_from_slice(inv.certificate());
                out.extend_from_slice(&binding);
                out
            }
        }
    }
}

/// What a valid admission proof shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// The member holds the host link: a host of the meeting.
    HostLink,
    /// The member holds an invitation a host issued.
    Invitation {
        /// Unix seconds after which the invitation admits no one.
        expires_at: u64,
        /// Whether it lets its holder in without a host's admission.
        skip_lobby: bool,
        /// The invitation's public key (the same for every use of one invitation).
        key: [u8; PUBLIC_KEY_LEN],
    },
}

impl Proven {
    /// Whether this proof alone admits its holder into the group at `now_secs`.
    pub fn admits(&self, now_secs: u64) -> bool {
        match self {
            Proven::HostLink => true,
            Proven::Invitation {
                expires_at,
                skip_lobby,
                ..
            } => *skip_lobby && now_secs <= *expires_at,
        }
    }
}

/// Checks the admission proof bytes of a leaf whose signature key is `leaf_key`. Proofs come
/// from other clients (through the server), so anything malformed or forged is an error, never
/// a panic.
pub(crate) fn verify_proof(
    bytes: &[u8],
    meeting: &MeetingPublicKey,
    leaf_key: &[u8],
) -> Result<Proven, E2eeError> {
    let forged = E2eeError::ForgedProof("the meeting key did not sign it");
    match bytes {
        [PROOF_V1, TAG_HOST_LINK, sig @ ..] if sig.len() == SIGNATURE_LEN => {
            if meeting.verifies(Purpose::HostLinkProof, leaf_key, sig) {
                Ok(Proven::HostLink)
            } else {
                Err(forged)
            }
        }
        [PROOF_V1, TAG_INVITATION, rest @ ..]
            if rest.len() == PUBLIC_KEY_LEN + 8 + 1 + 2 * SIGNATURE_LEN =>
        {
            let (key, rest) = rest.split_at(PUBLIC_KEY_LEN);
            let (expires, rest) = rest.split_at(8);
            let (skip, rest) = rest.split_at(1);
            let (certificate, binding) = rest.split_at(SIGNATURE_LEN);
            let key: [u8; PUBLIC_KEY_LEN] = key
                .try_into()
                .map_err(|_| E2eeError::Malformed("admission proof"))?;
            let expires_at = u64::from_be_bytes(
                expires
                    .try_into()
                    .map_err(|_| E2eeError::Malformed("admission proof"))?,
            );
            let skip_lobby = match skip {
                [0] => false,
                [1] => true,
                _ => return Err(E2eeError::Malformed("admission proof")),
            };
            let certified = invitation_certified(&key, expires_at, skip_lobby);
            if !meeting.verifies(Purpose::Invitation, &certified, certificate) {
                return Err(E2eeError::ForgedProof(
                    "the invitation was not issued by a host of this meeting",
                ));
            }
            if !verify(&key, Purpose::InvitationBinding, leaf_key, binding) {
                return Err(E2eeError::ForgedProof(
                    "the invitation proof belongs to another key",
                ));
            }
            Ok(Proven::Invitation {
                expires_at,
                skip_lobby,
                key,
            })
        }
        _ => Err(E2eeError::Malformed("admission proof")),
    }
}

/// The GroupContext's record of who opened the group, under which meeting key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRecord {
    pub meeting: MeetingPublicKey,
    creator: [u8; PUBLIC_KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

fn group_message(group_id: &[u8], key: &[u8]) -> Vec<u8> {
    let len = u16::try_from(group_id.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + group_id.len() + key.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(key);
    out
}

impl GroupRecord {
    pub fn new(
        meeting_key: &MeetingKey,
        group_id: &[u8],
        creator: &[u8],
    ) -> Result<Self, E2eeError> {
        let creator: [u8; PUBLIC_KEY_LEN] = creator
            .try_into()
            .map_err(|_| E2eeError::Malformed("creator key length"))?;
        Ok(GroupRecord {
            meeting: meeting_key.public(),
            creator,
            signature: meeting_key.sign(Purpose::Group, &group_message(group_id, &creator)),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        [&self.meeting.0[..], &self.creator, &self.signature].concat()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, E2eeError> {
        if bytes.len() != 2 * PUBLIC_KEY_LEN + SIGNATURE_LEN {
            return Err(E2eeError::Malformed("group record"));
        }
        let (meeting, rest) = bytes.split_at(PUBLIC_KEY_LEN);
        let (creator, signature) = rest.split_at(PUBLIC_KEY_LEN);
        let bad = |_| E2eeError::Malformed("group record");
        Ok(GroupRecord {
            meeting: MeetingPublicKey(meeting.try_into().map_err(bad)?),
            creator: creator.try_into().map_err(bad)?,
            signature: signature.try_into().map_err(bad)?,
        })
    }

    /// Whether a host-link holder made this record for this group.
    pub fn verify(&self, group_id: &[u8]) -> Result<(), E2eeError> {
        if self.meeting.verifies(
            Purpose::Group,
            &group_message(group_id, &self.creator),
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(E2eeError::ForgedGroup(
                "its record was not signed by the meeting key",
            ))
        }
    }
}

/// One promoted co-host: its leaf signature key and the meeting key's signature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HostEntry {
    pub key: [u8; PUBLIC_KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

const HOST_ENTRY_LEN: usize = PUBLIC_KEY_LEN + SIGNATURE_LEN;

impl HostEntry {
    pub fn new(meeting_key: &MeetingKey, group_id: &[u8], key: &[u8]) -> Result<Self, E2eeError> {
        let key: [u8; PUBLIC_KEY_LEN] = key
            .try_into()
            .map_err(|_| E2eeError::Malformed("host key length"))?;
        Ok(HostEntry {
            key,
            signature: meeting_key.sign(Purpose::CoHost, &group_message(group_id, &key)),
        })
    }

    pub fn verifies(&self, meeting: &MeetingPublicKey, group_id: &[u8]) -> bool {
        meeting.verifies(
            Purpose::CoHost,
            &group_message(group_id, &self.key),
            &self.signature,
        )
    }
}

/// Host entries, concatenated; sorted and deduplicated so equal sets encode equally. The empty
/// set (no co-hosts) is valid.
pub(crate) fn encode_hosts(hosts: &[HostEntry]) -> Vec<u8> {
    let mut sorted: Vec<&HostEntry> = hosts.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
        .into_iter()
        .flat_map(|e| e.key.iter().chain(e.signature.iter()).copied())
        .collect()
}

pub(crate) fn decode_hosts(bytes: &[u8]) -> Result<Vec<HostEntry>, E2eeError> {
    if !bytes.len().is_multiple_of(HOST_ENTRY_LEN) {
        return Err(E2eeError::Malformed("host set extension"));
    }
    bytes
        .chunks_exact(HOST_ENTRY_LEN)
        .map(|chunk| {
            let (key, signature) = chunk.split_at(PUBLIC_KEY_LEN);
            Ok(HostEntry {
                key: key
                    .try_into()
                    .map_err(|_| E2eeError::Malformed("host set extension"))?,
                signature: signature
                    .try_into()
                    .map_err(|_| E2eeError::Malformed("host set extension"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link_secrets::InvitationSecret;

    #[test]
    fn proofs_verify_only_for_their_leaf_and_meeting() {
        let host = HostLinkSecret::generate().unwrap();
        let meeting = host.meeting_key().public();
        let other = HostLinkSecret::generate().unwrap().meeting_key().public();
        let leaf = [7u8; 32];
        let proof = EntryProof::HostLink(&host).encode_for(&leaf);
        assert_eq!(verify_proof(&proof, &meeting, &leaf), Ok(Proven::HostLink));
        assert!(
            verify_proof(&proof, &meeting, &[8u8; 32]).is_err(),
            "copied to another key"
        );
        assert!(
            verify_proof(&proof, &other, &leaf).is_err(),
            "another meeting"
        );

        let inv = Invitation::issue(
            &host.meeting_key(),
            "inv1",
            InvitationSecret::generate().unwrap(),
            2_000_000_000,
            true,
        )
        .unwrap();
        let proof = EntryProof::Invitation(&inv).encode_for(&leaf);
        let proven = verify_proof(&proof, &meeting, &leaf).unwrap();
        assert!(proven.admits(1_999_999_999));
        assert!(!proven.admits(2_000_000_001), "expired");
        assert!(verify_proof(&proof, &meeting, &[9u8; 32]).is_err());
        // A server minting its own invitation has no meeting key to certify it with.
        let forged_key = HostLinkSecret::generate().unwrap().meeting_key();
        let forged = Invitation::issue(
            &forged_key,
            "inv2",
            InvitationSecret::generate().unwrap(),
            2_000_000_000,
            true,
        )
        .unwrap();
        let proof = EntryProof::Invitation(&forged).encode_for(&leaf);
        assert!(matches!(
            verify_proof(&proof, &meeting, &leaf),
            Err(E2eeError::ForgedProof(_))
        ));
        // Flipping "skip lobby" breaks the certificate.
        let lobby_only = Invitation::issue(
            &host.meeting_key(),
            "inv3",
            InvitationSecret::generate().unwrap(),
            2_000_000_000,
            false,
        )
        .unwrap();
        let mut proof = EntryProof::Invitation(&lobby_only).encode_for(&leaf);
        let at = 2 + 32 + 8;
        assert!(!verify_proof(&proof, &meeting, &leaf).unwrap().admits(0));
        proof[at] = 1;
        assert!(verify_proof(&proof, &meeting, &leaf).is_err());
        for garbage in [&[][..], &[1], &[1, 1, 0], &[2, 1], &[1, 3, 0, 0]] {
            assert!(verify_proof(garbage, &meeting, &leaf).is_err());
        }
    }

    #[test]
    fn group_records_and_host_entries_bind_the_group() {
        let host = HostLinkSecret::generate().unwrap();
        let key = host.meeting_key();
        let record = GroupRecord::new(&key, b"g1", &[3; 32]).unwrap();
        let decoded = GroupRecord::decode(&record.encode()).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.verify(b"g1").is_ok());
        assert!(decoded.verify(b"g2").is_err());
        assert!(GroupRecord::decode(&[0; 10]).is_err());

        let entry = HostEntry::new(&key, b"g1", &[4; 32]).unwrap();
        assert!(entry.verifies(&key.public(), b"g1"));
        assert!(!entry.verifies(&key.public(), b"g2"));
        let set = encode_hosts(&[entry.clone(), entry.clone()]);
        assert_eq!(decode_hosts(&set).unwrap(), vec![entry]);
        assert_eq!(decode_hosts(&[]).unwrap(), vec![]);
        assert!(decode_hosts(&[0; 95]).is_err());
    }
}
