//! Who is in which live meeting, and how to reach them: the signaling fan-out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::{LeaveReason, MeetingId, ParticipantId, ParticipantInfo, Role, ServerMessage};
use tokio::sync::mpsc;

use crate::delivery::{DeliveryError, GroupDelivery};

/// What a session task is asked to send.
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the WebSocket with this code and reason, then end the session.
    Close {
        code: u16,
        reason: String,
    },
}

pub type OutboundTx = mpsc::UnboundedSender<Outbound>;

struct Member {
    info: ParticipantInfo,
    tx: OutboundTx,
}

struct LiveMeeting {
    room: u64,
    members: BTreeMap<ParticipantId, Member>,
    delivery: GroupDelivery,
}

impl LiveMeeting {
    fn send(&self, to: ParticipantId, msg: ServerMessage) {
        if let Some(member) = self.members.get(&to) {
            let _ = member.tx.send(Outbound::Message(msg));
        }
    }

    /// With no MLS group, the longest-present host creates one and learns who waits.
    fn start_group_if_needed(&mut self, meeting: &MeetingId) {
        if self.delivery.has_group() {
            return;
        }
        let Some(host) = self
            .members
            .values()
            .find(|m| m.info.role == Role::Host)
            .map(|m| m.info.id)
        else {
            return;
        };
        let group_id = self.delivery.create_group(meeting, host);
        self.send(
            host,
            ServerMessage::MlsCreateGroup {
                group_id: proto::b64_encode(&group_id),
            },
        );
        let waiting: Vec<_> = self
            .delivery
            .waiting()
            .map(|(id, w)| (id, proto::b64_encode(&w.key_package)))
            .collect();
        for (participant_id, key_package) in waiting {
            self.send(
                host,
                ServerMessage::MlsKeyPackage {
                    participant_id,
                    key_package,
                },
            );
        }
    }
}

#[derive(Default)]
struct HubState {
    meetings: HashMap<MeetingId, LiveMeeting>,
    where_is: HashMap<ParticipantId, MeetingId>,
    next_room: u64,
}

/// A participant that just joined.
pub struct Joined {
    pub id: ParticipantId,
    pub room: u64,
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    next_participant: AtomicU64,
}

