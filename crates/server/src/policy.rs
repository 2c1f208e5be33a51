//! Meeting policy as a pure state machine: who waits in the lobby, who is in, what each role
//! may do, the lock, mutes, permissions, the panic button and the end of a meeting.
//!
//! Every host action goes through here and is checked against the actor's role *as the server
//! knows it*, never as the client claims it, so a forged WebSocket message changes nothing.
//! Nothing here does IO: actions return [`Effect`]s that the hub (messages) and the session
//! (storage, media) carry out, which keeps every rule testable without a socket.

use std::collections::{BTreeMap, BTreeSet};

use proto::{
    Entry, ErrorCode, LeaveReason, LobbyEntry, MeetingState, ParticipantId, ParticipantInfo,
    Permissions, Role, ServerMessage, TrackSource,
};

/// Someone knocking: what the gate established about them.
#[derive(Debug, Clone)]
pub struct Knock {
    pub id: ParticipantId,
    pub name: String,
    /// Host (host link or owning account), participant (invitation) or guest (plain link).
    pub role: Role,
    /// Set when the gate lets it skip the lobby (host link, or an invitation that says so).
    pub pre_admitted: Option<Entry>,
    pub device_id: Option<String>,
    pub invitation_id: Option<String>,
    pub invitation_label: Option<String>,
    pub user_id: Option<i64>,
}

/// A person in the meeting or its lobby.
#[derive(Debug, Clone)]
struct Person {
    knock: Knock,
    role: Role,
    entry: Entry,
    admitted_by: Option<ParticipantId>,
    muted: BTreeSet<TrackSource>,
    blocked: BTreeSet<TrackSource>,
}

impl Person {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.knock.id,
            name: self.knock.name.clone(),
            role: self.role,
            muted: self.muted.iter().copied().collect(),
            blocked: self.blocked.iter().copied().collect(),
        }
    }

    fn lobby_entry(&self) -> LobbyEntry {
        LobbyEntry {
            id: self.knock.id,
            name: self.knock.name.clone(),
            invitation: self.knock.invitation_label.clone(),
        }
    }
}

/// What identifies a banned person: any one of these keeps it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanKeys {
    pub name: String,
    pub device_id: Option<String>,
    pub invitation_id: Option<String>,
    pub user_id: Option<i64>,
}

/// A security event for the audit log (never meeting content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub event: &'static str,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub detail: String,
}

/// Something to carry out after an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(ParticipantId, ServerMessage),
    /// To everyone in the meeting (not the lobby) except `except`.
    ToMembers {
        message: ServerMessage,
        except: Option<ParticipantId>,
    },
    /// To hosts and co-hosts in the meeting: the lobby changed.
    LobbyChanged,
    /// The participant passes into the meeting: welcome it and start its media, with these
    /// sources stopped from the start.
    Enter {
        id: ParticipantId,
        blocked: Vec<TrackSource>,
    },
    /// The participant leaves the meeting (group and media); it may stay connected in the lobby.
    Exit {
        id: ParticipantId,
        reason: LeaveReason,
    },
    /// Close the participant's connection after what was sent to it.
    Close {
        id: ParticipantId,
        reason: String,
    },
    Block {
        id: ParticipantId,
        source: TrackSource,
        blocked: bool,
    },
    Audit(AuditEntry),
    Ban(BanKeys),
    /// Store the lock and permissions (they survive restarts).
    PersistState,
    /// Store that the meeting ended; the live meeting is gone.
    PersistEnded,
}

/// Why an action was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

pub type Outcome = Result<Vec<Effect>, Refusal>;

/// How long a participant whose connection dropped may come back without the lobby, from the
/// same device: a network blip must not send someone back to wait.
pub const REJOIN_GRACE_MS: u64 = 120_000;

/// A member whose connection dropped, remembered for [`REJOIN_GRACE_MS`].
#[derive(Debug, Clone)]
struct Dropped {
    device_id: String,
    role: Role,
    entry: Entry,
    admitted_by: Option<ParticipantId>,
    at_ms: u64,
}

