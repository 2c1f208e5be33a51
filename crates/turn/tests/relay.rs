//! The relay and the bots' TURN/TLS client against each other over real sockets: a
//! credential from the REST secret allocates and relays to the SFU and back; a peer that sends
//! garbage or opens too many connections is cut off while an allocation keeps working.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use turn::client::{TurnServerSpec, TurnTlsClient};
use turn::gate::Gate;
use turn::tls::RelayTls;
use turn::{RelayConfig, RunningRelay, TurnRelay, TurnSecret};

const SECRET: &[u8] = b"a test secret of enough bytes";

struct Fixture {
    relay: RunningRelay,
    sfu: UdpSocket,
    _stop: watch::Sender<bool>,
}

async fn start(max_connections_per_ip: usize) -> Fixture {
    let sfu = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let relay = TurnRelay::start(
        RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_bind_ip: "127.0.0.1".parse().unwrap(),
            relay_public_ip: "127.0.0.1".parse().unwrap(),
            gate: Gate {
                secret: TurnSecret::new(SECRET.to_vec()).unwrap(),
                max_ttl_secs: 3600,
                peers: vec![sfu.local_addr().unwrap()],
            },
            tls: RelayTls::self_signed(vec!["127.0.0.1".into()]).unwrap(),
            realm: "test".into(),
            max_connections: 64,
            max_connections_per_ip,
            max_allocations: 16,
        },
        stopped,
    )
    .await
    .unwrap();
    Fixture {
        relay,
        sfu,
        _stop: stop,
    }
}

fn spec(fixture: &Fixture, ttl: i64) -> TurnServerSpec {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let username = format!("{}:bot", now + ttl);
    let secret = TurnSecret::new(SECRET.to_vec()).unwrap();
    TurnServerSpec {
        url: format!(
            "turns:127.0.0.1:{}?transport=tcp",
            fixture.relay.addr.port()
        ),
        credential: secret.password_for(&username),
        username,
        certificate_sha256: Some(fixture.relay.fingerprint.clone()),
    }
}

/// Sends `data` to the SFU until it arrives (the first send only asks for the permission).
async fn send_until_sfu_hears(
    client: &mut TurnTlsClient,
    sfu: &UdpSocket,
    data: &[u8],
) -> SocketAddr {
    let mut buf = [0u8; 1500];
    let mut from_relay = Vec::new();
    for _ in 0..50 {
        client.send(sfu.local_addr().unwrap(), data);
        client.flush().await.unwrap();
        // Let the client read the relay's answers (the permission's among them).
        let _ = tokio::time::timeout(Duration::from_millis(50), client.recv(&mut from_relay)).await;
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), sfu.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..n], data);
            return from;
        }
    }
    panic!("the SFU never heard from the relayed client");
}

#[tokio::test]
async fn a_client_allocates_and_datagrams_go_to_the_sfu_and_back() {
    let fixture = start(8).await;
    let mut client = TurnTlsClient::allocate(&spec(&fixture, 600)).await.unwrap();
    let relayed = client.relayed_addr();
    let from = send_until_sfu_hears(&mut client, &fixture.sfu, b"to the sfu").await;
    assert_eq!(from, relayed, "the SFU sees the relayed address");

    fixture
        .sfu
        .send_to(b"to the client", relayed)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (peer, n) = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("data comes back")
        .unwrap();
    assert_eq!(
        (peer, &buf[..n]),
        (fixture.sfu.local_addr().unwrap(), &b"to the client"[..])
    );
}

#[tokio::test]
async fn a_wrong_certificate_and_an_expired_credential_get_no_allocation() {
    let fixture = start(8).await;
    let mut pinned_wrong = spec(&fixture, 600);
    pinned_wrong.certificate_sha256 = Some("00:11".into());
    let err = TurnTlsClient::allocate(&pinned_wrong).await.err().unwrap();
    assert!(err.to_string().contains("TLS"), "{err}");

    // The relay's 401 is unsigned (it cannot sign for a credential it refuses), and the
    // client waits out such answers as a spoofing defence: no allocation, then its timeout.
    assert!(TurnTlsClient::allocate(&spec(&fixture, -10)).await.is_err());
    let expired = fixture
        .relay
        .stats
        .refused_expired
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(expired >= 1);
    assert_eq!(
        fixture
            .relay
            .stats
            .allocations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn garbage_and_connection_floods_are_cut_off_and_an_allocation_keeps_working() {
    let fixture = start(4).await;
    let mut client = TurnTlsClient::allocate(&spec(&fixture, 600)).await.unwrap();
    send_until_sfu_hears(&mut client, &fixture.sfu, b"before").await;

    // Garbage inside TLS: neither STUN nor ChannelData.
    let mut garbage = turn::client::connect_tls(
        &fixture.relay.addr.to_string(),
        "127.0.0.1",
        Some(&fixture.relay.fingerprint),
    )
    .await
    .unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    garbage.flush().await.unwrap();
    let stats = fixture.relay.stats.clone();
    wait_for(|| {
        stats
            .connections_cut_for_garbage
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;

    // More connections than one address may hold, each silent where its ClientHello belongs
    // (a slowloris): the extras are refused.
    let mut flood = Vec::new();
    for _ in 0..16 {
        flood.push(TcpStream::connect(fixture.relay.addr).await);
    }
    wait_for(|| {
        stats
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 10
    })
    .await;

    // The allocation made before still relays.
    send_until_sfu_hears(&mut client, &fixture.sfu, b"after").await;
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..100 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}
