//! The gate against a real server: every attack it exists to stop, mounted from outside.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    client::tls::http()
}

/// Creates a meeting as a host's client does (`client::meeting_links`), with `body` as the
/// rest of the `POST /api/meetings` body; returns its links as JSON: `id`, `join_url`,
/// `host_url` and `host_secret` (the server-facing secret derived from the host link).
async fn create_with(server: &server::Server, body: Value) -> Value {
    let links = client::meeting_links::create_meeting(&server.base_url, body, None)
        .await
        .expect("meeting created");
    json!({"id": links.id, "join_url": links.join_url, "host_url": links.host_url,
           "host_secret": links.host_secret})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `host_secret_sha256` as a client would send it, for raw `POST /api/meetings` bodies.
fn host_digest() -> String {
    hex(&e2ee::HostLinkSecret::generate()
        .unwrap()
        .server_secret_sha256())
}

/// A `token_sha256` as a host's client would send it, for raw invitation requests.
fn token_digest() -> String {
    hex(&e2ee::InvitationSecret::generate()
        .unwrap()
        .server_token_sha256())
}

fn host_secret(created: &Value) -> String {
    created["host_secret"].as_str().unwrap().to_owned()
}

fn meeting_id(created: &Value) -> proto::MeetingId {
    proto::MeetingId::parse(created["id"].as_str().unwrap()).unwrap()
}

/// Says hello with `extra` fields and returns the first answer (or the close code).
async fn knock(server: &server::Server, meeting: &str, extra: Value) -> Result<Value, Option<u16>> {
    let mut hello = json!({"v": 1, "type": "hello", "meeting": meeting, "name": "knocker",
                           "client_version": "test"});
    if let (Some(hello), Some(extra)) = (hello.as_object_mut(), extra.as_object()) {
        hello.extend(extra.clone());
    }
    let mut ws = ws_connect(server).await;
    ws_send(&mut ws, hello.to_string()).await;
    ws_next(&mut ws).await
}

/// The refusal code of a knock, or "passed" if the gate let it through.
async fn knock_code(server: &server::Server, meeting: &str, extra: Value) -> (String, Value) {
    match knock(server, meeting, extra).await {
        Ok(msg) if msg["type"] == "error" => (msg["code"].as_str().unwrap().to_owned(), msg),
        Ok(msg) => ("passed".to_owned(), msg),
        Err(code) => panic!("closed without an answer: {code:?}"),
    }
}

/// An id nobody created (distinct on every call).
fn random_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    proto::MeetingId::from_random_bytes(bytes).to_string()
}

