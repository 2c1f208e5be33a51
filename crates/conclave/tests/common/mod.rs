//! A real server on 127.0.0.1 with a fresh database, and helpers to drive it.
#![allow(dead_code)]

use std::time::Duration;

use client::{BotOptions, Report};
use futures_util::{SinkExt, StreamExt};
use server::{Server, ServerConfig};
use tokio_tungstenite::tungstenite::Message;

pub struct TestServer {
    pub server: Server,
    pub data_dir: tempfile::TempDir,
}

pub async fn start_server() -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_in(data_dir.path()).await;
    TestServer { server, data_dir }
}

/// A server whose SFU does not estimate downlinks: for load tests that overload this 2-core
/// machine on purpose, where the receiving bots read datagrams late and a delay-based estimate
/// would (rightly) throttle them.
pub async fn start_server_without_downlink_estimation() -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_configured(data_dir.path(), |c| c.downlink_estimation = false).await;
    TestServer { server, data_dir }
}

pub async fn start_in(dir: &std::path::Path) -> Server {
    start_configured(dir, |_| {}).await
}

pub async fn start_configured(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut ServerConfig),
) -> Server {
    // The TLS test builds reqwest with rustls and no built-in provider: every HTTP client in
    // the test binaries then needs a process-wide one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_bind_ip: "127.0.0.1".parse().unwrap(),
        data_dir: dir.to_owned(),
        ..ServerConfig::default()
    };
    adjust(&mut config);
    Server::start(config).await.expect("server starts")
}

pub struct Links {
    pub id: String,
    /// `<server>/m/<id>#k=<meeting key>` (with `pwd=` for a passcode).
    pub join: String,
    /// `<server>/m/<id>#host=<seed>`.
    pub host: String,
    /// The host secret derived from the host link's seed: what `hello` and the API's bearer
    /// token carry.
    pub server_secret: String,
}

impl From<client::meeting_links::MeetingLinks> for Links {
    fn from(links: client::meeting_links::MeetingLinks) -> Self {
        Links {
            id: links.id,
            join: links.join_url,
            host: links.host_url,
            server_secret: links.host_secret,
        }
    }
}

/// Creates a meeting as a host's client does: the client makes the host link and the server
/// gets only the digest of its host secret.
pub async fn create_meeting(server: &Server) -> Links {
    create_meeting_with(server, serde_json::json!({})).await
}

/// [`create_meeting`] with the rest of the `POST /api/meetings` body (`passcode`,
/// `require_invitation`, `permissions`).
pub async fn create_meeting_with(server: &Server, options: serde_json::Value) -> Links {
    client::meeting_links::create_meeting(&server.base_url, options, None)
        .await
        .expect("create meeting")
        .into()
}

/// A test bot. Bots on the host link admit everyone from the lobby (`--admit-all`), as no
/// person sits at their screen.
pub fn bot(join: &str, name: &str, seconds: f64) -> BotOptions {
    BotOptions {
        video_kbps: 150,
        admit_all: join.contains("#host="),
        ..BotOptions::new(join, name, Duration::from_secs_f64(seconds))
    }
}

pub async fn run_bots(bots: Vec<BotOptions>) -> Vec<Report> {
    let handles: Vec<_> = bots
        .into_iter()
        .map(|options| tokio::spawn(client::run(options)))
        .collect();
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.expect("bot task").expect("bot runs"));
    }
    reports
}

/// Asserts that `report` received verified audio and video from each of `from`, and that
/// every frame it received verified.
pub fn assert_received_all(report: &Report, from: &[&str]) {
    for name in from {
        for kind in ["audio", "video"] {
            let track = report
                .received
                .iter()
                .find(|t| t.from == *name && t.kind == kind)
                .unwrap_or_else(|| {
                    panic!("{} got no {kind} from {name}: {report:#?}", report.name)
                });
            assert!(
                track.frames > 0,
                "{} got no {kind} frames from {name}",
                report.name
            );
            assert_eq!(
                track.verified, track.frames,
                "{}: unverified {kind} frames from {name}: {track:?}",
                report.name
            );
            assert_eq!(track.out_of_order, 0, "{track:?}");
        }
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(server: &Server) -> Ws {
    let url = format!("ws://{}/ws", server.http_addr);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects")
        .0
}

pub async fn ws_send(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::Text(text.into().into()))
        .await
        .expect("ws send");
}

/// The next text message as JSON, or None if the socket closed (with its close code).
pub async fn ws_next(ws: &mut Ws) -> Result<serde_json::Value, Option<u16>> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).unwrap())
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

