//! A lying server (`server::test_lie`, cargo feature `insecure-test-hooks`) tries to smuggle
//! a listener of its own into a meeting, one lie per test. Honest bots must never add it,
//! must raise the alarm naming it, must keep one epoch and security code among themselves and
//! keep exchanging verified media; the listener's own report must show nothing decrypted.
//!
//! Run with `cargo test -p conclave --features insecure-test-hooks --test server_lies`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use client::{BotOptions, Report};
use common::assert_received_all;
use server::test_lie::{LieKind, TestLie};
use server::{Server, ServerConfig};
use tokio::sync::mpsc;

const BOT_SECONDS: f64 = 9.0;

struct LyingServer {
    server: Server,
    _data: tempfile::TempDir,
    listener: mpsc::UnboundedReceiver<Report>,
}

async fn lying_server(kind: LieKind) -> LyingServer {
    let data = tempfile::tempdir().expect("temp dir");
    let (tx, listener) = mpsc::unbounded_channel();
    let spawn = Arc::new(move |join: String, name: String| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let options = BotOptions {
                video_kbps: 150,
                ..BotOptions::new(join, name, Duration::from_secs_f64(BOT_SECONDS - 2.0))
            };
            match client::run(options).await {
                Ok(report) => {
                    let _ = tx.send(report);
                }
                Err(e) => panic!("the server's listener could not run: {e}"),
            }
        });
    });
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_bind_ip: "127.0.0.1".parse().unwrap(),
        data_dir: data.path().to_owned(),
        test_lie: Some(Arc::new(TestLie::new(kind, spawn))),
        ..ServerConfig::default()
    };
    LyingServer {
        server: Server::start(config).await.expect("server starts"),
        _data: data,
        listener,
    }
}

fn bot(join: &str, name: &str) -> BotOptions {
    BotOptions {
        video_kbps: 150,
        ..BotOptions::new(join, name, Duration::from_secs_f64(BOT_SECONDS))
    }
}

/// The honest meeting: a host (its host link) and two guests with skip-lobby invitations its
/// client issued; for the co-host lies the host promotes `alice` to co-host.
async fn honest_meeting(t: &mut LyingServer, promote_alice: bool) -> (Vec<Report>, Report) {
    let links =
        client::meeting_links::create_meeting(&t.server.base_url, serde_json::json!({}), None)
            .await
            .expect("meeting");
    assert!(links.join_url.contains("#k="), "{}", links.join_url);
    let invite = |label: &'static str| {
        let host = links.host_url.clone();
        async move {
            client::meeting_links::invite(&host, label, 3600, true, true)
                .await
                .expect("invitation")
                .url
        }
    };
    let (alice_link, bob_link) = (invite("alice").await, invite("bob").await);
    let mut host = bot(&links.host_url, "host");
    if promote_alice {
        host.promote = vec!["alice".into()];
    }
    let reports =
        common::run_bots(vec![host, bot(&alice_link, "alice"), bot(&bob_link, "bob")]).await;
    let listener = tokio::time::timeout(Duration::from_secs(30), t.listener.recv())
        .await
        .expect("the lying server sent its listener in")
        .expect("listener report");
    (reports, listener)
}

fn assert_the_lie_failed(kind: LieKind, honest: &[Report], listener: &Report) {
    let listener_name = &listener.name;
    for r in honest {
        let others: Vec<&str> = ["host", "alice", "bob"]
            .into_iter()
            .filter(|n| *n != r.name)
            .collect();
        assert_received_all(r, &others);
        assert!(
            !r.received.iter().any(|t| &t.from == listener_name),
            "{kind:?}: {} received the listener: {r:#?}",
            r.name
        );
        assert_eq!(r.e2ee.decrypt_failures, 0, "{kind:?}: {r:#?}");
    }
    // One epoch and one security code among the honest three.
    let codes: std::collections::BTreeSet<&str> = honest
        .iter()
        .map(|r| r.e2ee.security_code.as_str())
        .collect();
    assert_eq!(codes.len(), 1, "{kind:?}: {honest:#?}");
    let epochs: std::collections::BTreeSet<u64> = honest.iter().map(|r| r.e2ee.epoch).collect();
    assert_eq!(epochs.len(), 1, "{kind:?}");
    // The alarm, naming who the server tried to add.
    let alarmed: Vec<&str> = honest
        .iter()
        .filter(|r| {
            r.e2ee.alarms.iter().any(|a| {
                a.starts_with("the server tried to add someone no host admitted")
                    && a.contains(listener_name.as_str())
            })
        })
        .map(|r| r.name.as_str())
        .collect();
    match kind {
        // Every member sees the KeyPackage that cannot prove what the server claimed.
        LieKind::HostLink | LieKind::Invitation | LieKind::ForgedInvite => {
            assert_eq!(alarmed.len(), 3, "{kind:?}: {honest:#?}")
        }
        // Whoever the server names as the admitter (alice, the promoted co-host, when she
        // is one by then; else the host) knows they admitted no one.
        LieKind::CohostAdmitted | LieKind::CohostRole => {
            assert!(!alarmed.is_empty(), "{kind:?}: {honest:#?}")
        }
    }
    // The listener: in the meeting by the server's word, and deaf.
    assert_eq!(listener.e2ee.decrypted, 0, "{kind:?}: {listener:#?}");
    assert!(
        listener.received.iter().all(|t| t.verified == 0),
        "{kind:?}: {listener:#?}"
    );
    assert_ne!(listener.e2ee.security_code, honest[0].e2ee.security_code);
}

async fn lie_test(kind: LieKind) {
    let promote = matches!(kind, LieKind::CohostAdmitted | LieKind::CohostRole);
    let mut t = lying_server(kind).await;
    let (honest, listener) = honest_meeting(&mut t, promote).await;
    assert_the_lie_failed(kind, &honest, &listener);
    t.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_the_listener_holds_the_host_link() {
    lie_test(LieKind::HostLink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_the_listener_has_a_skip_lobby_invitation() {
    lie_test(LieKind::Invitation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_a_cohost_admitted_the_listener() {
    lie_test(LieKind::CohostAdmitted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_the_listener_is_a_cohost() {
    lie_test(LieKind::CohostRole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_mints_an_invitation_for_its_listener() {
    lie_test(LieKind::ForgedInvite).await;
}

#[test]
fn the_hooked_binary_offers_the_lie_flags() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["serve", "--help"])
        .output()
        .expect("conclave runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--test-lie <KIND>"), "{help}");
    assert!(help.contains("--test-lie-report <PATH>"), "{help}");
}
