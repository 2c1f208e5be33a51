//! A compromised insider, helped by a server that relays whatever it is given, tries to slip
//! a silent listener ("ghost") into a meeting: honest members refuse the Commit, raise the
//! alarm, and keep their meeting on keys the ghost never gets.
//!
//! The rogue is a raw WebSocket client that joins like anyone else, is admitted and added by
//! the honest host, and then commits a KeyPackage no host admitted with the test-only
//! `Member::commit_add_unchecked` (cargo feature `e2ee/insecure-test-hooks`). The delivery
//! service accepts that Commit: it only sees clear-text framing and cannot tell.

mod common;

use std::time::{Duration, Instant};

use common::*;
use e2ee::{E2eeError, Identity, Member, PendingJoin, Processed};
use futures_util::StreamExt;
use proto::{ClientMessage, ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

/// How long the honest bots stay in the meeting.
const BOT_SECONDS: f64 = 8.0;
/// The rogue attacks once the group is complete and this much time has passed since the bots
/// started, leaving them several seconds of media after the attack.
const ATTACK_AFTER: Duration = Duration::from_millis(2500);

/// What the rogue saw and did.
#[derive(Debug, Default)]
struct Attack {
    /// Epoch and security code of the honest group just before the attack.
    epoch_before: Option<u64>,
    code_before: String,
    /// When the Commit adding the ghost was sent, since the bots started.
    sent_at: Option<Duration>,
    /// The delivery service accepted it (`mls_commit_accepted`).
    accepted: bool,
    /// Code of the epoch the rogue moved to by merging its own Commit (the ghost's epoch).
    code_after: String,
    /// Commits the rogue had to retry because an honest one won the epoch.
    retries: u32,
}

async fn send(ws: &mut Ws, msg: &ClientMessage) {
    ws_send(ws, proto::encode(msg)).await;
}

/// Unix milliseconds, the clock admission proofs are judged by.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn decode(b64: &str) -> Vec<u8> {
    proto::b64_decode(b64).expect("server sends base64")
}

