//! Who is in which live meeting, and how to reach them: the signaling fan-out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::{LeaveReason, MeetingId, ParticipantId, ParticipantInfo, Role, ServerMessage};
use tokio::sync::mpsc;

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
        let info = ParticipantInfo { id, name, role };
        let mut state = lock(&self.state);
        let next_room = state.next_room;
        let live = state
            .meetings
            .entry(meeting.clone())
            .or_insert_with(|| LiveMeeting {
                room: next_room,
                members: BTreeMap::new(),
            });
        let room = live.room;
        let others: Vec<ParticipantInfo> = live.members.values().map(|m| m.info.clone()).collect();
        let _ = tx.send(Outbound::Message(ServerMessage::Welcome {
            participant_id: id,
            meeting: meeting.clone(),
            role,
            participants: others,
        }));
        for member in live.members.values() {
            let _ = member
                .tx
                .send(Outbound::Message(ServerMessage::ParticipantJoined {
                    participant: info.clone(),
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
        for member in live.members.values() {
            let _ = member
                .tx
                .send(Outbound::Message(ServerMessage::ParticipantLeft {
                    participant_id: id,
                    reason,
                }));
        }
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
