//! Who is in which live meeting, and how to reach them: the signaling fan-out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::{
    AppMessagePurpose, ErrorCode, LeaveReason, LobbyReason, MeetingId, MeetingState, ParticipantId,
    Permissions, ServerMessage, TrackSource,
};
use tokio::sync::mpsc;

use crate::delivery::{DeliveryError, GroupDelivery};
use crate::policy::{AuditEntry, BanKeys, Effect, Knock, MeetingPolicy, Outcome, Refusal};

/// What a session task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the WebSocket with this code and reason, then end the session.
    Close {
        code: u16,
        reason: String,
    },
    /// Admitted into the meeting: start media in `room` with `blocked` sources stopped, then
    /// send `welcome` (media first, so the participant's offer always finds it).
    Enter {
        room: u64,
        blocked: Vec<TrackSource>,
        welcome: ServerMessage,
    },
    /// Out of the meeting's media (removed, sent back to the lobby, meeting ended).
    Exit,
}

pub type OutboundTx = mpsc::UnboundedSender<Outbound>;

/// Effects the session carries out after the hub applied an action: storage and media.
#[derive(Debug)]
pub enum Deferred {
    Block {
        id: ParticipantId,
        source: TrackSource,
        blocked: bool,
    },
    Audit(AuditEntry),
    Ban(BanKeys),
    PersistState(MeetingState),
    PersistEnded,
}

struct LiveMeeting {
    room: u64,
    policy: MeetingPolicy,
    /// Everyone connected: members and the lobby.
    connections: HashMap<ParticipantId, OutboundTx>,
    delivery: GroupDelivery,
    /// Participants whose host secret matched: they hold the host link, and with it the
    /// meeting key that the MLS group's record must be signed with. Only they are asked to
    /// create the group (an owning account alone cannot).
    host_link_holders: HashSet<ParticipantId>,
}

/// How long a group may stay untouched by its creator while a host-link holder waits to be
/// added, before that holder is asked to open a new group instead. Any honest member adds a
/// host-link holder at once (its KeyPackage proves itself), so a wait this long means the
/// creator is gone or silent.
pub const GROUP_HANDOVER_MS: u64 = 5000;

/// A group to look at again after [`GROUP_HANDOVER_MS`]: if still untouched, it is handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallCheck {
    pub meeting: MeetingId,
    pub generation: u64,
    pub waiting: ParticipantId,
}

impl LiveMeeting {
    fn send(&self, to: ParticipantId, msg: ServerMessage) {
        if let Some(tx) = self.connections.get(&to) {
            let _ = tx.send(Outbound::Message(msg));
        }
    }

    fn to_members(&self, msg: &ServerMessage, except: Option<ParticipantId>) {
        for id in self.policy.members().filter(|m| Some(*m) != except) {
            self.send(id, msg.clone());
        }
    }

    /// With no MLS group, a host-link holder creates one and learns who waits.
    fn start_group_if_needed(&mut self, meeting: &MeetingId) {
        if self.delivery.has_group() {
            return;
        }
        let Some(host) = self
            .policy
            .members()
            .find(|m| self.host_link_holders.contains(m))
        else {
            return;
        };
        self.open_group(meeting, host);
    }

    fn open_group(&mut self, meeting: &MeetingId, host: ParticipantId) {
        let group_id = self.delivery.create_group(meeting, host);
        self.send(
            host,
            ServerMessage::MlsCreateGroup {
                group_id: proto::b64_encode(&group_id),
            },
        );
        self.send_waiting_key_packages(host);
    }

    fn send_waiting_key_packages(&self, to: ParticipantId) {
        let waiting: Vec<_> = self
            .delivery
            .waiting()
            .map(|(id, w)| (id, proto::b64_encode(&w.key_package)))
            .collect();
        for (participant_id, key_package) in waiting {
            self.send(
                to,
                ServerMessage::MlsKeyPackage {
                    participant_id,
                    key_package,
                },
            );
        }
    }

