//! End-to-end encryption as the server sees it: nothing but ciphertext.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use server::{MediaTap, ServerConfig};

/// Every 8-byte window from the middle of every frame the bots send (past any clear codec
/// prefix): the plaintext marker a leak would show.
fn plaintext_markers() -> HashSet<[u8; 8]> {
    let mut markers = HashSet::new();
    let clips = client::clip::video_clips().chain([client::clip::audio()]);
    for clip in clips {
        for frame in &clip.frames {
            if frame.len() >= 32 {
                let mid = frame.len() / 2;
                let mut window = [0u8; 8];
                window.copy_from_slice(&frame[mid..mid + 8]);
                markers.insert(window);
            }
        }
    }
    markers
}

fn contains_marker(markers: &HashSet<[u8; 8]>, bytes: &[u8]) -> bool {
    bytes
        .windows(8)
        .any(|w| markers.contains(<&[u8; 8]>::try_from(w).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_forwards_only_ciphertext() {
    let markers = Arc::new(plaintext_markers());
    assert!(markers.len() > 100);
    // The scan finds plaintext when there is some.
    let sample = &client::clip::video(150).frames[7];
    assert!(contains_marker(&markers, sample));

    let seen = Arc::new(AtomicU64::new(0));
    let leaks = Arc::new(AtomicU64::new(0));
    let tap = {
        let (markers, seen, leaks) = (markers.clone(), seen.clone(), leaks.clone());
        MediaTap(Arc::new(move |bytes: &[u8]| {
            seen.fetch_add(1, Ordering::Relaxed);
            if contains_marker(&markers, bytes) {
                leaks.fetch_add(1, Ordering::Relaxed);
            }
        }))
    };
    let dir = tempfile::tempdir().unwrap();
    let server = server::Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_bind_ip: "127.0.0.1".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        media_tap: Some(tap),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let links = create_meeting(&server).await;
    let reports = run_bots(vec![
        bot(&links.host, "host", 3.0),
        bot(&links.join, "guest-1", 3.0),
        bot(&links.join, "guest-2", 3.0),
    ])
    .await;
    for report in &reports {
        let verified: u64 = report.received.iter().map(|t| t.verified).sum();
        assert!(verified > 100, "media flowed and decrypted: {report:#?}");
    }
    let seen = seen.load(Ordering::Relaxed);
    assert!(seen > 1000, "the tap saw the media path ({seen})");
    assert_eq!(leaks.load(Ordering::Relaxed), 0, "plaintext on the server");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mls_bad_input_is_refused_with_reasons() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let (mut host, _) = ws_join_host(&t.server, &links, "host").await;
    let (mut member, _) = ws_admitted(&t.server, &mut host, &links.id, "someone").await;
    // Not base64, not MLS, a commit from a non-member, an application message from one.
    ws_send(
        &mut member,
        r#"{"v":1,"type":"mls_key_package","key_package":"***"}"#,
    )
    .await;
    assert_eq!(ws_next(&mut member).await.unwrap()["code"], "malformed_mls");
    ws_send(
        &mut member,
        r#"{"v":1,"type":"mls_key_package","key_package":"AAECAwQ="}"#,
    )
    .await;
    assert_eq!(ws_next(&mut member).await.unwrap()["code"], "malformed_mls");
    ws_send(
        &mut member,
        r#"{"v":1,"type":"mls_commit","commit":"AAECAwQ="}"#,
    )
    .await;
    assert_eq!(ws_next(&mut member).await.unwrap()["code"], "not_in_group");
    ws_send(
        &mut member,
        r#"{"v":1,"type":"mls_message","data":"AAECAwQ="}"#,
    )
    .await;
    assert_eq!(ws_next(&mut member).await.unwrap()["code"], "not_in_group");
    assert_eq!(
        metric(
            &t.server,
            "conclave_signaling_rejected_total{reason=\"malformed_mls\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &t.server,
            "conclave_signaling_rejected_total{reason=\"not_in_group\"}"
        )
        .await,
        2
    );
    t.server.shutdown().await.unwrap();
}
