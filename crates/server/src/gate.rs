//! The gate: the one check every `hello` passes before the lobby.
//!
//! In order, and the attack each step stops:
//! 1. a token from the source address's bucket (burst 10, one per second; legitimate knocks
//!    get theirs back): war-dialing meeting ids, brute-forcing passcodes or tokens, and
//!    flooding the database or argon2;
//! 2. the meeting, and whether the knock is a host's (host secret, or the owning account);
//! 3. a passcode lockout per address and meeting (5 wrong in 15 minutes: 15 minutes out):
//!    slow passcode guessing that stays under the rate limit;
//! 4. the passcode, argon2-verified: an unknown meeting, a missing passcode and a wrong
//!    passcode get the same answer, so guesses at ids and at passcodes learn nothing from
//!    each other (a decoy hash is verified for unknown meetings so even the time taken is
//!    alike, and failures there count towards a lockout too);
//! 5. a wrong host secret is refused: a forged host link;
//! 6. the meeting has not ended;
//! 7. the invitation (its token's SHA-256 against the stored one, then expiry, revoked, used),
//!    and required when the meeting says so: a leaked join link;
//! 8. bans by device, invitation and account: a removed participant coming back;
//! 9. a single-use invitation is consumed atomically: two replays racing cannot both pass.
//!
//! Hosts skip 3, 4 and 7, never 1. Locking, the lobby and roles come after the gate (the hub).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use proto::{ErrorCode, MeetingId};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::ratelimit::{source_key, RateLimiter, RetryAfter};
use crate::storage::{MeetingRecord, Storage};

/// Knocks a source address may make at once before it is slowed down.
pub const KNOCK_BURST: u32 = 10;
/// Knocks per second a source address regains.
pub const KNOCK_PER_SECOND: f64 = 1.0;
/// Wrong passcodes from one address for one meeting before it is locked out.
pub const PASSCODE_FAILURES_BEFORE_LOCKOUT: usize = 5;
/// The window those failures are counted in, and how long the lockout lasts.
pub const PASSCODE_WINDOW_MS: i64 = 15 * 60 * 1000;

/// The single answer for an unknown meeting, a missing passcode and a wrong passcode.
pub const UNKNOWN_MEETING_REASON: &str = "no such meeting, or the passcode is missing or wrong";

/// Someone asking to join.
pub struct Knock<'a> {
    pub peer: IpAddr,
    pub meeting: &'a MeetingId,
    pub host_secret: Option<&'a str>,
    pub passcode: Option<&'a str>,
    pub invite: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub user: Option<&'a crate::accounts::User>,
}

/// A knock the gate let through (to the lobby, or straight in for hosts).
#[derive(Debug, Clone)]
pub struct Pass {
    pub record: MeetingRecord,
    /// host secret matched, or user owns the meeting
    pub host: bool,
    /// The host secret matched: this client holds the host link (and so the meeting key that
    /// opens the MLS group); an owning account alone does not.
    pub host_link: bool,
    pub invitation: Option<InvitationGrant>,
}

/// The invitation a participant came in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationGrant {
    pub id: String,
    pub label: String,
    pub skip_lobby: bool,
}

/// Why a knock was refused; `reason` is for the person knocking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    fn unknown_meeting() -> Self {
        Refusal::new(ErrorCode::UnknownMeeting, UNKNOWN_MEETING_REASON)
    }

    fn rate_limited(wait: RetryAfter) -> Self {
        Refusal::new(
            ErrorCode::RateLimited,
            format!(
                "too many attempts from this address: retry in {} s",
                wait.secs()
            ),
        )
    }

    fn internal() -> Self {
        Refusal::new(ErrorCode::Internal, "storage unavailable: try again later")
    }
}

/// Wrong-passcode counts per (source, meeting), with injected time.
#[derive(Default)]
pub struct PasscodeFailures {
    entries: Mutex<HashMap<(IpAddr, MeetingId), FailureHistory>>,
}

