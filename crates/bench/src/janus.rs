//! Target (b): Janus VideoRoom (Debian's `janus` package), started with a generated config
//! on 127.0.0.1 and driven through its HTTP JSON API. All bots share one Janus session (one
//! handle per PeerConnection) and one long-poll loop that routes events by handle.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::rtcpeer;
use crate::shared::Shared;
use crate::sys;

pub const ROOM: u64 = 4242;
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// Janus never gathers ICE candidates on a loopback interface (src/ice.c skips every
/// interface flagged IFF_LOOPBACK), so on its own it would bind media sockets to the machine's
/// other addresses. This LD_PRELOAD shim clears IFF_LOOPBACK on `lo` in getifaddrs(), so that
/// with `ice_enforce_list = "lo"` Janus binds its media sockets to 127.0.0.1 and nothing else.
/// It changes nothing on the media path.
const LOOPBACK_SHIM_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <string.h>
int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = 0;
    if (!real) real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int r = real(ifap);
    if (r == 0)
        for (struct ifaddrs *i = *ifap; i; i = i->ifa_next)
            if (i->ifa_name && strcmp(i->ifa_name, "lo") == 0)
                i->ifa_flags &= ~IFF_LOOPBACK;
    return r;
}
"#;

fn build_shim(dir: &Path) -> Result<std::path::PathBuf> {
    let src = dir.join("loopback_shim.c");
    let so = dir.join("loopback_shim.so");
    std::fs::write(&src, LOOPBACK_SHIM_C)?;
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .context("run cc to build the loopback shim for janus")?;
    if !status.success() {
        bail!("cc could not build the loopback shim");
    }
    Ok(so)
}

pub fn available() -> bool {
    Path::new("/usr/bin/janus").exists()
        && Path::new(LIB)
            .join("plugins/libjanus_videoroom.so")
            .exists()
}

pub struct Janus {
    pub child: Child,
    pub pid: u32,
    pub base: String,
    _conf: tempfile::TempDir,
}

fn write_config(dir: &Path, http_port: u16, rtp_range: (u16, u16)) -> Result<()> {
    let others = |folder: &str, keep: &str| -> String {
        std::fs::read_dir(Path::new(LIB).join(folder))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".so") && n != keep)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let conf = dir.display();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
	configs_folder = "{conf}"
	plugins_folder = "{LIB}/plugins"
	transports_folder = "{LIB}/transports"
	events_folder = "{LIB}/events"
	loggers_folder = "{LIB}/loggers"
	debug_level = 2
	session_timeout = 120
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{}-{}"
}}
nat: {{
	nat_1_1_mapping = "127.0.0.1"
	keep_private_host = false
	ice_enforce_list = "lo"
	full_trickle = false
}}
plugins: {{
	disable = "{}"
}}
transports: {{
	disable = "{}"
}}
loggers: {{
	disable = "{}"
}}
events: {{
	broadcast = false
	disable = "{}"
}}
"#,
            rtp_range.0,
            rtp_range.1,
            others("plugins", "libjanus_videoroom.so"),
            others("transports", "libjanus_http.so"),
            others("loggers", ""),
            others("events", ""),
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            r#"general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {http_port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#
        ),
    )?;
    std::fs::write(
        dir.join("janus.plugin.videoroom.jcfg"),
        format!(
            r#"general: {{
}}
room-{ROOM}: {{
	description = "bench"
	publishers = 300
	bitrate = 0
	fir_freq = 0
	audiocodec = "opus"
	videocodec = "vp8"
	record = false
	notify_joining = false
}}
"#
        ),
    )?;
    Ok(())
}

