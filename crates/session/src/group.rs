//! A participant's side of the meeting's MLS group, as a pure state machine: it turns server
//! messages and the passing of time into MLS messages to send, and holds the keys that
//! encrypt and decrypt media. Time is passed in (milliseconds); nothing here does IO.
//!
//! Who commits: every member computes the same outstanding work (admitted KeyPackages of
//! present participants to add, members who left to remove) and ranks itself by leaf index.
//! The lowest leaf commits at once; the next one after 1 s if nothing happened, and so on,
//! so the group keeps re-keying when its first member is slow or gone. The delivery service
//! accepts one Commit per epoch; a loser discards its own and processes the winner's.
//!
//! What the server says about people (who came with the host link, who admitted whom, who is
//! a co-host) decides nothing here. A host's client signs an admission only for someone its own
//! user admitted from the lobby; a KeyPackage that proves a host link or a skip-lobby invitation
//! is added by any member without one; MLS host powers are granted and taken back only when this
//! client's own user decides ([`GroupSession::set_cohost`]). Times are Unix milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use e2ee::{
    DeviceKey, E2eeError, EntryProof, HostLinkSecret, Identity, Invitation, MediaKind,
    MeetingPublicKey, Member, PendingJoin, Processed,
};
use proto::{
    AppMessagePurpose, ClientMessage, Entry, ErrorCode, MeetingState, ParticipantInfo, Role,
    ServerMessage,
};
use serde::{Deserialize, Serialize};

/// How long each rank waits for lower-ranked members before committing itself.
const COMMITTER_FALLBACK_MS: u64 = 1000;
/// An epoch's members: leaf → (name, participant id).
type Roster = HashMap<u32, (String, String)>;
/// Rosters kept for frames still in flight from earlier epochs: at least as many epochs as
/// the media keys still decrypt (e2ee keeps a few retired epochs for a grace period).
const ROSTER_EPOCHS: usize = 4;

/// What this participant's link gave it: the secrets in its `#fragment` that the server never
/// sees; and the key of the device it runs on.
#[derive(Clone, Default)]
pub struct LinkSecrets {
    /// `#host=`: this participant holds the host link (a host of the meeting).
    pub host_link: Option<HostLinkSecret>,
    /// `#invite=`: an invitation a host's client issued.
    pub invitation: Option<Invitation>,
    /// `#k=` (or the host link's own): the only meeting key whose group this participant
    /// enters.
    pub meeting_key: Option<MeetingPublicKey>,
    /// Not from the link: the key this client keeps across its reconnections to the meeting,
    /// so that hosts let it back in after a drop (see [`e2ee::continuity`]).
    pub device: Option<DeviceKey>,
}

impl LinkSecrets {
    /// The meeting key to hold the group to: the link's `#k=`, or the host link's own.
    fn expected_meeting_key(&self) -> Option<MeetingPublicKey> {
        self.meeting_key.or_else(|| {
            self.host_link
                .as_ref()
                .map(|link| link.meeting_key().public())
        })
    }
}

/// Who the server says let someone in from the lobby, when no host of the group did.
#[derive(Debug, Clone, Copy)]
enum AdmissionClaim {
    /// This client, whose user did not.
    ByThisUser,
    /// Someone who is not a host of the encrypted meeting.
    ByNonHost,
}

impl AdmissionClaim {
    fn alarm(self, name: &str) -> String {
        match self {
            AdmissionClaim::ByThisUser => format!(
                "the server tried to add someone no host admitted: it says you let \"{name}\" in, but you did not"
            ),
            AdmissionClaim::ByNonHost => format!(
                "the server tried to add someone no host admitted: it says \"{name}\" was let in by someone who is not a host of the encrypted meeting; they stay out until a host admits them"
            ),
        }
    }
}

enum State {
    /// Waiting for a Welcome with the KeyPackage already published.
    Waiting(Box<PendingJoin>),
    Member(Box<Member>),
    /// Removed from the group, or the group is gone: no keys.
    Outside,
}

/// What the E2EE part of a bot's report says.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct E2eeReport {
    pub epoch: u64,
    pub security_code: String,
    pub decrypted: u64,
    pub decrypt_failures: u64,
    /// Frames encrypted in an epoch before this participant joined: unreadable by design.
    pub undecryptable_before_join: u64,
    /// Commits refused because they add someone no host admitted (or similar attacks).
    pub alarms: Vec<String>,
    pub commits_made: u64,
}

/// Why a frame could not be opened.
#[derive(Debug)]
pub enum Unopened {
    /// Encrypted before this participant joined (or while it is outside the group):
    /// unreadable by design, not a failure.
    NotForUs,
    /// Encrypted under keys this participant does not hold yet (a Commit is still on its
    /// way): try again after the next group change. Not counted yet.
    NotYet(E2eeError),
    /// Decryption failed: a fault or an attack.
    Failed(E2eeError),
}

/// Something the participant's user interface shows. Sender names and ids come from MLS
/// credentials, never from what the server says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupEvent {
    /// The group moved to a new epoch (or this participant entered it): new media keys and a
    /// new security code to compare aloud.
    KeysChanged {
        epoch: u64,
        security_code: String,
        security_emoji: String,
        /// Names in the group, by MLS credential.
        members: Vec<String>,
        /// Participant ids (from MLS credentials) of the group's hosts: host-link holders and
        /// the co-hosts they promoted, as every member verified.
        hosts: Vec<String>,
    },
    Chat {
        from_participant_id: String,
        from_name: String,
        text: String,
    },
    Reaction {
        from_participant_id: String,
        from_name: String,
        emoji: String,
    },
    /// A host locked or unlocked the meeting at the MLS level: while locked, no one is added.
    LockChanged { locked: bool },
    /// Something a participant must be told about: a refused Commit, a mislabelled message.
    Alarm { message: String },
    /// This participant was removed from the group: it holds no keys any more.
    Removed,
}

/// A decrypted frame and who sent it, by the MLS credential (not by what the server says).
pub struct Opened {
    pub plaintext: Vec<u8>,
    pub sender_name: String,
    pub sender_participant_id: String,
}

pub struct GroupSession {
    name: String,
    participant_id: u64,
    state: State,
    /// Everyone in the meeting according to signaling, this participant included.
    present: BTreeSet<u64>,
    /// Roles as the server reports them (for chat permissions only: never for admissions or
    /// host powers).
    roles: HashMap<u64, Role>,
    /// Participants this client, if it is an MLS host, vouches for: those its own user
    /// admitted from the lobby.
    vouched: HashSet<u64>,
    /// Lobby admissions this client's user asked for ([`GroupSession::admission_requested`]):
    /// the server saying "you admitted them" counts only for these.
    requested: HashSet<u64>,
    /// Participants the server says came with the host link or a skip-lobby invitation, with
    /// the name it gives: their KeyPackage must prove it.
    claimed_entries: HashMap<u64, (Entry, String)>,
    /// Participants the server says a host let in from the lobby, where that host is this
    /// client (whose user did not) or not a host of the group, with the name it gives: only a
    /// device coming back after a drop (see [`Member::returning`]) explains that.
    claimed_admissions: HashMap<u64, (AdmissionClaim, String)>,
    /// What this participant's link gave it.
    secrets: LinkSecrets,
    /// Co-host promotions (true) and demotions (false) this client's user decided, by
    /// participant id, not yet committed.
    host_changes: BTreeMap<u64, bool>,
    meeting_state: MeetingState,
    /// KeyPackages of waiting participants, with their hashes.
    key_packages: HashMap<u64, (Vec<u8>, [u8; 32])>,
    admitted: HashSet<[u8; 32]>,
    /// Hosts admit everyone the server announces (unit tests of the committer logic only).
    auto_admit: bool,
    commit_pending: bool,
    work_since_ms: Option<u64>,
    joined_at_ms: Option<u64>,
    /// The epoch this participant entered the group in: older messages are not for it.
    joined_epoch: u64,
    /// The epoch of the last admissions this host sent; admissions only count in their epoch.
    admitted_in_epoch: Option<u64>,
    out: VecDeque<ClientMessage>,
    /// Leaf → (name, participant id) of the current epoch and the few before it, newest
    /// first; read for every decrypted frame, so kept here instead of decoding credentials
    /// each time. A frame names its sender by leaf *in the epoch it was sent in*: a member who
    /// just left is still the sender of its frames in flight, and a later joiner who takes
    /// the same leaf is not.
    rosters: VecDeque<(u64, Roster)>,
    report: E2eeReport,
    errors: Vec<String>,
    events: VecDeque<GroupEvent>,
}