#[derive(Default)]
struct FailureHistory {
    /// Times (unix ms) of failures within the window.
    recent: VecDeque<i64>,
    locked_until: Option<i64>,
}

/// Above this many entries, histories with nothing left in the window are dropped.
const FAILURES_PRUNE_ABOVE: usize = 10_000;

impl PasscodeFailures {
    /// How long `source` is still locked out of `meeting`, if it is.
    pub fn lockout(&self, source: IpAddr, meeting: &MeetingId, now_ms: i64) -> Option<RetryAfter> {
        let entries = self.entries.lock().ok()?;
        let until = entries.get(&(source, meeting.clone()))?.locked_until?;
        (until > now_ms).then(|| {
            RetryAfter(std::time::Duration::from_millis(
                (until - now_ms).unsigned_abs(),
            ))
        })
    }

    /// Counts a wrong passcode; true when this failure starts a lockout.
    pub fn record(&self, source: IpAddr, meeting: &MeetingId, now_ms: i64) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        if entries.len() > FAILURES_PRUNE_ABOVE {
            entries.retain(|_, h| {
                h.locked_until.is_some_and(|t| t > now_ms)
                    || h.recent
                        .back()
                        .is_some_and(|t| now_ms - t < PASSCODE_WINDOW_MS)
            });
        }
        let history = entries.entry((source, meeting.clone())).or_default();
        while history
            .recent
            .front()
            .is_some_and(|t| now_ms - t >= PASSCODE_WINDOW_MS)
        {
            history.recent.pop_front();
        }
        history.recent.push_back(now_ms);
        if history.recent.len() >= PASSCODE_FAILURES_BEFORE_LOCKOUT {
            history.recent.clear();
            history.locked_until = Some(now_ms + PASSCODE_WINDOW_MS);
            true
        } else {
            false
        }
    }
}

