//! The built-in TURN relay against coturn's own client (`turnutils_uclient`, Debian's coturn):
//! REST credentials from a participant's welcome allocate and relay to the SFU; expired,
//! forged and off-SFU requests are refused and counted.

mod common;

use common::*;

const SECRET: &str = "0123456789abcdef0123";

async fn start_with_relay() -> (TestServer, u16) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_configured(data_dir.path(), |c| {
        c.turn.port = Some(0);
        c.turn.secret = Some(SECRET.into());
    })
    .await;
    let port = server.turn_relay.as_ref().expect("relay runs").0.port();
    (TestServer { server, data_dir }, port)
}

/// Runs `turnutils_uclient` over TLS with Send indications (`-s`) to `peer`; its output.
async fn uclient(relay_port: u16, username: &str, password: &str, peer: &str) -> String {
    let (ip, port) = peer.rsplit_once(':').unwrap();
    let output = tokio::process::Command::new("turnutils_uclient")
        .args(["-t", "-S", "-c", "-s", "-v", "-n", "3", "-p"])
        .arg(relay_port.to_string())
        .args([
            "-u",
            username,
            "-w",
            password,
            "-e",
            ip,
            "-r",
            port,
            "127.0.0.1",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), output)
        .await
        .expect("turnutils_uclient finishes")
        .expect("turnutils_uclient runs (Debian's coturn package; cargo xtask installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn password_for(username: &str) -> String {
    turn::TurnSecret::new(SECRET.as_bytes().to_vec())
        .unwrap()
        .password_for(username)
}

#[tokio::test]
async fn coturns_client_allocates_with_a_welcomes_credentials_and_relays_to_the_sfu() {
    let (test, relay_port) = start_with_relay().await;
    let server = &test.server;
    let links = create_meeting(server).await;
    let (_host, welcome) = ws_join_host(server, &links, "host").await;
    let id = welcome["participant_id"].as_u64().unwrap();
    let ice = &welcome["ice_servers"][0];
    assert_eq!(
        ice["urls"][0],
        format!("turns:127.0.0.1:{relay_port}?transport=tcp"),
        "{welcome}"
    );
    let username = ice["username"].as_str().unwrap();
    assert!(username.ends_with(&format!(":{id}")), "{username}");
    let credential = ice["credential"].as_str().unwrap();
    assert_eq!(credential, password_for(username));

    // A guest still in the lobby has no credentials: `lobby` carries none.
    let (_guest, _) = ws_knock(server, &links.id, "stranger").await;

    let sfu = server.media_addr.to_string();
    let out = uclient(relay_port, username, credential, &sfu).await;
    assert!(out.contains("Received relay addr"), "{out}");
    assert!(out.contains(&format!("create perm sent: {sfu}")), "{out}");
    assert!(!out.contains("error 4"), "{out}");
    assert!(metric(server, "conclave_turn_relayed_to_sfu").await >= 3);
}

#[tokio::test]
async fn expired_forged_and_off_sfu_requests_are_refused_and_counted() {
    let (test, relay_port) = start_with_relay().await;
    let server = &test.server;
    let sfu = server.media_addr.to_string();

    // Expired: a real HMAC, but the expiry is in 1970.
    let expired = "100:someone";
    let out = uclient(relay_port, expired, &password_for(expired), &sfu).await;
    assert!(!out.contains("Received relay addr"), "{out}");
    assert!(out.contains("error 401"), "{out}");
    assert!(metric(server, "conclave_turn_refused_expired").await >= 1);

    // Forged: a fresh username with a credential made without the secret.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = format!("{}:someone", now + 600);
    let out = uclient(relay_port, &fresh, "bm90IHRoZSByZWFsIG9uZQ==", &sfu).await;
    assert!(!out.contains("Received relay addr"), "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");
    assert!(metric(server, "conclave_turn_refused_forged").await >= 1);

    // Valid, but asking to relay anywhere but the SFU: 403, never an open relay.
    let password = password_for(&fresh);
    // Another host: CreatePermission is refused with 403.
    let before = metric(server, "conclave_turn_refused_peer").await;
    let out = uclient(relay_port, &fresh, &password, "198.18.7.7:10000").await;
    assert!(out.contains("Received relay addr"), "{out}");
    assert!(out.contains("create permission error 403"), "{out}");
    assert!(metric(server, "conclave_turn_refused_peer").await > before);
    // The SFU's host but another port (permissions are per IP): each Send is dropped.
    let before = metric(server, "conclave_turn_refused_peer").await;
    let out = uclient(relay_port, &fresh, &password, "127.0.0.1:22").await;
    assert!(out.contains("Received relay addr"), "{out}");
    assert!(metric(server, "conclave_turn_refused_peer").await >= before + 3);
    assert_eq!(metric(server, "conclave_turn_relayed_to_sfu").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_on_turn_tls_meets_a_bot_on_udp_through_the_relay() {
    let (test, _relay_port) = start_with_relay().await;
    let server = &test.server;
    let links = create_meeting(server).await;
    meet_through_the_relay(server, &links).await;
}