impl GroupSession {
    /// Starts from the server's `welcome` (anything else is refused).
    pub fn from_welcome(
        name: &str,
        welcome: &ServerMessage,
        secrets: LinkSecrets,
        now_ms: u64,
    ) -> Result<Self, E2eeError> {
        let ServerMessage::Welcome {
            participant_id,
            participants,
            create_group,
            meeting_state,
            role,
            ..
        } = welcome
        else {
            return Err(E2eeError::Malformed("a session starts from a welcome"));
        };
        let group_id = match create_group {
            Some(id) => {
                Some(proto::b64_decode(id).ok_or(E2eeError::Malformed("group id is not base64"))?)
            }
            None => None,
        };
        let mut session = GroupSession::new(
            name,
            participant_id.0,
            participants.iter().map(|p| p.id.0),
            group_id.as_deref(),
            secrets,
            now_ms,
        )?;
        session.auto_admit = false;
        session.meeting_state = *meeting_state;
        session.roles.insert(participant_id.0, *role);
        for p in participants {
            session.note_participant(p);
        }
        Ok(session)
    }

    /// Starts with the welcome: either creates the group (`create_group` set, for the first
    /// host) or publishes a KeyPackage and waits to be added.
    fn new(
        name: &str,
        participant_id: u64,
        others: impl IntoIterator<Item = u64>,
        create_group: Option<&[u8]>,
        secrets: LinkSecrets,
        now_ms: u64,
    ) -> Result<Self, E2eeError> {
        let mut session = GroupSession {
            name: name.to_owned(),
            participant_id,
            state: State::Outside,
            present: others.into_iter().chain([participant_id]).collect(),
            roles: HashMap::new(),
            vouched: HashSet::new(),
            requested: HashSet::new(),
            claimed_entries: HashMap::new(),
            claimed_admissions: HashMap::new(),
            secrets,
            host_changes: BTreeMap::new(),
            meeting_state: MeetingState::default(),
            key_packages: HashMap::new(),
            admitted: HashSet::new(),
            auto_admit: true,
            commit_pending: false,
            work_since_ms: None,
            joined_at_ms: None,
            joined_epoch: 0,
            admitted_in_epoch: None,
            out: VecDeque::new(),
            rosters: VecDeque::new(),
            report: E2eeReport::default(),
            errors: Vec::new(),
            events: VecDeque::new(),
        };
        match create_group {
            Some(group_id) => session.create(group_id, now_ms)?,
            None => session.wait_for_welcome()?,
        }
        Ok(session)
    }

    fn identity(&self) -> Result<Identity, E2eeError> {
        let identity = Identity::generate(&self.name, &self.participant_id.to_string())?;
        Ok(match &self.secrets.device {
            Some(device) => identity.with_device(device.clone()),
            None => identity,
        })
    }

    fn create(&mut self, group_id: &[u8], now_ms: u64) -> Result<(), E2eeError> {
        // Only a host-link holder can open the group: its record is signed by the meeting key.
        let Some(host_link) = &self.secrets.host_link else {
            return Err(E2eeError::NotHost);
        };
        let member = Member::create_group(self.identity()?, group_id, host_link)?;
        self.state = State::Member(Box::new(member));
        self.joined_at_ms = Some(now_ms);
        self.commit_pending = false;
        self.keys_changed();
        Ok(())
    }

    /// Queues a [`GroupEvent::KeysChanged`] for the current epoch.
    fn keys_changed(&mut self) {
        if let State::Member(member) = &self.state {
            self.events.push_back(GroupEvent::KeysChanged {
                epoch: member.epoch(),
                security_code: member.security_code(),
                security_emoji: member.security_emoji(),
                members: member
                    .members()
                    .into_iter()
                    .map(|(_, name, _)| name)
                    .collect(),
                hosts: {
                    let hosts = member.hosts();
                    member
                        .members()
                        .into_iter()
                        .filter(|(leaf, _, _)| hosts.contains(leaf))
                        .map(|(_, _, pid)| pid)
                        .collect()
                },
            });
        }
    }

