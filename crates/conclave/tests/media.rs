//! Real bots, a real server and real UDP on 127.0.0.1.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bots_receive_verified_audio_and_video_from_each_other() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let reports = run_bots(vec![
        bot(&links.host, "alice", 4.0),
        bot(&links.join, "bob", 4.0),
        bot(&links.join, "carol", 4.0),
    ])
    .await;
    let names = ["alice", "bob", "carol"];
    for report in &reports {
        let others: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != report.name)
            .collect();
        assert_received_all(report, &others);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report.sent.video > 60 && report.sent.audio > 100,
            "{:?}",
            report.sent
        );
        for track in &report.received {
            assert!(
                track.latency_ms_p50.is_some(),
                "latency measured: {track:?}"
            );
        }
        eprintln!(
            "{}: {}",
            report.name,
            serde_json::to_string(&report.received).unwrap()
        );
    }
    assert!(metric(&t.server, "conclave_media_frames_forwarded_total").await > 0);
    // End-to-end encryption: one epoch, one security code, every frame decrypted.
    let first = &reports[0].e2ee;
    assert!(first.epoch >= 2, "two joins, two re-keys: {first:?}");
    assert_eq!(first.security_code.len(), 35, "{first:?}");
    for report in &reports {
        assert_eq!(report.e2ee.epoch, first.epoch, "{:?}", report.e2ee);
        assert_eq!(report.e2ee.security_code, first.security_code);
        assert_eq!(report.e2ee.decrypt_failures, 0, "{:?}", report.e2ee);
        assert!(report.e2ee.alarms.is_empty());
        let verified: u64 = report.received.iter().map(|t| t.verified).sum();
        assert!(report.e2ee.decrypted >= verified, "{:?}", report.e2ee);
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_bot_has_its_tracks_removed_for_the_others() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let reports = run_bots(vec![
        bot(&links.host, "stays-1", 5.0),
        bot(&links.join, "stays-2", 5.0),
        bot(&links.join, "leaves", 2.0),
    ])
    .await;
    for report in reports.iter().filter(|r| r.name.starts_with("stays")) {
        let from_leaver: Vec<_> = report
            .received
            .iter()
            .filter(|t| t.from == "leaves")
            .collect();
        assert_eq!(from_leaver.len(), 2, "{report:#?}");
        assert!(
            from_leaver.iter().all(|t| t.removed && t.frames > 0),
            "{from_leaver:?}"
        );
        let from_other: Vec<_> = report
            .received
            .iter()
            .filter(|t| t.from.starts_with("stays") && t.from != report.name)
            .collect();
        assert!(from_other.iter().all(|t| !t.removed), "{from_other:?}");
        // Two joins and one removal: three re-keys, and the leaver's keys are gone.
        assert_eq!(report.e2ee.epoch, 3, "{:?}", report.e2ee);
        assert_eq!(report.e2ee.decrypt_failures, 0, "{:?}", report.e2ee);
    }
    let stays: Vec<_> = reports
        .iter()
        .filter(|r| r.name.starts_with("stays"))
        .collect();
    assert_eq!(stays[0].e2ee.security_code, stays[1].e2ee.security_code);
    assert_ne!(
        stays[0].e2ee.security_code,
        reports
            .iter()
            .find(|r| r.name == "leaves")
            .unwrap()
            .e2ee
            .security_code,
        "the code changed when the leaver was removed"
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bot_process_is_removed_and_its_tracks_unpublished() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let observer = tokio::spawn(client::run(bot(&links.host, "observer", 12.0)));
    let mut victim = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "bot",
            "--join",
            &links.join,
            "--name",
            "victim",
            "--duration",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn bot");
    // Wait until the server forwards the victim's media, then kill it without warning.
    let mut forwarded = 0;
    for _ in 0..100 {
        forwarded = metric(&t.server, "conclave_media_frames_forwarded_total").await;
        if forwarded > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(forwarded > 100, "media flowed before the kill");
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();
    let mut participants = u64::MAX;
    for _ in 0..100 {
        participants = metric(&t.server, "conclave_participants ").await;
        if participants == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(participants, 1, "the killed bot is removed");
    let report = observer.await.unwrap().unwrap();
    let from_victim: Vec<_> = report
        .received
        .iter()
        .filter(|t| t.from == "victim")
        .collect();
    assert_eq!(from_victim.len(), 2, "{report:#?}");
    assert!(
        from_victim.iter().all(|t| t.removed && t.verified > 0),
        "{from_victim:?}"
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bots_each_receive_all_nineteen_others() {
    // Twenty debug-build bots saturate both cores; see the helper for why no estimation.
    let t = start_server_without_downlink_estimation().await;
    let links = create_meeting(&t.server).await;
    let names: Vec<String> = (0..20).map(|i| format!("bot-{i:02}")).collect();
    // The first bot is the host: it creates the MLS group and admits the others.
    let bots = names
        .iter()
        .enumerate()
        .map(|(i, n)| bot(if i == 0 { &links.host } else { &links.join }, n, 6.0))
        .collect();
    let reports = run_bots(bots).await;
    let mut latencies_p50 = Vec::new();
    let mut latencies_p99 = Vec::new();
    for report in &reports {
        let others: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != report.name)
            .collect();
        assert_received_all(report, &others);
        assert_eq!(report.e2ee.security_code, reports[0].e2ee.security_code);
        assert_eq!(report.e2ee.decrypt_failures, 0, "{:?}", report.e2ee);
        for track in &report.received {
            latencies_p50.extend(track.latency_ms_p50);
            latencies_p99.extend(track.latency_ms_p99);
        }
    }
    latencies_p50.sort_by(f64::total_cmp);
    latencies_p99.sort_by(f64::total_cmp);
    eprintln!(
        "20 bots: median of per-track p50 latency {:.2} ms, median of per-track p99 {:.2} ms",
        latencies_p50[latencies_p50.len() / 2],
        latencies_p99[latencies_p99.len() / 2]
    );
    t.server.shutdown().await.unwrap();
}

/// A TCP relay for the signaling connection that the test can cut.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CuttableProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(relay);
            }
        });
        CuttableProxy { addr, connections }
    }

    fn cut_all(&self) -> usize {
        let mut list = self.connections.lock().unwrap();
        let n = list.len();
        for relay in list.drain(..) {
            relay.abort();
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_whose_signaling_drops_rejoins_within_two_seconds_and_media_resumes() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let proxy = CuttableProxy::start(t.server.http_addr).await;
    let via_proxy = format!("http://{}/m/{}", proxy.addr, links.id);
    let observer = tokio::spawn(client::run(bot(&links.host, "observer", 8.0)));
    let flaky = tokio::spawn(client::run(bot(&via_proxy, "flaky", 7.0)));
    for _ in 0..100 {
        if metric(&t.server, "conclave_media_frames_forwarded_total").await > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        proxy.cut_all(),
        1,
        "one signaling connection went through the proxy"
    );
    let flaky = flaky.await.unwrap().unwrap();
    let observer = observer.await.unwrap().unwrap();
    assert_eq!(flaky.reconnects, 1, "{flaky:#?}");
    assert_eq!(flaky.reconnect_ms.len(), 1);
    assert!(
        flaky.reconnect_ms[0] < 2000,
        "rejoined in {:?} ms",
        flaky.reconnect_ms
    );
    // The host's client took the rejoiner back by its device, not by the server's word: no
    // alarm about an admission it did not make.
    assert!(
        observer.e2ee.alarms.is_empty(),
        "{:?}",
        observer.e2ee.alarms
    );
    // The observer receives the rejoined participant's media, all of it verified.
    let rejoined = flaky.participant_id.unwrap();
    for kind in ["audio", "video"] {
        let track = observer
            .received
            .iter()
            .find(|t| t.participant_id == rejoined && t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} after the rejoin: {observer:#?}"));
        assert!(
            track.frames > 0 && track.verified == track.frames,
            "{track:?}"
        );
    }
    t.server.shutdown().await.unwrap();
}
