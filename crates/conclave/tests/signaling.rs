//! Every kind of bad signaling input gets a reason, is counted, and disturbs nobody else.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(ws: &mut Ws, code: &str) {
    let msg = ws_next(ws).await.expect("an error message");
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert!(
        msg["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{msg}"
    );
    assert_eq!(msg["v"], 1, "{msg}");
}

async fn rejected(t: &TestServer, reason: &str) -> u64 {
    metric(
        &t.server,
        &format!("conclave_signaling_rejected_total{{reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test]
async fn bad_messages_get_reasons_are_counted_and_nobody_else_notices() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut bystander, _) = ws_join_host(&t.server, &links, "bystander").await;

    let mut attacker = ws_connect(&t.server).await;
    // Before hello.
    ws_send(&mut attacker, r#"{"v":1,"type":"offer","sdp":"v=0"}"#).await;
    expect_error(&mut attacker, "hello_required").await;
    ws_send(&mut attacker, "{this is not json").await;
    expect_error(&mut attacker, "malformed_json").await;
    ws_send(&mut attacker, r#"{"v":1,"type":"teleport"}"#).await;
    expect_error(&mut attacker, "unknown_type").await;
    ws_send(&mut attacker, r#"{"v":7,"type":"ping"}"#).await;
    expect_error(&mut attacker, "unsupported_version").await;
    attacker
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut attacker, "binary_not_supported").await;
    ws_send(
        &mut attacker,
        r#"{"v":1,"type":"hello","meeting":"nope","name":"x","client_version":"1"}"#,
    )
    .await;
    expect_error(&mut attacker, "invalid_message").await;

    // In the lobby: no media, no MLS, no host powers.
    ws_send(&mut attacker, hello(&links.id, "attacker")).await;
    let lobby = ws_next(&mut attacker).await.unwrap();
    assert_eq!(lobby["type"], "lobby", "{lobby}");
    let attacker_id = lobby["participant_id"].as_u64().unwrap();
    ws_send(&mut attacker, r#"{"v":1,"type":"offer","sdp":"v=0"}"#).await;
    expect_error(&mut attacker, "not_permitted").await;
    ws_send(
        &mut attacker,
        r#"{"v":1,"type":"mls_message","data":"AAAA"}"#,
    )
    .await;
    expect_error(&mut attacker, "not_in_group").await;
    ws_send(
        &mut attacker,
        format!(r#"{{"v":1,"type":"admit","participant_id":{attacker_id}}}"#),
    )
    .await;
    expect_error(&mut attacker, "forbidden").await;

    // Admitted: bad SDP, an answer nobody asked for, a second hello.
    let waiting = ws_next_of(&mut bystander, "lobby_changed").await;
    assert_eq!(waiting["waiting"][0]["name"], "attacker");
    ws_send(
        &mut bystander,
        format!(r#"{{"v":1,"type":"admit","participant_id":{attacker_id}}}"#),
    )
    .await;
    let welcome = ws_next(&mut attacker).await.unwrap();
    assert_eq!(welcome["type"], "welcome");
    ws_send(
        &mut attacker,
        r#"{"v":1,"type":"offer","sdp":"this is not sdp"}"#,
    )
    .await;
    expect_error(&mut attacker, "invalid_sdp").await;
    ws_send(&mut attacker, r#"{"v":1,"type":"answer","sdp":"v=0"}"#).await;
    expect_error(&mut attacker, "no_pending_offer").await;
    ws_send(&mut attacker, hello(&links.id, "again")).await;
    expect_error(&mut attacker, "already_joined").await;

    // Over 64 KiB: refused and the connection is closed with 1009.
    let padding = "x".repeat(70 * 1024);
    ws_send(
        &mut attacker,
        format!(r#"{{"v":1,"type":"ping","padding":"{padding}"}}"#),
    )
    .await;
    expect_error(&mut attacker, "too_large").await;
    assert_eq!(ws_next(&mut attacker).await.unwrap_err(), Some(1009));

    // The bystander saw the attacker come and go, and nothing else.
    ws_send(&mut bystander, r#"{"v":1,"type":"ping"}"#).await;
    let mut seen = Vec::new();
    loop {
        let msg = ws_next(&mut bystander)
            .await
            .expect("bystander still connected");
        let kind = msg["type"].as_str().unwrap().to_owned();
        if kind == "pong" {
            break;
        }
        seen.push(kind);
    }
    assert!(
        seen.iter()
            .all(|k| k == "participant_joined" || k == "participant_left" || k == "lobby_changed"),
        "{seen:?}"
    );

    for reason in [
        "hello_required",
        "malformed_json",
        "unknown_type",
        "unsupported_version",
        "binary_not_supported",
        "invalid_message",
        "invalid_sdp",
        "no_pending_offer",
        "already_joined",
        "too_large",
        "not_permitted",
        "not_in_group",
        "forbidden",
    ] {
        assert_eq!(rejected(&t, reason).await, 1, "{reason} counted once");
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_meeting_and_wrong_host_secret_are_refused_and_closed() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;

    let mut ws = ws_connect(&t.server).await;
    let unknown = proto::MeetingId::from_random_bytes([9; 16]);
    ws_send(&mut ws, hello(unknown.as_str(), "x")).await;
    expect_error(&mut ws, "unknown_meeting").await;
    assert_eq!(ws_next(&mut ws).await.unwrap_err(), Some(1008));

    let mut ws = ws_connect(&t.server).await;
    let forged = serde_json::json!({"v":1,"type":"hello","meeting":links.id,"name":"x",
        "host_secret":"guess","client_version":"1"});
    ws_send(&mut ws, forged.to_string()).await;
    expect_error(&mut ws, "forbidden").await;
    assert_eq!(ws_next(&mut ws).await.unwrap_err(), Some(1008));

    // The host link's seed is not what the server checks: its client sends the host secret
    // derived from it.
    let seed = links.host.split("#host=").nth(1).unwrap();
    let mut ws = ws_connect(&t.server).await;
    let raw = serde_json::json!({"v":1,"type":"hello","meeting":links.id,"name":"x",
        "host_secret":seed,"client_version":"1"});
    ws_send(&mut ws, raw.to_string()).await;
    expect_error(&mut ws, "forbidden").await;
    assert_eq!(ws_next(&mut ws).await.unwrap_err(), Some(1008));

    // The real host secret makes a host.
    let secret = links.host_secret();
    let mut ws = ws_connect(&t.server).await;
    let host = serde_json::json!({"v":1,"type":"hello","meeting":links.id,"name":"h",
        "host_secret":secret,"client_version":"1"});
    ws_send(&mut ws, host.to_string()).await;
    let welcome = ws_next(&mut ws).await.unwrap();
    assert_eq!(welcome["role"], "host", "{welcome}");

    assert_eq!(rejected(&t, "unknown_meeting").await, 1);
    assert_eq!(rejected(&t, "forbidden").await, 2);
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_api_answers_unknown_and_malformed_meeting_ids_with_404() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let base = &t.server.base_url;
    let ok = reqwest::get(format!("{base}/api/meetings/{}", links.id))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["id"], links.id.as_str());
    for id in [
        proto::MeetingId::from_random_bytes([1; 16]).to_string(),
        "not-an-id".to_owned(),
        "x".repeat(5000),
    ] {
        let response = reqwest::get(format!("{base}/api/meetings/{id}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{id}");
    }
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_participants_and_meetings_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let links = create_meeting(&server).await;
    let (mut ws, _) = ws_join_host(&server, &links, "someone").await;
    server.shutdown().await.unwrap();
    let msg = ws_next(&mut ws).await.unwrap();
    assert_eq!(msg["type"], "server_shutdown", "{msg}");
    assert_eq!(ws_next(&mut ws).await.unwrap_err(), Some(1001));

    let server = start_in(dir.path()).await;
    let (_ws, welcome) = ws_join_host(&server, &links, "again").await;
    assert_eq!(welcome["meeting"], links.id.as_str());
    server.shutdown().await.unwrap();
}