    /// The next thing to show the user.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    fn alarm(&mut self, message: String) {
        self.report.alarms.push(message.clone());
        self.events.push_back(GroupEvent::Alarm { message });
    }

    /// Sends a chat message to the group, end-to-end encrypted.
    pub fn send_chat(&mut self, text: &str) -> Result<(), E2eeError> {
        let data = self.member()?.encrypt_chat(text)?;
        self.out.push_back(ClientMessage::MlsMessage {
            data: proto::b64_encode(&data),
            purpose: AppMessagePurpose::Chat,
        });
        Ok(())
    }

    /// Sends a reaction to the group, end-to-end encrypted (not subject to the chat permission).
    pub fn send_reaction(&mut self, emoji: &str) -> Result<(), E2eeError> {
        let data = self.member()?.encrypt_reaction(emoji)?;
        self.out.push_back(ClientMessage::MlsMessage {
            data: proto::b64_encode(&data),
            purpose: AppMessagePurpose::Control,
        });
        Ok(())
    }

    /// Records a participant the server announces, and whether this client vouches for it.
    fn note_participant(&mut self, p: &ParticipantInfo) {
        self.present.insert(p.id.0);
        self.roles.insert(p.id.0, p.role);
    }

    fn on_participant_joined(
        &mut self,
        p: &ParticipantInfo,
        entry: Entry,
        admitted_by: Option<u64>,
    ) {
        self.note_participant(p);
        match (entry, admitted_by) {
            (Entry::HostLink | Entry::Invitation, _) => {
                self.claimed_entries.insert(p.id.0, (entry, p.name.clone()));
            }
            // Whether the claim holds is known when its KeyPackage shows whether it comes back
            // from a device that just dropped.
            (Entry::Lobby, Some(by)) if by == self.participant_id => {
                if !self.requested.contains(&p.id.0) {
                    self.claimed_admissions
                        .insert(p.id.0, (AdmissionClaim::ByThisUser, p.name.clone()));
                }
            }
            (Entry::Lobby, Some(by)) => {
                if let State::Member(member) = &self.state {
                    let hosts = member.hosts();
                    let by_is_host = member
                        .members()
                        .iter()
                        .any(|(leaf, _, pid)| hosts.contains(leaf) && pid.parse() == Ok(by));
                    if !by_is_host {
                        self.claimed_admissions
                            .insert(p.id.0, (AdmissionClaim::ByNonHost, p.name.clone()));
                    }
                }
            }
            (Entry::Lobby, None) => {}
        }
        // Only an admission this client's own user made is vouched for. How the server says
        // someone came in (host link, invitation, another moderator) is not evidence: a joiner
        // with a host link or a skip-lobby invitation proves it in its KeyPackage, and anyone
        // else waits for an MLS host's own admission.
        if admitted_by == Some(self.participant_id) && self.requested.remove(&p.id.0) {
            self.vouched.insert(p.id.0);
        } else {
            self.vouched.remove(&p.id.0);
        }
    }

    /// This client's user admits `participant` from the lobby (the client sends `admit`). Only
    /// then does this client vouch for it when the server reports it admitted by us.
    pub fn admission_requested(&mut self, participant: u64) {
        self.requested.insert(participant);
    }

    /// This client's user (a host-link holder) makes `participant` a co-host in the group, or
    /// takes it back. Committed at the next [`GroupSession::tick`] when this participant holds
    /// the host link; the server's report of roles never does this by itself.
    pub fn set_cohost(&mut self, participant: u64, cohost: bool) {
        if participant != self.participant_id {
            self.host_changes.insert(participant, cohost);
        }
    }

    /// Whether this participant holds the host link.
    pub fn holds_host_link(&self) -> bool {
        self.secrets.host_link.is_some()
    }

    fn wait_for_welcome(&mut self) -> Result<(), E2eeError> {
        let proof = match (&self.secrets.host_link, &self.secrets.invitation) {
            (Some(link), _) => Some(EntryProof::HostLink(link)),
            (None, Some(invitation)) => Some(EntryProof::Invitation(invitation)),
            (None, None) => None,
        };
        let (pending, key_package) =
            Member::new_pending_with(self.identity()?, proof, self.secrets.expected_meeting_key())?;
        self.state = State::Waiting(Box::new(pending));
        self.out.push_back(ClientMessage::MlsKeyPackage {
            key_package: proto::b64_encode(&key_package),
        });
        Ok(())
    }

    pub fn is_member(&self) -> bool {
        matches!(self.state, State::Member(_))
    }

    pub fn poll_message(&mut self) -> Option<ClientMessage> {
        self.out.pop_front()
    }

    pub fn participant_joined(&mut self, id: u64) {
        self.present.insert(id);
    }

    pub fn participant_left(&mut self, id: u64) {
        self.present.remove(&id);
        self.key_packages.remove(&id);
        self.vouched.remove(&id);
        self.roles.remove(&id);
        self.host_changes.remove(&id);
        self.claimed_entries.remove(&id);
        self.claimed_admissions.remove(&id);
    }

    /// This client's user removed `participant` from the meeting (the client sends `remove`).
    /// A host's client bars the participant's device in the group, so no member lets it back
    /// in as a returning device; a non-host's client has nothing to do.
    pub fn removed_by_this_user(&mut self, participant: u64) {
        let Ok(member) = self.member() else {
            return;
        };
        if !member.is_host(member.leaf_index()) {
            return;
        }
        match member.bar(&participant.to_string()) {
            Ok(Some(data)) => self.out.push_back(ClientMessage::MlsMessage {
                data: proto::b64_encode(&data),
                purpose: AppMessagePurpose::Control,
            }),
            Ok(None) => {}
            Err(e) => self
                .errors
                .push(format!("mls: cannot bar a removed device: {e}")),
        }
    }

    pub fn report(&self) -> E2eeReport {
        let mut report = self.report.clone();
        if let State::Member(member) = &self.state {
            report.epoch = member.epoch();
            report.security_code = member.security_code();
        }
        report
    }

    /// Problems worth a line in the bot's error list.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Handles an MLS-related server message. Others are ignored.
    pub fn on_server_message(&mut self, msg: &ServerMessage, now_ms: u64) {
        let result = match msg {
            ServerMessage::MlsCreateGroup { group_id } => match proto::b64_decode(group_id) {
                Some(id) => self.create(&id, now_ms),
                None => Err(E2eeError::Malformed("group id is not base64")),
            },
            ServerMessage::MlsKeyPackage {
                participant_id,
                key_package,
            } => self.on_key_package(participant_id.0, key_package, now_ms),
            ServerMessage::MlsWelcome { welcome } => self.on_welcome(welcome, now_ms),
            ServerMessage::MlsCommit { commit, .. } => self.on_commit(commit, now_ms),
            ServerMessage::MlsCommitAccepted { .. } => self.on_commit_accepted(now_ms),
            ServerMessage::MlsMessage { data, purpose, .. } => {
                self.on_application(data, *purpose, now_ms)
            }
            ServerMessage::ParticipantJoined {
                participant,
                entry,
                admitted_by,
            } => {
                self.on_participant_joined(participant, *entry, admitted_by.map(|p| p.0));
                Ok(())
            }
            ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            } => {
                // Removed by a host: not a device to take back after a drop. Believing the
                // server here can only keep someone out.
                if *reason == proto::LeaveReason::Removed {
                    if let State::Member(member) = &mut self.state {
                        member.refuse_return(&participant_id.0.to_string());
                    }
                }
                self.participant_left(participant_id.0);
                Ok(())
            }
            ServerMessage::RoleChanged {
                participant_id,
                role,
            } => {
                self.roles.insert(participant_id.0, *role);
                Ok(())
            }
            ServerMessage::MeetingStateChanged { meeting_state } => {
                self.meeting_state = *meeting_state;
                Ok(())
            }
            ServerMessage::Error {
                code: ErrorCode::StaleEpoch,
                ..
            } => self.on_stale_commit(),
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.errors.push(format!("mls: {e}"));
        }
        self.note_roster();
    }

    /// Keeps the roster of each epoch this member reaches (called wherever epochs change).
    fn note_roster(&mut self) {
        let State::Member(member) = &self.state else {
            return;
        };
        let epoch = member.epoch();
        if self.rosters.front().is_some_and(|(e, _)| *e == epoch) {
            return;
        }
        let roster = member
            .members()
            .into_iter()
            .map(|(leaf, name, pid)| (leaf, (name, pid)))
            .collect();
        self.rosters.push_front((epoch, roster));
        self.rosters.truncate(ROSTER_EPOCHS);
    }

    fn member(&mut self) -> Result<&mut Member, E2eeError> {
        match &mut self.state {
            State::Member(member) => Ok(member),
            _ => Err(E2eeError::NotMember),
        }
    }

    fn on_key_package(&mut self, from: u64, encoded: &str, now_ms: u64) -> Result<(), E2eeError> {
        let bytes = proto::b64_decode(encoded).ok_or(E2eeError::Malformed("not base64"))?;
        let hash = e2ee::key_package_hash(&bytes)?;
        // The server said this participant came with the host link or a skip-lobby
        // invitation: its KeyPackage must prove it. If it cannot, the server lied.
        if let (Some((entry, name)), State::Member(member)) =
            (self.claimed_entries.get(&from), &self.state)
        {
            if member.admissibility(&bytes, now_ms).is_err() {
                let how = match entry {
                    Entry::HostLink => "the host link",
                    _ => "an invitation that skips the lobby",
                };
                let message = format!(
                    "the server tried to add someone no host admitted: it says \"{name}\" came with {how}, but they cannot prove it; they are kept out"
                );
                self.claimed_entries.remove(&from);
                self.alarm(message);
            }
        }
        // The server says a host let this participant in, and no host of the group did: true
        // only of a device coming back after a dropped connection, which members check
        // themselves. Then this client, if it is a host, admits it again.
        if let Some((claim, name)) = self.claimed_admissions.remove(&from) {
            let returning = match &mut self.state {
                // The leaf it replaces must be gone from the meeting: a device does not sit
                // in it twice.
                State::Member(member) => member
                    .returning(&bytes, now_ms)
                    .is_ok_and(|pid| pid.parse().map_or(true, |p| !self.present.contains(&p))),
                _ => false,
            };
            if returning {
                self.vouched.insert(from);
            } else {
                self.alarm(claim.alarm(&name));
            }
        }
        self.key_packages.insert(from, (bytes, hash));
        let vouched = self.auto_admit || self.vouched.contains(&from);
        let locked = self.meeting_state.locked;
        let member = self.member()?;
        if vouched && !locked && member.is_host(member.leaf_index()) {
            // A KeyPackage may prove its own admission, in which case no signature is needed;
            // signing anyway is harmless, and it keeps a lobby admission by this host working
            // for a joiner whose proof has just expired.
            let admission = member.admit(hash)?;
            self.admitted.insert(hash);
            self.out.push_back(ClientMessage::MlsMessage {
                data: proto::b64_encode(&admission),
                purpose: AppMessagePurpose::Control,
            });
        }
        Ok(())
    }

    fn on_welcome(&mut self, encoded: &str, now_ms: u64) -> Result<(), E2eeError> {
        let bytes = proto::b64_decode(encoded).ok_or(E2eeError::Malformed("not base64"))?;
        match std::mem::replace(&mut self.state, State::Outside) {
            State::Waiting(pending) => {
                let member = match pending.join(&bytes, None) {
                    Ok(member) => member,
                    Err(e) => {
                        if let E2eeError::ForgedGroup(why) = &e {
                            self.alarm(format!(
                                "refused to join a group the server offered: {why}; someone is trying to make this meeting look like another"
                            ));
                        }
                        // The KeyPackage's keys went into the refused Welcome: publish a
                        // fresh one, so that the meeting's real group can still add us.
                        self.wait_for_welcome()?;
                        return Err(e);
                    }
                };
                self.joined_epoch = member.epoch();
                self.state = State::Member(Box::new(member));
                self.joined_at_ms = Some(now_ms);
                self.keys_changed();
                Ok(())
            }
            other => {
                self.state = other;
                Err(E2eeError::Malformed("a Welcome while not waiting"))
            }
        }
    }

    fn on_commit(&mut self, encoded: &str, now_ms: u64) -> Result<(), E2eeError> {
        let bytes = proto::b64_decode(encoded).ok_or(E2eeError::Malformed("not base64"))?;
        let had_pending = std::mem::take(&mut self.commit_pending);
        self.work_since_ms = None;
        let member = self.member()?;
        if had_pending {
            // Another member's Commit won this epoch; ours will be refused as stale.
            member.discard_pending_commit()?;
        }
        let processed = member.process(&bytes, now_ms);
        match processed {
            Ok(Processed::CommitMerged {
                self_removed: true, ..
            }) => {
                self.state = State::Outside;
                self.events.push_back(GroupEvent::Removed);
                Ok(())
            }
            Ok(_) => {
                self.keys_changed();
                Ok(())
            }
            Err(E2eeError::UnadmittedAdd { name }) => {
                self.alarm(format!(
                    "the server tried to add someone no host admitted (calling themselves \"{name}\"); they were refused and the meeting stays on its current keys"
                ));
                Err(E2eeError::UnadmittedAdd { name })
            }
            Err(e @ (E2eeError::NotHost | E2eeError::ForgedProof(_))) => {
                self.alarm(format!(
                    "refused a change of hosts that no holder of the host link signed ({e})"
                ));
                Err(e)
            }
            Err(E2eeError::Locked) => {
                self.alarm(
                    "refused a Commit that adds someone while a host has locked the meeting".into(),
                );
                Err(E2eeError::Locked)
            }
            Err(e) => Err(e),
        }
    }

    fn on_commit_accepted(&mut self, now_ms: u64) -> Result<(), E2eeError> {
        if !std::mem::take(&mut self.commit_pending) {
            return Ok(());
        }
        self.work_since_ms = None;
        self.member()?.merge_pending_commit(now_ms)?;
        self.keys_changed();
        Ok(())
    }

    fn on_stale_commit(&mut self) -> Result<(), E2eeError> {
        if std::mem::take(&mut self.commit_pending) {
            self.member()?.discard_pending_commit()?;
        }
        Ok(())
    }

    fn on_application(
        &mut self,
        encoded: &str,
        purpose: AppMessagePurpose,
        now_ms: u64,
    ) -> Result<(), E2eeError> {
        let bytes = proto::b64_decode(encoded).ok_or(E2eeError::Malformed("not base64"))?;
        if e2ee::inspect(&bytes)?
            .epoch
            .is_some_and(|epoch| epoch < self.joined_epoch)
        {
            // Sent to the group before this participant was in it.
            return Ok(());
        }
        let processed = match self.member()?.process(&bytes, now_ms) {
            Err(E2eeError::NotHost) => {
                self.alarm(
                    "refused an admission or a lock from a member who is not a host: nobody gets in on it"
                        .into(),
                );
                return Err(E2eeError::NotHost);
            }
            other => other?,
        };
        let sender = |leaf: u32, this: &mut Self| -> Option<(String, String)> {
            let member = this.member().ok()?;
            member
                .members()
                .into_iter()
                .find(|(l, _, _)| *l == leaf)
                .map(|(_, name, pid)| (pid, name))
        };
        match processed {
            Processed::Admission { kp_hash, .. } => {
                self.admitted.insert(kp_hash);
            }
            Processed::Chat {
                from_leaf, text, ..
            } => {
                let Some((pid, name)) = sender(from_leaf, self) else {
                    return Err(E2eeError::NoSuchLeaf(from_leaf));
                };
                let role = pid
                    .parse()
                    .ok()
                    .and_then(|p: u64| self.roles.get(&p).copied());
                let allowed = role.is_some_and(|r| {
                    r.may(self.meeting_state.permissions.chat)
                        && (!self.meeting_state.suspended || r.moderates())
                });
                if purpose != AppMessagePurpose::Chat {
                    // Labelled as control to slip past the server's chat permission.
                    self.alarm(format!(
                        "dropped a chat message from {name} that was not labelled as chat"
                    ));
                } else if !allowed {
                    self.alarm(format!(
                        "dropped a chat message from {name}: chat is not allowed for them"
                    ));
                } else {
                    self.events.push_back(GroupEvent::Chat {
                        from_participant_id: pid,
                        from_name: name,
                        text,
                    });
                }
            }
            Processed::Reaction {
                from_leaf, emoji, ..
            } => {
                if let Some((pid, name)) = sender(from_leaf, self) {
                    self.events.push_back(GroupEvent::Reaction {
                        from_participant_id: pid,
                        from_name: name,
                        emoji,
                    });
                }
            }
            Processed::LockChanged { locked, .. } => {
                self.events.push_back(GroupEvent::LockChanged { locked });
            }
            _ => {}
        }
        Ok(())
    }

    /// Commits outstanding adds and removals when it is this member's turn, and the co-host
    /// changes this client's user decided.
    pub fn tick(&mut self, now_ms: u64) {
        if self.commit_pending {
            return;
        }
        self.readmit_in_new_epoch();
        self.mirror_lock();
        let State::Member(member) = &mut self.state else {
            return;
        };
        let members = member.members();
        let in_group: HashSet<u64> = members
            .iter()
            .filter_map(|(_, _, pid)| pid.parse().ok())
            .collect();
        let removals: Vec<u32> = members
            .iter()
            .filter(|(leaf, _, pid)| {
                *leaf != member.leaf_index()
                    && pid.parse().is_ok_and(|p: u64| !self.present.contains(&p))
            })
            .map(|(leaf, _, _)| *leaf)
            .collect();
        // Admitted by a host's Admission, or proving its own admission (host link, skip-lobby
        // invitation); `commit_add` checks again, and every member vets the Commit.
        let additions: Vec<&Vec<u8>> = self
            .key_packages
            .iter()
            .filter(|(pid, (kp, hash))| {
                self.present.contains(pid)
                    && !in_group.contains(pid)
                    && (self.admitted.contains(hash) || member.admissibility(kp, now_ms).is_ok())
            })
            .map(|(_, (kp, _))| kp)
            .collect();
        // Co-host changes this user decided: only a host-link holder can sign them, and each
        // is committed by that holder alone (no rank: nobody else could).
        let hosts = member.hosts();
        let host_change = match &self.secrets.host_link {
            Some(_) => self.host_changes.iter().find_map(|(pid, cohost)| {
                let leaf = members
                    .iter()
                    .find(|(_, _, p)| p.parse() == Ok(*pid))
                    .map(|(leaf, _, _)| *leaf)?;
                (hosts.contains(&leaf) != *cohost).then_some((leaf, *cohost))
            }),
            None => None,
        };
        // Decisions already in effect (or about people not in the group yet) wait no more.
        let decided: Vec<u64> = self
            .host_changes
            .iter()
            .filter(|(pid, cohost)| {
                members
                    .iter()
                    .any(|(leaf, _, p)| p.parse() == Ok(**pid) && hosts.contains(leaf) == **cohost)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in decided {
            self.host_changes.remove(&pid);
        }
        if removals.is_empty() && additions.is_empty() && host_change.is_none() {
            self.work_since_ms = None;
            return;
        }
        let since = *self.work_since_ms.get_or_insert(now_ms);
        let rank = if removals.is_empty() && additions.is_empty() {
            0
        } else {
            members
                .iter()
                .filter(|(leaf, _, _)| *leaf < member.leaf_index())
                .count() as u64
        };
        if now_ms.saturating_sub(since) < rank * COMMITTER_FALLBACK_MS {
            return;
        }
        let result = match (removals.is_empty(), additions.is_empty(), host_change) {
            (true, true, Some((leaf, true))) => match &self.secrets.host_link {
                Some(link) => member.grant_host(leaf, link).map(|c| (c, None)),
                None => Err(E2eeError::NotHost),
            },
            (true, true, Some((leaf, false))) => member.revoke_host(leaf).map(|c| (c, None)),
            (true, false, _) => {
                let kps: Vec<&[u8]> = additions.iter().map(|kp| kp.as_slice()).collect();
                member
                    .commit_add(&kps, now_ms)
                    .map(|(commit, welcome)| (commit, Some(welcome)))
            }
            _ => member.commit_remove(&removals).map(|commit| (commit, None)),
        };
        match result {
            Ok((commit, welcome)) => {
                self.commit_pending = true;
                self.report.commits_made += 1;
                self.out.push_back(ClientMessage::MlsCommit {
                    commit: proto::b64_encode(&commit),
                    welcome: welcome.map(|w| proto::b64_encode(&w)),
                });
            }
            Err(e) => self.errors.push(format!("mls: cannot commit: {e}")),
        }
    }

    /// An MLS host mirrors the server's lock into the group, where it binds every member.
    fn mirror_lock(&mut self) {
        let want = self.meeting_state.locked;
        let State::Member(member) = &mut self.state else {
            return;
        };
        if !member.is_host(member.leaf_index()) || member.is_locked() == want {
            return;
        }
        match member.set_locked(want) {
            Ok(data) => self.out.push_back(ClientMessage::MlsMessage {
                data: proto::b64_encode(&data),
                purpose: AppMessagePurpose::Control,
            }),
            Err(e) => self
                .errors
                .push(format!("mls: cannot mirror the lock: {e}")),
        }
    }

    /// A frame held with [`Unopened::NotYet`] never became readable.
    pub fn count_failure(&mut self) {
        self.report.decrypt_failures += 1;
    }

    /// Admissions hold only in the epoch they were sent in, and members who joined since never
    /// saw them: a host repeats its admissions of those still waiting after each epoch change,
    /// before any Commit of that epoch can name them.
    fn readmit_in_new_epoch(&mut self) {
        let State::Member(member) = &mut self.state else {
            return;
        };
        if !member.is_host(member.leaf_index()) {
            return;
        }
        let epoch = member.epoch();
        let Some(previous) = self.admitted_in_epoch.replace(epoch) else {
            return;
        };
        if previous == epoch {
            return;
        }
        let in_group: HashSet<u64> = member
            .members()
            .iter()
            .filter_map(|(_, _, pid)| pid.parse().ok())
            .collect();
        for (pid, (_, hash)) in &self.key_packages {
            if in_group.contains(pid) || !self.admitted.contains(hash) {
                continue;
            }
            match member.admit(*hash) {
                Ok(admission) => self.out.push_back(ClientMessage::MlsMessage {
                    data: proto::b64_encode(&admission),
                    purpose: proto::AppMessagePurpose::Control,
                }),
                Err(e) => self.errors.push(format!("mls: cannot admit: {e}")),
            }
        }
    }

    /// Encrypts a frame for the group; None when this participant holds no group keys.
    pub fn encrypt(&mut self, kind: MediaKind, frame: &[u8]) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Member(member) => member.encrypt_frame(kind, frame).ok(),
            _ => None,
        }
    }

    /// Decrypts a frame. Frames from before this participant joined are counted apart: they
    /// are unreadable by design.
    pub fn decrypt(
        &mut self,
        kind: MediaKind,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Opened, Unopened> {
        self.note_roster();
        let State::Member(member) = &mut self.state else {
            self.report.undecryptable_before_join += 1;
            return Err(Unopened::NotForUs);
        };
        let epoch = member.epoch();
        match member.decrypt_frame(kind, bytes, now_ms) {
            Ok(frame) => {
                let Some((sender_name, sender_participant_id)) = self
                    .rosters
                    .iter()
                    .find(|(e, _)| *e == frame.epoch)
                    .and_then(|(_, roster)| roster.get(&frame.sender_leaf).cloned())
                else {
                    self.report.decrypt_failures += 1;
                    return Err(Unopened::Failed(E2eeError::NoSuchLeaf(frame.sender_leaf)));
                };
                self.report.decrypted += 1;
                Ok(Opened {
                    plaintext: frame.plaintext,
                    sender_name,
                    sender_participant_id,
                })
            }
            Err(ref e @ (E2eeError::UnknownKid(_) | E2eeError::WrongEpoch { .. }))
                if self
                    .joined_at_ms
                    .is_some_and(|joined| now_ms.saturating_sub(joined) < 2000)
                    && !from_next_epoch(e, epoch) =>
            {
                // Sent under keys from before our Welcome, still in flight.
                self.report.undecryptable_before_join += 1;
                Err(Unopened::NotForUs)
            }
            Err(e @ (E2eeError::UnknownKid(_) | E2eeError::WrongEpoch { .. })) => {
                Err(Unopened::NotYet(e))
            }
            Err(e) => {
                self.report.decrypt_failures += 1;
                Err(Unopened::Failed(e))
            }
        }
    }
}

