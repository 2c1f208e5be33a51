//! meeting-N with simulcast and last-N (`--simulcast`): what a large meeting costs once the
//! SFU chooses layers. Unlike the side-by-side scenarios this drives real `conclave bot`s
//! (the `client` crate: MLS, SFrame, three simulcast layers, emulated downlinks), because
//! layer choice depends on what the receivers report back (TWCC feedback, budgets) and Janus
//! and the floor have no equivalent; so it runs against Conclave only.
//!
//! Every bot publishes q/h/f; two speak, the rest are silent (Opus-DTX-like). Every bot
//! declares a receive budget. A few bots sit behind an emulated downlink that is lifted
//! part-way: how long they take to reach the high layer of each speaker afterwards is the
//! layer-switch time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use client::downlink::DownlinkShape;
use client::{BotOptions, Report};
use serde::Serialize;

use crate::conclave::Conclave;
use crate::run::percentile;
use crate::sys;

#[derive(Debug, Clone)]
pub struct SimulcastOptions {
    pub participants: usize,
    /// Bots that speak (the first ones); the others are silent.
    pub speakers: usize,
    /// Bots behind a limited downlink (the last ones), lifted after `lift_after`.
    pub limited: usize,
    pub limit_kbps: u64,
    pub lift_after: Duration,
    /// How long bots stay after the lift.
    pub after_lift: Duration,
    pub budget_kbps: u32,
}

