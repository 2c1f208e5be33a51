//! The MLS Delivery Service of one meeting (RFC 9420 §5): who is in the group, at which
//! epoch, and whose KeyPackages wait to be added. It orders Commits (the first for an epoch
//! wins) and routes Welcomes, reading only the clear parts of MLS messages. It holds no key
//! and cannot add anyone: members only merge Commits whose Adds a host admitted.

use std::collections::{BTreeMap, BTreeSet};

use e2ee::MessageKind;
use proto::{ErrorCode, MeetingId, ParticipantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    #[error("the commit is for epoch {got}, the group is at epoch {current}")]
    StaleEpoch { got: u64, current: u64 },
    #[error("only members of the meeting's group may send this")]
    NotInGroup,
    #[error("the message is for another group")]
    WrongGroup,
    /// The meeting's policy refuses it (chat off for the sender's role, or paused).
    #[error("{0}")]
    NotPermitted(String),
}

impl DeliveryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DeliveryError::Malformed(_) | DeliveryError::WrongGroup => ErrorCode::MalformedMls,
            DeliveryError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            DeliveryError::NotInGroup => ErrorCode::NotInGroup,
            DeliveryError::NotPermitted(_) => ErrorCode::NotPermitted,
        }
    }
}

/// Reads the clear part of an MLS message and checks it is of the expected kind.
fn inspect_as(bytes: &[u8], expected: MessageKind) -> Result<e2ee::MlsMessageInfo, DeliveryError> {
    let info = e2ee::inspect(bytes).map_err(|e| DeliveryError::Malformed(e.to_string()))?;
    if info.kind != expected {
        return Err(DeliveryError::Malformed(format!(
            "expected {expected:?}, got {:?}",
            info.kind
        )));
    }
    Ok(info)
}

#[derive(Debug)]
struct Group {
    id: Vec<u8>,
    epoch: u64,
    members: BTreeSet<ParticipantId>,
}

/// A participant waiting to be added, with its latest KeyPackage.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub key_package: Vec<u8>,
    key_package_ref: [u8; 32],
}

/// A Commit the delivery service accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub epoch: u64,
    /// Members who must process the Commit (everyone in the group before it, but its author).
    pub notify: Vec<ParticipantId>,
    /// Waiting participants the Welcome is for; they are members now.
    pub welcomed: Vec<ParticipantId>,
}

#[derive(Debug, Default)]
pub struct GroupDelivery {
    group: Option<Group>,
    waiting: BTreeMap<ParticipantId, Waiting>,
    /// Groups created for this meeting so far: a new group after everyone left gets a new id.
    generation: u64,
}

impl GroupDelivery {
    pub fn has_group(&self) -> bool {
        self.group.is_some()
    }

    pub fn is_member(&self, id: ParticipantId) -> bool {
        self.group.as_ref().is_some_and(|g| g.members.contains(&id))
    }

