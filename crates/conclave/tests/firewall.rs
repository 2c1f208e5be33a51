//! Behind a real firewall: a participant in a network namespace whose nftables ruleset drops
//! all UDP and rejects TCP to any port but 80 (signaling here) and 443 (media over ICE-TCP),
//! as institutional networks do. Its bot on `--transport tcp` meets a bot on open UDP; its bot
//! on `--transport udp` gets no media, and the ruleset's drop counter shows why.
//!
//! Needs root (network namespaces, nftables); `cargo xtask setup` installs iproute2 and
//! nftables.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use client::Report;
use common::{assert_received_all, bot};
use server::{MediaTcp, Server, ServerConfig};

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

/// The client namespace's ruleset: the corporate firewall.
const RULESET: &str = r#"
table inet conclave_walled {
    chain output {
        type filter hook output priority 0; policy accept;
        oifname "lo" accept
        meta l4proto udp counter name udp_dropped drop
        tcp dport { 80, 443 } accept
        meta l4proto tcp reject with tcp reset
    }
    counter udp_dropped {}
}
"#;

impl WalledNetwork {
    fn new() -> WalledNetwork {
        let n = std::process::id() % 200 + 20;
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
        std::fs::write(&rules, RULESET).expect("write ruleset");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_firewall_that_drops_udp_media_flows_over_tcp_443() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let net = WalledNetwork::new();
    let data = tempfile::tempdir().expect("temp dir");
    let ip = IpAddr::V4(net.server_ip);
    let server = Server::start(ServerConfig {
        listen: SocketAddr::new(ip, 80),
        media_port: 0,
        media_tcp: MediaTcp::Port(443),
        media_bind_ip: ip,
        public_ip: ip,
        data_dir: data.path().to_owned(),
        ..ServerConfig::default()
    })
    .await
    .expect("server starts");
    assert_eq!(server.media_tcp_addr, Some(SocketAddr::new(ip, 443)));
    let links =
        client::meeting_links::create_meeting(&server.base_url, serde_json::json!({}), None)
            .await
            .expect("meeting");

    let host = tokio::spawn(client::run(bot(&links.host_url, "host", 12.0)));
    let walled = |name: &'static str, transport: &'static str| {
        let (ns, dir, join) = (
            net.name.clone(),
            data.path().to_owned(),
            links.join_url.clone(),
        );
        tokio::task::spawn_blocking(move || bot_in(&ns, &dir, &join, name, transport))
    };
    let (tcp, udp) = (walled("walled-tcp", "tcp"), walled("walled-udp", "udp"));
    let (tcp, udp) = (tcp.await.expect("tcp bot"), udp.await.expect("udp bot"));
    let host = host.await.expect("host task").expect("host runs");

    assert_received_all(&tcp, &["host"]);
    assert_eq!(tcp.transport.as_deref(), Some("tcp"), "{tcp:#?}");
    assert!(
        host.received.iter().any(|t| t.from == "walled-tcp"),
        "{host:#?}"
    );
    assert_received_all(&host, &["walled-tcp"]);
    // The UDP bot's media never got out: no connection, nothing received.
    assert_eq!(udp.transport, None, "{udp:#?}");
    assert!(udp.received.iter().all(|t| t.verified == 0), "{udp:#?}");
    assert!(
        net.udp_dropped() > 0,
        "the firewall dropped the UDP bot's packets"
    );
}
