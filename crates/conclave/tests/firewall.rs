//! Behind a real firewall: a participant in a network namespace whose nftables ruleset drops
//! all UDP and rejects TCP to any port but 80 (signaling here) and 443, as institutional
//! networks do. With ICE-TCP on 443 its bot on `--transport tcp` meets a bot on open UDP and its
//! bot on `--transport udp` gets no media (the ruleset's drop counter shows why); with the
//! built-in TURN/TLS relay on 443 and no ICE-TCP at all, its bot on `--transport turn-tls` does.
//! `conclave doctor` run from inside says which paths work and fails on the one that does not.
//!
//! Needs root (network namespaces, nftables); `cargo xtask setup` installs iproute2 and
//! nftables.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use client::Report;
use common::{assert_received_all, assert_relayed_both_ways, bot};
use server::{MediaTcp, Server, ServerConfig, TurnConfig};

/// A namespace joined to this one by a veth pair: 198.18.N.1 here, 198.18.N.2 inside.
struct WalledNetwork {
    name: String,
    server_ip: Ipv4Addr,
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (cargo xtask setup installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (the firewall test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client namespace's ruleset: the corporate firewall, open to TCP on `open_ports`.
fn ruleset(open_ports: &[u16]) -> String {
    let ports: Vec<String> = open_ports.iter().map(u16::to_string).collect();
    format!(
        r#"
table inet conclave_walled {{
    chain output {{
        type filter hook output priority 0; policy accept;
        oifname "lo" accept
        meta l4proto udp counter name udp_dropped drop
        tcp dport {{ {} }} accept
        meta l4proto tcp reject with tcp reset
    }}
    counter udp_dropped {{}}
}}
"#,
        ports.join(", ")
    )
}

impl WalledNetwork {
    /// `slot` tells apart the namespaces of tests running at once in this process.
    fn new(slot: u32) -> WalledNetwork {
        WalledNetwork::open_to(slot, &[80, 443])
    }

    /// A walled network whose firewall lets TCP out to `open_ports` only.
    fn open_to(slot: u32, open_ports: &[u16]) -> WalledNetwork {
        let n = std::process::id() % 100 * 2 + 20 + slot;
        let name = format!("cclwall{n}");
        let (outside, inside) = (format!("cw{n}o"), format!("cw{n}i"));
        let server_ip = Ipv4Addr::new(198, 18, n as u8, 1);
        let client_ip = format!("198.18.{n}.2/30");
        // A namespace left by an earlier run that was killed.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &outside]).output();
        run("ip", &["netns", "add", &name]);
        let net = WalledNetwork { name, server_ip };
        let ns = net.name.as_str();
        run(
            "ip",
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", ns]);
        run(
            "ip",
            &["addr", "add", &format!("{server_ip}/30"), "dev", &outside],
        );
        run("ip", &["link", "set", &outside, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        exec(&["ip", "addr", "add", &client_ip, "dev", &inside]);
        exec(&["ip", "link", "set", &inside, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &server_ip.to_string(),
        ]);
        let rules = std::env::temp_dir().join(format!("{}.nft", net.name));
        std::fs::write(&rules, ruleset(open_ports)).expect("write ruleset");
        exec(&["nft", "-f", rules.to_str().expect("utf-8 path")]);
        net
    }

    /// Packets the ruleset dropped for being UDP.
    fn udp_dropped(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-j", "list", "counter"])
            .args(["inet", "conclave_walled", "udp_dropped"])
            .output()
            .expect("nft");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        json["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .unwrap_or_else(|| panic!("no counter in {json}"))
    }
}

/// Runs `conclave bot` inside namespace `ns` and returns its report.
fn bot_in(ns: &str, dir: &Path, join: &str, name: &str, transport: &str) -> Report {
    let report = dir.join(format!("{name}.json"));
    let out = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_conclave"), "bot"])
        .args(["--join", join, "--name", name, "--duration", "10"])
        .args(["--video-kbps", "150", "--transport", transport])
        .arg("--report")
        .arg(&report)
        .output()
        .expect("conclave bot");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report JSON")
}

impl Drop for WalledNetwork {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it ours.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A server on the outside end of the veth pair: HTTP on 80, media UDP on an ephemeral port.
async fn start_outside(
    net: &WalledNetwork,
    data: &Path,
    media_tcp: MediaTcp,
    turn: TurnConfig,
) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ip = IpAddr::V4(net.server_ip);
    Server::start(ServerConfig {
        listen: SocketAddr::new(ip, 80),
        media_port: 0,
        media_tcp,
        media_bind_ip: ip,
        public_ip: ip,
        data_dir: data.to_owned(),
        turn,
        ..ServerConfig::default()
    })
    .await
    .expect("server starts")
}

/// Runs a host bot on open UDP beside walled bots (name, transport); their reports, host first.
async fn meet(
    net: &WalledNetwork,
    server: &Server,
    dir: &Path,
    walled: &[(&'static str, &'static str)],
) -> (Report, Vec<Report>) {
    let links =
        client::meeting_links::create_meeting(&server.base_url, serde_json::json!({}), None)
            .await
            .expect("meeting");
    let host = tokio::spawn(client::run(bot(&links.host_url, "host", 12.0)));
    let walled: Vec<_> = walled
        .iter()
        .map(|&(name, transport)| {
            let (ns, dir, join) = (net.name.clone(), dir.to_owned(), links.join_url.clone());
            tokio::task::spawn_blocking(move || bot_in(&ns, &dir, &join, name, transport))
        })
        .collect();
    let mut reports = Vec::new();
    for bot in walled {
        reports.push(bot.await.expect("walled bot"));
    }
    let host = host.await.expect("host task").expect("host runs");
    (host, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_firewall_that_drops_udp_media_flows_over_tcp_443() {
    let net = WalledNetwork::new(0);
    let data = tempfile::tempdir().expect("temp dir");
    let server = start_outside(
        &net,
        data.path(),
        MediaTcp::Port(443),
        TurnConfig::default(),
    )
    .await;
    let ip = IpAddr::V4(net.server_ip);
    assert_eq!(server.media_tcp_addr, Some(SocketAddr::new(ip, 443)));
    let (host, walled) = meet(
        &net,
        &server,
        data.path(),
        &[("walled-tcp", "tcp"), ("walled-udp", "udp")],
    )
    .await;
    let (tcp, udp) = (&walled[0], &walled[1]);

    assert_received_all(tcp, &["host"]);
    assert_eq!(tcp.transport.as_deref(), Some("tcp"), "{tcp:#?}");
    assert_received_all(&host, &["walled-tcp"]);
    // The UDP bot's media never got out: no connection, nothing received.
    assert_eq!(udp.transport, None, "{udp:#?}");
    assert!(udp.received.iter().all(|t| t.verified == 0), "{udp:#?}");
    assert!(
        net.udp_dropped() > 0,
        "the firewall dropped the UDP bot's packets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_tls_on_443_media_flows_through_the_built_in_turn_relay() {
    let net = WalledNetwork::new(1);
    let data = tempfile::tempdir().expect("temp dir");
    // No ICE-TCP: the walled bot's only way out is the relay's TLS on 443.
    let turn = TurnConfig {
        port: Some(443),
        ..TurnConfig::default()
    };
    let server = start_outside(&net, data.path(), MediaTcp::Off, turn).await;
    assert_eq!(server.media_tcp_addr, None);
    let relay = server.turn_relay.as_ref().map(|(addr, _)| *addr);
    assert_eq!(relay, Some(SocketAddr::new(IpAddr::V4(net.server_ip), 443)));
    let (host, walled) = meet(&net, &server, data.path(), &[("walled-turn", "turn-tls")]).await;
    // The ruleset leaves the walled bot no other way than the relay.
    assert_relayed_both_ways(&server, &host, &walled[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_inside_the_wall_fails_udp_and_passes_tcp_and_the_relay() {
    // TURN's own port (5349) is open too, so every path but UDP has a way out.
    let net = WalledNetwork::open_to(2, &[80, 443, 5349]);
    let data = tempfile::tempdir().expect("temp dir");
    let turn = TurnConfig {
        port: Some(5349),
        ..TurnConfig::default()
    };
    let server = start_outside(&net, data.path(), MediaTcp::Port(443), turn).await;
    let (ns, url) = (net.name.clone(), server.base_url.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_conclave"),
                "doctor",
            ])
            .args([url.as_str(), "--json", "--seconds", "4"])
            .output()
            .expect("conclave doctor")
    })
    .await
    .expect("doctor task");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let verdict = |check: &str| {
        json["findings"]
            .as_array()
            .and_then(|all| all.iter().find(|f| f["check"] == check))
            .map(|f| {
                (
                    f["verdict"].as_str().unwrap_or("").to_owned(),
                    f["message"].to_string(),
                )
            })
            .unwrap_or_else(|| panic!("no {check} finding: {json:#}"))
    };

    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["ok"], false);
    let (udp, why) = verdict("udp");
    assert_eq!(udp, "fail", "{json:#}");
    assert!(why.contains("open the media port (UDP)"), "{why}");
    assert_eq!(verdict("tcp").0, "ok", "{json:#}");
    assert_eq!(verdict("turn").0, "ok", "{json:#}");
    // A namespace address served over plain HTTP: a warning, not a failure.
    assert_eq!(verdict("tls").0, "warn", "{json:#}");
    assert!(net.udp_dropped() > 0);
}
