//! Media quality on bad links: a bot's emulated downlink (str0m-netem on its receive path)
//! loses packets, and the SFU's loss recovery (NACK/RTX, keyframe requests) keeps its video
//! decoding without disturbing anyone else.

mod common;

use std::time::Duration;

use client::downlink::DownlinkShape;
use client::Report;
use common::*;

fn video_from(report: &Report, sender: &str) -> (u64, u64, u64) {
    report
        .received
        .iter()
        .find(|t| t.from == sender && t.kind == "video")
        .map(|t| (t.frames, t.verified, t.freezes))
        .unwrap_or_else(|| panic!("{} got no video from {sender}: {report:#?}", report.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_on_one_subscriber_keeps_its_video_decoding_and_spares_the_others() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let lossy = client::BotOptions {
        downlink: Some(DownlinkShape {
            kbps: None,
            loss: 0.05,
            delay: Duration::from_millis(20),
            lift_after: None,
        }),
        ..bot(&links.join, "lossy", 8.0)
    };
    let reports = run_bots(vec![
        bot(&links.host, "sender", 8.0),
        bot(&links.join, "clean", 8.0),
        lossy,
    ])
    .await;
    let by_name = |name: &str| reports.iter().find(|r| r.name == name).unwrap();
    let (clean_frames, clean_verified, clean_freezes) = video_from(by_name("clean"), "sender");
    let (lossy_frames, lossy_verified, _) = video_from(by_name("lossy"), "sender");
    println!(
        "video frames from the sender: sent {}, clean {clean_frames}, lossy {lossy_frames}",
        by_name("sender").sent.video
    );
    assert!(
        by_name("lossy").downlink_dropped > 50,
        "the emulated link dropped {} datagrams",
        by_name("lossy").downlink_dropped
    );
    // Every frame that reached the lossy bot is whole and verified: NACK/RTX filled the gaps
    // or a keyframe restarted decoding.
    assert_eq!(lossy_verified, lossy_frames, "{:#?}", by_name("lossy"));
    assert!(
        lossy_frames * 10 >= clean_frames * 8,
        "lossy decoded {lossy_frames} frames, the clean link {clean_frames}: under 80 %"
    );
    // The clean subscriber is unaffected: everything verified, no freeze.
    assert_eq!(clean_verified, clean_frames);
    assert_eq!(clean_freezes, 0, "{:#?}", by_name("clean"));
    let sent = by_name("sender").sent.video;
    assert!(
        clean_frames * 10 >= sent * 9,
        "clean got {clean_frames} of {sent}"
    );
    t.server.shutdown().await.unwrap();
}

/// The received layer of `sender`'s video over time, and the freezes.
fn layers_from(report: &Report, sender: &str) -> (Vec<client::LayerChange>, u64, u64, u64) {
    report
        .received
        .iter()
        .find(|t| t.from == sender && t.kind == "video")
        .map(|t| (t.layer_changes.clone(), t.frames, t.verified, t.freezes))
        .unwrap_or_else(|| panic!("{} got no video from {sender}: {report:#?}", report.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_downlink_gets_the_low_layer_and_climbs_to_the_high_one_when_it_lifts() {
    const LIFT_AFTER: Duration = Duration::from_secs(10);
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let sender = client::BotOptions {
        simulcast: true,
        ..bot(&links.host, "sender", 24.0)
    };
    // 700 kbps fits the sender's 150 kbps layer beside the other bot's 150 kbps video and
    // both audio tracks, not the 500 or 1500 kbps layers.
    let limited = client::BotOptions {
        downlink: Some(DownlinkShape {
            kbps: Some(700),
            loss: 0.0,
            delay: Duration::from_millis(10),
            lift_after: Some(LIFT_AFTER),
        }),
        ..bot(&links.join, "limited", 22.0)
    };
    let clear = bot(&links.join, "clear", 22.0);
    let reports = run_bots(vec![sender, limited, clear]).await;
    let by_name = |name: &str| reports.iter().find(|r| r.name == name).unwrap();
    let (changes, frames, verified, freezes) = layers_from(by_name("limited"), "sender");
    println!(
        "limited subscriber's layers: {changes:?}; {verified}/{frames} frames, {freezes} freezes"
    );
    assert_eq!(verified, frames, "{:#?}", by_name("limited"));
    // Before the limit lifts the subscriber settles on the 150 kbps layer...
    let lift_ms = LIFT_AFTER.as_millis() as u64;
    let before: Vec<&client::LayerChange> = changes.iter().filter(|c| c.at_ms < lift_ms).collect();
    assert_eq!(
        before.last().map(|c| c.kbps),
        Some(150),
        "still on a layer over the limit when it lifted: {changes:?}"
    );
    // ...and within 10 s of the lift it is on the 1500 kbps one.
    let climbed = changes
        .iter()
        .find(|c| c.at_ms >= lift_ms && c.kbps == 1500)
        .unwrap_or_else(|| panic!("never climbed to the high layer: {changes:?}"));
    let climb_ms = climbed.at_ms - lift_ms;
    println!("climbed to the high layer {climb_ms} ms after the limit lifted");
    assert!(climb_ms <= 10_000, "took {climb_ms} ms: {changes:?}");
    assert_eq!(
        freezes,
        0,
        "a switch froze the video: {:#?}",
        by_name("limited")
    );
    // The unlimited subscriber had the high layer throughout (after its first choice).
    let (clear_changes, clear_frames, clear_verified, clear_freezes) =
        layers_from(by_name("clear"), "sender");
    assert_eq!(clear_verified, clear_frames);
    assert_eq!(clear_freezes, 0, "{clear_changes:?}");
    assert_eq!(
        clear_changes.last().map(|c| c.kbps),
        Some(1500),
        "{clear_changes:?}"
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speakers_come_from_the_audio_levels_and_leave_out_the_silent() {
    let t = start_server().await;
    let links = create_meeting(&t.server).await;
    let quiet = client::BotOptions {
        speaking: false,
        ..bot(&links.join, "quiet", 5.0)
    };
    let reports = run_bots(vec![
        bot(&links.host, "talker-1", 7.0),
        bot(&links.join, "talker-2", 7.0),
        quiet,
    ])
    .await;
    let quiet = reports.iter().find(|r| r.name == "quiet").unwrap();
    let mut speakers = quiet.active_speakers.clone();
    speakers.sort();
    assert_eq!(speakers, ["talker-1", "talker-2"], "{quiet:#?}");
    t.server.shutdown().await.unwrap();
}
