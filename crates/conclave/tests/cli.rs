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
async fn meeting_create_logs_in_where_only_accounts_may_create_meetings() {
    let dir = tempfile::tempdir().unwrap();
    let storage = server::Storage::open(dir.path()).await.unwrap();
    let hash = server::password::hash("a long password").unwrap();
    storage.create_user("olga", &hash, 0).await.unwrap();
    storage.close().await;
    let server = start_configured(dir.path(), |c| {
        c.meeting_creation = server::MeetingCreation::Accounts
    })
    .await;
    let create = |args: &[&str], password: &'static str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"));
        command
            .args(["meeting", "create", "--server", &server.base_url])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            let mut child = command.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stdin, password.as_bytes())
                .await
                .unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };

    let anonymous = create(&[], "").await;
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("401"),
        "{anonymous:?}"
    );
    let wrong = create(&["--user", "olga", "--password-stdin"], "wrong password\n").await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("logging in as olga"), "{stderr}");

    let logged_in = create(&["--user", "olga", "--password-stdin"], "a long password\n").await;
    assert!(logged_in.status.success(), "{logged_in:?}");
    let stdout = String::from_utf8(logged_in.stdout).unwrap();
    assert!(stdout.starts_with("join: "), "{stdout}");
    assert!(stdout.contains("\nhost: "), "{stdout}");
    server.shutdown().await.unwrap();
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

#[tokio::test]
async fn serve_takes_its_settings_from_the_config_file_under_flags_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = dir.path().join("conclave.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmedia_port = 0\nmedia_tcp_port = 0\n\
             data_dir = {:?}\npublic_url = \"http://from-the-file.invalid\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("CONCLAVE_PUBLIC_URL", "http://from-the-environment.invalid")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(serve.stderr.take().unwrap()).lines();
    let opened = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("in a browser") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("serve starts within 30 s");
    // The environment wins over the file.
    assert!(
        opened.contains("open http://from-the-environment.invalid/ in a browser"),
        "{opened}"
    );
    // The file's media_tcp_port = 0 turned ICE-TCP off.
    let mut media_line = String::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        if line.starts_with("media:") {
            media_line = line;
            break;
        }
    }
    assert!(media_line.ends_with("(ICE-TCP off)"), "{media_line}");
    // The file's listen address and data directory are the ones in use.
    let base = format!("http://127.0.0.1:{port}");
    client::meeting_links::create_meeting(&base, serde_json::json!({}), None)
        .await
        .expect("a meeting is created on the listen address from the file");
    assert!(dir.path().join("data").is_dir(), "data_dir from the file");
    serve.kill().await.unwrap();
}

#[tokio::test]
async fn config_check_passes_the_example_and_names_the_key_that_is_wrong() {
    let conclave = env!("CARGO_BIN_EXE_conclave");
    let dir = tempfile::tempdir().unwrap();
    let example = std::process::Command::new(conclave)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(example.status.success());
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &example.stdout).unwrap();
    let check = std::process::Command::new(conclave)
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        format!("config ok: {}", good.display())
    );

    for (text, key) in [
        ("media_prot = 10000\n", "media_prot"),
        ("media_port = 70000\n", "media_port"),
        ("public_url = \"ftp://meet.example.org\"\n", "public_url"),
        ("tls_cert = \"/etc/conclave/cert.pem\"\n", "tls_key"),
        ("meeting_creation = \"everyone\"\n", "meeting_creation"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        for command in [
            &["config", "check", "--config"][..],
            &["serve", "--config"][..],
        ] {
            let refused = std::process::Command::new(conclave)
                .args(command)
                .arg(&bad)
                .args(if command[0] == "serve" {
                    &["--media-port", "0", "--listen", "127.0.0.1:0"][..]
                } else {
                    &[][..]
                })
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success(), "{command:?} took {text:?}");
            assert!(stderr.contains(key), "{command:?} {text:?}: {stderr}");
        }
    }
}