    /// Carries out the policy's effects on messages and membership; returns the rest.
    fn apply(&mut self, meeting: &MeetingId, effects: Vec<Effect>) -> Vec<Deferred> {
        let mut deferred = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(to, msg) => self.send(to, msg),
                Effect::ToMembers { message, except } => self.to_members(&message, except),
                Effect::LobbyChanged => {
                    let waiting = self.policy.lobby_entries();
                    for id in self.policy.moderators() {
                        self.send(
                            id,
                            ServerMessage::LobbyChanged {
                                waiting: waiting.clone(),
                            },
                        );
                    }
                }
                Effect::Enter { id, blocked } => self.enter(meeting, id, blocked),
                Effect::Exit { id, reason } => {
                    self.delivery.leave(id);
                    if let Some(tx) = self.connections.get(&id) {
                        let _ = tx.send(Outbound::Exit);
                    }
                    self.to_members(
                        &ServerMessage::ParticipantLeft {
                            participant_id: id,
                            reason,
                        },
                        Some(id),
                    );
                    if reason == LeaveReason::SentToLobby {
                        self.send(
                            id,
                            ServerMessage::Lobby {
                                participant_id: id,
                                meeting: meeting.clone(),
                                reason: LobbyReason::SentBack,
                            },
                        );
                    }
                    self.start_group_if_needed(meeting);
                }
                Effect::Close { id, reason } => {
                    if let Some(tx) = self.connections.remove(&id) {
                        let _ = tx.send(Outbound::Close {
                            code: proto::CLOSE_POLICY,
                            reason,
                        });
                    }
                }
                Effect::Block {
                    id,
                    source,
                    blocked,
                } => deferred.push(Deferred::Block {
                    id,
                    source,
                    blocked,
                }),
                Effect::Audit(entry) => deferred.push(Deferred::Audit(entry)),
                Effect::Ban(keys) => deferred.push(Deferred::Ban(keys)),
                Effect::PersistState => deferred.push(Deferred::PersistState(self.policy.state())),
                Effect::PersistEnded => deferred.push(Deferred::PersistEnded),
            }
        }
        deferred
    }

    /// Welcomes a participant the policy let in and tells the others.
    fn enter(&mut self, meeting: &MeetingId, id: ParticipantId, blocked: Vec<TrackSource>) {
        let Some((info, entry, admitted_by)) = self.policy.entry_of(id) else {
            return;
        };
        let moderates = info.role.moderates();
        // The first host-link holder in a meeting without a group creates it.
        let create_group = (self.host_link_holders.contains(&id) && !self.delivery.has_group())
            .then(|| proto::b64_encode(&self.delivery.create_group(meeting, id)));
        let creates = create_group.is_some();
        let welcome = ServerMessage::Welcome {
            participant_id: id,
            meeting: meeting.clone(),
            role: info.role,
            participants: self.policy.others(id),
            create_group,
            meeting_state: self.policy.state(),
            lobby: if moderates {
                self.policy.lobby_entries()
            } else {
                Vec::new()
            },
            // Made per connection by the signaling session, which holds the TURN secret.
            ice_servers: Vec::new(),
        };
        if let Some(tx) = self.connections.get(&id) {
            let _ = tx.send(Outbound::Enter {
                room: self.room,
                blocked,
                welcome,
            });
        }
        if creates {
            self.send_waiting_key_packages(id);
        }
        self.to_members(
            &ServerMessage::ParticipantJoined {
                participant: info,
                entry,
                admitted_by,
            },
            Some(id),
        );
    }
}

#[derive(Default)]
struct HubState {
    meetings: HashMap<MeetingId, LiveMeeting>,
    where_is: HashMap<ParticipantId, MeetingId>,
    next_room: u64,
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    next_participant: AtomicU64,
    /// Time base for the policy's grace periods.
    started: OnceInstant,
}

/// A monotonic clock origin, set when the hub is made: the policy takes time as milliseconds.
struct OnceInstant(std::time::Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        OnceInstant(std::time::Instant::now())
    }
}

impl Hub {
    fn now_ms(&self) -> u64 {
        self.started.0.elapsed().as_millis() as u64
    }

