//! One run: a scenario against a target, measured.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::payload;
use crate::scenario::{Scenario, TargetKind};
use crate::shared::Shared;
use crate::sys;
use crate::{conclave, floor, janus};

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub target: TargetKind,
    pub participants: usize,
    /// Length of the measurement window, seconds.
    pub window_s: f64,
    /// Bots that received every publisher they should before the window opened.
    pub ready_bots: usize,
    /// Bots that decrypted and verified every frame in the window; latency and loss are
    /// theirs. The rest only counted RTP datagrams (forwarded packets/s counts all bots).
    pub verifying_bots: usize,
    /// RTP packets delivered to the bots per second (= forwarded by the server).
    pub forwarded_pps: f64,
    pub server_cpu_s: f64,
    /// Server CPU use in the window, in cores (1.0 = one core busy).
    pub server_cores: f64,
    /// Server CPU seconds per 1,000 forwarded packets.
    pub cpu_s_per_1k_pkts: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub loss_pct: f64,
    pub frames_expected: u64,
    pub frames_received: u64,
    pub bad_frames: u64,
    pub rss_idle_kib: u64,
    pub rss_kib: u64,
    /// (RSS under load - idle RSS) / participants.
    pub rss_per_participant_kib: f64,
    /// Connect to first verified remote frame, over bots that receive something.
    pub join_p50_ms: f64,
    pub join_p95_ms: f64,
    /// Generator CPU use in the window, in cores (its limit is 1.0: one pinned core).
    pub generator_cores: f64,
    /// How late a 1 ms timer in the generator fired, p99 (ms): above a few ms the bots read
    /// their sockets late, and latency includes the generator's own queueing.
    pub generator_lag_p99_ms: f64,
    /// Datagrams the kernel dropped at the bots' sockets (receive buffer full) in the window.
    pub generator_socket_drops: u64,
    /// Datagrams the kernel dropped at the server's sockets in the window.
    pub server_socket_drops: u64,
    /// The generator was the bottleneck (over 90% of its core busy, its timer p99 late by
    /// over 10 ms, half an audio frame interval, or its sockets dropping): the numbers may
    /// understate the server.
    pub generator_bound: bool,
    pub errors: Vec<String>,
}

pub struct RunOptions {
    pub duration: Duration,
    pub placement: sys::Placement,
    pub conclave_bin: PathBuf,
}

enum Started {
    Conclave(conclave::Conclave),
    Janus(janus::Janus),
    Floor(floor::Floor),
}

impl Started {
    fn pid(&self) -> u32 {
        match self {
            Started::Conclave(c) => c.pid,
            Started::Janus(j) => j.pid,
            Started::Floor(f) => f.pid,
        }
    }

