//! `conclave doctor` against real servers on this machine: every check passes against a
//! server with UDP, ICE-TCP and the TURN relay; a self-signed certificate fails by name (and
//! passes once the client trusts it through `SSL_CERT_FILE`); a closed port fails the web
//! check. The walled-network case (UDP dropped) is in tests/firewall.rs.

mod common;

use common::*;

/// Runs `conclave doctor URL --json` with `env`; its exit code and parsed findings.
async fn doctor(url: &str, env: &[(&str, &std::path::Path)]) -> (i32, serde_json::Value) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"));
    command
        .args(["doctor", url, "--json", "--seconds", "3"])
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("doctor finishes")
        .expect("doctor runs");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("exit code"), json)
}

/// `field` ("verdict": "ok", "warn", "fail"; or "message") of `check`; None when it did not run.
fn finding(json: &serde_json::Value, check: &str, field: &str) -> Option<String> {
    json["findings"]
        .as_array()?
        .iter()
        .find(|f| f["check"] == check)
        .and_then(|f| f[field].as_str())
        .map(str::to_owned)
}

fn verdict(json: &serde_json::Value, check: &str) -> Option<String> {
    finding(json, check, "verdict")
}

#[tokio::test]
async fn every_check_passes_against_a_server_with_udp_tcp_and_the_relay() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = start_configured(data.path(), |c| c.turn.port = Some(0)).await;
    let (code, json) = doctor(&server.base_url, &[]).await;

    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["ok"], true, "{json:#}");
    for check in [
        "tls",
        "web",
        "meeting",
        "links",
        "candidates",
        "udp",
        "tcp",
        "turn",
    ] {
        assert_eq!(
            verdict(&json, check).as_deref(),
            Some("ok"),
            "{check}: {json:#}"
        );
    }
    // The media checks say what they proved: verified frames, through the server's relay.
    let message = finding(&json, "turn", "message").unwrap_or_default();
    assert!(
        message.contains("verified frames from doctor-"),
        "{message}"
    );
    assert!(message.contains("relay turns:"), "{message}");
}

#[tokio::test]
async fn without_a_relay_the_turn_check_warns_and_the_rest_pass() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = start_in(data.path()).await;
    let (code, json) = doctor(&server.base_url, &[]).await;

    assert_eq!(code, 0, "a warning is not a failure: {json:#}");
    assert_eq!(verdict(&json, "turn").as_deref(), Some("warn"), "{json:#}");
    assert_eq!(verdict(&json, "udp").as_deref(), Some("ok"), "{json:#}");
    assert_eq!(verdict(&json, "tcp").as_deref(), Some("ok"), "{json:#}");
}

#[tokio::test]
async fn a_self_signed_certificate_fails_by_name_until_the_client_trusts_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The server names itself by its address in links; the certificate covers both names.
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let tls = server::TlsFiles {
        cert: cert.clone(),
        key,
    };
    let server = start_configured(&dir.path().join("data"), |c| c.tls = Some(tls)).await;
    let port = server.http_addr.port();
    let url = format!("https://localhost:{port}/");
    // With the machine's own roots, as a participant's device has them.
    let (code, json) = doctor(&url, &[]).await;
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(verdict(&json, "tls").as_deref(), Some("fail"), "{json:#}");
    let tls_message = finding(&json, "tls", "message").unwrap_or_default();
    assert!(tls_message.contains("self-signed?"), "{tls_message}");

    let (code, json) = doctor(&url, &[("SSL_CERT_FILE", &cert)]).await;
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(verdict(&json, "tls").as_deref(), Some("ok"), "{json:#}");
    assert_eq!(verdict(&json, "udp").as_deref(), Some("ok"), "{json:#}");
    // Reached as localhost, the server's links say 127.0.0.1: worth a warning, no more.
    assert_eq!(verdict(&json, "links").as_deref(), Some("warn"), "{json:#}");
}

#[tokio::test]
async fn a_closed_port_fails_the_web_check_and_skips_the_rest() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (code, json) = doctor(&format!("http://127.0.0.1:{port}/"), &[]).await;

    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["ok"], false);
    assert_eq!(verdict(&json, "web").as_deref(), Some("fail"), "{json:#}");
    assert_eq!(verdict(&json, "udp"), None, "media is not tried: {json:#}");
}