    pub fn members(&self) -> Vec<ParticipantId> {
        self.group
            .as_ref()
            .map(|g| g.members.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn waiting(&self) -> impl Iterator<Item = (ParticipantId, &Waiting)> {
        self.waiting.iter().map(|(id, w)| (*id, w))
    }

    /// The group's generation while only its creator is in it and nothing was ever committed:
    /// a creator that stays silent leaves it so. See `Hub::hand_over_stalled_group`.
    pub fn untouched_group(&self) -> Option<u64> {
        self.group
            .as_ref()
            .filter(|g| g.epoch == 0 && g.members.len() == 1)
            .map(|_| self.generation)
    }

    /// Whether `id` waits to be added with a KeyPackage.
    pub fn is_waiting(&self, id: ParticipantId) -> bool {
        self.waiting.contains_key(&id)
    }

    /// Makes `creator` (a host-link holder) the first member of a new group and returns the
    /// group id. A group there was is dropped: its members hold keys for nothing.
    pub fn create_group(&mut self, meeting: &MeetingId, creator: ParticipantId) -> Vec<u8> {
        self.generation += 1;
        let id = format!("{meeting}/{}", self.generation).into_bytes();
        self.waiting.remove(&creator);
        self.group = Some(Group {
            id: id.clone(),
            epoch: 0,
            members: BTreeSet::from([creator]),
        });
        id
    }

    /// Records a waiting participant's KeyPackage.
    pub fn key_package(
        &mut self,
        from: ParticipantId,
        bytes: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        if self.is_member(from) {
            return Err(DeliveryError::Malformed(
                "members do not publish KeyPackages".into(),
            ));
        }
        inspect_as(&bytes, MessageKind::KeyPackage)?;
        let key_package_ref =
            e2ee::key_package_hash(&bytes).map_err(|e| DeliveryError::Malformed(e.to_string()))?;
        self.waiting.insert(
            from,
            Waiting {
                key_package: bytes,
                key_package_ref,
            },
        );
        Ok(())
    }

    /// Orders a Commit: accepted if its author is a member and it is for the current epoch.
    pub fn commit(
        &mut self,
        from: ParticipantId,
        commit: &[u8],
        welcome: Option<&[u8]>,
    ) -> Result<Accepted, DeliveryError> {
        let group = self.group.as_mut().ok_or(DeliveryError::NotInGroup)?;
        if !group.members.contains(&from) {
            return Err(DeliveryError::NotInGroup);
        }
        let info = inspect_as(commit, MessageKind::Commit)?;
        if info.group_id.as_deref() != Some(group.id.as_slice()) {
            return Err(DeliveryError::WrongGroup);
        }
        let epoch = info
            .epoch
            .ok_or_else(|| DeliveryError::Malformed("a Commit without an epoch".into()))?;
        if epoch != group.epoch {
            return Err(DeliveryError::StaleEpoch {
                got: epoch,
                current: group.epoch,
            });
        }
        let refs = match welcome {
            Some(bytes) => inspect_as(bytes, MessageKind::Welcome)?.welcome_key_package_refs,
            None => Vec::new(),
        };
        let notify = group
            .members
            .iter()
            .copied()
            .filter(|m| *m != from)
            .collect();
        let welcomed: Vec<ParticipantId> = self
            .waiting
            .iter()
            .filter(|(_, w)| refs.contains(&w.key_package_ref))
            .map(|(id, _)| *id)
            .collect();
        for id in &welcomed {
            self.waiting.remove(id);
            group.members.insert(*id);
        }
        group.epoch += 1;
        Ok(Accepted {
            epoch: group.epoch,
            notify,
            welcomed,
        })
    }

    /// Checks an application message from `from` and returns the members to relay it to.
    pub fn application(
        &self,
        from: ParticipantId,
        data: &[u8],
    ) -> Result<Vec<ParticipantId>, DeliveryError> {
        let group = self.group.as_ref().ok_or(DeliveryError::NotInGroup)?;
        if !group.members.contains(&from) {
            return Err(DeliveryError::NotInGroup);
        }
        let info = inspect_as(data, MessageKind::Application)?;
        if info.group_id.as_deref() != Some(group.id.as_slice()) {
            return Err(DeliveryError::WrongGroup);
        }
        Ok(group
            .members
            .iter()
            .copied()
            .filter(|m| *m != from)
            .collect())
    }

    /// A participant left the meeting. Members still in the group commit its removal.
    pub fn leave(&mut self, id: ParticipantId) {
        self.waiting.remove(&id);
        if let Some(group) = &mut self.group {
            group.members.remove(&id);
            if group.members.is_empty() {
                self.group = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2ee::{HostLinkSecret, Identity, Member};

    fn meeting() -> MeetingId {
        MeetingId::from_random_bytes([8; 16])
    }

    fn pending(name: &str) -> (e2ee::PendingJoin, Vec<u8>) {
        Member::new_pending(Identity::generate(name, name).unwrap()).unwrap()
    }

    #[test]
    fn first_commit_per_epoch_wins_and_welcomes_are_routed_by_key_package() {
        let host_id = ParticipantId(1);
        let (a, b) = (ParticipantId(2), ParticipantId(3));
        let mut ds = GroupDelivery::default();
        let group_id = ds.create_group(&meeting(), host_id);
        let mut host = Member::create_group(
            Identity::generate("h", "1").unwrap(),
            &group_id,
            &HostLinkSecret::generate().unwrap(),
        )
        .unwrap();
        let (_pa, kp_a) = pending("a");
        let (_pb, kp_b) = pending("b");
        ds.key_package(a, kp_a.clone()).unwrap();
        ds.key_package(b, kp_b.clone()).unwrap();
        host.admit(e2ee::key_package_hash(&kp_a).unwrap()).unwrap();
        let (commit, welcome) = host.commit_add(&[&kp_a], 0).unwrap();
        let accepted = ds.commit(host_id, &commit, Some(&welcome)).unwrap();
        assert_eq!(
            accepted,
            Accepted {
                epoch: 1,
                notify: vec![],
                welcomed: vec![a]
            }
        );
        assert!(ds.is_member(a) && !ds.is_member(b));
        // The same commit again is for an old epoch now.
        assert_eq!(
            ds.commit(host_id, &commit, Some(&welcome)),
            Err(DeliveryError::StaleEpoch { got: 0, current: 1 })
        );
    }

    #[test]
    fn non_members_and_garbage_are_refused() {
        let mut ds = GroupDelivery::default();
        let stranger = ParticipantId(9);
        assert_eq!(
            ds.commit(stranger, b"x", None),
            Err(DeliveryError::NotInGroup)
        );
        let group_id = ds.create_group(&meeting(), ParticipantId(1));
        let mut host = Member::create_group(
            Identity::generate("h", "1").unwrap(),
            &group_id,
            &HostLinkSecret::generate().unwrap(),
        )
        .unwrap();
        let chat = host.encrypt_chat("hi").unwrap();
        assert_eq!(
            ds.application(stranger, &chat),
            Err(DeliveryError::NotInGroup)
        );
        assert_eq!(ds.application(ParticipantId(1), &chat), Ok(vec![]));
        assert!(matches!(
            ds.application(ParticipantId(1), b"\x00\x01garbage"),
            Err(DeliveryError::Malformed(_))
        ));
        assert!(matches!(
            ds.commit(ParticipantId(1), &chat, None),
            Err(DeliveryError::Malformed(_))
        ));
        assert!(matches!(
            ds.key_package(stranger, chat),
            Err(DeliveryError::Malformed(_))
        ));
        assert!(matches!(
            ds.key_package(stranger, vec![0xff; 40]),
            Err(DeliveryError::Malformed(_))
        ));
    }

    #[test]
    fn a_commit_for_another_group_is_refused() {
        let mut ds = GroupDelivery::default();
        ds.create_group(&meeting(), ParticipantId(1));
        let mut other = Member::create_group(
            Identity::generate("x", "1").unwrap(),
            b"other",
            &HostLinkSecret::generate().unwrap(),
        )
        .unwrap();
        let (_p, kp) = pending("a");
        other.admit(e2ee::key_package_hash(&kp).unwrap()).unwrap();
        let (commit, _) = other.commit_add(&[&kp], 0).unwrap();
        assert_eq!(
            ds.commit(ParticipantId(1), &commit, None),
            Err(DeliveryError::WrongGroup)
        );
    }

    #[test]
    fn the_group_ends_when_its_last_member_leaves() {
        let mut ds = GroupDelivery::default();
        let first = ds.create_group(&meeting(), ParticipantId(1));
        ds.leave(ParticipantId(1));
        assert!(!ds.has_group());
        let second = ds.create_group(&meeting(), ParticipantId(2));
        assert_ne!(first, second, "a new group gets a new id");
    }
}