/// True when the rogue's view of the group holds the two honest bots and itself.
fn group_complete(member: &Member) -> bool {
    let names: Vec<String> = member.members().into_iter().map(|(_, n, _)| n).collect();
    names.len() == 3
        && ["host", "alice"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hacked_server_cannot_add_an_unadmitted_listener() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let started = Instant::now();
    let mut bots = tokio::spawn(run_bots(vec![
        bot(&links.host, "host", BOT_SECONDS),
        bot(&links.join, "alice", BOT_SECONDS),
    ]));

    // The rogue joins like any guest and publishes a real KeyPackage.
    let (mut ws, welcome) = ws_join(&t.server, &links.id, "mallory").await;
    let rogue_id = welcome["participant_id"].as_u64().expect("participant id");
    let (pending, key_package) =
        Member::new_pending(Identity::generate("mallory", &rogue_id.to_string()).unwrap()).unwrap();
    let mut pending: Option<PendingJoin> = Some(pending);
    let mut member: Option<Member> = None;
    send(
        &mut ws,
        &ClientMessage::MlsKeyPackage {
            key_package: proto::b64_encode(&key_package),
        },
    )
    .await;
    // The ghost: a KeyPackage that nobody ever published to the lobby, let alone admitted.
    let (_ghost, ghost_kp) =
        Member::new_pending(Identity::generate("ghost", "999999").unwrap()).unwrap();

    let mut attack = Attack::default();
    let mut attack_pending = false;
    let mut last_change = Instant::now();
    let reports = loop {
        let event = tokio::select! {
            reports = &mut bots => break reports.expect("bots task"),
            next = ws.next() => next,
            _ = tokio::time::sleep(Duration::from_millis(50)) => None,
        };
        if let Some(next) = event {
            let text = match next {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => panic!("the server closed the rogue: {frame:?}"),
                Ok(_) => continue,
                Err(e) => panic!("rogue socket: {e}"),
            };
            let msg = proto::parse_server_message(text.as_str()).expect("server message");
            let now_ms = started.elapsed().as_millis() as u64;
            match msg {
                ServerMessage::MlsWelcome { welcome } => {
                    let joined = pending
                        .take()
                        .expect("one Welcome")
                        .join(&decode(&welcome), None)
                        .expect("the honest host's Welcome is valid");
                    member = Some(joined);
                    last_change = Instant::now();
                }
                ServerMessage::MlsCommit { commit, .. } => {
                    let m = member.as_mut().expect("commits reach members only");
                    if attack_pending {
                        // An honest Commit won this epoch; ours will come back stale.
                        m.discard_pending_commit().unwrap();
                        attack_pending = false;
                        attack.sent_at = None;
                        attack.retries += 1;
                    }
                    match m.process(&decode(&commit), now_ms) {
                        Ok(Processed::CommitMerged { .. } | Processed::HostsChanged { .. }) => {}
                        other => panic!("honest commit: {other:?}"),
                    }
                    last_change = Instant::now();
                }
                ServerMessage::MlsMessage { data, .. } => {
                    if let Some(m) = member.as_mut() {
                        // Admissions of others; older-epoch ones may not decrypt, which is fine.
                        let _ = m.process(&decode(&data), now_ms);
                    }
                }
                ServerMessage::MlsCommitAccepted { .. } => {
                    assert!(attack_pending, "the rogue commits nothing else");
                    attack_pending = false;
                    attack.accepted = true;
                    let m = member.as_mut().unwrap();
                    m.merge_pending_commit(now_ms).unwrap();
                    attack.code_after = m.security_code();
                }
                ServerMessage::Error {
                    code: ErrorCode::StaleEpoch,
                    ..
                } => {
                    // Already handled when the winning Commit arrived.
                }
                ServerMessage::Error { code, reason } => {
                    panic!("the server refused the rogue: {code:?}: {reason}")
                }
                _ => {}
            }
        }

        // Attack once the honest pair and the rogue share an epoch that has settled.
        if let Some(m) = member.as_mut() {
            let due = started.elapsed() >= ATTACK_AFTER
                && last_change.elapsed() >= Duration::from_millis(300);
            if !attack.accepted && !attack_pending && due && group_complete(m) {
                attack.epoch_before = Some(m.epoch());
                attack.code_before = m.security_code();
                assert!(matches!(
                    m.commit_add(&[&ghost_kp], unix_ms()),
                    Err(E2eeError::UnadmittedAdd { name }) if name == "ghost"
                ));
                let (commit, welcome) = m.commit_add_unchecked(&[&ghost_kp]).unwrap();
                send(
                    &mut ws,
                    &ClientMessage::MlsCommit {
                        commit: proto::b64_encode(&commit),
                        welcome: Some(proto::b64_encode(&welcome)),
                    },
                )
                .await;
                attack_pending = true;
                attack.sent_at = Some(started.elapsed());
            }
        }
    };
    drop(ws);
    eprintln!("attack: {attack:?}");
    for report in &reports {
        eprintln!(
            "{}: e2ee {:?} errors {:?} received {}",
            report.name,
            report.e2ee,
            report.errors,
            serde_json::to_string(&report.received).unwrap()
        );
    }

    // The delivery service could not tell: it ordered the Commit like any other.
    let sent_at = attack.sent_at.expect("the rogue attacked");
    assert!(attack.accepted, "the server accepted the rogue's Commit");
    let epoch_before = attack.epoch_before.unwrap();

    let (host, alice) = (&reports[0], &reports[1]);
    for report in [host, alice] {
        // The alarm went off ...
        assert!(
            !report.e2ee.alarms.is_empty(),
            "{}: no alarm: {:?}",
            report.name,
            report.e2ee
        );
        assert!(
            report.errors.iter().any(|e| e.contains("no host admitted")),
            "{}: {:?}",
            report.name,
            report.errors
        );
        // ... and the Commit was not merged: the member stayed in the epoch before it.
        assert_eq!(report.e2ee.epoch, epoch_before, "{}", report.name);
        assert_eq!(
            report.e2ee.security_code, attack.code_before,
            "{}",
            report.name
        );
        assert_eq!(report.e2ee.decrypt_failures, 0, "{:?}", report.e2ee);
    }
    assert_eq!(host.e2ee.security_code, alice.e2ee.security_code);
    assert_ne!(
        attack.code_after, host.e2ee.security_code,
        "the ghost's epoch is not the honest members' epoch"
    );

    // The honest pair kept their meeting: verified media throughout, including well after the
    // attack. Audio runs at 50 frames/s; more than 60% of the post-attack time's worth of
    // frames cannot come from before the attack alone.
    let after = BOT_SECONDS - sent_at.as_secs_f64();
    assert!(after > 4.0, "the attack came late ({sent_at:?})");
    let min_audio = (after * 50.0 * 0.6) as u64;
    let before_max = (sent_at.as_secs_f64() * 50.0) as u64;
    assert!(min_audio > before_max, "{min_audio} vs {before_max}");
    for (report, from) in [(host, "alice"), (alice, "host")] {
        assert_received_all(report, &[from]);
        let audio = report
            .received
            .iter()
            .find(|t| t.from == from && t.kind == "audio")
            .unwrap();
        assert!(
            audio.frames >= min_audio,
            "{} stopped hearing {from} after the attack: {audio:?} (want {min_audio})",
            report.name
        );
        let video = report
            .received
            .iter()
            .find(|t| t.from == from && t.kind == "video")
            .unwrap();
        assert!(video.frames > 100, "{}: {video:?}", report.name);
    }
    t.server.shutdown().await.unwrap();
}
