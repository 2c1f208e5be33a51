//! Target (a): `conclave serve` as a child process, driven through its HTTP API and `/ws`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use proto::{ClientMessage, MeetingId, ServerMessage};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use crate::rtcpeer;
use crate::shared::Shared;
use crate::sys;

pub struct Conclave {
    pub child: Child,
    pub pid: u32,
    pub base: String,
    _data: tempfile::TempDir,
}

/// Finds `conclave` next to the bench binary (same target dir), building it if missing.
pub fn find_or_build(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    if exe.file_name().and_then(|n| n.to_str()) == Some("conclave") {
        // Running as `conclave bench`: benchmark this very binary.
        return Ok(exe);
    }
    let dir = exe.parent().context("bench binary has no directory")?;
    let candidate = dir.join("conclave");
    if candidate.exists() {
        return Ok(candidate);
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let target_dir = dir.parent().context("no target dir")?;
    eprintln!(
        "building conclave ({profile}) into {}",
        target_dir.display()
    );
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args(["build", "-p", "conclave", "--target-dir"])
        .arg(target_dir);
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build -p conclave")?;
    if !status.success() || !candidate.exists() {
        bail!("could not build conclave; pass --conclave-bin");
    }
    Ok(candidate)
}

impl Conclave {
    pub async fn start(
        bin: &Path,
        placement: sys::Placement,
        downlink_estimation: bool,
    ) -> Result<Self> {
        let data = tempfile::tempdir()?;
        let http = sys::free_tcp_port()?;
        let media = sys::free_udp_port()?;
        let mut cmd = placement.command(bin);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--media-port", &media.to_string()])
            .args(["--public-ip", "127.0.0.1"])
            .args(["--downlink-estimation", &downlink_estimation.to_string()])
            .arg("--data-dir")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        // For looking into a run: BENCH_SERVER_LOG=<file> keeps the server's log (at
        // BENCH_SERVER_RUST_LOG, default `warn`).
        match std::env::var_os("BENCH_SERVER_LOG") {
            Some(path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("open {}", path.to_string_lossy()))?;
                let level = std::env::var("BENCH_SERVER_RUST_LOG").unwrap_or("warn".into());
                cmd.env("RUST_LOG", level).stderr(log);
            }
            None => {
                cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().context("start conclave serve")?;
        let pid = child.id().context("conclave has no pid")?;
        let base = format!("http://127.0.0.1:{http}");
        let client = client::tls::http();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("conclave serve did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Conclave {
            child,
            pid,
            base,
            _data: data,
        })
    }

    /// Creates a meeting; the bench's bots all join it with its host secret, which lets them
    /// past the lobby (they stand for participants a host already admitted).
    pub async fn create_meeting(&self) -> Result<(MeetingId, String)> {
        let links = self.create_meeting_links().await?;
        let id =
            MeetingId::parse(&links.id).ok_or_else(|| anyhow!("bad meeting id {}", links.id))?;
        Ok((id, links.host_secret))
    }

    /// Creates a meeting as a host's client does (the client makes the host link, the server
    /// gets the digest of its host secret): its id, host secret and links.
    pub async fn create_meeting_links(&self) -> Result<client::meeting_links::MeetingLinks> {
        Ok(client::meeting_links::create_meeting(&self.base, serde_json::json!({}), None).await?)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<()> {
    ws.send(Message::Text(proto::encode(msg).into())).await?;
    Ok(())
}

/// One participant: joins, publishes if asked, answers every server offer until stopped.
pub async fn bot(
    base: String,
    (meeting, host_secret): (MeetingId, String),
    shared: Rc<Shared>,
    idx: usize,
    publish: bool,
) -> Result<()> {
    let mut stop = shared.stop.subscribe();
    shared.started(idx);
    let ws_url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await?;
    send(
        &mut ws,
        &ClientMessage::Hello {
            meeting,
            name: format!("bot{idx}"),
            host_secret: Some(host_secret),
            passcode: None,
            invite: None,
            device_id: None,
            client_version: "conclave-bench/0.1".into(),
        },
    )
    .await?;
    let peer = rtcpeer::spawn(shared.clone(), idx, publish.then_some(idx as u32))?;
    let mut offered = false;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => bail!("bot {idx}: closed: {f:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("bot {idx}: websocket: {e}"),
                    None => bail!("bot {idx}: websocket closed"),
                };
                match proto::parse_server_message(text.as_str()) {
                    Ok(ServerMessage::Welcome { .. }) if !offered => {
                        offered = true;
                        let sdp = peer.make_offer().await?;
                        send(
                            &mut ws,
                            &ClientMessage::Offer {
                                sdp,
                                sources: Default::default(),
                            },
                        )
                        .await?;
                    }
                    Ok(ServerMessage::Answer { sdp }) => peer.accept_answer(sdp).await?,
                    Ok(ServerMessage::Offer { sdp, .. }) => {
                        let sdp = peer.accept_offer(sdp).await?;
                        send(&mut ws, &ClientMessage::Answer { sdp }).await?;
                    }
                    Ok(ServerMessage::Error { code, reason }) => {
                        shared.error(format!("bot {idx}: server error {}: {reason}", code.as_str()));
                    }
                    Ok(_) => {}
                    Err(e) => shared.error(format!("bot {idx}: bad message: {e}")),
                }
            }
            _ = stop.changed() => {
                let _ = send(&mut ws, &ClientMessage::Leave).await;
                let _ = tokio::time::timeout(Duration::from_millis(300), ws.close(None)).await;
                return Ok(());
            }
        }
    }
}