/// One live meeting's policy state.
#[derive(Debug, Default)]
pub struct MeetingPolicy {
    members: BTreeMap<ParticipantId, Person>,
    lobby: BTreeMap<ParticipantId, Person>,
    state: MeetingState,
    bans: Vec<BanKeys>,
    dropped: Vec<Dropped>,
    ended: bool,
}

impl MeetingPolicy {
    /// A meeting coming alive, with its stored lock and permissions.
    pub fn new(locked: bool, permissions: Permissions) -> Self {
        MeetingPolicy {
            state: MeetingState {
                locked,
                suspended: false,
                permissions,
            },
            ..Default::default()
        }
    }

    pub fn state(&self) -> MeetingState {
        self.state
    }

    pub fn is_member(&self, id: ParticipantId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn is_waiting(&self, id: ParticipantId) -> bool {
        self.lobby.contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.lobby.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Everyone in the meeting but `id`, as it is shown to `id`.
    pub fn others(&self, id: ParticipantId) -> Vec<ParticipantInfo> {
        self.members
            .values()
            .filter(|p| p.knock.id != id)
            .map(Person::info)
            .collect()
    }

    pub fn lobby_entries(&self) -> Vec<LobbyEntry> {
        self.lobby.values().map(Person::lobby_entry).collect()
    }

    pub fn moderators(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.members
            .values()
            .filter(|p| p.role.moderates())
            .map(|p| p.knock.id)
    }

    pub fn members(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.members.keys().copied()
    }

    /// How `id` entered and who admitted it, for the `participant_joined` news.
    pub fn entry_of(
        &self,
        id: ParticipantId,
    ) -> Option<(ParticipantInfo, Entry, Option<ParticipantId>)> {
        self.members
            .get(&id)
            .map(|p| (p.info(), p.entry, p.admitted_by))
    }

    fn is_banned(&self, knock: &Knock) -> bool {
        self.bans.iter().any(|ban| {
            (knock.device_id.is_some() && ban.device_id == knock.device_id)
                || (knock.invitation_id.is_some() && ban.invitation_id == knock.invitation_id)
                || (knock.user_id.is_some() && ban.user_id == knock.user_id)
        })
    }

    /// Someone the gate let through asks to come in: pre-admitted people enter, a member whose
    /// connection just dropped comes back from the same device, everyone else waits in the
    /// lobby, even before any host arrived.
    pub fn knock(&mut self, mut knock: Knock, now_ms: u64) -> Outcome {
        self.dropped
            .retain(|d| now_ms.saturating_sub(d.at_ms) < REJOIN_GRACE_MS);
        let rejoin = knock.device_id.as_ref().and_then(|device| {
            let at = self.dropped.iter().position(|d| &d.device_id == device)?;
            Some(self.dropped.remove(at))
        });
        let mut admitted_by = None;
        if let (Some(back), None) = (rejoin, knock.pre_admitted) {
            knock.pre_admitted = Some(back.entry);
            knock.role = back.role;
            admitted_by = back.admitted_by;
        }
        let id = knock.id;
        let outcome = self.knock_now(knock)?;
        if let Some(person) = self.members.get_mut(&id) {
            if person.admitted_by.is_none() {
                person.admitted_by = admitted_by;
            }
        }
        Ok(outcome)
    }

    fn knock_now(&mut self, knock: Knock) -> Outcome {
        if self.ended {
            return Err(refuse(ErrorCode::MeetingEnded, "the meeting has ended"));
        }
        if self.is_banned(&knock) {
            return Err(refuse(
                ErrorCode::Banned,
                "you were removed from this meeting and cannot rejoin",
            ));
        }
        let host = knock.role == Role::Host;
        if self.state.locked && !host {
            return Err(refuse(
                ErrorCode::Locked,
                "the meeting is locked: no one new gets in until a host unlocks it",
            ));
        }
        let id = knock.id;
        let person = Person {
            role: knock.role,
            entry: knock.pre_admitted.unwrap_or(Entry::Lobby),
            admitted_by: None,
            muted: BTreeSet::new(),
            blocked: BTreeSet::new(),
            knock,
        };
        if person.knock.pre_admitted.is_some() {
            if !host && self.full() {
                return Err(refuse(ErrorCode::MeetingFull, "the meeting is full"));
            }
            return Ok(self.enter(person));
        }
        self.lobby.insert(id, person);
        Ok(vec![Effect::LobbyChanged])
    }

    fn full(&self) -> bool {
        self.members.len() >= self.state.permissions.max_participants as usize
    }

    fn enter(&mut self, mut person: Person) -> Vec<Effect> {
        let id = person.knock.id;
        // Screens are stopped until their owner starts sharing with permission; a suspended
        // meeting keeps newcomers' microphones stopped too.
        person.blocked.insert(TrackSource::Screen);
        if self.state.suspended && !person.role.moderates() {
            person.blocked.insert(TrackSource::Microphone);
            person.muted.insert(TrackSource::Microphone);
        }
        let blocked = person.blocked.iter().copied().collect();
        let audit = AuditEntry {
            event: "admitted",
            actor: person
                .admitted_by
                .and_then(|by| self.members.get(&by))
                .map(|p| p.knock.name.clone()),
            subject: Some(person.knock.name.clone()),
            detail: format!("{:?} as {:?}", person.entry, person.role).to_lowercase(),
        };
        self.members.insert(id, person);
        vec![Effect::Enter { id, blocked }, Effect::Audit(audit)]
    }

    fn actor(&self, actor: ParticipantId) -> Result<&Person, Refusal> {
        self.members.get(&actor).ok_or_else(|| {
            refuse(
                ErrorCode::Forbidden,
                "only participants in the meeting may do this; wait until you are admitted",
            )
        })
    }

    fn moderator(&self, actor: ParticipantId, what: &str) -> Result<&Person, Refusal> {
        let person = self.actor(actor)?;
        if !person.role.moderates() {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!("only hosts and co-hosts may {what}"),
            ));
        }
        Ok(person)
    }

