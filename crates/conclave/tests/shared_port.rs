//! One TLS port for the web app and the built-in TURN relay (`--turn-server-name`): the
//! listener routes each connection by the server name in its ClientHello. A bot whose only
//! path is TURN/TLS meets a UDP bot through the relay on the HTTPS port, while HTTPS, WSS and
//! the API keep working on that same port.
//!
//! One test in its own binary: it points the process's trust store (`SSL_CERT_FILE`, read
//! once by `client::tls`) at the test certificate before any client speaks TLS.

mod common;

use common::*;

/// Names the web app is reached by (an address: clients send no server name for it) and the
/// relay's name on the same port.
const WEB: &str = "127.0.0.1";
const RELAY: &str = "localhost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_port_serves_the_web_app_and_the_relay_by_server_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec![WEB.into(), RELAY.into()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    // SAFETY: the only test of this binary, and no thread of it has started a client yet.
    unsafe { std::env::set_var("SSL_CERT_FILE", &cert) };
    let tls = server::TlsFiles { cert, key };
    let server = start_configured(&dir.path().join("data"), |c| {
        c.tls = Some(tls);
        c.turn.server_name = Some(RELAY.into());
        c.turn.secret = Some("0123456789abcdef0123".into());
    })
    .await;
    let port = server.http_addr.port();
    let relay = server.turn_relay.as_ref().expect("the relay runs");
    assert_eq!(
        relay.0, server.http_addr,
        "the relay has no port of its own"
    );

    // HTTPS on the web app's name: the app's API, as before.
    let health = client::tls::http()
        .get(format!("https://{WEB}:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS on the shared port");
    assert_eq!(health.status(), 200);
    // The relay's name on the same port is the relay: HTTP there never makes a TURN frame
    // (its first bytes read as the start of a 21 KB ChannelData), and the relay cuts a
    // connection that sends no whole frame within its deadline.
    let refused = client::tls::http()
        .get(format!("https://{RELAY}:{port}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "the web app answered on the relay's name");
    assert_eq!(
        metric(&server, "conclave_turn_connections_cut_idle").await,
        1
    );

    // An admitted participant is offered the relay on the HTTPS port, by its name (over WSS
    // on that port).
    let links = create_meeting(&server).await;
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://{WEB}:{port}/ws"),
        None,
        false,
        Some(client::tls::websocket_connector()),
    )
    .await
    .expect("WSS on the shared port");
    ws_send(&mut ws, host_hello(&links, "host")).await;
    let welcome = ws_next_of(&mut ws, "welcome").await;
    assert_eq!(
        welcome["ice_servers"][0]["urls"][0],
        format!("turns:{RELAY}:{port}?transport=tcp"),
        "{welcome}"
    );
    drop(ws);

    meet_through_the_relay(&server, &links).await;
    assert!(metric(&server, "conclave_turn_connections_shared").await >= 1);
}
