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