/// Whether an undecryptable frame was sent in the epoch after `current`: its Commit is still on
/// its way to us, so the frame must wait for it (not be written off as sent before our join).
/// The SFrame KID carries the epoch's low 4 bits (RFC 9605 §5.2, as `e2ee` builds it).
fn from_next_epoch(error: &E2eeError, current: u64) -> bool {
    match error {
        E2eeError::WrongEpoch { got, current } => got > current,
        E2eeError::UnknownKid(kid) => kid & 0xf == (current + 1) & 0xf,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ParticipantId;

    /// The host link of the meeting these tests run.
    fn host_link() -> HostLinkSecret {
        static LINK: std::sync::OnceLock<HostLinkSecret> = std::sync::OnceLock::new();
        LINK.get_or_init(|| HostLinkSecret::generate().unwrap())
            .clone()
    }

    fn host_secrets() -> LinkSecrets {
        LinkSecrets {
            host_link: Some(host_link()),
            ..LinkSecrets::default()
        }
    }

    /// Plays the delivery service between sessions: first commit of an epoch wins.
    fn deliver(sessions: &mut [GroupSession], now: u64) {
        for _ in 0..20 {
            let mut outgoing = Vec::new();
            for (i, s) in sessions.iter_mut().enumerate() {
                s.tick(now);
                while let Some(msg) = s.poll_message() {
                    outgoing.push((i, msg));
                }
            }
            if outgoing.is_empty() {
                return;
            }
            let mut committed = false;
            for (from, msg) in outgoing {
                let from_id = ParticipantId(sessions[from].participant_id);
                match msg {
                    ClientMessage::MlsKeyPackage { key_package } => {
                        for (j, s) in sessions.iter_mut().enumerate() {
                            if j != from && s.is_member() {
                                s.on_server_message(
                                    &ServerMessage::MlsKeyPackage {
                                        participant_id: from_id,
                                        key_package: key_package.clone(),
                                    },
                                    now,
                                );
                            }
                        }
                    }
                    ClientMessage::MlsMessage { data, .. } => {
                        for (j, s) in sessions.iter_mut().enumerate() {
                            if j != from && s.is_member() {
                                s.on_server_message(
                                    &ServerMessage::MlsMessage {
                                        from: from_id,
                                        data: data.clone(),
                                        purpose: Default::default(),
                                    },
                                    now,
                                );
                            }
                        }
                    }
                    ClientMessage::MlsCommit { commit, welcome } => {
                        if committed {
                            sessions[from].on_server_message(
                                &ServerMessage::Error {
                                    code: ErrorCode::StaleEpoch,
                                    reason: String::new(),
                                },
                                now,
                            );
                            continue;
                        }
                        committed = true;
                        let members: Vec<usize> = (0..sessions.len())
                            .filter(|j| *j != from && sessions[*j].is_member())
                            .collect();
                        sessions[from]
                            .on_server_message(&ServerMessage::MlsCommitAccepted { epoch: 0 }, now);
                        for j in members {
                            sessions[j].on_server_message(
                                &ServerMessage::MlsCommit {
                                    from: from_id,
                                    commit: commit.clone(),
                                },
                                now,
                            );
                        }
                        if let Some(welcome) = welcome {
                            for s in sessions.iter_mut().filter(|s| !s.is_member()) {
                                s.on_server_message(
                                    &ServerMessage::MlsWelcome {
                                        welcome: welcome.clone(),
                                    },
                                    now,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn host_admits_joiners_and_everyone_ends_with_the_same_code_and_keys() {
        let mut sessions =
            vec![GroupSession::new("host", 1, [], Some(b"g"), host_secrets(), 0).unwrap()];
        for id in 2..=3 {
            for s in sessions.iter_mut() {
                s.participant_joined(id);
            }
            let others: Vec<u64> = (1..id).collect();
            sessions.push(
                GroupSession::new(
                    &format!("p{id}"),
                    id,
                    others,
                    None,
                    LinkSecrets::default(),
                    0,
                )
                .unwrap(),
            );
            deliver(&mut sessions, 0);
        }
        assert!(sessions.iter().all(|s| s.is_member()));
        let codes: HashSet<String> = sessions.iter().map(|s| s.report().security_code).collect();
        assert_eq!(codes.len(), 1);
        assert!(sessions.iter().all(|s| s.report().epoch == 2));
        let frame = [0x50u8; 40];
        let sealed = sessions[2].encrypt(MediaKind::Vp8, &frame).unwrap();
        let opened = sessions[0].decrypt(MediaKind::Vp8, &sealed, 10).unwrap();
        assert_eq!(opened.plaintext, frame);
        assert_eq!(opened.sender_name, "p3");
        assert_eq!(opened.sender_participant_id, "3");

        // Participant 3 leaves: the lowest leaf removes it and the epoch moves on.
        let in_flight = sessions[2].encrypt(MediaKind::Vp8, &frame).unwrap();
        for s in sessions.iter_mut() {
            s.participant_left(3);
        }
        let mut left = sessions.pop().unwrap();
        deliver(&mut sessions, 5000);
        assert!(sessions.iter().all(|s| s.report().epoch == 3));
        // Its last frame, still on the way, opens under the old epoch and is still its own:
        // the sender is named by the roster of the epoch the frame was sent in.
        let opened = sessions[1]
            .decrypt(MediaKind::Vp8, &in_flight, 5500)
            .unwrap();
        assert_eq!(
            (
                opened.sender_name.as_str(),
                opened.sender_participant_id.as_str()
            ),
            ("p3", "3")
        );
        assert_eq!(sessions[1].report().decrypt_failures, 0);
        let later = sessions[0].encrypt(MediaKind::Vp8, &frame).unwrap();
        assert!(left.decrypt(MediaKind::Vp8, &later, 5000).is_err());
    }

    #[test]
    fn an_unadmitted_add_raises_an_alarm_and_the_group_keeps_its_keys() {
        let mut host = GroupSession::new("host", 1, [2], Some(b"g"), host_secrets(), 0).unwrap();
        host.auto_admit = false;
        let mut joiner = GroupSession::new("p2", 2, [1], None, LinkSecrets::default(), 0).unwrap();
        let Some(ClientMessage::MlsKeyPackage { key_package }) = joiner.poll_message() else {
            panic!("key package first");
        };
        // A rogue member commits the joiner without any admission.
        let mut rogue = GroupSession::new(
            "rogue",
            9,
            [],
            Some(b"g"),
            LinkSecrets {
                host_link: Some(HostLinkSecret::generate().unwrap()),
                ..LinkSecrets::default()
            },
            0,
        )
        .unwrap();
        let kp = proto::b64_decode(&key_package).unwrap();
        let rogue_member = rogue.member().unwrap();
        assert!(matches!(
            rogue_member.commit_add(&[&kp], 0),
            Err(E2eeError::UnadmittedAdd { .. })
        ));
        host.on_server_message(
            &ServerMessage::MlsKeyPackage {
                participant_id: ParticipantId(2),
                key_package,
            },
            0,
        );
        host.tick(10_000);
        assert!(
            host.poll_message().is_none(),
            "nothing admitted, nothing committed"
        );
        assert_eq!(host.report().epoch, 0);
    }

    fn info(id: u64, role: Role) -> ParticipantInfo {
        ParticipantInfo {
            id: ParticipantId(id),
            name: format!("p{id}"),
            role,
            muted: Vec::new(),
            blocked: Vec::new(),
        }
    }

    fn welcome(id: u64, role: Role, others: Vec<ParticipantInfo>, create: bool) -> ServerMessage {
        ServerMessage::Welcome {
            participant_id: ParticipantId(id),
            meeting: proto::MeetingId::from_random_bytes([1; 16]),
            role,
            participants: others,
            create_group: create.then(|| proto::b64_encode(b"group")),
            meeting_state: MeetingState::default(),
            lobby: Vec::new(),
            ice_servers: Vec::new(),
        }
    }

    fn joined(id: u64, entry: Entry, admitted_by: Option<u64>) -> ServerMessage {
        ServerMessage::ParticipantJoined {
            participant: info(id, Role::Guest),
            entry,
            admitted_by: admitted_by.map(ParticipantId),
        }
    }

    /// The host's client signs admissions only for participants it can vouch for.
    fn admits(host: &mut GroupSession, joiner: &mut GroupSession) -> bool {
        let Some(ClientMessage::MlsKeyPackage { key_package }) = joiner.poll_message() else {
            panic!("a joiner publishes its KeyPackage first");
        };
        host.on_server_message(
            &ServerMessage::MlsKeyPackage {
                participant_id: ParticipantId(joiner.participant_id),
                key_package,
            },
            0,
        );
        matches!(host.poll_message(), Some(ClientMessage::MlsMessage { .. }))
    }

    #[test]
    fn hosts_vouch_for_those_they_admitted_not_for_whoever_the_server_names() {
        let mut host = GroupSession::from_welcome(
            "host",
            &welcome(1, Role::Host, vec![], true),
            host_secrets(),
            0,
        )
        .unwrap();
        assert!(matches!(
            host.poll_event(),
            Some(GroupEvent::KeysChanged { epoch: 0, .. })
        ));
        let guest_welcome = welcome(2, Role::Guest, vec![info(1, Role::Host)], false);

        // The server says this host admitted p2, but its user never did: no signature.
        let mut guest =
            GroupSession::from_welcome("p2", &guest_welcome, LinkSecrets::default(), 0).unwrap();
        host.on_server_message(&joined(2, Entry::Lobby, Some(1)), 0);
        assert!(!admits(&mut host, &mut guest));
        // Admitted from the lobby by this host's user: vouched.
        let mut guest =
            GroupSession::from_welcome("p2", &guest_welcome, LinkSecrets::default(), 0).unwrap();
        host.admission_requested(2);
        host.on_server_message(&joined(2, Entry::Lobby, Some(1)), 0);
        assert!(admits(&mut host, &mut guest));

        // The server claims someone else (an MLS host: this host itself is one) admitted
        // participant 3, or names no one: no signature.
        let mut stranger = GroupSession::from_welcome(
            "p3",
            &welcome(3, Role::Guest, vec![], false),
            LinkSecrets::default(),
            0,
        )
        .unwrap();
        host.on_server_message(&joined(3, Entry::Lobby, None), 0);
        assert!(!admits(&mut host, &mut stranger));

        // While the meeting is locked, not even vouched participants are admitted.
        let mut late = GroupSession::from_welcome(
            "p4",
            &welcome(4, Role::Guest, vec![], false),
            LinkSecrets::default(),
            0,
        )
        .unwrap();
        host.on_server_message(
            &ServerMessage::MeetingStateChanged {
                meeting_state: MeetingState {
                    locked: true,
                    ..MeetingState::default()
                },
            },
            0,
        );
        host.admission_requested(4);
        host.on_server_message(&joined(4, Entry::Lobby, Some(1)), 0);
        assert!(!admits(&mut host, &mut late));
        // ...and the host mirrors the lock into the group.
        host.tick(0);
        assert!(matches!(
            host.poll_message(),
            Some(ClientMessage::MlsMessage { .. })
        ));
    }

    /// What a lying server can say, and what honest clients do with it: no admission signed,
    /// no Add committed, no host status granted.
    #[test]
    fn the_servers_word_admits_no_one_and_grants_nothing() {
        let mut host = GroupSession::from_welcome(
            "host",
            &welcome(1, Role::Host, vec![], true),
            host_secrets(),
            0,
        )
        .unwrap();
        // "It came with the host link", "with a skip-lobby invitation", "a co-host admitted it".
        for (id, entry, by) in [
            (5, Entry::HostLink, None),
            (6, Entry::Invitation, None),
            (7, Entry::Lobby, Some(2)),
        ] {
            let mut listener = GroupSession::from_welcome(
                "listener",
                &welcome(id, Role::Guest, vec![], false),
                LinkSecrets::default(),
                0,
            )
            .unwrap();
            host.on_server_message(&joined(id, entry, by), 0);
            assert!(!admits(&mut host, &mut listener), "entry {entry:?}");
        }
        host.tick(10_000);
        assert!(host.poll_message().is_none(), "nothing to commit");
        // Every lie was noticed, and the alarm names who the server tried to add.
        let alarms = host.report().alarms;
        assert_eq!(alarms.len(), 3, "{alarms:?}");
        for (alarm, claimed) in alarms.iter().zip(["\"p5\"", "\"p6\"", "\"p7\""]) {
            assert!(
                alarm.starts_with("the server tried to add someone no host admitted")
                    && alarm.contains(claimed),
                "{alarm}"
            );
        }
        // "You admitted it" (this host's user never did) is noticed too, when the listener's
        // KeyPackage shows it is not a device coming back.
        let mut listener = GroupSession::from_welcome(
            "listener",
            &welcome(8, Role::Guest, vec![], false),
            LinkSecrets {
                device: Some(DeviceKey::generate().unwrap()),
                ..LinkSecrets::default()
            },
            0,
        )
        .unwrap();
        host.on_server_message(&joined(8, Entry::Lobby, Some(1)), 0);
        assert!(!admits(&mut host, &mut listener));
        assert_eq!(host.report().alarms.len(), 4);
        // "It is a co-host": the role changes nothing in the group.
        host.on_server_message(
            &ServerMessage::RoleChanged {
                participant_id: ParticipantId(5),
                role: Role::CoHost,
            },
            0,
        );
        host.tick(20_000);
        assert!(host.poll_message().is_none());
        assert_eq!(host.report().epoch, 0);
    }

    /// A guest whose connection drops comes back as a new participant: the server re-enters
    /// it as admitted by the host, and the host's client, whose user did not admit this new
    /// participant id, lets it back in because its KeyPackage proves the same device. Once, and
    /// not after the host removed it.
    #[test]
    fn a_dropped_guest_comes_back_by_its_device_and_a_removed_one_does_not() {
        let device = DeviceKey::generate().unwrap();
        let guest_secrets = || LinkSecrets {
            device: Some(device.clone()),
            ..LinkSecrets::default()
        };
        let guest = |id: u64| {
            GroupSession::from_welcome(
                "flaky",
                &welcome(id, Role::Guest, vec![info(1, Role::Host)], false),
                guest_secrets(),
                0,
            )
            .unwrap()
        };
        let mut sessions = vec![GroupSession::from_welcome(
            "host",
            &welcome(1, Role::Host, vec![], true),
            host_secrets(),
            0,
        )
        .unwrap()];
        sessions[0].admission_requested(2);
        sessions[0].on_server_message(&joined(2, Entry::Lobby, Some(1)), 0);
        sessions.push(guest(2));
        deliver(&mut sessions, 0);
        assert!(sessions[1].is_member());

        // Dropped: the host's client removes the old leaf.
        sessions.pop();
        sessions[0].on_server_message(
            &ServerMessage::ParticipantLeft {
                participant_id: ParticipantId(2),
                reason: proto::LeaveReason::Disconnected,
            },
            1_000,
        );
        deliver(&mut sessions, 1_000);
        assert_eq!(sessions[0].report().epoch, 2);

        // Back as participant 3, "admitted by you" says the server: the device proves it.
        sessions[0].on_server_message(&joined(3, Entry::Lobby, Some(1)), 2_000);
        sessions.push(guest(3));
        deliver(&mut sessions, 2_000);
        assert!(sessions[1].is_member(), "{:?}", sessions[0].report());
        assert!(
            sessions[0].report().alarms.is_empty(),
            "{:?}",
            sessions[0].report()
        );

        // A second copy of the same device at once is not a return.
        let mut copy = guest(4);
        sessions[0].on_server_message(&joined(4, Entry::Lobby, Some(1)), 2_000);
        assert!(!admits(&mut sessions[0], &mut copy));
        assert_eq!(sessions[0].report().alarms.len(), 1);

        // The host removes the guest: its device is barred and does not come back.
        sessions[0].removed_by_this_user(3);
        sessions[0].on_server_message(
            &ServerMessage::ParticipantLeft {
                participant_id: ParticipantId(3),
                reason: proto::LeaveReason::Removed,
            },
            3_000,
        );
        sessions.pop();
        deliver(&mut sessions, 3_000);
        let mut kicked = guest(5);
        sessions[0].on_server_message(&joined(5, Entry::Lobby, Some(1)), 4_000);
        assert!(!admits(&mut sessions[0], &mut kicked));
        assert_eq!(sessions[0].report().alarms.len(), 2);
    }

    #[test]
    fn host_link_holders_join_by_proof_and_promotions_are_the_hosts_decision() {
        let mut sessions = vec![GroupSession::from_welcome(
            "host",
            &welcome(1, Role::Host, vec![], true),
            host_secrets(),
            0,
        )
        .unwrap()];
        // A guest the host admitted, and a second host-link holder nobody admitted.
        sessions[0].admission_requested(2);
        sessions[0].on_server_message(&joined(2, Entry::Lobby, Some(1)), 0);
        sessions.push(
            GroupSession::from_welcome(
                "p2",
                &welcome(2, Role::Guest, vec![info(1, Role::Host)], false),
                LinkSecrets::default(),
                0,
            )
            .unwrap(),
        );
        deliver(&mut sessions, 0);
        sessions.push(
            GroupSession::from_welcome(
                "p3",
                &welcome(
                    3,
                    Role::Host,
                    vec![info(1, Role::Host), info(2, Role::Guest)],
                    false,
                ),
                host_secrets(),
                0,
            )
            .unwrap(),
        );
        for s in sessions.iter_mut().take(2) {
            s.participant_joined(3);
        }
        deliver(&mut sessions, 0);
        assert!(sessions.iter().all(|s| s.is_member()));
        let epoch = sessions[0].report().epoch;
        assert!(sessions.iter().all(|s| s.report().epoch == epoch));

        // The host promotes p2 itself: a GroupContext commit every member accepts.
        sessions[0].set_cohost(2, true);
        deliver(&mut sessions, 0);
        let hosts_seen = |s: &mut GroupSession| {
            let mut last = None;
            while let Some(e) = s.poll_event() {
                if let GroupEvent::KeysChanged { hosts, .. } = e {
                    last = Some(hosts);
                }
            }
            last
        };
        for s in sessions.iter_mut() {
            assert_eq!(
                hosts_seen(s),
                Some(vec!["1".into(), "2".into(), "3".into()])
            );
        }
        // ...and takes it back.
        sessions[0].set_cohost(2, false);
        deliver(&mut sessions, 0);
        for s in sessions.iter_mut() {
            assert_eq!(hosts_seen(s), Some(vec!["1".into(), "3".into()]));
            assert!(s.report().alarms.is_empty(), "{:?}", s.report().alarms);
        }
        // A guest asking for it gets nothing: it holds no host link.
        sessions[1].set_cohost(1, false);
        sessions[1].tick(0);
        assert!(sessions[1].poll_message().is_none());
    }

    #[test]
    fn chat_arrives_with_the_credential_name_and_mislabelled_chat_is_dropped() {
        let mut sessions = vec![GroupSession::from_welcome(
            "host",
            &welcome(1, Role::Host, vec![], true),
            host_secrets(),
            0,
        )
        .unwrap()];
        sessions[0].admission_requested(2);
        sessions[0].on_server_message(&joined(2, Entry::Lobby, Some(1)), 0);
        sessions.push(
            GroupSession::from_welcome(
                "p2",
                &welcome(2, Role::Guest, vec![info(1, Role::Host)], false),
                LinkSecrets::default(),
                0,
            )
            .unwrap(),
        );
        deliver(&mut sessions, 0);
        assert!(sessions.iter().all(|s| s.is_member()));
        while sessions[0].poll_event().is_some() {}

        sessions[1].send_chat("hello").unwrap();
        let Some(ClientMessage::MlsMessage { data, purpose }) = sessions[1].poll_message() else {
            panic!("chat queued");
        };
        assert_eq!(purpose, AppMessagePurpose::Chat);
        sessions[0].on_server_message(
            &ServerMessage::MlsMessage {
                from: ParticipantId(2),
                data: data.clone(),
                purpose,
            },
            0,
        );
        assert_eq!(
            sessions[0].poll_event(),
            Some(GroupEvent::Chat {
                from_participant_id: "2".into(),
                from_name: "p2".into(),
                text: "hello".into()
            })
        );

        // The same kind of message labelled "control" to dodge the server's chat permission.
        sessions[1].send_chat("sneaky").unwrap();
        let Some(ClientMessage::MlsMessage { data, .. }) = sessions[1].poll_message() else {
            panic!("chat queued");
        };
        sessions[0].on_server_message(
            &ServerMessage::MlsMessage {
                from: ParticipantId(2),
                data,
                purpose: AppMessagePurpose::Control,
            },
            0,
        );
        assert!(matches!(
            sessions[0].poll_event(),
            Some(GroupEvent::Alarm { .. })
        ));
    }
}

#[cfg(test)]
mod next_epoch_tests {
    use super::*;

    #[test]
    fn frames_from_the_next_epoch_wait_and_older_ones_are_written_off() {
        assert!(from_next_epoch(
            &E2eeError::WrongEpoch { got: 5, current: 4 },
            4
        ));
        assert!(!from_next_epoch(
            &E2eeError::WrongEpoch { got: 3, current: 4 },
            4
        ));
        // KID = leaf << 4 | epoch mod 16.
        assert!(from_next_epoch(&E2eeError::UnknownKid((7 << 4) | 5), 4));
        assert!(
            from_next_epoch(&E2eeError::UnknownKid(3 << 4), 15),
            "wraps at 16"
        );
        assert!(!from_next_epoch(&E2eeError::UnknownKid((7 << 4) | 3), 4));
        assert!(!from_next_epoch(&E2eeError::Authentication, 4));
    }
}