pub fn hello(meeting: &str, name: &str) -> String {
    serde_json::json!({"v": 1, "type": "hello", "meeting": meeting, "name": name, "client_version": "test"})
        .to_string()
}

impl Links {
    /// The host secret `hello` and the API take (derived from the link's seed, never the
    /// seed itself).
    pub fn host_secret(&self) -> &str {
        &self.server_secret
    }
}

/// A hello with the host secret.
pub fn host_hello(links: &Links, name: &str) -> String {
    serde_json::json!({"v": 1, "type": "hello", "meeting": links.id, "name": name,
        "host_secret": links.host_secret(), "client_version": "test"})
    .to_string()
}

/// The next message of type `kind`, skipping others.
pub async fn ws_next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let msg = ws_next(ws)
            .await
            .unwrap_or_else(|close| panic!("closed ({close:?}) while waiting for {kind}"));
        if msg["type"] == kind {
            return msg;
        }
    }
}

/// Joins as a raw WebSocket host (no lobby) and returns the socket after the welcome.
pub async fn ws_join_host(server: &Server, links: &Links, name: &str) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(server).await;
    ws_send(&mut ws, host_hello(links, name)).await;
    let welcome = ws_next(&mut ws).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Knocks as a guest and waits in the lobby; returns the socket and its participant id.
pub async fn ws_knock(server: &Server, meeting: &str, name: &str) -> (Ws, u64) {
    let mut ws = ws_connect(server).await;
    ws_send(&mut ws, hello(meeting, name)).await;
    let lobby = ws_next(&mut ws).await.expect("lobby");
    assert_eq!(lobby["type"], "lobby", "{lobby}");
    let id = lobby["participant_id"].as_u64().expect("participant id");
    (ws, id)
}

/// A guest knocks and `host` admits it from the lobby; returns the guest after its welcome.
pub async fn ws_admitted(
    server: &Server,
    host: &mut Ws,
    meeting: &str,
    name: &str,
) -> (Ws, serde_json::Value) {
    let (mut ws, id) = ws_knock(server, meeting, name).await;
    ws_wait_in_lobby(host, id).await;
    ws_send(
        host,
        serde_json::json!({"v": 1, "type": "admit", "participant_id": id}).to_string(),
    )
    .await;
    let welcome = ws_next_of(&mut ws, "welcome").await;
    (ws, welcome)
}

/// Reads a host's lobby snapshots until `id` is among those waiting.
pub async fn ws_wait_in_lobby(host: &mut Ws, id: u64) -> serde_json::Value {
    loop {
        let lobby = ws_next_of(host, "lobby_changed").await;
        if lobby["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == id)
        {
            return lobby;
        }
    }
}

/// Joins as a guest that a host bot with `--admit-all` lets in (waits through the lobby).
pub async fn ws_join(server: &Server, meeting: &str, name: &str) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(server).await;
    ws_send(&mut ws, hello(meeting, name)).await;
    let welcome = ws_next_of(&mut ws, "welcome").await;
    (ws, welcome)
}

/// A host bot on UDP meets a guest bot whose only path is the TURN/TLS relay its welcome
/// names; see [`assert_relayed_both_ways`].
pub async fn meet_through_the_relay(server: &Server, links: &Links) {
    let relayed = BotOptions {
        transport: client::Transport::TurnTls,
        ..bot(&links.join, "relayed", 8.0)
    };
    let reports = run_bots(vec![bot(&links.host, "host", 9.0), relayed]).await;
    assert_relayed_both_ways(server, &reports[0], &reports[1]).await;
}

/// `host` (on UDP) and `relayed` (on TURN/TLS) each received all of the other's media, and
/// both directions went through the relay, not around it.
pub async fn assert_relayed_both_ways(server: &Server, host: &Report, relayed: &Report) {
    assert_eq!(
        relayed.transport.as_deref(),
        Some("turn-tls"),
        "{relayed:#?}"
    );
    assert_eq!(host.transport.as_deref(), Some("udp"), "{host:#?}");
    assert_received_all(relayed, &[host.name.as_str()]);
    assert_received_all(host, &[relayed.name.as_str()]);
    assert!(metric(server, "conclave_turn_relayed_to_sfu").await > 100);
    assert!(metric(server, "conclave_turn_relayed_to_clients").await > 100);
}

/// Reads a metric's value from /metrics.
pub async fn metric(server: &Server, line_prefix: &str) -> u64 {
    let text = client::tls::http()
        .get(format!("{}/metrics", server.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{text}"))
}