impl Hub {
    /// Adds a participant to a live meeting (starting it if needed), welcomes it and tells the
    /// others. The welcome is queued under the lock, so that it reaches the participant
    /// before news of anyone who joins after it.
    pub fn join(&self, meeting: &MeetingId, name: String, role: Role, tx: OutboundTx) -> Joined {
        let id = ParticipantId(self.next_participant.fetch_add(1, Ordering::Relaxed) + 1);
        let info = ParticipantInfo {
            id,
            name,
            role,
            muted: Vec::new(),
            blocked: Vec::new(),
        };
        let mut state = lock(&self.state);
        let next_room = state.next_room;
        let live = state
            .meetings
            .entry(meeting.clone())
            .or_insert_with(|| LiveMeeting {
                room: next_room,
                members: BTreeMap::new(),
                delivery: GroupDelivery::default(),
            });
        let room = live.room;
        let others: Vec<ParticipantInfo> = live.members.values().map(|m| m.info.clone()).collect();
        // The first host in a meeting without a group creates it.
        let create_group = (role == Role::Host && !live.delivery.has_group())
            .then(|| proto::b64_encode(&live.delivery.create_group(meeting, id)));
        let creates = create_group.is_some();
        let _ = tx.send(Outbound::Message(ServerMessage::Welcome {
            participant_id: id,
            meeting: meeting.clone(),
            role,
            participants: others,
            create_group,
            meeting_state: Default::default(),
            lobby: Vec::new(),
        }));
        if creates {
            for (participant_id, waiting) in live.delivery.waiting() {
                let _ = tx.send(Outbound::Message(ServerMessage::MlsKeyPackage {
                    participant_id,
                    key_package: proto::b64_encode(&waiting.key_package),
                }));
            }
        }
        for member in live.members.values() {
            let _ = member
                .tx
                .send(Outbound::Message(ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                    entry: proto::Entry::HostLink,
                    admitted_by: None,
                }));
        }
        live.members.insert(id, Member { info, tx });
        if room == next_room {
            state.next_room += 1;
        }
        state.where_is.insert(id, meeting.clone());
        Joined { id, room }
    }

    /// Removes a participant and tells the others why. Returns false if it was already gone.
    pub fn leave(&self, id: ParticipantId, reason: LeaveReason) -> bool {
        let mut state = lock(&self.state);
        let Some(meeting) = state.where_is.remove(&id) else {
            return false;
        };
        let Some(live) = state.meetings.get_mut(&meeting) else {
            return false;
        };
        live.members.remove(&id);
        live.delivery.leave(id);
        for member in live.members.values() {
            let _ = member
                .tx
                .send(Outbound::Message(ServerMessage::ParticipantLeft {
                    participant_id: id,
                    reason,
                }));
        }
        live.start_group_if_needed(&meeting);
        if live.members.is_empty() {
            state.meetings.remove(&meeting);
        }
        true
    }

    /// Sends to one participant; false if it is gone.
    pub fn send(&self, id: ParticipantId, outbound: Outbound) -> bool {
        let state = lock(&self.state);
        let Some(live) = state.where_is.get(&id).and_then(|m| state.meetings.get(m)) else {
            return false;
        };
        live.members
            .get(&id)
            .is_some_and(|member| member.tx.send(outbound).is_ok())
    }

    /// Runs `f` on the live meeting `id` is in.
    fn with_meeting<T>(
        &self,
        id: ParticipantId,
        f: impl FnOnce(&mut LiveMeeting) -> Result<T, DeliveryError>,
    ) -> Result<T, DeliveryError> {
        let mut state = lock(&self.state);
        let Some(meeting) = state.where_is.get(&id).cloned() else {
            return Err(DeliveryError::NotInGroup);
        };
        match state.meetings.get_mut(&meeting) {
            Some(live) => f(live),
            None => Err(DeliveryError::NotInGroup),
        }
    }

    /// A waiting participant's KeyPackage: stored, and shown to the group's members.
    pub fn mls_key_package(
        &self,
        from: ParticipantId,
        bytes: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        self.with_meeting(from, |live| {
            let encoded = proto::b64_encode(&bytes);
            live.delivery.key_package(from, bytes)?;
            for member in live.delivery.members() {
                live.send(
                    member,
                    ServerMessage::MlsKeyPackage {
                        participant_id: from,
                        key_package: encoded.clone(),
                    },
                );
            }
            Ok(())
        })
    }

    /// A Commit: ordered by the delivery service, then fanned out with its Welcome.
    pub fn mls_commit(
        &self,
        from: ParticipantId,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
    ) -> Result<u64, DeliveryError> {
        self.with_meeting(from, |live| {
            let accepted = live.delivery.commit(from, &commit, welcome.as_deref())?;
            live.send(
                from,
                ServerMessage::MlsCommitAccepted {
                    epoch: accepted.epoch,
                },
            );
            let encoded = proto::b64_encode(&commit);
            for member in accepted.notify {
                live.send(
                    member,
                    ServerMessage::MlsCommit {
                        from,
                        commit: encoded.clone(),
                    },
                );
            }
            if let Some(welcome) = welcome {
                let encoded = proto::b64_encode(&welcome);
                for joiner in accepted.welcomed {
                    live.send(
                        joiner,
                        ServerMessage::MlsWelcome {
                            welcome: encoded.clone(),
                        },
                    );
                }
            }
            Ok(accepted.epoch)
        })
    }

    /// An application message (admission, chat, reaction): relayed to the other members.
    pub fn mls_message(&self, from: ParticipantId, data: Vec<u8>) -> Result<(), DeliveryError> {
        self.with_meeting(from, |live| {
            let recipients = live.delivery.application(from, &data)?;
            let encoded = proto::b64_encode(&data);
            for member in recipients {
                live.send(
                    member,
                    ServerMessage::MlsMessage {
                        from,
                        data: encoded.clone(),
                        purpose: Default::default(),
                    },
                );
            }
            Ok(())
        })
    }

    /// Number of participants, and of meetings with anyone in them.
    pub fn counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.where_is.len(), state.meetings.len())
    }

    pub fn participants_in(&self, meeting: &MeetingId) -> usize {
        let state = lock(&self.state);
        state.meetings.get(meeting).map_or(0, |m| m.members.len())
    }
}

/// The hub's lock is never held across an await or a panic-prone call, so a poisoned lock
/// still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