    /// A fresh participant id for a new session.
    pub fn next_id(&self) -> ParticipantId {
        ParticipantId(self.next_participant.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Someone the gate let through: into the meeting or its lobby (the policy decides). The
    /// live meeting starts with its stored lock and permissions if nobody is connected yet.
    pub fn knock(
        &self,
        meeting: &MeetingId,
        stored: (bool, Permissions),
        knock: Knock,
        host_link: bool,
        tx: OutboundTx,
    ) -> Result<Vec<Deferred>, Refusal> {
        let now_ms = self.now_ms();
        let id = knock.id;
        let mut state = lock(&self.state);
        let next_room = state.next_room;
        let live = state
            .meetings
            .entry(meeting.clone())
            .or_insert_with(|| LiveMeeting {
                room: next_room,
                policy: MeetingPolicy::new(stored.0, stored.1),
                connections: HashMap::new(),
                delivery: GroupDelivery::default(),
                host_link_holders: HashSet::new(),
            });
        let room = live.room;
        live.connections.insert(id, tx.clone());
        if host_link {
            live.host_link_holders.insert(id);
        }
        let effects = match live.policy.knock(knock, now_ms) {
            Ok(effects) => effects,
            Err(refusal) => {
                live.connections.remove(&id);
                if live.policy.is_empty() {
                    state.meetings.remove(meeting);
                }
                return Err(refusal);
            }
        };
        if live.policy.is_waiting(id) {
            let _ = tx.send(Outbound::Message(ServerMessage::Lobby {
                participant_id: id,
                meeting: meeting.clone(),
                reason: LobbyReason::WaitingForHost,
            }));
        }
        let deferred = live.apply(meeting, effects);
        if room == next_room {
            state.next_room += 1;
        }
        state.where_is.insert(id, meeting.clone());
        Ok(deferred)
    }

    /// A host action by `actor`, checked and applied by the meeting's policy.
    pub fn act(
        &self,
        actor: ParticipantId,
        action: impl FnOnce(&mut MeetingPolicy) -> Outcome,
    ) -> Result<Vec<Deferred>, Refusal> {
        let mut state = lock(&self.state);
        let Some(meeting) = state.where_is.get(&actor).cloned() else {
            return Err(Refusal {
                code: ErrorCode::Forbidden,
                reason: "not in a meeting".into(),
            });
        };
        let Some(live) = state.meetings.get_mut(&meeting) else {
            return Err(Refusal {
                code: ErrorCode::Forbidden,
                reason: "not in a meeting".into(),
            });
        };
        let effects = action(&mut live.policy)?;
        let ended = effects.contains(&Effect::PersistEnded);
        let deferred = live.apply(&meeting, effects);
        if ended {
            if let Some(live) = state.meetings.remove(&meeting) {
                for id in live.connections.keys() {
                    state.where_is.remove(id);
                }
            }
            state.where_is.retain(|_, m| *m != meeting);
        }
        Ok(deferred)
    }

    /// Checks something about `id`'s standing in its meeting.
    pub fn check(
        &self,
        id: ParticipantId,
        f: impl FnOnce(&MeetingPolicy) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let state = lock(&self.state);
        let live = state
            .where_is
            .get(&id)
            .and_then(|m| state.meetings.get(m))
            .ok_or_else(|| Refusal {
                code: ErrorCode::Forbidden,
                reason: "not in a meeting".into(),
            })?;
        f(&live.policy)
    }

    /// Whether `id` is in its meeting (not waiting in the lobby).
    pub fn is_member(&self, id: ParticipantId) -> bool {
        self.check(id, |policy| {
            if policy.is_member(id) {
                Ok(())
            } else {
                Err(Refusal {
                    code: ErrorCode::Forbidden,
                    reason: String::new(),
                })
            }
        })
        .is_ok()
    }

    /// Removes a participant (member or waiting) and tells the others. Returns false if it
    /// was already gone.
    pub fn leave(&self, id: ParticipantId, reason: LeaveReason) -> bool {
        let now_ms = self.now_ms();
        let mut state = lock(&self.state);
        let Some(meeting) = state.where_is.remove(&id) else {
            return false;
        };
        let Some(live) = state.meetings.get_mut(&meeting) else {
            return false;
        };
        live.connections.remove(&id);
        live.host_link_holders.remove(&id);
        let was_member = live.policy.is_member(id);
        let effects = live.policy.leave(id, reason, now_ms);
        live.apply(&meeting, effects);
        if was_member {
            live.delivery.leave(id);
            live.to_members(
                &ServerMessage::ParticipantLeft {
                    participant_id: id,
                    reason,
                },
                None,
            );
            live.start_group_if_needed(&meeting);
        }
        if live.policy.is_empty() {
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
        live.connections
            .get(&id)
            .is_some_and(|tx| tx.send(outbound).is_ok())
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
            // Lobby sessions take no part in the group: no KeyPackage, Commit or message.
            Some(live) if live.policy.is_member(id) => f(live),
            _ => Err(DeliveryError::NotInGroup),
        }
    }

    /// A waiting participant's KeyPackage: stored, and shown to the group's members. When a
    /// host-link holder waits on a group its creator never touched, the caller is to look
    /// again after [`GROUP_HANDOVER_MS`] (see [`Hub::hand_over_stalled_group`]).
    pub fn mls_key_package(
        &self,
        from: ParticipantId,
        bytes: Vec<u8>,
    ) -> Result<Option<StallCheck>, DeliveryError> {
        let meeting = lock(&self.state).where_is.get(&from).cloned();
        self.with_meeting(from, |live| {
            let encoded = proto::b64_encode(&bytes);
            live.delivery.key_package(from, bytes)?;
            let stall = match (live.delivery.untouched_group(), meeting) {
                (Some(generation), Some(meeting)) if live.host_link_holders.contains(&from) => {
                    Some(StallCheck {
                        meeting,
                        generation,
                        waiting: from,
                    })
                }
                _ => None,
            };
            for member in live.delivery.members() {
                live.send(
                    member,
                    ServerMessage::MlsKeyPackage {
                        participant_id: from,
                        key_package: encoded.clone(),
                    },
                );
            }
            Ok(stall)
        })
    }

    /// The bounded wait of a [`StallCheck`] is over: if the group is still the same, still
    /// untouched, and the host-link holder still waits, its creator is silent (or gone without
    /// a goodbye), so the waiting holder opens a new group and everyone else's KeyPackage goes
    /// to it. Returns whether it handed over. A silent creator can delay E2EE by this long
    /// once, but never block it.
    pub fn hand_over_stalled_group(&self, check: &StallCheck) -> bool {
        let mut state = lock(&self.state);
        let Some(live) = state.meetings.get_mut(&check.meeting) else {
            return false;
        };
        let stalled = live.delivery.untouched_group() == Some(check.generation)
            && live.delivery.is_waiting(check.waiting)
            && live.policy.is_member(check.waiting)
            && live.host_link_holders.contains(&check.waiting);
        if stalled {
            tracing::warn!(meeting = %check.meeting, participant = check.waiting.0,
                "the group's creator never added anyone: a waiting host-link holder opens a new group");
            live.open_group(&check.meeting, check.waiting);
        }
        stalled
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
    pub fn mls_message(
        &self,
        from: ParticipantId,
        data: Vec<u8>,
        purpose: AppMessagePurpose,
    ) -> Result<(), DeliveryError> {
        self.with_meeting(from, |live| {
            if purpose == AppMessagePurpose::Chat {
                live.policy
                    .may_chat(from)
                    .map_err(|refusal| DeliveryError::NotPermitted(refusal.reason))?;
            }
            let recipients = live.delivery.application(from, &data)?;
            let encoded = proto::b64_encode(&data);
            for member in recipients {
                live.send(
                    member,
                    ServerMessage::MlsMessage {
                        from,
                        data: encoded.clone(),
                        purpose,
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
        state
            .meetings
            .get(meeting)
            .map_or(0, |m| m.policy.member_count())
    }
}

/// The hub's lock is never held across an await or a panic-prone call, so a poisoned lock
/// still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