async fn audit_events(server: &server::Server, id: &str, secret: &str) -> Vec<Value> {
    let response = client()
        .get(format!("{}/api/meetings/{id}/audit", server.base_url))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

/// Issues an invitation as a host's client does (`client::meeting_links::invite`, from the
/// host link of `created`) with `body`'s `label`, `expires_in_secs` (default 7 days),
/// `single_use` and `skip_lobby`. Returns `id`, `url` (the invitation link), `expires_at` and
/// `token`: what `hello` carries for it (`<id>.<token>`, derived from the link's secret).
async fn new_invitation(created: &Value, body: Value) -> Value {
    let invitation = client::meeting_links::invite(
        created["host_url"].as_str().unwrap(),
        body["label"].as_str().unwrap_or_default(),
        body["expires_in_secs"].as_u64().unwrap_or(7 * 86400),
        body["single_use"].as_bool().unwrap_or(false),
        body["skip_lobby"].as_bool().unwrap_or(false),
    )
    .await
    .expect("invitation issued");
    let token = client::join_url::JoinLink::parse(&invitation.url)
        .unwrap()
        .hello_invite()
        .expect("an invitation link");
    json!({"id": invitation.id, "url": invitation.url, "expires_at": invitation.expires_at,
           "token": token})
}

#[tokio::test]
async fn war_dialing_is_rate_limited_and_unknown_ids_look_like_wrong_passcodes() {
    let t = start_server().await;
    let created = create_with(&t.server, json!({"passcode": "open sesame"})).await;
    let id = created["id"].as_str().unwrap();

    // Over the WebSocket: the very same message and close code.
    let unknown = knock(&t.server, &random_id(), json!({})).await.unwrap();
    let missing = knock(&t.server, id, json!({})).await.unwrap();
    let wrong = knock(&t.server, id, json!({"passcode": "guess"}))
        .await
        .unwrap();
    assert_eq!(unknown["code"], "unknown_meeting", "{unknown}");
    assert_eq!(unknown, missing);
    assert_eq!(unknown, wrong);

    // Over HTTP: the same status and body.
    let get = |path: String| async move {
        let r = client().get(path).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let base = &t.server.base_url;
    let a = get(format!("{base}/api/meetings/{}", random_id())).await;
    let b = get(format!("{base}/api/meetings/{id}")).await;
    let c = get(format!("{base}/api/meetings/{id}?passcode=guess")).await;
    assert_eq!(a.0, 404);
    assert_eq!(a, b);
    assert_eq!(a, c);
    let ok = get(format!("{base}/api/meetings/{id}?passcode=open%20sesame")).await;
    assert_eq!(ok.0, 200, "{ok:?}");

    // Dialing random ids: refused within the burst.
    let mut refused_after = None;
    for attempt in 0..20 {
        let (code, _) = knock_code(&t.server, &random_id(), json!({})).await;
        if code == "rate_limited" {
            refused_after = Some(attempt);
            break;
        }
        assert_eq!(code, "unknown_meeting");
    }
    let refused_after = refused_after.expect("war-dialing was never rate limited");
    assert!(refused_after <= 10, "{refused_after}");
    assert!(
        metric(
            &t.server,
            "conclave_signaling_rejected_total{reason=\"rate_limited\"}"
        )
        .await
            >= 1
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn passcode_brute_force_is_locked_out_and_audited() {
    let t = start_server().await;
    let created = create_with(&t.server, json!({"passcode": "correct horse"})).await;
    let id = created["id"].as_str().unwrap();
    for i in 0..5 {
        let (code, _) = knock_code(&t.server, id, json!({"passcode": format!("guess {i}")})).await;
        assert_eq!(code, "unknown_meeting");
    }
    // Now even the right passcode is refused from this address.
    let (code, msg) = knock_code(&t.server, id, json!({"passcode": "correct horse"})).await;
    assert_eq!(code, "rate_limited", "{msg}");
    // The HTTP lookup shares the lockout.
    let r = client()
        .get(format!(
            "{}/api/meetings/{id}?passcode=correct%20horse",
            t.server.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    let events = audit_events(&t.server, id, &host_secret(&created)).await;
    let count = |name: &str| events.iter().filter(|e| e["event"] == name).count();
    assert_eq!(count("passcode_failed"), 5, "{events:?}");
    assert_eq!(count("passcode_lockout"), 1, "{events:?}");
    assert!(
        events.iter().all(|e| e["actor"] == "127.0.0.1"),
        "{events:?}"
    );

    // The host is not locked out by someone guessing from the same address.
    let (code, msg) =
        knock_code(&t.server, id, json!({"host_secret": host_secret(&created)})).await;
    assert_eq!(code, "passed", "{msg}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_revoked_replayed_and_forged_invitations_are_refused() {
    let t = start_server().await;
    let created = create_with(&t.server, json!({"require_invitation": true})).await;
    let (id, secret) = (created["id"].as_str().unwrap(), host_secret(&created));
    let token = |inv: &Value| inv["token"].as_str().unwrap().to_owned();

    let (code, msg) = knock_code(&t.server, id, json!({})).await;
    assert_eq!(code, "invitation_required", "{msg}");

    let expiring = new_invitation(&created, json!({"label": "e", "expires_in_secs": 1})).await;
    let revoked = new_invitation(&created, json!({"label": "r"})).await;
    let once = new_invitation(&created, json!({"label": "o", "single_use": true})).await;
    // The link carries the invitation's secret and the meeting key; hello carries only the
    // token derived from it.
    let url = once["url"].as_str().unwrap();
    let once_id = once["id"].as_str().unwrap();
    assert!(
        url.contains(&format!("/m/{id}#invite={once_id}.")) && url.contains("&k="),
        "{url}"
    );
    assert!(token(&once).starts_with(&format!("{once_id}.")));
    assert!(!url.contains(&token(&once)), "{url}");

    let r = client()
        .delete(format!(
            "{}/api/meetings/{id}/invitations/{}",
            t.server.base_url,
            revoked["id"].as_str().unwrap()
        ))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (code, msg) = knock_code(&t.server, id, json!({"invite": token(&revoked)})).await;
    assert_eq!(code, "invitation_required");
    assert!(msg["reason"].as_str().unwrap().contains("revoked"), "{msg}");

    let (code, msg) = knock_code(&t.server, id, json!({"invite": token(&once)})).await;
    assert_eq!(code, "passed", "{msg}");
    let (code, msg) = knock_code(&t.server, id, json!({"invite": token(&once)})).await;
    assert_eq!(code, "invitation_required");
    assert!(
        msg["reason"].as_str().unwrap().contains("already used"),
        "{msg}"
    );

    // A real invitation's id with a token its host's client never derived (forged, or guessed):
    // not valid.
    let real = token(&expiring);
    let (expiring_id, _) = real.split_once('.').unwrap();
    let forged = format!("{expiring_id}.{}", "a".repeat(26));
    let (code, msg) = knock_code(&t.server, id, json!({"invite": forged})).await;
    assert_eq!(code, "invitation_required");
    assert!(
        msg["reason"].as_str().unwrap().contains("not valid"),
        "{msg}"
    );

    // The invitation link with its expiry pushed back: what the server gets of it is the same
    // token, and the server judges expiry by its own record.
    let link = expiring["url"].as_str().unwrap();
    let fragment = link.split("#invite=").nth(1).unwrap();
    let value = fragment.split('&').next().unwrap();
    let mut parts: Vec<String> = value.split('.').map(str::to_owned).collect();
    parts[2] = (parts[2].parse::<u64>().unwrap() + 86400).to_string();
    let extended = e2ee::Invitation::parse(&parts.join(".")).unwrap();
    assert_eq!(extended.hello_token(), real);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, msg) = knock_code(&t.server, id, json!({"invite": extended.hello_token()})).await;
    assert_eq!(code, "invitation_required");
    assert!(msg["reason"].as_str().unwrap().contains("expired"), "{msg}");

    let events = audit_events(&t.server, id, &secret).await;
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "invitation_refused")
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        refused,
        ["missing", "revoked", "already used", "not valid", "expired"]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "invitation_created")
            .count(),
        3
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "invitation_revoked")
            .count(),
        1
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_banned_device_is_refused() {
    let t = start_server().await;
    let created = create_with(&t.server, json!({})).await;
    let id = created["id"].as_str().unwrap();
    let storage = server::Storage::open(t.data_dir.path()).await.unwrap();
    let ban = server::Ban {
        name: Some("mallory".into()),
        device_id: Some("device-of-mallory".into()),
        ..server::Ban::default()
    };
    storage.add_ban(&meeting_id(&created), &ban).await.unwrap();
    storage.close().await;
    let (code, msg) = knock_code(&t.server, id, json!({"device_id": "device-of-mallory"})).await;
    assert_eq!(code, "banned", "{msg}");
    let (code, msg) = knock_code(&t.server, id, json!({"device_id": "device-of-alice"})).await;
    assert_eq!(code, "passed", "{msg}");
    let events = audit_events(&t.server, id, &host_secret(&created)).await;
    assert!(
        events.iter().any(|e| e["event"] == "banned_refused"),
        "{events:?}"
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invitations_bans_passcode_and_lock_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_in(dir.path()).await;
    let created = create_with(
        &first,
        json!({"passcode": "pass 1234", "require_invitation": true}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let inv = new_invitation(&created, json!({"label": "guest"})).await;
    let token = inv["token"].as_str().unwrap().to_owned();
    first.shutdown().await.unwrap();

    let storage = server::Storage::open(dir.path()).await.unwrap();
    let meeting = meeting_id(&created);
    let ban = server::Ban {
        device_id: Some("banned-device".into()),
        ..server::Ban::default()
    };
    storage.add_ban(&meeting, &ban).await.unwrap();
    storage.set_locked(&meeting, true).await.unwrap();
    storage.close().await;

    let second = start_in(dir.path()).await;
    let base = &second.base_url;
    let r = client()
        .get(format!("{base}/api/meetings/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the passcode still hides it");
    let r = client()
        .get(format!("{base}/api/meetings/{id}?passcode=pass%201234"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["locked"], true, "{body}");
    assert_eq!(body["require_invitation"], true, "{body}");

    let with = |extra: Value| {
        let mut fields = json!({"passcode": "pass 1234", "invite": token});
        if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        fields
    };
    let (code, _) = knock_code(&second, &id, json!({"passcode": "pass 1234"})).await;
    assert_eq!(code, "invitation_required");
    let (code, _) = knock_code(&second, &id, with(json!({"device_id": "banned-device"}))).await;
    assert_eq!(code, "banned");
    // The invitation token, registered before the restart, still opens the gate; the meeting
    // itself is locked, which the hub (after the gate) enforces.
    let (code, msg) = knock_code(&second, &id, with(json!({"device_id": "other"}))).await;
    assert!(code == "passed" || code == "locked", "{msg}");
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn meeting_creation_options_and_bad_bodies() {
    let t = start_server().await;
    let base = &t.server.base_url;
    // The digest alone is enough, and the answer has exactly the documented fields: no host
    // link and no host secret, which only the client has.
    let digest = host_digest();
    let response = client()
        .post(format!("{base}/api/meetings"))
        .json(&json!({"host_secret_sha256": digest}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let mut keys: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["id", "join_url"]);
    assert!(!created["join_url"].as_str().unwrap().contains('#'));
    let storage = server::Storage::open(t.data_dir.path()).await.unwrap();
    let record = storage
        .meeting(&meeting_id(&created))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hex(&record.host_secret_sha256), digest, "stored as sent");

    // The server's join link carries the passcode; the client adds the meeting key.
    let options = json!({"passcode": "a b#c", "permissions": {
        "screen_share": "hosts", "chat": "everyone", "allow_unmute": false, "max_participants": 5}});
    let mut body = options.clone();
    body["host_secret_sha256"] = host_digest().into();
    let response = client()
        .post(format!("{base}/api/meetings"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    let join = answer["join_url"].as_str().unwrap();
    assert!(join.ends_with("#pwd=a%20b%23c"), "{join}");
    let created = create_with(&t.server, options).await;
    let join = created["join_url"].as_str().unwrap();
    assert!(join.contains("#pwd=a%20b%23c&k="), "{join}");
    assert!(created["host_url"].as_str().unwrap().contains("#host="));
    let record = storage
        .meeting(&meeting_id(&created))
        .await
        .unwrap()
        .unwrap();
    storage.close().await;
    assert!(record.passcode_hash.unwrap().starts_with("$argon2id$"));
    assert_eq!(record.permissions.max_participants, 5);

    let post = |body: String| {
        client()
            .post(format!("{base}/api/meetings"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(json!({"passcode": "abc", "host_secret_sha256": host_digest()}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let r = post("{not json".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "malformed_json");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let r = post(format!("{{\"passcode\": \"{}\"}}", "x".repeat(20 * 1024)))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        metric(
            &t.server,
            "conclave_http_refused_total{reason=\"malformed_json\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &t.server,
            "conclave_http_refused_total{reason=\"invalid_request\"}"
        )
        .await,
        1
    );
    t.server.shutdown().await.unwrap();
}

/// The server makes no link secrets any more: a meeting without the digest of the host secret
/// its client made, or an invitation without the digest of its token, is refused, saying which
/// field is missing, and nothing is created.
#[tokio::test]
async fn meetings_and_invitations_without_the_clients_digest_are_refused() {
    let t = start_server().await;
    let base = &t.server.base_url;
    let bodies = [
        "",
        "{}",
        r#"{"passcode": "open sesame"}"#,
        r#"{"host_secret_sha256": "not hex"}"#,
        r#"{"host_secret_sha256": "abcd"}"#,
    ];
    for body in bodies {
        let r = client()
            .post(format!("{base}/api/meetings"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_request", "{body}: {answer}");
        let reason = answer["reason"].as_str().unwrap();
        assert!(reason.contains("host_secret_sha256"), "{body}: {reason}");
    }
    assert_eq!(
        metric(&t.server, "conclave_meetings_created_total").await,
        0,
        "nothing was created"
    );

    let created = create_with(&t.server, json!({})).await;
    let (id, secret) = (created["id"].as_str().unwrap(), host_secret(&created));
    let invitations = format!("{base}/api/meetings/{id}/invitations");
    for body in [
        json!({}),
        json!({"label": "Dr. Who", "single_use": true}),
        json!({"label": "x", "token_sha256": "zz"}),
    ] {
        let r = client()
            .post(&invitations)
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_request", "{body}: {answer}");
        let reason = answer["reason"].as_str().unwrap();
        assert!(reason.contains("token_sha256"), "{body}: {reason}");
    }
    let listed: Value = client()
        .get(&invitations)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["invitations"], json!([]), "nothing was created");
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn host_endpoints_need_the_host() {
    let t = start_server().await;
    let base = &t.server.base_url;
    let created = create_with(&t.server, json!({})).await;
    let (id, secret) = (created["id"].as_str().unwrap(), host_secret(&created));
    let invitations = format!("{base}/api/meetings/{id}/invitations");
    for request in [
        client().post(&invitations).json(&json!({"label": "x"})),
        client()
            .post(&invitations)
            .bearer_auth("not the secret")
            .json(&json!({})),
        client().get(&invitations),
        client().get(format!("{base}/api/meetings/{id}/audit")),
        client().delete(format!("{invitations}/whatever")),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "forbidden");
    }
    let r = client()
        .post(format!("{base}/api/meetings/{}/invitations", random_id()))
        .bearer_auth(&secret)
        .json(&json!({"token_sha256": token_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(&invitations)
        .bearer_auth(&secret)
        .json(&json!({"expires_in_secs": 91 * 86400, "token_sha256": token_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "over 90 days");

    let inv = new_invitation(&created, json!({"label": "Dr. Who"})).await;
    for key in ["id", "token", "url", "expires_at"] {
        assert!(!inv[key].is_null(), "{key} in {inv}");
    }
    let listed: Value = client()
        .get(&invitations)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["invitations"][0]["label"], "Dr. Who", "{listed}");
    assert_eq!(listed["invitations"][0]["id"], inv["id"], "{listed}");
    // The server has only the token's digest, and lists neither a token nor a link.
    let token = inv["token"].as_str().unwrap();
    let (_, secret_part) = token.split_once('.').unwrap();
    let text = listed.to_string();
    assert!(!text.contains(secret_part), "{listed}");
    for key in ["token", "token_sha256", "url"] {
        assert!(listed["invitations"][0][key].is_null(), "{key} in {listed}");
    }
    let r = client()
        .delete(format!("{invitations}/nonexistent"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        metric(
            &t.server,
            "conclave_http_refused_total{reason=\"forbidden\"}"
        )
        .await
            >= 5
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_route_carries_the_security_headers() {
    let t = start_server().await;
    let base = &t.server.base_url;
    let created = create_with(&t.server, json!({})).await;
    let id = created["id"].as_str().unwrap();
    let requests = [
        client().get(format!("{base}/")),
        client().get(format!("{base}/m/{id}")),
        client().get(format!("{base}/static/landing.js")),
        client().get(format!("{base}/healthz")),
        client().get(format!("{base}/metrics")),
        client().get(format!("{base}/api/meetings/{id}")),
        client().get(format!("{base}/api/meetings/{}", random_id())),
        client().get(format!("{base}/api/meetings/{id}/audit")),
        client().get(format!("{base}/no/such/page")),
        client().get(format!("{base}/api/me")),
        client().post(format!("{base}/api/meetings")).body("{bad"),
        client().post(format!("{base}/api/login")).body("{}"),
        client().get(format!("{base}/ws")),
    ];
    for request in requests {
        let r = request.send().await.unwrap();
        let url = r.url().clone();
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            csp.as_deref()
                .is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{url}: {csp:?}"
        );
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{url}");
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{url}");
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{url}");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP: {url}"
        );
    }
    t.server.shutdown().await.unwrap();
}

/// Adds an account with the CLI, as an operator would.
async fn add_user(data_dir: &std::path::Path, name: &str, password: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["user", "add", name, "--password-stdin", "--data-dir"])
        .arg(data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn accounts_log_in_own_meetings_and_refuse_cross_origin_requests() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "olga", "a long enough password").await;
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["user", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "olga\n");
    let server = server::Server::start(server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_bind_ip: "127.0.0.1".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        meeting_creation: server::MeetingCreation::Accounts,
        ..server::ServerConfig::default()
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    let jar = client();

    let r = jar
        .post(format!("{base}/api/meetings"))
        .json(&json!({"host_secret_sha256": host_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "accounts only");
    let r = jar
        .post(format!("{base}/api/login"))
        .json(&json!({"name": "olga", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = jar
        .post(format!("{base}/api/login"))
        .json(&json!({"name": "olga", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in [
        "conclave_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let me: Value = jar
        .get(format!("{base}/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "olga");

    let r = jar
        .post(format!("{base}/api/meetings"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({"host_secret_sha256": host_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-origin with the cookie");
    let r = jar
        .post(format!("{base}/api/meetings"))
        .header("cookie", &cookie)
        .header("origin", &base)
        .json(&json!({"passcode": "owner's pass", "host_secret_sha256": host_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    // The owner is a host of its meeting by its cookie alone.
    let invitations = format!("{base}/api/meetings/{id}/invitations");
    let r = jar
        .post(&invitations)
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = jar
        .post(&invitations)
        .header("cookie", &cookie)
        .json(&json!({"token_sha256": token_digest()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let r = jar
        .post(format!("{base}/api/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = jar
        .get(format!("{base}/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the session is gone on the server");
    server.shutdown().await.unwrap();

    let remove = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["user", "remove", "olga", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(remove.status.success(), "{remove:?}");
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let t = start_server().await;
    let base = &t.server.base_url;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = client()
            .post(format!("{base}/api/login"))
            .json(&json!({"name": "nobody", "password": "guess"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5]);
    assert_eq!(statuses[6], 429, "{statuses:?}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cli_creates_protected_meetings_invitations_and_reads_the_audit_log() {
    let t = start_server().await;
    let run = |args: Vec<String>| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let base = t.server.base_url.clone();
    let out = run(vec![
        "meeting".into(),
        "create".into(),
        "--server".into(),
        base.clone(),
        "--passcode".into(),
        "s3cret!".into(),
        "--require-invitation".into(),
    ])
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let join = lines[0].strip_prefix("join: ").unwrap();
    let host = lines[1].strip_prefix("host: ").unwrap().to_owned();
    assert!(join.contains("#pwd=s3cret%21&k="), "{join}");
    assert!(host.contains("#host="), "{host}");
    let out = run(vec![
        "meeting".into(),
        "invite".into(),
        "--host-link".into(),
        host.clone(),
        "--label".into(),
        "Alice".into(),
        "--expires".into(),
        "24h".into(),
        "--single-use".into(),
    ])
    .await;
    let invite = out.trim().strip_prefix("invite: ").unwrap().to_owned();
    assert!(invite.contains("#invite="), "{invite}");
    let out = run(vec![
        "meeting".into(),
        "audit".into(),
        "--host-link".into(),
        host,
    ])
    .await;
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit["events"][0]["event"], "invitation_created", "{audit}");
    assert!(audit["events"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("Alice"));
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_serves_https_with_hsts_and_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let config = |tls: Option<server::TlsFiles>| server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_bind_ip: "127.0.0.1".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls,
        ..server::ServerConfig::default()
    };
    let storage = server::Storage::open(&dir.path().join("data"))
        .await
        .unwrap();
    let hash = server::password::hash("a long password").unwrap();
    storage.create_user("tls", &hash, 0).await.unwrap();
    storage.close().await;
    // A missing key file stops the start with a reason.
    let error = server::Server::start(config(Some(server::TlsFiles {
        cert: cert_path.clone(),
        key: dir.path().join("missing.pem"),
    })))
    .await
    .err()
    .expect("refused");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let server = server::Server::start(config(Some(server::TlsFiles {
        cert: cert_path,
        key: key_path,
    })))
    .await
    .unwrap();
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    // A minimal HTTPS/1.1 client: the answer's status line and headers, lower-cased.
    let https = |method: &'static str, path: &'static str, body: &'static str| {
        let connector = connector.clone();
        let addr = server.http_addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).to_lowercase()
        }
    };
    let answer = https("GET", "/healthz", "").await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("strict-transport-security: max-age="),
        "{answer}"
    );
    let answer = https(
        "POST",
        "/api/meetings",
        r#"{"host_secret_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#,
    )
    .await;
    assert!(answer.starts_with("http/1.1 201"), "{answer}");
    assert!(answer.contains("\"join_url\":\"https://"), "{answer}");
    let answer = https("POST", "/api/login", r#"{"name":"x","password":"y"}"#).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("strict-transport-security"), "{answer}");
    let answer = https(
        "POST",
        "/api/login",
        r#"{"name":"tls","password":"a long password"}"#,
    )
    .await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; secure"),
        "cookies are Secure over TLS: {answer}"
    );
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = client()
        .get(format!("http://{}/healthz", server.http_addr))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn serve_refuses_half_a_tls_configuration() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "serve",
            "--tls-cert",
            "/nonexistent.pem",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
        ])
        .env_remove("CONCLAVE_TLS_KEY")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn plain_http_on_a_reachable_address_warns_loudly() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--media-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("CONCLAVE_TLS_CERT")
        .env_remove("CONCLAVE_TLS_KEY")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(serve.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let warned = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            if line.contains("in a browser") {
                break;
            }
        }
    })
    .await;
    let _ = serve.kill().await;
    assert!(warned.is_ok(), "{seen:#?}");
    let text = seen.join("\n");
    assert!(text.contains("PLAIN HTTP"), "{text}");
    assert!(text.contains("--tls-cert"), "{text}");
    assert!(text.contains("end-to-end"), "{text}");
}