    fn host(&self, actor: ParticipantId, what: &str) -> Result<&Person, Refusal> {
        let person = self.actor(actor)?;
        if person.role != Role::Host {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!("only hosts may {what}"),
            ));
        }
        Ok(person)
    }

    /// A moderator acting on a member: a co-host cannot act on a host.
    fn over(
        &self,
        actor: ParticipantId,
        target: ParticipantId,
        what: &str,
    ) -> Result<(String, String), Refusal> {
        let by = self.moderator(actor, what)?;
        let subject = self.members.get(&target).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownParticipant,
                format!("participant {} is not in the meeting", target.0),
            )
        })?;
        if subject.role == Role::Host && by.role != Role::Host {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!("a co-host cannot {what} a host"),
            ));
        }
        Ok((by.knock.name.clone(), subject.knock.name.clone()))
    }

    fn audit(event: &'static str, actor: &str, subject: Option<&str>, detail: String) -> Effect {
        Effect::Audit(AuditEntry {
            event,
            actor: Some(actor.to_owned()),
            subject: subject.map(str::to_owned),
            detail,
        })
    }

    pub fn admit(&mut self, actor: ParticipantId, target: ParticipantId) -> Outcome {
        let by = self.moderator(actor, "admit people")?.knock.name.clone();
        if !self.lobby.contains_key(&target) {
            return Err(refuse(
                ErrorCode::UnknownParticipant,
                format!("participant {} is not waiting in the lobby", target.0),
            ));
        }
        if self.state.locked {
            return Err(refuse(
                ErrorCode::Locked,
                "the meeting is locked: unlock it to admit anyone",
            ));
        }
        if self.full() {
            return Err(refuse(ErrorCode::MeetingFull, "the meeting is full"));
        }
        let Some(mut person) = self.lobby.remove(&target) else {
            return Err(refuse(ErrorCode::UnknownParticipant, "not waiting"));
        };
        person.entry = Entry::Lobby;
        person.admitted_by = Some(actor);
        let name = person.knock.name.clone();
        let mut effects = self.enter(person);
        effects.retain(|e| !matches!(e, Effect::Audit(_)));
        effects.push(Self::audit(
            "admitted",
            &by,
            Some(&name),
            "from the lobby".into(),
        ));
        effects.push(Effect::LobbyChanged);
        Ok(effects)
    }

    pub fn deny(&mut self, actor: ParticipantId, target: ParticipantId) -> Outcome {
        let by = self.moderator(actor, "deny people")?.knock.name.clone();
        let Some(person) = self.lobby.remove(&target) else {
            return Err(refuse(
                ErrorCode::UnknownParticipant,
                format!("participant {} is not waiting in the lobby", target.0),
            ));
        };
        Ok(vec![
            Effect::Send(
                target,
                ServerMessage::Denied {
                    reason: "a host did not let you in".into(),
                },
            ),
            Effect::Close {
                id: target,
                reason: "denied".into(),
            },
            Self::audit("denied", &by, Some(&person.knock.name), String::new()),
            Effect::LobbyChanged,
        ])
    }

    /// Removal is a ban: identity, device, invitation and account stay out of this meeting.
    pub fn remove(&mut self, actor: ParticipantId, target: ParticipantId) -> Outcome {
        if actor == target {
            return Err(refuse(
                ErrorCode::Forbidden,
                "leave instead of removing yourself",
            ));
        }
        let (by, name) = self.over(actor, target, "remove")?;
        let Some(person) = self.members.remove(&target) else {
            return Err(refuse(ErrorCode::UnknownParticipant, "not in the meeting"));
        };
        let ban = BanKeys {
            name: person.knock.name.clone(),
            device_id: person.knock.device_id.clone(),
            invitation_id: person.knock.invitation_id.clone(),
            user_id: person.knock.user_id,
        };
        self.bans.push(ban.clone());
        Ok(vec![
            Effect::Send(
                target,
                ServerMessage::Removed {
                    reason: format!("{by} removed you from the meeting"),
                },
            ),
            Effect::Exit {
                id: target,
                reason: LeaveReason::Removed,
            },
            Effect::Close {
                id: target,
                reason: "removed".into(),
            },
            Effect::Ban(ban),
            Self::audit(
                "removed",
                &by,
                Some(&name),
                "banned from the meeting".into(),
            ),
        ])
    }

    pub fn send_to_lobby(&mut self, actor: ParticipantId, target: ParticipantId) -> Outcome {
        if actor == target {
            return Err(refuse(
                ErrorCode::Forbidden,
                "you cannot send yourself to the lobby",
            ));
        }
        let (by, name) = self.over(actor, target, "send to the lobby")?;
        let Some(mut person) = self.members.remove(&target) else {
            return Err(refuse(ErrorCode::UnknownParticipant, "not in the meeting"));
        };
        person.admitted_by = None;
        person.muted.clear();
        person.blocked.clear();
        self.lobby.insert(target, person);
        Ok(vec![
            Effect::Exit {
                id: target,
                reason: LeaveReason::SentToLobby,
            },
            Effect::LobbyChanged,
            Self::audit("sent_to_lobby", &by, Some(&name), String::new()),
        ])
    }

    pub fn set_role(&mut self, actor: ParticipantId, target: ParticipantId, role: Role) -> Outcome {
        let by = self.host(actor, "change roles")?.knock.name.clone();
        if actor == target {
            return Err(refuse(
                ErrorCode::Forbidden,
                "hosts cannot change their own role",
            ));
        }
        let Some(person) = self.members.get_mut(&target) else {
            return Err(refuse(
                ErrorCode::UnknownParticipant,
                format!("participant {} is not in the meeting", target.0),
            ));
        };
        person.role = role;
        let name = person.knock.name.clone();
        let mut effects = vec![
            Effect::ToMembers {
                message: ServerMessage::RoleChanged {
                    participant_id: target,
                    role,
                },
                except: None,
            },
            Self::audit(
                "role_changed",
                &by,
                Some(&name),
                format!("{role:?}").to_lowercase(),
            ),
        ];
        if role.moderates() {
            // A new moderator sees the lobby at once.
            effects.push(Effect::LobbyChanged);
        }
        Ok(effects)
    }

    pub fn set_locked(&mut self, actor: ParticipantId, locked: bool) -> Outcome {
        let by = self
            .moderator(actor, "lock the meeting")?
            .knock
            .name
            .clone();
        self.state.locked = locked;
        Ok(vec![
            self.state_changed(),
            Effect::PersistState,
            Self::audit(
                if locked { "locked" } else { "unlocked" },
                &by,
                None,
                String::new(),
            ),
        ])
    }

    fn state_changed(&self) -> Effect {
        Effect::ToMembers {
            message: ServerMessage::MeetingStateChanged {
                meeting_state: self.state,
            },
            except: None,
        }
    }

    fn media_changed(person: &Person, source: TrackSource) -> Effect {
        Effect::ToMembers {
            message: ServerMessage::MediaChanged {
                participant_id: person.knock.id,
                source,
                muted: person.muted.contains(&source),
                blocked: person.blocked.contains(&source),
            },
            except: None,
        }
    }

    /// A moderator stops someone's source: the SFU stops forwarding it.
    pub fn mute(
        &mut self,
        actor: ParticipantId,
        target: ParticipantId,
        source: TrackSource,
    ) -> Outcome {
        let (by, name) = self.over(actor, target, "mute")?;
        let Some(person) = self.members.get_mut(&target) else {
            return Err(refuse(ErrorCode::UnknownParticipant, "not in the meeting"));
        };
        person.muted.insert(source);
        person.blocked.insert(source);
        Ok(vec![
            Effect::Block {
                id: target,
                source,
                blocked: true,
            },
            Self::media_changed(person, source),
            Self::audit(
                "muted",
                &by,
                Some(&name),
                format!("{source:?}").to_lowercase(),
            ),
        ])
    }

    /// A participant mutes or unmutes itself. Unmuting a stopped source needs the meeting's
    /// permission; starting a screen share needs the screen-share permission.
    pub fn set_muted(&mut self, actor: ParticipantId, source: TrackSource, muted: bool) -> Outcome {
        let state = self.state;
        let person = self.members.get_mut(&actor).ok_or_else(|| {
            refuse(
                ErrorCode::Forbidden,
                "only participants in the meeting may do this; wait until you are admitted",
            )
        })?;
        let moderates = person.role.moderates();
        let mut effects = Vec::new();
        if muted {
            person.muted.insert(source);
            if source == TrackSource::Screen && person.blocked.insert(source) {
                effects.push(Effect::Block {
                    id: actor,
                    source,
                    blocked: true,
                });
            }
        } else {
            if !moderates {
                if state.suspended && source != TrackSource::Camera {
                    return Err(refuse(
                        ErrorCode::NotPermitted,
                        "a host suspended the meeting: you cannot unmute or share now",
                    ));
                }
                if source == TrackSource::Screen && !person.role.may(state.permissions.screen_share)
                {
                    return Err(refuse(
                        ErrorCode::NotPermitted,
                        "the hosts have not allowed you to share your screen",
                    ));
                }
                let host_stopped =
                    source != TrackSource::Screen && person.blocked.contains(&source);
                if host_stopped && !state.permissions.allow_unmute {
                    return Err(refuse(
                        ErrorCode::NotPermitted,
                        "a host muted you and does not allow unmuting; ask a host",
                    ));
                }
            }
            person.muted.remove(&source);
            if person.blocked.remove(&source) {
                effects.push(Effect::Block {
                    id: actor,
                    source,
                    blocked: false,
                });
            }
        }
        effects.push(Self::media_changed(person, source));
        Ok(effects)
    }

    pub fn set_permissions(&mut self, actor: ParticipantId, permissions: Permissions) -> Outcome {
        let by = self
            .moderator(actor, "change permissions")?
            .knock
            .name
            .clone();
        if permissions.max_participants == 0 {
            return Err(refuse(
                ErrorCode::InvalidMessage,
                "max_participants must be at least 1",
            ));
        }
        self.state.permissions = permissions;
        let mut effects = vec![self.state_changed(), Effect::PersistState];
        // Screen shares that lost their permission stop now.
        for person in self.members.values_mut() {
            if !person.role.may(permissions.screen_share)
                && person.blocked.insert(TrackSource::Screen)
            {
                person.muted.insert(TrackSource::Screen);
                effects.push(Effect::Block {
                    id: person.knock.id,
                    source: TrackSource::Screen,
                    blocked: true,
                });
                effects.push(Self::media_changed(person, TrackSource::Screen));
            }
        }
        effects.push(Self::audit(
            "permissions_changed",
            &by,
            None,
            format!("{permissions:?}"),
        ));
        Ok(effects)
    }

    /// The panic button: mute every non-moderator, stop every screen share, lock, pause chat.
    pub fn suspend_all(&mut self, actor: ParticipantId) -> Outcome {
        let by = self
            .moderator(actor, "suspend the meeting")?
            .knock
            .name
            .clone();
        self.state.suspended = true;
        self.state.locked = true;
        let mut effects = vec![self.state_changed(), Effect::PersistState];
        for person in self.members.values_mut() {
            let mut stop = vec![TrackSource::Screen];
            if !person.role.moderates() {
                stop.push(TrackSource::Microphone);
            }
            for source in stop {
                person.muted.insert(source);
                if person.blocked.insert(source) {
                    effects.push(Effect::Block {
                        id: person.knock.id,
                        source,
                        blocked: true,
                    });
                }
                effects.push(Self::media_changed(person, source));
            }
        }
        effects.push(Self::audit(
            "suspended",
            &by,
            None,
            "muted everyone, stopped screen shares, locked, paused chat".into(),
        ));
        Ok(effects)
    }

    pub fn resume_all(&mut self, actor: ParticipantId) -> Outcome {
        let by = self
            .moderator(actor, "resume the meeting")?
            .knock
            .name
            .clone();
        self.state.suspended = false;
        Ok(vec![
            self.state_changed(),
            Self::audit("resumed", &by, None, String::new()),
        ])
    }

    /// Whether `id` may send a chat message now.
    pub fn may_chat(&self, id: ParticipantId) -> Result<(), Refusal> {
        let person = self.actor(id)?;
        if self.state.suspended && !person.role.moderates() {
            return Err(refuse(ErrorCode::NotPermitted, "chat is paused by a host"));
        }
        if !person.role.may(self.state.permissions.chat) {
            return Err(refuse(
                ErrorCode::NotPermitted,
                "the hosts have turned chat off for your role",
            ));
        }
        Ok(())
    }

    pub fn end(&mut self, actor: ParticipantId) -> Outcome {
        let by = self.host(actor, "end the meeting")?.knock.name.clone();
        self.ended = true;
        let everyone: Vec<ParticipantId> = self
            .members
            .keys()
            .chain(self.lobby.keys())
            .copied()
            .collect();
        let mut effects = Vec::new();
        for id in everyone {
            effects.push(Effect::Send(id, ServerMessage::MeetingEnded));
            if self.members.contains_key(&id) {
                effects.push(Effect::Exit {
                    id,
                    reason: LeaveReason::MeetingEnded,
                });
            }
            effects.push(Effect::Close {
                id,
                reason: "meeting ended".into(),
            });
        }
        self.members.clear();
        self.lobby.clear();
        effects.push(Effect::PersistEnded);
        effects.push(Self::audit("ended", &by, None, String::new()));
        Ok(effects)
    }

    /// Someone's connection is gone (or it left): out of the meeting or the lobby. A member
    /// whose connection dropped may come back from the same device for a while.
    pub fn leave(&mut self, id: ParticipantId, reason: LeaveReason, now_ms: u64) -> Vec<Effect> {
        if self.lobby.remove(&id).is_some() {
            return vec![Effect::LobbyChanged];
        }
        if let Some(person) = self.members.remove(&id) {
            if let (LeaveReason::Disconnected, Some(device_id)) = (reason, person.knock.device_id) {
                self.dropped.push(Dropped {
                    device_id,
                    role: person.role,
                    entry: person.entry,
                    admitted_by: person.admitted_by,
                    at_ms: now_ms,
                });
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
