//! A lying server, for tests only: compiled with the cargo feature `insecure-test-hooks` and
//! never in a release build (`conclave serve --help` does not even mention it without the
//! feature).
//!
//! With `conclave serve --test-lie KIND`, the server runs a listener of its own (a bot, started
//! by the binary through [`TestLie::new`]'s callback) and tries to get it into every meeting
//! whose group a host opens, by one lie:
//! - `host-link`: it announces the listener as a host that came with the host link;
//! - `invitation`: as a participant with an invitation that skips the lobby;
//! - `cohost-admitted`: as admitted from the lobby by a co-host (a moderator of its choice);
//! - `cohost-role`: as a co-host (and admitted, as above);
//! - `forged-invite`: it mints an invitation itself (a database row with a token of its own
//!   and a link "certified" by a key it made up) and lets the listener use it.
//!
//! Honest clients must refuse every one of these: none is a signature members can check.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use proto::{Entry, MeetingId, ParticipantId, Role};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::hub::Hub;
use crate::storage::{InvitationRecord, Storage};

/// Which lie the server tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LieKind {
    HostLink,
    Invitation,
    CohostAdmitted,
    CohostRole,
    ForgedInvite,
}

impl FromStr for LieKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "host-link" => LieKind::HostLink,
            "invitation" => LieKind::Invitation,
            "cohost-admitted" => LieKind::CohostAdmitted,
            "cohost-role" => LieKind::CohostRole,
            "forged-invite" => LieKind::ForgedInvite,
            other => {
                return Err(format!(
                    "{other:?}: one of host-link, invitation, cohost-admitted, cohost-role, forged-invite"
                ))
            }
        })
    }
}

/// How long after a host opened a meeting's group the listener is sent in.
pub const SMUGGLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Starts the listener: `(join link, name)`. The binary runs a `conclave bot` in-process.
pub type SpawnListener = Arc<dyn Fn(String, String) + Send + Sync>;

/// The lie and the listener it is told for.
pub struct TestLie {
    pub kind: LieKind,
    /// The listener's display name: how the server knows its own bot's `hello`.
    pub listener_name: String,
    spawn: SpawnListener,
    smuggled: Mutex<HashSet<MeetingId>>,
}

impl TestLie {
    pub fn new(kind: LieKind, spawn: SpawnListener) -> Self {
        TestLie {
            kind,
            listener_name: "Observer".into(),
            spawn,
            smuggled: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn is_listener(&self, name: &str) -> bool {
        name == self.listener_name
    }

    /// The role and entry the server claims for its listener, replacing what the gate found.
    pub(crate) fn claimed(&self, role: Role, entry: Option<Entry>) -> (Role, Option<Entry>) {
        match self.kind {
            LieKind::HostLink => (Role::Host, Some(Entry::HostLink)),
            LieKind::Invitation => (Role::Participant, Some(Entry::Invitation)),
            LieKind::CohostAdmitted => (Role::Guest, None),
            LieKind::CohostRole => (Role::CoHost, None),
            // The gate accepted the server's own invitation: that is the lie.
            LieKind::ForgedInvite => (role, entry),
        }
    }

    /// After the listener knocked: for the lobby lies, a moderator "admits" it.
    pub(crate) fn after_knock(&self, hub: &Hub, listener: ParticipantId) {
        if !matches!(self.kind, LieKind::CohostAdmitted | LieKind::CohostRole) {
            return;
        }
        let result = hub.act(listener, |policy| {
            let moderators: Vec<ParticipantId> = policy.moderators().collect();
            // A co-host if there is one (the old gap: hosts vouched for a co-host's admission
            // when that co-host had no MLS host powers), else any moderator.
            let by = moderators
                .iter()
                .copied()
                .find(|m| {
                    policy
                        .entry_of(*m)
                        .is_some_and(|(info, _, _)| info.role == Role::CoHost)
                })
                .or_else(|| moderators.first().copied())
                .ok_or(crate::policy::Refusal {
                    code: proto::ErrorCode::Forbidden,
                    reason: "no moderator to blame".into(),
                })?;
            policy.admit(by, listener)
        });
        if let Err(refusal) = result {
            warn!(reason = %refusal.reason, "test lie: could not fake the admission");
        }
    }

    /// A host opened `meeting`'s group: once per meeting, after [`SMUGGLE_AFTER`] (when the
    /// meeting is under way, as a patient attacker would), send the listener in.
    pub(crate) fn smuggle_into(
        self: Arc<Self>,
        storage: Storage,
        base_url: String,
        meeting: MeetingId,
    ) {
        let first = self
            .smuggled
            .lock()
            .map(|mut set| set.insert(meeting.clone()))
            .unwrap_or(false);
        if !first {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(SMUGGLE_AFTER).await;
            let mut join = format!("{base_url}/m/{meeting}");
            if self.kind == LieKind::ForgedInvite {
                match self.mint_invitation(&storage, &meeting).await {
                    Ok(fragment) => join = format!("{join}#invite={fragment}"),
                    Err(e) => warn!("test lie: cannot mint an invitation: {e}"),
                }
            }
            info!(kind = ?self.kind, %meeting, "test lie: sending the server's listener in");
            (self.spawn)(join, self.listener_name.clone());
        });
    }

    /// What a server with no meeting key can make: a valid row at its own gate, and a link
    /// whose certificate is signed by a key it made up.
    async fn mint_invitation(
        &self,
        storage: &Storage,
        meeting: &MeetingId,
    ) -> Result<String, String> {
        let secret = e2ee::InvitationSecret::generate().map_err(|e| e.to_string())?;
        let id = crate::invitation::new_invitation_id();
        let now = crate::storage::unix_now_secs();
        let expires_at = now + 3600;
        storage
            .create_invitation(&InvitationRecord {
                id: id.clone(),
                meeting_id: meeting.to_string(),
                label: "minted by the server".into(),
                created_at: now,
                expires_at,
                single_use: false,
                skip_lobby: true,
                used_at: None,
                revoked_at: None,
                token_sha256: Some(Sha256::digest(secret.server_token().as_bytes()).to_vec()),
            })
            .await
            .map_err(|e| e.to_string())?;
        let made_up = e2ee::HostLinkSecret::generate()
            .map_err(|e| e.to_string())?
            .meeting_key();
        let invitation = e2ee::Invitation::issue(&made_up, &id, secret, expires_at as u64, true)
            .map_err(|e| e.to_string())?;
        Ok(invitation.encode())
    }
}