/// The gate and the state it keeps between knocks (rate limits, passcode failures).
pub struct Gate {
    knocks: RateLimiter<IpAddr>,
    passcode_failures: PasscodeFailures,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            knocks: RateLimiter::new(KNOCK_BURST, KNOCK_PER_SECOND),
            passcode_failures: PasscodeFailures::default(),
        }
    }

    /// Takes a token from `peer`'s bucket for a lookup other than a knock (the HTTP meeting
    /// lookup shares the bucket, so it cannot be used to war-dial instead).
    pub fn acquire(&self, peer: IpAddr, now_ms: i64) -> Result<(), RetryAfter> {
        self.knocks.try_acquire(&source_key(peer), now_ms)
    }

    /// Gives back the token of a lookup that succeeded.
    pub fn refund(&self, peer: IpAddr) {
        self.knocks.refund(&source_key(peer));
    }

    /// Runs every check on a knock, in order; see the module doc.
    pub async fn check(
        &self,
        storage: &Storage,
        knock: Knock<'_>,
        now_ms: i64,
    ) -> Result<Pass, Refusal> {
        let source = source_key(knock.peer);
        if let Err(wait) = self.knocks.try_acquire(&source, now_ms) {
            return Err(Refusal::rate_limited(wait));
        }
        let result = self
            .check_after_rate_limit(storage, &knock, source, now_ms)
            .await;
        // Only failures drain the bucket; a storage outage is not the caller's failure either.
        if result.is_ok()
            || result
                .as_ref()
                .is_err_and(|r| r.code == ErrorCode::Internal)
        {
            self.knocks.refund(&source);
        }
        result
    }

    /// Steps 1 to 3 for a lookup that is not a knock (the HTTP meeting lookup): rate limit,
    /// passcode lockout, meeting and passcode. Same answers as [`Gate::check`].
    pub async fn lookup(
        &self,
        storage: &Storage,
        peer: IpAddr,
        meeting: &MeetingId,
        passcode: Option<&str>,
        now_ms: i64,
    ) -> Result<MeetingRecord, Refusal> {
        let source = source_key(peer);
        if let Err(wait) = self.knocks.try_acquire(&source, now_ms) {
            return Err(Refusal::rate_limited(wait));
        }
        let knock = Knock {
            peer,
            meeting,
            host_secret: None,
            passcode,
            invite: None,
            device_id: None,
            user: None,
        };
        let result = self
            .open_meeting(storage, &knock, source, now_ms)
            .await
            .map(|(record, _, _)| record);
        self.settle(source, &result);
        result
    }

    /// Gives the token back unless the attempt failed by the caller's fault.
    fn settle<T>(&self, source: IpAddr, result: &Result<T, Refusal>) {
        // Only failures drain the bucket; a storage outage is not the caller's failure either.
        if result.is_ok()
            || result
                .as_ref()
                .is_err_and(|r| r.code == ErrorCode::Internal)
        {
            self.knocks.refund(&source);
        }
    }

    async fn audit(
        storage: &Storage,
        knock: &Knock<'_>,
        now_ms: i64,
        event: &str,
        subject: Option<&str>,
        detail: &str,
    ) {
        let actor = knock.peer.to_string();
        if let Err(e) = storage
            .audit_at(knock.meeting, now_ms, event, Some(&actor), subject, detail)
            .await
        {
            warn!("cannot write the audit log: {e}");
        }
    }

    /// Refuses an address locked out of a meeting by wrong passcodes (hosts are never asked).
    fn passcode_lockout(
        &self,
        source: IpAddr,
        meeting: &MeetingId,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        match self.passcode_failures.lockout(source, meeting, now_ms) {
            None => Ok(()),
            Some(wait) => Err(Refusal::new(
                ErrorCode::RateLimited,
                format!(
                    "too many wrong passcodes from this address: retry in {} min",
                    wait.secs().div_ceil(60)
                ),
            )),
        }
    }

    /// Meeting, host, lockout and passcode: the record, whether the knock is a host's, and
    /// whether by the host link's secret.
    async fn open_meeting(
        &self,
        storage: &Storage,
        knock: &Knock<'_>,
        source: IpAddr,
        now_ms: i64,
    ) -> Result<(MeetingRecord, bool, bool), Refusal> {
        let meeting = knock.meeting;
        let record = match storage.meeting(meeting).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.passcode_lockout(source, meeting, now_ms)?;
                if let Some(passcode) = knock.passcode {
                    // Same work and same bookkeeping as a wrong passcode, so neither the
                    // answer, its timing nor a later lockout tells the two apart.
                    let decoy = crate::password::decoy_hash().to_owned();
                    crate::password::verify_blocking(decoy, passcode.to_owned()).await;
                    self.passcode_failures.record(source, meeting, now_ms);
                }
                return Err(Refusal::unknown_meeting());
            }
            Err(e) => {
                warn!("storage error at the gate: {e}");
                return Err(Refusal::internal());
            }
        };
        // Comparing digests: timing could reveal digest bytes, which do not help find the secret.
        let secret_matches = knock.host_secret.is_some_and(|secret| {
            Sha256::digest(secret.as_bytes()).as_slice() == record.host_secret_sha256.as_slice()
        });
        let owner = knock
            .user
            .is_some_and(|user| record.owner_user_id == Some(user.id));
        let host = secret_matches || owner;
        if !host {
            self.passcode_lockout(source, meeting, now_ms)?;
            if let Some(hash) = &record.passcode_hash {
                let Some(passcode) = knock.passcode else {
                    return Err(Refusal::unknown_meeting());
                };
                let right =
                    crate::password::verify_blocking(hash.clone(), passcode.to_owned()).await;
                if !right {
                    Self::audit(storage, knock, now_ms, "passcode_failed", None, "").await;
                    if self.passcode_failures.record(source, meeting, now_ms) {
                        let detail = format!(
                            "{PASSCODE_FAILURES_BEFORE_LOCKOUT} wrong passcodes: locked out for {} min",
                            PASSCODE_WINDOW_MS / 60_000
                        );
                        Self::audit(storage, knock, now_ms, "passcode_lockout", None, &detail)
                            .await;
                    }
                    return Err(Refusal::unknown_meeting());
                }
            }
        }
        Ok((record, host, secret_matches))
    }

    async fn check_after_rate_limit(
        &self,
        storage: &Storage,
        knock: &Knock<'_>,
        source: IpAddr,
        now_ms: i64,
    ) -> Result<Pass, Refusal> {
        let meeting = knock.meeting;
        let (record, host, host_link) = self.open_meeting(storage, knock, source, now_ms).await?;
        if !host && knock.host_secret.is_some() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the host secret does not match",
            ));
        }
        let audit = |event: &'static str, subject: Option<String>, detail: String| async move {
            Self::audit(storage, knock, now_ms, event, subject.as_deref(), &detail).await
        };

        if record.ended_at.is_some() {
            return Err(Refusal::new(
                ErrorCode::MeetingEnded,
                "the meeting has ended",
            ));
        }

        let mut invitation = None;
        let mut single_use = false;
        if !host {
            if let Some(token) = knock.invite {
                match self
                    .redeemable_invitation(storage, meeting, token, now_ms)
                    .await
                {
                    Ok((grant, once)) => {
                        invitation = Some(grant);
                        single_use = once;
                    }
                    Err(InvitationRefusal::Storage) => return Err(Refusal::internal()),
                    Err(InvitationRefusal::Refused { what, id }) => {
                        audit("invitation_refused", id, what.into()).await;
                        return Err(invitation_refused(what));
                    }
                }
            } else if record.require_invitation {
                audit("invitation_refused", None, "missing".into()).await;
                return Err(Refusal::new(
                    ErrorCode::InvitationRequired,
                    "this meeting admits invited participants only: ask a host for an invitation link",
                ));
            }
        }

        let invitation_id = invitation.as_ref().map(|i| i.id.as_str());
        let user_id = knock.user.map(|u| u.id);
        match storage
            .is_banned(meeting, knock.device_id, invitation_id, user_id)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                let subject = knock
                    .user
                    .map(|u| format!("user {}", u.name))
                    .or_else(|| invitation_id.map(|i| format!("invitation {i}")));
                audit("banned_refused", subject, String::new()).await;
                return Err(Refusal::new(
                    ErrorCode::Banned,
                    "you were removed from this meeting and may not return",
                ));
            }
            Err(e) => {
                warn!("storage error at the gate: {e}");
                return Err(Refusal::internal());
            }
        }

        if let (Some(grant), true) = (&invitation, single_use) {
            // The condition lives in the UPDATE: of two racing replays, one gets `false`.
            match storage.redeem_invitation(&grant.id, now_ms / 1000).await {
                Ok(true) => {}
                Ok(false) => {
                    audit(
                        "invitation_refused",
                        Some(grant.id.clone()),
                        "already used".into(),
                    )
                    .await;
                    return Err(invitation_refused("already used"));
                }
                Err(e) => {
                    warn!("storage error at the gate: {e}");
                    return Err(Refusal::internal());
                }
            }
        }

        Ok(Pass {
            record,
            host,
            host_link,
            invitation,
        })
    }

    /// Checks a token without consuming it: the stored invitation's token digest, then its
    /// expiry, revocation and use. Returns the grant and whether it is single-use.
    async fn redeemable_invitation(
        &self,
        storage: &Storage,
        meeting: &MeetingId,
        token: &str,
        now_ms: i64,
    ) -> Result<(InvitationGrant, bool), InvitationRefusal> {
        let presented =
            crate::invitation::parse(token).map_err(|_| InvitationRefusal::Refused {
                what: "not valid",
                id: None,
            })?;
        let id = presented.invitation_id;
        let refused = |what: &'static str| InvitationRefusal::Refused {
            what,
            id: Some(id.clone()),
        };
        let stored = match storage.invitation(&id).await {
            Ok(Some(stored))
                if stored.meeting_id == meeting.as_str()
                    && stored.token_sha256.as_deref().is_some_and(|digest| {
                        crate::invitation::digests_match(digest, &presented.token_sha256)
                    }) =>
            {
                stored
            }
            Ok(_) => return Err(refused("not valid")),
            Err(e) => {
                warn!("storage error at the gate: {e}");
                return Err(InvitationRefusal::Storage);
            }
        };
        if stored.revoked_at.is_some() {
            return Err(refused("revoked"));
        }
        if stored.expires_at <= now_ms / 1000 {
            return Err(refused("expired"));
        }
        if stored.single_use && stored.used_at.is_some() {
            return Err(refused("already used"));
        }
        Ok((
            InvitationGrant {
                id: stored.id,
                label: stored.label,
                skip_lobby: stored.skip_lobby,
            },
            stored.single_use,
        ))
    }
}