impl Janus {
    pub async fn start(placement: sys::Placement) -> Result<Self> {
        let conf = tempfile::tempdir()?;
        let http = sys::free_tcp_port()?;
        write_config(conf.path(), http, (40000, 49999))?;
        let shim = build_shim(conf.path())?;
        let mut cmd = placement.command("janus");
        cmd.arg("-F")
            .arg(conf.path())
            .arg("-C")
            .arg(conf.path().join("janus.jcfg"))
            .env("LD_PRELOAD", &shim)
            .args(match std::env::var("BENCH_JANUS_LOG") {
                // For debugging the adapter: Janus' own log, verbose.
                Ok(path) => vec!["-L".to_owned(), path, "-d".into(), "5".into()],
                Err(_) => Vec::new(),
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().context("start janus")?;
        let pid = child.id().context("janus has no pid")?;
        let base = format!("http://127.0.0.1:{http}/janus");
        let client = client::tls::http();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/info")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("janus did not answer on {base}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Janus {
            child,
            pid,
            base,
            _conf: conf,
        })
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One Janus session shared by all bots, with its event routing.
pub struct Session {
    http: reqwest::Client,
    url: String,
    routes: RefCell<HashMap<u64, mpsc::UnboundedSender<Value>>>,
    next_tx: std::cell::Cell<u64>,
}

impl Session {
    pub async fn create(base: &str, shared: Rc<Shared>) -> Result<Rc<Session>> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*client::tls::client_config()).clone())
            .pool_max_idle_per_host(64)
            .build()?;
        let r: Value = http
            .post(base)
            .json(&json!({"janus": "create", "transaction": "c"}))
            .send()
            .await?
            .json()
            .await?;
        let id = r["data"]["id"].as_u64().context("no session id")?;
        let session = Rc::new(Session {
            http,
            url: format!("{base}/{id}"),
            routes: RefCell::new(HashMap::new()),
            next_tx: std::cell::Cell::new(0),
        });
        for _ in 0..2 {
            tokio::task::spawn_local(session.clone().poll_events(shared.clone()));
        }
        Ok(session)
    }

