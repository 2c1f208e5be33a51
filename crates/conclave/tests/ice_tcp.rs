//! ICE over TCP: a participant whose network carries only TCP meets participants on UDP, and
//! strangers who flood the TCP media port or send it garbage are cut off without hurting
//! anyone's media.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client::{BotOptions, Report, Transport};
use common::{assert_received_all, bot, create_meeting, run_bots, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_bot(join: &str, name: &str, seconds: f64) -> BotOptions {
    BotOptions {
        transport: Transport::Tcp,
        ..bot(join, name, seconds)
    }
}

fn assert_everyone_received_everyone(reports: &[Report]) {
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    for r in reports {
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != r.name).collect();
        assert_received_all(r, &others);
        assert!(r.errors.is_empty(), "{r:#?}");
    }
}

/// The value of the metric line that starts with `series` (name and labels).
async fn metric(base_url: &str, series: &str) -> u64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Polls the metric until `done` holds for it (or fails after `limit`).
async fn wait_for_metric(
    base_url: &str,
    series: &str,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) {
    let start = Instant::now();
    loop {
        let value = metric(base_url, series).await;
        if done(value) {
            return;
        }
        assert!(start.elapsed() < limit, "{series} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP connection to the media port from `source_ip` (any 127/8 address is loopback).
async fn connect_from(source_ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_ip.parse().expect("ip"), 0))?;
    socket.connect(to).await
}

/// Reads until the server closes the connection; false if it stays open past `limit`.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_on_tcp_only_meets_participants_on_udp() {
    let t = start_server().await;
    let tcp = t.server.media_tcp_addr.expect("ICE-TCP is on by default");
    assert_eq!(
        tcp.port(),
        t.server.media_addr.port(),
        "ICE-TCP listens on the media port's number"
    );
    let links = create_meeting(&t.server).await;
    let reports = run_bots(vec![
        bot(&links.host, "host", 8.0),
        tcp_bot(&links.join, "tcp-guest", 8.0),
        bot(&links.join, "udp-guest", 8.0),
    ])
    .await;
    assert_everyone_received_everyone(&reports);
    let transports: Vec<_> = reports
        .iter()
        .map(|r| (r.name.as_str(), r.transport.as_deref()))
        .collect();
    assert_eq!(
        transports,
        [
            ("host", Some("udp")),
            ("tcp-guest", Some("tcp")),
            ("udp-guest", Some("udp"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_floods_and_garbage_are_cut_off_while_the_meeting_goes_on() {
    let t = start_server().await;
    let base = t.server.base_url.clone();
    let tcp = t.server.media_tcp_addr.expect("ICE-TCP is on by default");
    let links = create_meeting(&t.server).await;
    let meeting = tokio::spawn(run_bots(vec![
        bot(&links.host, "host", 14.0),
        tcp_bot(&links.join, "tcp-guest", 14.0),
    ]));
    // The attack starts once the TCP participant's media flows over its connection.
    wait_for_metric(
        &base,
        "conclave_media_tcp_connections",
        Duration::from_secs(10),
        |n| n >= 1,
    )
    .await;

    // Hundreds of connections from one address that say nothing: eight may wait for their
    // first frame (until the hello deadline), the rest are refused at once.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = connect_from("127.0.0.2", tcp).await {
            held.push(stream);
        }
    }
    assert_eq!(held.len(), 300, "the kernel accepted every connection");
    wait_for_metric(
        &base,
        "conclave_media_tcp_refused_total{reason=\"pending_per_address\"}",
        Duration::from_secs(10),
        |n| n >= 292,
    )
    .await;

    // Garbage framing from another address: a frame that is no STUN, DTLS or RTP, an empty
    // frame, and STUN for a participant that does not exist. Each connection is closed.
    let garbage: [&[u8]; 3] = [
        b"\x00\x08garbage!",
        b"\x00\x00",
        // A STUN binding request (type 0x0001, length 0, magic cookie, transaction id).
        b"\x00\x14\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl",
    ];
    for frame in garbage {
        let mut stream = connect_from("127.0.0.3", tcp).await.expect("connect");
        stream.write_all(frame).await.expect("write");
        assert!(
            closed_by_server(&mut stream, Duration::from_secs(5)).await,
            "a connection that sent {frame:?} stayed open"
        );
    }
    wait_for_metric(
        &base,
        "conclave_media_tcp_refused_total{reason=\"bad_frame\"}",
        Duration::from_secs(5),
        |n| n >= 3,
    )
    .await;

    // The silent connections that were let wait are closed at the hello deadline.
    let mut closed = 0;
    for stream in &mut held {
        if closed_by_server(stream, Duration::from_secs(8)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every silent connection was closed");
    // The waiting ones went at the hello deadline.
    wait_for_metric(
        &base,
        "conclave_media_tcp_refused_total{reason=\"timeout\"}",
        Duration::from_secs(5),
        |n| n >= 8,
    )
    .await;

    let reports = meeting.await.expect("meeting");
    assert_everyone_received_everyone(&reports);
    assert_eq!(reports[1].transport.as_deref(), Some("tcp"));
    assert_eq!(reports[1].reconnects, 0, "{:#?}", reports[1]);
}
