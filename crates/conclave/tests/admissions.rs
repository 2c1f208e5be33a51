//! The honest paths into a meeting's MLS group, through the real server with real bots: a host
//! that never opens the group is taken over by another host-link holder after the bounded
//! wait, a co-host the host promoted (in the group, not just at the server) admits from the
//! lobby, and once the host takes that back she admits no one.

mod common;

use std::time::{Duration, Instant};

use client::BotOptions;
use common::*;

fn bot(join: &str, name: &str, seconds: f64) -> BotOptions {
    BotOptions {
        video_kbps: 150,
        ..BotOptions::new(join, name, Duration::from_secs_f64(seconds))
    }
}

/// A meeting on `t`, its links, and alice's invitation link (skipping the lobby).
async fn meeting_with_alice_invited(
    t: &TestServer,
) -> (client::meeting_links::MeetingLinks, String) {
    let links =
        client::meeting_links::create_meeting(&t.server.base_url, serde_json::json!({}), None)
            .await
            .expect("meeting");
    let alice_link = client::meeting_links::invite(&links.host_url, "alice", 3600, true, true)
        .await
        .expect("invitation")
        .url;
    (links, alice_link)
}

/// Carol knocks on the plain join link after `delay`: the order only, since what the tests
/// assert is who got in and what they decrypted.
fn carol_knocks_after(
    join: &str,
    delay: Duration,
    seconds: f64,
) -> tokio::task::JoinHandle<Result<client::Report, client::BotError>> {
    let join = join.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        client::run(bot(&join, "carol", seconds)).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_host_does_not_block_the_meeting() {
    let t = start_server().await;
    let links =
        client::meeting_links::create_meeting(&t.server.base_url, serde_json::json!({}), None)
            .await
            .expect("meeting");
    // The first host-link holder is asked to open the group and never does.
    let mut silent = ws_connect(&t.server).await;
    ws_send(
        &mut silent,
        serde_json::json!({"v": 1, "type": "hello", "meeting": links.id, "name": "silent",
            "host_secret": links.host_secret, "client_version": "test"})
        .to_string(),
    )
    .await;
    let welcome = ws_next_of(&mut silent, "welcome").await;
    assert!(welcome["create_group"].is_string(), "{welcome}");

    // A second holder of the host link and a guest it admits: they get a group of their own
    // after the bounded wait, and exchange verified media.
    let started = Instant::now();
    let host = BotOptions {
        admit_all: true,
        ..bot(&links.host_url, "second-host", 14.0)
    };
    let guest = bot(&links.join_url, "guest", 12.0);
    let reports = run_bots(vec![host, guest]).await;
    let (second, guest) = (&reports[0], &reports[1]);
    assert_received_all(second, &["guest"]);
    assert_received_all(guest, &["second-host"]);
    // (Verified frames both ways prove one group; the final security codes differ by design
    // once the first of them leaves and the other re-keys.)
    assert!(second.e2ee.commits_made >= 1, "{second:#?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The silent host is still there: nobody removed it; it just has no say in the group.
    ws_send(&mut silent, r#"{"v":1,"type":"ping"}"#).await;
    assert_eq!(ws_next_of(&mut silent, "pong").await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohost_the_host_promoted_admits_from_the_lobby() {
    let t = start_server().await;
    let (links, alice_link) = meeting_with_alice_invited(&t).await;
    // The host admits no one itself; it makes alice a co-host, and alice admits carol.
    let host = BotOptions {
        promote: vec!["alice".into()],
        ..bot(&links.host_url, "host", 16.0)
    };
    let alice = BotOptions {
        admit_all: true,
        ..bot(&alice_link, "alice", 16.0)
    };
    // After alice was promoted: a co-host hears of the lobby from then on.
    let carol = carol_knocks_after(&links.join_url, Duration::from_secs(3), 12.0);
    let mut reports = run_bots(vec![host, alice]).await;
    reports.push(carol.await.expect("carol task").expect("carol runs"));
    for r in &reports {
        let others: Vec<&str> = ["host", "alice", "carol"]
            .into_iter()
            .filter(|n| *n != r.name)
            .collect();
        assert_received_all(r, &others);
        assert!(r.e2ee.alarms.is_empty(), "{r:#?}");
    }
    // Carol decrypted the host's and alice's frames, and they hers: she is in their group,
    // let in by alice's own admission (the host admitted no one).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohost_whose_host_status_was_taken_back_admits_no_one() {
    let t = start_server().await;
    let (links, alice_link) = meeting_with_alice_invited(&t).await;
    // The host promotes alice and takes it back 2 s later; it admits no one itself. Alice
    // would admit everyone, if she still could.
    let host = BotOptions {
        promote: vec!["alice".into()],
        demote_after: Some(Duration::from_secs(2)),
        ..bot(&links.host_url, "host", 14.0)
    };
    let alice = BotOptions {
        admit_all: true,
        ..bot(&alice_link, "alice", 14.0)
    };
    // Once alice is no co-host any more.
    let carol = carol_knocks_after(&links.join_url, Duration::from_secs(6), 6.0);
    let reports = run_bots(vec![host, alice]).await;
    let carol = carol.await.expect("carol task");
    let refused = carol.expect_err("carol was let in by a demoted co-host");
    assert!(
        refused.to_string().contains("no host admitted this bot"),
        "{refused}"
    );
    let (host, alice) = (&reports[0], &reports[1]);
    assert_received_all(host, &["alice"]);
    assert_received_all(alice, &["host"]);
    for r in &reports {
        assert!(r.received.iter().all(|t| t.from != "carol"), "{r:#?}");
        assert!(r.e2ee.alarms.is_empty(), "{r:#?}");
    }
    // One group, three commits both processed: alice's add (epoch 1), the promotion (2) and
    // the demotion (3). Without the demotion, alice would have let carol in.
    assert_eq!(host.e2ee.epoch, 3, "{host:#?}");
    assert_eq!(alice.e2ee.epoch, 3, "{alice:#?}");
    assert_eq!(host.e2ee.security_code, alice.e2ee.security_code);
}
