//! The live meeting controls, each attacked through a real server: the lobby with no side
//! door, forged host actions, removal as a ban (across a restart), host mutes enforced where
//! media flows, the lock, the panic button, ending a meeting and the audit trail.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn hello_from(meeting: &str, name: &str, device: &str) -> String {
    json!({"v": 1, "type": "hello", "meeting": meeting, "name": name, "device_id": device,
        "client_version": "test"})
    .to_string()
}

fn action(kind: &str, fields: Value) -> String {
    let mut msg = json!({"v": 1, "type": kind});
    if let (Some(m), Some(f)) = (msg.as_object_mut(), fields.as_object()) {
        m.extend(f.clone());
    }
    msg.to_string()
}

/// Waits for an `error` with `code`, skipping other news.
async fn expect_refusal(ws: &mut Ws, code: &str) -> Value {
    let err = ws_next_of(ws, "error").await;
    assert_eq!(err["code"], code, "{err}");
    err
}

async fn audit_events(t: &TestServer, links: &Links) -> Vec<String> {
    let log: Value = client::tls::http()
        .get(format!(
            "{}/api/meetings/{}/audit",
            t.server.base_url, links.id
        ))
        .bearer_auth(links.host_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log
        .as_array()
        .or_else(|| log["events"].as_array())
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn meeting_size(t: &TestServer, links: &Links) -> u64 {
    let info: Value = reqwest::get(format!("{}/api/meetings/{}", t.server.base_url, links.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info["participants"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn early_arrivals_wait_in_the_lobby_until_a_host_admits_them() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    // No host yet: the guest waits, however long, and gets no media or group access.
    let (mut guest, guest_id) = ws_knock(&t.server, &links.id, "early").await;
    ws_send(
        &mut guest,
        action("mls_key_package", json!({"key_package": "AAAA"})),
    )
    .await;
    expect_refusal(&mut guest, "not_in_group").await;

    // The host arrives and sees who waits.
    let (mut host, welcome) = ws_join_host(&t.server, &links, "host").await;
    assert_eq!(welcome["lobby"][0]["id"], guest_id, "{welcome}");
    ws_send(
        &mut host,
        action("deny", json!({"participant_id": guest_id})),
    )
    .await;
    let denied = ws_next_of(&mut guest, "denied").await;
    assert!(denied["reason"].as_str().unwrap().contains("host"));
    assert!(ws_next(&mut guest).await.is_err(), "denied is closed");
    assert!(audit_events(&t, &links)
        .await
        .contains(&"denied".to_owned()));
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn forged_host_actions_get_forbidden_and_change_nothing() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut host, welcome) = ws_join_host(&t.server, &links, "host").await;
    let host_id = welcome["participant_id"].as_u64().unwrap();
    let (mut mallory, _) = ws_admitted(&t.server, &mut host, &links.id, "mallory").await;
    let (mut bob, bob_welcome) = ws_admitted(&t.server, &mut host, &links.id, "bob").await;
    let bob_id = bob_welcome["participant_id"].as_u64().unwrap();

    for forged in [
        action("remove", json!({"participant_id": host_id})),
        action("remove", json!({"participant_id": bob_id})),
        action(
            "mute",
            json!({"participant_id": bob_id, "source": "microphone"}),
        ),
        action(
            "set_role",
            json!({"participant_id": bob_id, "role": "host"}),
        ),
        action("set_locked", json!({"locked": true})),
        action("suspend_all", json!({})),
        action("end_meeting", json!({})),
        action("send_to_lobby", json!({"participant_id": host_id})),
    ] {
        ws_send(&mut mallory, forged).await;
        expect_refusal(&mut mallory, "forbidden").await;
    }
    // Bob and the host are untouched: both still answer, nobody was told of any change.
    for ws in [&mut bob, &mut host] {
        ws_send(ws, r#"{"v":1,"type":"ping"}"#).await;
        loop {
            let msg = ws_next(ws).await.expect("still connected");
            let kind = msg["type"].as_str().unwrap();
            assert!(
                [
                    "pong",
                    "participant_joined",
                    "lobby_changed",
                    "mls_key_package"
                ]
                .contains(&kind),
                "unexpected {msg}"
            );
            if kind == "pong" {
                break;
            }
        }
    }
    // A co-host may not remove a host either.
    ws_send(
        &mut host,
        action(
            "set_role",
            json!({"participant_id": bob_id, "role": "co_host"}),
        ),
    )
    .await;
    ws_next_of(&mut bob, "role_changed").await;
    ws_send(
        &mut bob,
        action("remove", json!({"participant_id": host_id})),
    )
    .await;
    expect_refusal(&mut bob, "forbidden").await;
    assert!(
        metric(
            &t.server,
            "conclave_signaling_rejected_total{reason=\"forbidden\"}"
        )
        .await
            >= 9
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_removed_participant_is_banned_and_stays_banned_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let links = create_meeting(&server).await;
    let (mut host, _) = ws_join_host(&server, &links, "host").await;

    let mut guest = ws_connect(&server).await;
    ws_send(&mut guest, hello_from(&links.id, "troll", "device-troll")).await;
    let lobby = ws_next_of(&mut guest, "lobby").await;
    let troll = lobby["participant_id"].as_u64().unwrap();
    ws_next_of(&mut host, "lobby_changed").await;
    ws_send(&mut host, action("admit", json!({"participant_id": troll}))).await;
    ws_next_of(&mut guest, "welcome").await;

    ws_send(
        &mut host,
        action("remove", json!({"participant_id": troll})),
    )
    .await;
    let removed = ws_next_of(&mut guest, "removed").await;
    assert!(
        removed["reason"].as_str().unwrap().contains("host"),
        "{removed}"
    );
    let left = ws_next_of(&mut host, "participant_left").await;
    assert_eq!(left["reason"], "removed");

    // Back at once from the same device, under another name: refused before the lobby.
    let mut again = ws_connect(&server).await;
    ws_send(
        &mut again,
        hello_from(&links.id, "innocent", "device-troll"),
    )
    .await;
    expect_refusal(&mut again, "banned").await;
    assert_eq!(ws_next(&mut again).await.unwrap_err(), Some(1008));

    // The ban is in the database: a restart does not lift it.
    drop(host);
    server.shutdown().await.unwrap();
    let server = start_in(dir.path()).await;
    let mut later = ws_connect(&server).await;
    ws_send(&mut later, hello_from(&links.id, "troll", "device-troll")).await;
    expect_refusal(&mut later, "banned").await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mute_stops_the_media_at_the_server() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    // The host bot creates the group; a second host, on a raw socket, then mutes "muted" the
    // moment it is in, before its client could send anything: what that client does no
    // longer matters.
    let host_bot = tokio::spawn(client::run(bot(&links.host, "host", 7.0)));
    while meeting_size(&t, &links).await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut moderator, _) = ws_join_host(&t.server, &links, "moderator").await;
    let bots = tokio::spawn(run_bots(vec![
        bot(&links.join, "muted", 6.0),
        bot(&links.join, "observer", 6.0),
    ]));
    let muted_id = loop {
        let joined = ws_next_of(&mut moderator, "participant_joined").await;
        if joined["participant"]["name"] == "muted" {
            break joined["participant"]["id"].as_u64().unwrap();
        }
    };
    ws_send(
        &mut moderator,
        action(
            "mute",
            json!({"participant_id": muted_id, "source": "microphone"}),
        ),
    )
    .await;
    let change = ws_next_of(&mut moderator, "media_changed").await;
    assert_eq!(
        (change["blocked"].as_bool(), change["source"].as_str()),
        (Some(true), Some("microphone"))
    );
    let reports = tokio::time::timeout(Duration::from_secs(40), bots)
        .await
        .expect("bots finish")
        .expect("bots task");
    let observer = reports.iter().find(|r| r.name == "observer").unwrap();
    let from_muted = |kind: &str| {
        observer
            .received
            .iter()
            .filter(|t| t.from == "muted" && t.kind == kind)
            .map(|t| t.frames)
            .sum::<u64>()
    };
    assert_eq!(from_muted("audio"), 0, "{observer:#?}");
    assert!(from_muted("video") > 30, "video still flows: {observer:#?}");
    let host = host_bot.await.expect("host task").expect("host bot runs");
    assert!(host
        .received
        .iter()
        .any(|t| t.from == "observer" && t.kind == "audio" && t.verified > 30));
    assert!(metric(&t.server, "conclave_media_frames_blocked_total").await > 30);
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_locked_meeting_refuses_everyone_new_until_unlocked_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let links = create_meeting(&server).await;
    let (mut host, _) = ws_join_host(&server, &links, "host").await;
    ws_send(&mut host, action("set_locked", json!({"locked": true}))).await;
    let state = ws_next_of(&mut host, "meeting_state_changed").await;
    assert_eq!(state["meeting_state"]["locked"], true);

    let mut guest = ws_connect(&server).await;
    ws_send(&mut guest, hello(&links.id, "late")).await;
    expect_refusal(&mut guest, "locked").await;

    drop(host);
    server.shutdown().await.unwrap();
    let server = start_in(dir.path()).await;
    let mut guest = ws_connect(&server).await;
    ws_send(&mut guest, hello(&links.id, "later")).await;
    expect_refusal(&mut guest, "locked").await;
    // A host still gets in and unlocks; then the lobby works again.
    let (mut host, welcome) = ws_join_host(&server, &links, "host").await;
    assert_eq!(welcome["meeting_state"]["locked"], true);
    ws_send(&mut host, action("set_locked", json!({"locked": false}))).await;
    ws_next_of(&mut host, "meeting_state_changed").await;
    let (_guest, welcome) = ws_admitted(&server, &mut host, &links.id, "finally").await;
    assert_eq!(welcome["role"], "guest");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_panic_button_locks_mutes_and_pauses_chat_and_is_audited() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut host, _) = ws_join_host(&t.server, &links, "host").await;
    let (mut guest, welcome) = ws_admitted(&t.server, &mut host, &links.id, "guest").await;
    let guest_id = welcome["participant_id"].as_u64().unwrap();

    ws_send(&mut host, action("suspend_all", json!({}))).await;
    let state = ws_next_of(&mut guest, "meeting_state_changed").await;
    assert_eq!(state["meeting_state"]["suspended"], true);
    assert_eq!(state["meeting_state"]["locked"], true);
    loop {
        let muted = ws_next_of(&mut guest, "media_changed").await;
        if muted["participant_id"] == guest_id && muted["source"] == "microphone" {
            assert_eq!(muted["blocked"], true);
            break;
        }
    }
    // Chat, unmuting and screen sharing are refused while suspended.
    ws_send(
        &mut guest,
        action("mls_message", json!({"data": "AAAA", "purpose": "chat"})),
    )
    .await;
    expect_refusal(&mut guest, "not_permitted").await;
    ws_send(
        &mut guest,
        action("set_muted", json!({"source": "microphone", "muted": false})),
    )
    .await;
    expect_refusal(&mut guest, "not_permitted").await;
    ws_send(
        &mut guest,
        action("set_muted", json!({"source": "screen", "muted": false})),
    )
    .await;
    expect_refusal(&mut guest, "not_permitted").await;
    // Nobody new gets in.
    let mut raider = ws_connect(&t.server).await;
    ws_send(&mut raider, hello(&links.id, "raider")).await;
    expect_refusal(&mut raider, "locked").await;

    // Resumed: unmuting works again (the meeting allows it by default).
    ws_send(&mut host, action("resume_all", json!({}))).await;
    ws_next_of(&mut guest, "meeting_state_changed").await;
    ws_send(
        &mut guest,
        action("set_muted", json!({"source": "microphone", "muted": false})),
    )
    .await;
    let unmuted = ws_next_of(&mut guest, "media_changed").await;
    assert_eq!(unmuted["blocked"], false);
    let events = audit_events(&t, &links).await;
    for event in ["admitted", "suspended", "resumed"] {
        assert!(events.contains(&event.to_owned()), "{event} in {events:?}");
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ending_the_meeting_closes_it_for_everyone_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let links = create_meeting(&server).await;
    let (mut host, _) = ws_join_host(&server, &links, "host").await;
    let (mut guest, _) = ws_admitted(&server, &mut host, &links.id, "guest").await;
    let (mut waiting, _) = ws_knock(&server, &links.id, "waiting").await;
    ws_send(&mut guest, action("end_meeting", json!({}))).await;
    expect_refusal(&mut guest, "forbidden").await;
    ws_send(&mut host, action("end_meeting", json!({}))).await;
    for ws in [&mut guest, &mut waiting, &mut host] {
        ws_next_of(ws, "meeting_ended").await;
        assert_eq!(ws_next(ws).await.unwrap_err(), Some(1008));
    }
    server.shutdown().await.unwrap();
    let server = start_in(dir.path()).await;
    let mut back = ws_connect(&server).await;
    ws_send(&mut back, host_hello(&links, "host")).await;
    expect_refusal(&mut back, "meeting_ended").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_participant_sent_back_to_the_lobby_waits_again() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut host, _) = ws_join_host(&t.server, &links, "host").await;
    let (mut guest, welcome) = ws_admitted(&t.server, &mut host, &links.id, "guest").await;
    let guest_id = welcome["participant_id"].as_u64().unwrap();
    ws_send(
        &mut host,
        action("send_to_lobby", json!({"participant_id": guest_id})),
    )
    .await;
    let lobby = ws_next_of(&mut guest, "lobby").await;
    assert_eq!(lobby["reason"], "sent_back");
    ws_send(&mut guest, r#"{"v":1,"type":"answer","sdp":"v=0"}"#).await;
    expect_refusal(&mut guest, "not_permitted").await;
    ws_wait_in_lobby(&mut host, guest_id).await;
    ws_send(
        &mut host,
        action("admit", json!({"participant_id": guest_id})),
    )
    .await;
    ws_next_of(&mut guest, "welcome").await;
    t.server.shutdown().await.unwrap();
}

/// Issues an invitation as the host's client does and returns what `hello` carries for it
/// (`<id>.<token>`, derived from the invitation link's secret).
async fn invitation(links: &Links, label: &str, skip_lobby: bool) -> String {
    let invitation =
        client::meeting_links::invite(&links.host, label, 7 * 86400, false, skip_lobby)
            .await
            .expect("invitation issued");
    client::join_url::JoinLink::parse(&invitation.url)
        .unwrap()
        .hello_invite()
        .expect("an invitation link")
}

fn invited_hello(meeting: &str, name: &str, device: &str, token: &str) -> String {
    json!({"v": 1, "type": "hello", "meeting": meeting, "name": name, "device_id": device,
        "invite": token, "client_version": "test"})
    .to_string()
}

#[tokio::test]
async fn invitees_are_participants_and_a_removed_invitation_stays_out() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut host, _) = ws_join_host(&t.server, &links, "host").await;

    // An invitation that skips the lobby: straight in, as a participant, vouched by the link.
    let vip = invitation(&links, "Dana", true).await;
    let mut dana = ws_connect(&t.server).await;
    ws_send(
        &mut dana,
        invited_hello(&links.id, "Dana", "dev-dana", &vip),
    )
    .await;
    let welcome = ws_next_of(&mut dana, "welcome").await;
    assert_eq!(welcome["role"], "participant");
    let joined = ws_next_of(&mut host, "participant_joined").await;
    assert_eq!(joined["entry"], "invitation");

    // A plain invitation waits in the lobby, labelled for the hosts.
    let plain = invitation(&links, "Eve", false).await;
    let mut eve = ws_connect(&t.server).await;
    ws_send(&mut eve, invited_hello(&links.id, "Eve", "dev-eve", &plain)).await;
    let lobby = ws_next_of(&mut eve, "lobby").await;
    let eve_id = lobby["participant_id"].as_u64().unwrap();
    let waiting = ws_wait_in_lobby(&mut host, eve_id).await;
    assert_eq!(waiting["waiting"][0]["invitation"], "Eve");
    ws_send(
        &mut host,
        action("admit", json!({"participant_id": eve_id})),
    )
    .await;
    let welcome = ws_next_of(&mut eve, "welcome").await;
    assert_eq!(welcome["role"], "participant");

    // Removed: the invitation is banned too, whatever device presents it next.
    ws_send(
        &mut host,
        action("remove", json!({"participant_id": eve_id})),
    )
    .await;
    ws_next_of(&mut eve, "removed").await;
    let mut other_device = ws_connect(&t.server).await;
    ws_send(
        &mut other_device,
        invited_hello(&links.id, "Eve", "another-device", &plain),
    )
    .await;
    expect_refusal(&mut other_device, "banned").await;
    let events = audit_events(&t, &links).await;
    assert!(events.contains(&"removed".to_owned()), "{events:?}");
    t.server.shutdown().await.unwrap();
}