impl Default for SimulcastOptions {
    fn default() -> Self {
        SimulcastOptions {
            participants: 50,
            speakers: 2,
            limited: 5,
            limit_kbps: 1000,
            lift_after: Duration::from_secs(15),
            after_lift: Duration::from_secs(15),
            budget_kbps: 4500,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SimulcastResult {
    pub participants: usize,
    pub speakers: usize,
    pub limited_subscribers: usize,
    pub limit_kbps: u64,
    pub budget_kbps: u32,
    pub lift_after_s: f64,
    pub run_s: f64,
    /// Received bitrate of each bot on an unlimited link, averaged over its connection.
    pub egress_kbps_per_subscriber_p50: f64,
    pub egress_kbps_per_subscriber_max: f64,
    /// What each subscriber would get without layer choice: every other camera at its
    /// highest layer, as an SFU that forwards one fixed layer sends it.
    pub egress_kbps_without_layers: f64,
    /// Datagrams the bots received per second, all together.
    pub forwarded_pps: f64,
    pub server_cores: f64,
    pub server_cpu_ms_per_1k_pkts: f64,
    pub server_rss_mib: f64,
    /// From the lift of a limited downlink to the first keyframe of a speaker's high layer.
    pub layer_switch_ms_p50: f64,
    pub layer_switch_ms_p95: f64,
    pub layer_switches_measured: usize,
    /// Limited subscribers' speaker tracks that never reached the high layer.
    pub layer_switches_missing: usize,
    /// Unlimited subscribers' speaker tracks not at the high layer at the end.
    pub speakers_not_high: usize,
    /// Frames that arrived but did not decrypt or verify, on unlimited and limited links.
    pub frames_unverified: u64,
    pub frames_unverified_limited: u64,
    pub generator_cores: f64,
    pub errors: Vec<String>,
}

pub async fn run(
    bin: &Path,
    placement: sys::Placement,
    o: &SimulcastOptions,
) -> Result<SimulcastResult> {
    if o.participants < 2 || o.speakers > o.participants || o.limited + o.speakers > o.participants
    {
        bail!(
            "simulcast meeting: speakers and limited bots must be distinct and fit in the meeting"
        );
    }
    let server = Conclave::start(bin, placement, true).await?;
    let links = server.create_meeting_links().await?;
    let (host, join) = (links.host_url, links.join_url);
    let run_for = o.lift_after + o.after_lift;
    let names: Vec<String> = (0..o.participants).map(|i| format!("bot-{i:02}")).collect();
    let limited_from = o.participants - o.limited;
    let bots: Vec<BotOptions> = names
        .iter()
        .enumerate()
        .map(|(i, name)| BotOptions {
            simulcast: true,
            speaking: i < o.speakers,
            admit_all: i == 0,
            max_receive_kbps: Some(o.budget_kbps),
            downlink: (i >= limited_from).then_some(DownlinkShape {
                kbps: Some(o.limit_kbps),
                loss: 0.0,
                delay: Duration::from_millis(10),
                lift_after: Some(o.lift_after),
            }),
            ..BotOptions::new(if i == 0 { &host } else { &join }, name.clone(), run_for)
        })
        .collect();
    let me = std::process::id();
    let (cpu0, gen0, t0) = (
        sys::cpu_seconds(server.pid)?,
        sys::cpu_seconds(me)?,
        Instant::now(),
    );
    let handles: Vec<_> = bots
        .into_iter()
        .map(|b| tokio::spawn(client::run(b)))
        .collect();
    let mut reports: Vec<Report> = Vec::new();
    let mut errors = Vec::new();
    let mut rss_kib = 0;
    for handle in handles {
        rss_kib = rss_kib.max(sys::rss_kib(server.pid).unwrap_or(0));
        match handle.await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("bot task: {e}")),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = sys::cpu_seconds(server.pid)? - cpu0;
    let generator_cpu = sys::cpu_seconds(me)? - gen0;
    server.stop().await;

    let speakers = &names[..o.speakers];
    let lift_ms = o.lift_after.as_millis() as u64;
    let mut egress = Vec::new();
    let mut switch_ms = Vec::new();
    let (mut missing, mut not_high, mut datagrams) = (0, 0, 0);
    let (mut unverified, mut unverified_limited) = (0, 0);
    for r in &reports {
        datagrams += r.received_datagrams;
        errors.extend(r.errors.iter().map(|e| format!("{}: {e}", r.name)));
        let limited = names[limited_from..].contains(&r.name);
        let bad: u64 = r
            .received
            .iter()
            .map(|t| t.frames - t.verified.min(t.frames))
            .sum();
        if limited {
            unverified_limited += bad;
        } else {
            unverified += bad;
        }
        if !limited {
            egress.extend(r.received_kbps);
        }
        for speaker in speakers.iter().filter(|s| **s != r.name) {
            let changes = r
                .received
                .iter()
                .find(|t| t.from == *speaker && t.kind == "video")
                .map(|t| t.layer_changes.as_slice())
                .unwrap_or_default();
            if limited {
                match changes
                    .iter()
                    .find(|c| c.at_ms >= lift_ms && c.kbps == 1500)
                {
                    Some(c) => switch_ms.push((c.at_ms - lift_ms) as f64),
                    None => missing += 1,
                }
            } else if changes.last().map(|c| c.kbps) != Some(1500) {
                not_high += 1;
            }
        }
    }
    egress.sort_by(f64::total_cmp);
    switch_ms.sort_by(f64::total_cmp);
    let others = (o.participants - 1) as f64;
    Ok(SimulcastResult {
        participants: o.participants,
        speakers: o.speakers,
        limited_subscribers: o.limited,
        limit_kbps: o.limit_kbps,
        budget_kbps: o.budget_kbps,
        lift_after_s: o.lift_after.as_secs_f64(),
        run_s: elapsed,
        egress_kbps_per_subscriber_p50: percentile(&egress, 0.5),
        egress_kbps_per_subscriber_max: egress.last().copied().unwrap_or(f64::NAN),
        egress_kbps_without_layers: others * 1500.0,
        forwarded_pps: datagrams as f64 / elapsed,
        server_cores: server_cpu / elapsed,
        server_cpu_ms_per_1k_pkts: server_cpu * 1000.0 / (datagrams as f64 / 1000.0),
        server_rss_mib: rss_kib as f64 / 1024.0,
        layer_switch_ms_p50: percentile(&switch_ms, 0.5),
        layer_switch_ms_p95: percentile(&switch_ms, 0.95),
        layer_switches_measured: switch_ms.len(),
        layer_switches_missing: missing,
        speakers_not_high: not_high,
        frames_unverified: unverified,
        frames_unverified_limited: unverified_limited,
        generator_cores: generator_cpu / elapsed,
        errors,
    })
}

/// One cell of the results table, from one run.
type Cell = fn(&SimulcastResult) -> String;

/// The BENCHMARKS.md section for runs of several meeting sizes: one column each.
pub fn markdown(
    runs: &[SimulcastResult],
    date: &str,
    command: &str,
    machine: &str,
    pinning: &str,
) -> String {
    let Some(first) = runs.first() else {
        return format!("Run {date}: no meeting completed.\n");
    };
    let mut out = format!(
        "Run {date} on {machine}; `{command}`; {pinning}.\n\n\
         Every bot publishes q/h/f (150/500/1500 kbps) with E2EE, {s} speak, last-N is on (rooms \
         above 8: 4 speakers above q), each bot declares a {b} kbps receive budget; the last {l} \
         bots sit behind a {lim} kbps downlink lifted {lift:.0} s into the run. Server CPU and \
         packets count the whole run, joins included.\n\n| measure |",
        s = first.speakers,
        b = first.budget_kbps,
        l = first.limited_subscribers,
        lim = first.limit_kbps,
        lift = first.lift_after_s,
    );
    let mut rule = String::from("|---|");
    for r in runs {
        out.push_str(&format!(" meeting-{} |", r.participants));
        rule.push_str("---|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    let rows: [(&str, Cell); 10] = [
        (
            "egress per subscriber (unlimited links), p50 / max, kbps",
            |r| {
                format!(
                    "{:.0} / {:.0}",
                    r.egress_kbps_per_subscriber_p50, r.egress_kbps_per_subscriber_max
                )
            },
        ),
        (
            "the same without layer choice (every other camera at 1.5 Mbps), kbps",
            |r| format!("{:.0}", r.egress_kbps_without_layers),
        ),
        ("forwarded packets/s (all subscribers)", |r| {
            format!("{:.0}", r.forwarded_pps)
        }),
        ("server CPU per 1k forwarded packets (cores busy)", |r| {
            format!(
                "{:.1} ms ({:.2})",
                r.server_cpu_ms_per_1k_pkts, r.server_cores
            )
        }),
        ("server RSS, MiB", |r| format!("{:.0}", r.server_rss_mib)),
        (
            "layer-switch time after the downlink lifts, p50 / p95 (switches, never)",
            |r| {
                format!(
                    "{:.0} / {:.0} ms ({}, {})",
                    r.layer_switch_ms_p50,
                    r.layer_switch_ms_p95,
                    r.layer_switches_measured,
                    r.layer_switches_missing
                )
            },
        ),
        ("speakers' video not at the high layer at the end", |r| {
            r.speakers_not_high.to_string()
        }),
        ("frames unverified, unlimited / limited links", |r| {
            format!("{} / {}", r.frames_unverified, r.frames_unverified_limited)
        }),
        ("generator, cores busy (1.00 = saturated)", |r| {
            format!("{:.2}", r.generator_cores)
        }),
        ("run, s", |r| format!("{:.0}", r.run_s)),
    ];
    for (name, cell) in rows {
        out.push_str(&format!("| {name} |"));
        for r in runs {
            out.push_str(&format!(" {} |", cell(r)));
        }
        out.push('\n');
    }
    out
}