    async fn poll_events(self: Rc<Self>, shared: Rc<Shared>) {
        let mut stop = shared.stop.subscribe();
        loop {
            let get = self
                .http
                .get(format!("{}?maxev=50", self.url))
                .timeout(Duration::from_secs(40))
                .send();
            let r = tokio::select! {
                r = get => r,
                _ = stop.changed() => return,
            };
            let body: Value = match r {
                Ok(r) => match r.json().await {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                Err(e) => {
                    if e.is_timeout() {
                        continue;
                    }
                    shared.error(format!("janus long poll: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tracing::debug!("janus events: {body}");
            let events = match body {
                Value::Array(a) => a,
                v => vec![v],
            };
            for ev in events {
                if let Some(sender) = ev["sender"].as_u64() {
                    if let Some(tx) = self.routes.borrow().get(&sender) {
                        let _ = tx.send(ev);
                    }
                }
            }
        }
    }

    fn tx(&self) -> String {
        let n = self.next_tx.get() + 1;
        self.next_tx.set(n);
        format!("t{n}")
    }

    /// Attaches a VideoRoom handle; its events go to the returned channel.
    async fn attach(&self) -> Result<(u64, mpsc::UnboundedReceiver<Value>)> {
        let r: Value = self
            .http
            .post(&self.url)
            .json(&json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": self.tx()}))
            .send()
            .await?
            .json()
            .await?;
        let handle = r["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("attach failed: {r}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.borrow_mut().insert(handle, tx);
        Ok((handle, rx))
    }

    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut msg = json!({"janus": "message", "body": body, "transaction": self.tx()});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        let r: Value = self
            .http
            .post(format!("{}/{handle}", self.url))
            .json(&msg)
            .send()
            .await?
            .json()
            .await?;
        tracing::debug!("janus reply: {r}");
        if r["janus"] == "error" {
            bail!("janus error: {r}");
        }
        Ok(r)
    }

    async fn trickle_done(&self, handle: u64) -> Result<()> {
        self.http
            .post(format!("{}/{handle}", self.url))
            .json(&json!({"janus": "trickle", "candidate": {"completed": true}, "transaction": self.tx()}))
            .send()
            .await?;
        Ok(())
    }
}

/// Keeps only Janus' 127.0.0.1 candidates (it may still list others).
fn loopback_only(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("a=candidate:") && !line.contains(" 127.0.0.1 ") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// Waits for a plugin event on a handle; returns (plugin data, jsep).
/// Publisher announcements seen while waiting go to `feeds`.
async fn wait_event(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    feeds: &mut Vec<u64>,
    want: impl Fn(&Value) -> bool,
) -> Result<(Value, Option<Value>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| anyhow!("no janus event in time"))?
            .ok_or_else(|| anyhow!("janus events closed"))?;
        let data = &ev["plugindata"]["data"];
        if data["error"].is_string() {
            bail!("janus: {}", data["error"]);
        }
        if want(data) {
            let jsep = ev.get("jsep").cloned();
            return Ok((data.clone(), jsep));
        }
        feeds.extend(feeds_of(data));
    }
}

fn feeds_of(data: &Value) -> Vec<u64> {
    data["publishers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// One participant: publishes (feed id = idx + 1) if asked, and subscribes to every other
/// publisher it hears of (or to `fixed_feeds` when it does not publish).
pub async fn bot(
    session: Rc<Session>,
    shared: Rc<Shared>,
    idx: usize,
    publish: bool,
    fixed_feeds: Vec<u64>,
) -> Result<()> {
    let mut stop = shared.stop.subscribe();
    shared.started(idx);
    let my_feed = idx as u64 + 1;
    let mut pending_feeds: Vec<u64> = fixed_feeds;
    let mut pub_rx = None;
    // The peer task lives as long as its handle.
    let mut _pub_peer = None;
    if publish {
        let (h, mut rx) = session.attach().await?;
        session
            .message(
                h,
                json!({"request": "join", "ptype": "publisher", "room": ROOM, "id": my_feed, "display": format!("bot{idx}")}),
                None,
            )
            .await?;
        let (joined, _) =
            wait_event(&mut rx, &mut pending_feeds, |d| d["videoroom"] == "joined").await?;
        pending_feeds.extend(feeds_of(&joined));
        let peer = rtcpeer::spawn(shared.clone(), idx, Some(idx as u32))?;
        let offer = peer.make_offer().await?;
        session
            .message(
                h,
                json!({"request": "configure", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer})),
            )
            .await?;
        session.trickle_done(h).await?;
        let (_, jsep) =
            wait_event(&mut rx, &mut pending_feeds, |d| d["configured"] == "ok").await?;
        let sdp = jsep
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .context("configure without an answer")?;
        peer.accept_answer(loopback_only(&sdp)).await?;
        pub_rx = Some(rx);
        _pub_peer = Some(peer);
    }
    let mut sub: Option<(u64, mpsc::UnboundedReceiver<Value>, rtcpeer::PeerHandle)> = None;
    loop {
        pending_feeds.retain(|f| *f != my_feed);
        if !pending_feeds.is_empty() {
            let streams: Vec<Value> = pending_feeds
                .drain(..)
                .map(|f| json!({"feed": f}))
                .collect();
            let first = sub.is_none();
            if first {
                let (h, rx) = session.attach().await?;
                let peer = rtcpeer::spawn(shared.clone(), idx, None)?;
                sub = Some((h, rx, peer));
            }
            let (h, rx, peer) = sub.as_mut().expect("subscriber handle");
            let body = if first {
                json!({"request": "join", "ptype": "subscriber", "room": ROOM, "streams": streams})
            } else {
                json!({"request": "subscribe", "streams": streams})
            };
            session.message(*h, body, None).await?;
            let mut more = Vec::new();
            let (_, jsep) = wait_event(rx, &mut more, |d| {
                d["videoroom"] == "attached" || d["videoroom"] == "updated"
            })
            .await?;
            if let Some(offer) = jsep.and_then(|j| j["sdp"].as_str().map(str::to_owned)) {
                let answer = peer.accept_offer(loopback_only(&offer)).await?;
                session
                    .message(
                        *h,
                        json!({"request": "start"}),
                        Some(json!({"type": "answer", "sdp": answer})),
                    )
                    .await?;
                if first {
                    session.trickle_done(*h).await?;
                }
                wait_event(rx, &mut more, |d| d["started"] == "ok").await?;
            }
            continue;
        }
        tokio::select! {
            ev = async {
                match pub_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(ev) = ev else { bail!("janus events closed") };
                pending_feeds.extend(feeds_of(&ev["plugindata"]["data"]));
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
