//! The `conclave` command lines that scripts rely on.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn meeting_create_prints_a_join_line_and_a_host_line() {
    let t = start_server().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["meeting", "create", "--server", &t.server.base_url])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let join = lines[0].strip_prefix("join: ").expect("join line");
    let host = lines[1].strip_prefix("host: ").expect("host line");
    // The client made both links: the join link carries the meeting key, the host link the
    // seed, each in the fragment no browser sends.
    let (page, key) = join
        .split_once("#k=")
        .expect("a meeting key in the join link");
    let id = page.rsplit('/').next().unwrap();
    assert!(proto::MeetingId::parse(id).is_some(), "{join}");
    let seed = host
        .strip_prefix(&format!("{page}#host="))
        .unwrap_or_else(|| panic!("{host}"));
    let seed = e2ee::HostLinkSecret::parse(seed).expect("a host-link seed");
    assert_eq!(seed.meeting_key().public().encode(), key);
    let response = reqwest::get(format!("{}/api/meetings/{id}", t.server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn meeting_create_against_no_server_fails_with_a_reason() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["meeting", "create", "--server", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[tokio::test]
async fn serve_says_where_to_open_it_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--media-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let base = format!("http://127.0.0.1:{port}");
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(&format!("open {base}/ in a browser")) {
                return true;
            }
        }
        false
    })
    .await
    .expect("serve starts within 30 s");
    assert!(started, "serve logs where to open it");

    let id = client::meeting_links::create_meeting(&base, serde_json::json!({}), None)
        .await
        .expect("meeting created")
        .id;

    let pid = serve.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("serve exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains("server stopped"), "{rest}");

    // Everything written before the signal is in the database.
    let storage = server::Storage::open(dir.path()).await.unwrap();
    let meeting = storage
        .meeting(&proto::MeetingId::parse(&id).unwrap())
        .await
        .unwrap();
    assert!(meeting.is_some());
}