enum InvitationRefusal {
    Refused {
        what: &'static str,
        id: Option<String>,
    },
    Storage,
}

fn invitation_refused(what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::InvitationRequired,
        format!("the invitation is {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Ban, InvitationRecord};

    const ADDR: &str = "192.0.2.7";

    fn peer() -> IpAddr {
        ADDR.parse().unwrap()
    }

    fn knock(meeting: &MeetingId) -> Knock<'_> {
        Knock {
            peer: peer(),
            meeting,
            host_secret: None,
            passcode: None,
            invite: None,
            device_id: None,
            user: None,
        }
    }

    async fn setup(
        passcode: Option<&str>,
        require_invitation: bool,
    ) -> (tempfile::TempDir, Storage, Gate, MeetingId) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let id = MeetingId::from_random_bytes([9; 16]);
        let record = MeetingRecord {
            passcode_hash: passcode.map(|p| crate::password::hash(p).unwrap()),
            require_invitation,
            ..MeetingRecord::new(id.clone(), Sha256::digest(b"hostsecret").to_vec(), 0)
        };
        storage.create_meeting(&record).await.unwrap();
        (dir, storage, Gate::new(), id)
    }

    async fn invite(
        storage: &Storage,
        _gate: &Gate,
        meeting: &MeetingId,
        single_use: bool,
        expires_at: i64,
    ) -> String {
        let id = crate::invitation::new_invitation_id();
        let token = format!("tok{id}");
        storage
            .create_invitation(&InvitationRecord {
                id: id.clone(),
                meeting_id: meeting.to_string(),
                label: "guest".into(),
                created_at: 0,
                expires_at,
                single_use,
                skip_lobby: true,
                used_at: None,
                revoked_at: None,
                token_sha256: Some(Sha256::digest(token.as_bytes()).to_vec()),
            })
            .await
            .unwrap();
        format!("{id}.{token}")
    }

    #[test]
    fn five_failures_in_the_window_lock_out_for_the_window() {
        let failures = PasscodeFailures::default();
        let m = MeetingId::from_random_bytes([1; 16]);
        let other = MeetingId::from_random_bytes([2; 16]);
        // Spread out beyond the window: never locked.
        for i in 0..10 {
            assert!(!failures.record(peer(), &m, i * PASSCODE_WINDOW_MS));
        }
        let t0 = 100 * PASSCODE_WINDOW_MS;
        for i in 0..4 {
            assert!(!failures.record(peer(), &m, t0 + i));
        }
        assert!(failures.lockout(peer(), &m, t0 + 4).is_none());
        assert!(failures.record(peer(), &m, t0 + 5), "the fifth locks out");
        assert!(failures.lockout(peer(), &m, t0 + 6).is_some());
        assert!(
            failures.lockout(peer(), &other, t0 + 6).is_none(),
            "per meeting"
        );
        assert!(failures
            .lockout(peer(), &m, t0 + 5 + PASSCODE_WINDOW_MS)
            .is_none());
    }

    #[tokio::test]
    async fn unknown_meeting_and_wrong_or_missing_passcode_look_alike() {
        let (_dir, storage, gate, id) = setup(Some("open sesame"), false).await;
        let unknown = MeetingId::from_random_bytes([1; 16]);
        let a = gate.check(&storage, knock(&unknown), 0).await.unwrap_err();
        let b = gate.check(&storage, knock(&id), 0).await.unwrap_err();
        let c = gate
            .check(
                &storage,
                Knock {
                    passcode: Some("nope"),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap_err();
        let d = gate
            .check(
                &storage,
                Knock {
                    passcode: Some("nope"),
                    ..knock(&unknown)
                },
                0,
            )
            .await
            .unwrap_err();
        assert_eq!(a, Refusal::unknown_meeting());
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        let pass = gate
            .check(
                &storage,
                Knock {
                    passcode: Some("open sesame"),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap();
        assert!(!pass.host);
        let host = gate
            .check(
                &storage,
                Knock {
                    host_secret: Some("hostsecret"),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap();
        assert!(host.host, "hosts skip the passcode");
        let log = storage.audit_log(&id).await.unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].event, "passcode_failed");
        assert_eq!(log[0].actor.as_deref(), Some(ADDR));
    }

    #[tokio::test]
    async fn failures_drain_the_bucket_and_successes_do_not() {
        let (_dir, storage, gate, id) = setup(None, false).await;
        for _ in 0..50 {
            gate.check(&storage, knock(&id), 0).await.unwrap();
        }
        let unknown = MeetingId::from_random_bytes([1; 16]);
        for _ in 0..KNOCK_BURST {
            let r = gate.check(&storage, knock(&unknown), 0).await.unwrap_err();
            assert_eq!(r.code, ErrorCode::UnknownMeeting);
        }
        let r = gate.check(&storage, knock(&id), 0).await.unwrap_err();
        assert_eq!(r.code, ErrorCode::RateLimited, "even for a real meeting");
        gate.check(&storage, knock(&id), 1000).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_host_secret_is_forbidden_and_ended_meetings_refuse() {
        let (_dir, storage, gate, id) = setup(None, false).await;
        let r = gate
            .check(
                &storage,
                Knock {
                    host_secret: Some("guess"),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::Forbidden);
        storage.end_meeting(&id, 5).await.unwrap();
        let r = gate.check(&storage, knock(&id), 0).await.unwrap_err();
        assert_eq!(r.code, ErrorCode::MeetingEnded);
    }

    #[tokio::test]
    async fn invitations_are_required_checked_and_single_use() {
        let (_dir, storage, gate, id) = setup(None, true).await;
        let r = gate.check(&storage, knock(&id), 0).await.unwrap_err();
        assert_eq!(r.code, ErrorCode::InvitationRequired);
        let host = gate
            .check(
                &storage,
                Knock {
                    host_secret: Some("hostsecret"),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap();
        assert!(host.host);

        let once = invite(&storage, &gate, &id, true, 100).await;
        let pass = gate
            .check(
                &storage,
                Knock {
                    invite: Some(&once),
                    ..knock(&id)
                },
                1000,
            )
            .await
            .unwrap();
        let grant = pass.invitation.unwrap();
        assert!(grant.skip_lobby);
        assert_eq!(grant.label, "guest");
        let r = gate
            .check(
                &storage,
                Knock {
                    invite: Some(&once),
                    ..knock(&id)
                },
                2000,
            )
            .await
            .unwrap_err();
        assert_eq!(r, invitation_refused("already used"));

        let expired = invite(&storage, &gate, &id, false, 100).await;
        let r = gate
            .check(
                &storage,
                Knock {
                    invite: Some(&expired),
                    ..knock(&id)
                },
                100_000,
            )
            .await
            .unwrap_err();
        assert_eq!(r, invitation_refused("expired"));

        let revoked = invite(&storage, &gate, &id, false, 1000).await;
        let revoked_id = revoked.split('.').next().unwrap();
        assert!(storage.revoke_invitation(&id, revoked_id, 1).await.unwrap());
        let r = gate
            .check(
                &storage,
                Knock {
                    invite: Some(&revoked),
                    ..knock(&id)
                },
                200_000,
            )
            .await
            .unwrap_err();
        assert_eq!(r, invitation_refused("revoked"));

        // A real invitation's id with a token its host's client never derived, a token for an
        // id nobody registered, and the old `<id>.<expiry>.<signature>` shape: none is valid
        // (the expiry is the stored record's, so there is nothing in a token to push back).
        let (live, _) = invite(&storage, &gate, &id, false, 1000)
            .await
            .split_once('.')
            .map(|(i, t)| (i.to_owned(), t.to_owned()))
            .unwrap();
        for forged in [
            format!("{live}.{}", "a".repeat(26)),
            format!(
                "{}.{}",
                crate::invitation::new_invitation_id(),
                "a".repeat(26)
            ),
            format!("{live}.1000.{}", "a".repeat(52)),
        ] {
            let r = gate
                .check(
                    &storage,
                    Knock {
                        invite: Some(&forged),
                        ..knock(&id)
                    },
                    300_000,
                )
                .await
                .unwrap_err();
            assert_eq!(r, invitation_refused("not valid"), "{forged}");
        }

        let events: Vec<_> = storage
            .audit_log(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event, r.detail))
            .collect();
        let refused = |d: &str| ("invitation_refused".to_string(), d.to_string());
        assert_eq!(
            events,
            vec![
                refused("missing"),
                refused("already used"),
                refused("expired"),
                refused("revoked"),
                refused("not valid"),
                refused("not valid"),
                refused("not valid")
            ]
        );
    }

    #[tokio::test]
    async fn bans_hold_for_device_invitation_and_account() {
        let (_dir, storage, gate, id) = setup(None, false).await;
        storage
            .add_ban(
                &id,
                &Ban {
                    device_id: Some("dev-1".into()),
                    ..Ban::default()
                },
            )
            .await
            .unwrap();
        storage
            .add_ban(
                &id,
                &Ban {
                    user_id: Some(42),
                    ..Ban::default()
                },
            )
            .await
            .unwrap();
        let token = invite(&storage, &gate, &id, false, 100).await;
        let inv_id = token.split('.').next().unwrap().to_owned();
        storage
            .add_ban(
                &id,
                &Ban {
                    invitation_id: Some(inv_id),
                    ..Ban::default()
                },
            )
            .await
            .unwrap();
        let user = crate::accounts::User {
            id: 42,
            name: "mallory".into(),
        };
        for k in [
            Knock {
                device_id: Some("dev-1"),
                ..knock(&id)
            },
            Knock {
                user: Some(&user),
                ..knock(&id)
            },
            Knock {
                invite: Some(&token),
                ..knock(&id)
            },
        ] {
            let r = gate.check(&storage, k, 0).await.unwrap_err();
            assert_eq!(r.code, ErrorCode::Banned);
        }
        gate.check(
            &storage,
            Knock {
                device_id: Some("dev-2"),
                ..knock(&id)
            },
            0,
        )
        .await
        .unwrap();
        let log = storage.audit_log(&id).await.unwrap();
        assert_eq!(
            log.iter().filter(|r| r.event == "banned_refused").count(),
            3
        );
    }

    #[tokio::test]
    async fn an_owner_is_a_host_without_the_secret() {
        let (_dir, storage, _gate, _) = setup(None, false).await;
        let user_id = storage.create_user("olga", "x", 0).await.unwrap().unwrap();
        let id = MeetingId::from_random_bytes([5; 16]);
        let record = MeetingRecord {
            passcode_hash: Some(crate::password::hash("pw12").unwrap()),
            require_invitation: true,
            owner_user_id: Some(user_id),
            ..MeetingRecord::new(id.clone(), vec![0; 32], 0)
        };
        storage.create_meeting(&record).await.unwrap();
        let gate = Gate::new();
        let owner = crate::accounts::User {
            id: user_id,
            name: "olga".into(),
        };
        let pass = gate
            .check(
                &storage,
                Knock {
                    user: Some(&owner),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap();
        assert!(pass.host);
        let stranger = crate::accounts::User {
            id: user_id + 1,
            name: "x".into(),
        };
        let r = gate
            .check(
                &storage,
                Knock {
                    user: Some(&stranger),
                    ..knock(&id)
                },
                0,
            )
            .await
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::UnknownMeeting);
    }
}