    async fn stop(self) {
        match self {
            Started::Conclave(c) => c.stop().await,
            Started::Janus(j) => j.stop().await,
            Started::Floor(f) => f.stop().await,
        }
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs one scenario against one target. `tick` is called about every 100 ms with a status.
pub async fn run(
    scenario: Scenario,
    target: TargetKind,
    opts: &RunOptions,
    tick: &dyn Fn(&str),
) -> Result<RunResult> {
    let _ = payload::epoch();
    let n = scenario.participants();
    let shared = Rc::new(Shared::new(
        n,
        scenario.publishers(),
        scenario.verifying_bots(),
    ));
    for (i, b) in shared.bots.borrow_mut().iter_mut().enumerate() {
        b.expect = scenario.expected_publishers(i);
    }
    tick("starting server");
    let started = match target {
        TargetKind::Conclave | TargetKind::ConclaveBwe => {
            let estimation = target == TargetKind::ConclaveBwe;
            Started::Conclave(
                conclave::Conclave::start(&opts.conclave_bin, opts.placement, estimation).await?,
            )
        }
        TargetKind::Janus => Started::Janus(janus::Janus::start(opts.placement).await?),
        TargetKind::Floor => Started::Floor(floor::Floor::start(opts.placement).await?),
    };
    let pid = started.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = sys::rss_kib(pid).unwrap_or(0);

    let result = drive(scenario, target, &started, shared.clone(), opts, tick).await;
    let _ = shared.stop.send(true);
    // Let bots say goodbye before the server goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    started.stop().await;
    let mut r = result?;
    r.rss_idle_kib = rss_idle;
    r.rss_per_participant_kib = r.rss_kib.saturating_sub(rss_idle) as f64 / n as f64;
    Ok(r)
}

async fn drive(
    scenario: Scenario,
    target: TargetKind,
    started: &Started,
    shared: Rc<Shared>,
    opts: &RunOptions,
    tick: &dyn Fn(&str),
) -> Result<RunResult> {
    let n = scenario.participants();
    let pid = started.pid();
    // Target-specific context for the bots.
    let meeting = match started {
        Started::Conclave(c) => Some(c.create_meeting().await?),
        _ => None,
    };
    let janus_session = match started {
        Started::Janus(j) => Some(janus::Session::create(&j.base, shared.clone()).await?),
        _ => None,
    };
    let interval = Duration::from_millis(scenario.join_interval_ms());
    let join_started = Instant::now();
    for i in 0..n {
        let publish = scenario.publishes(i);
        let sh = shared.clone();
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>> = match started {
            Started::Conclave(c) => Box::pin(conclave::bot(
                c.base.clone(),
                meeting.clone().expect("meeting"),
                sh.clone(),
                i,
                publish,
            )),
            Started::Janus(_) => {
                let fixed = match scenario {
                    Scenario::Webinar(_) if i > 0 => vec![1],
                    _ => Vec::new(),
                };
                Box::pin(janus::bot(
                    janus_session.clone().expect("session"),
                    sh.clone(),
                    i,
                    publish,
                    fixed,
                ))
            }
            Started::Floor(f) => Box::pin(floor::bot(f.addr, 1, sh.clone(), i, publish)),
        };
        tokio::task::spawn_local(async move {
            if let Err(e) = fut.await {
                sh.error(format!("bot {i}: {e:#}"));
            }
        });
        if matches!(scenario, Scenario::Webinar(_)) && i == 0 {
            // Subscribers join once the publisher is sending.
            let deadline = Instant::now() + Duration::from_secs(15);
            while shared.sent_total.get() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tick(&format!("joining {}/{n}", i + 1));
        tokio::time::sleep(interval).await;
    }
    let limit = Duration::from_secs(10) + Duration::from_millis(400) * n as u32;
    let limit = limit.min(Duration::from_secs(90));
    while shared.ready_count() < n && join_started.elapsed() < limit {
        tick(&format!("ready {}/{n}", shared.ready_count()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_bots = shared.ready_count();
    tick("warming up");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The window.
    let self_pid = std::process::id();
    let cpu0 = sys::cpu_seconds(pid)?;
    let gen0 = sys::cpu_seconds(self_pid)?;
    let gen_drops0 = sys::udp_drops(self_pid);
    let server_drops0 = sys::udp_drops(pid);
    let t0 = Instant::now();
    shared.start_window(payload::now_ns());
    let probe = {
        let shared = shared.clone();
        let duration = opts.duration;
        tokio::task::spawn_local(async move {
            let start = Instant::now();
            while start.elapsed() < duration {
                let due = Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(due.into()).await;
                let late = Instant::now().saturating_duration_since(due).as_micros();
                shared
                    .lag_us
                    .borrow_mut()
                    .push(late.min(u32::MAX as u128) as u32);
            }
        })
    };
    while t0.elapsed() < opts.duration {
        tick(&format!(
            "measuring {:.0}/{:.0} s",
            t0.elapsed().as_secs_f64(),
            opts.duration.as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.end_window(payload::now_ns());
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = sys::cpu_seconds(pid)?;
    let gen1 = sys::cpu_seconds(self_pid)?;
    let gen_drops = sys::udp_drops(self_pid).saturating_sub(gen_drops0);
    let server_drops = sys::udp_drops(pid).saturating_sub(server_drops0);
    let rss = sys::rss_kib(pid).unwrap_or(0);
    probe.abort();
    // Frames sent in the window may still be on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server_cpu = cpu1 - cpu0;
    let rtp = shared.rtp_rx.get();
    let forwarded_pps = rtp as f64 / window;
    let expected = shared.frames_expected();
    let received = shared.frames_rx.get();
    let mut lat: Vec<f64> = shared
        .latency_us
        .borrow()
        .iter()
        .map(|us| *us as f64 / 1000.0)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut joins: Vec<f64> = shared
        .bots
        .borrow()
        .iter()
        .filter(|b| b.expect > 0)
        .filter_map(|b| Some((b.first_frame? - b.started?).as_secs_f64() * 1000.0))
        .collect();
    joins.sort_by(|a, b| a.total_cmp(b));
    let generator_cores = (gen1 - gen0) / window;
    let mut lag: Vec<f64> = shared
        .lag_us
        .borrow()
        .iter()
        .map(|us| *us as f64 / 1000.0)
        .collect();
    lag.sort_by(|a, b| a.total_cmp(b));
    let generator_lag_p99_ms = percentile(&lag, 0.99);
    Ok(RunResult {
        scenario: scenario.to_string(),
        target,
        participants: n,
        window_s: window,
        ready_bots,
        verifying_bots: shared.verifying,
        forwarded_pps,
        server_cpu_s: server_cpu,
        server_cores: server_cpu / window,
        cpu_s_per_1k_pkts: if rtp > 0 {
            server_cpu / (rtp as f64 / 1000.0)
        } else {
            f64::NAN
        },
        latency_p50_ms: percentile(&lat, 0.50),
        latency_p99_ms: percentile(&lat, 0.99),
        loss_pct: if expected > 0 {
            (1.0 - received as f64 / expected as f64).max(0.0) * 100.0
        } else {
            f64::NAN
        },
        frames_expected: expected,
        frames_received: received,
        bad_frames: shared.bad_frames.get(),
        rss_idle_kib: 0,
        rss_kib: rss,
        rss_per_participant_kib: 0.0,
        join_p50_ms: percentile(&joins, 0.50),
        join_p95_ms: percentile(&joins, 0.95),
        generator_cores,
        generator_lag_p99_ms,
        generator_socket_drops: gen_drops,
        server_socket_drops: server_drops,
        generator_bound: generator_cores > 0.9 || generator_lag_p99_ms > 10.0 || gen_drops > 0,
        errors: shared.errors.borrow().iter().take(10).cloned().collect(),
    })
}
