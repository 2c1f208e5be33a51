//! Results: the JSON file and the table in BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::run::RunResult;
use crate::scenario::TargetKind;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: String,
    /// Conclave CPU per forwarded packet / Janus'.
    pub cpu_conclave_over_janus: Option<f64>,
    /// Conclave CPU per forwarded packet / the floor's.
    pub cpu_conclave_over_floor: Option<f64>,
    /// Conclave latency p99 minus the floor's, ms ("added" latency).
    pub p99_added_over_floor_ms: Option<f64>,
    pub p99_conclave_over_janus: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub quick: bool,
    pub duration_s: f64,
    pub pinning: String,
    pub results: Vec<RunResult>,
    pub ratios: Vec<Ratio>,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
        kernel,
        memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    }
}

pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn find<'a>(results: &'a [RunResult], scenario: &str, t: TargetKind) -> Option<&'a RunResult> {
    results
        .iter()
        .find(|r| r.scenario == scenario && r.target == t)
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

pub fn ratios(results: &[RunResult]) -> Vec<Ratio> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in results {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    scenarios
        .into_iter()
        .filter_map(|s| {
            let c = find(results, s, TargetKind::Conclave)?;
            let j = find(results, s, TargetKind::Janus);
            let f = find(results, s, TargetKind::Floor);
            Some(Ratio {
                scenario: s.to_owned(),
                cpu_conclave_over_janus: j
                    .and_then(|j| finite(c.cpu_s_per_1k_pkts / j.cpu_s_per_1k_pkts)),
                cpu_conclave_over_floor: f
                    .and_then(|f| finite(c.cpu_s_per_1k_pkts / f.cpu_s_per_1k_pkts)),
                p99_added_over_floor_ms: f
                    .and_then(|f| finite(c.latency_p99_ms - f.latency_p99_ms)),
                p99_conclave_over_janus: j
                    .and_then(|j| finite(c.latency_p99_ms / j.latency_p99_ms)),
            })
        })
        .collect()
}

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map(|x| num(x, digits)).unwrap_or_else(|| "–".into())
}

/// The results as Markdown (tables and the target check).
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let m = &report.machine;
    let _ = writeln!(s, "Run of {}: `{}`\n", report.date, report.command);
    let _ = writeln!(
        s,
        "Machine: {}, {} cores, {:.1} GiB, Linux {}. {}. Window {:.0} s per run{}.\n",
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        report.pinning,
        report.duration_s,
        if report.quick { " (quick mode)" } else { "" }
    );
    s.push_str("| scenario | target | fwd pkt/s | server CPU ms / 1k pkts | server cores | latency p50 / p99 ms | loss % | RSS / participant KiB | join p50 / p95 ms | generator cores / lag p99 ms | socket drops gen / server | ready |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &report.results {
        let flag = if r.generator_bound { " ⚠gen" } else { "" };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {} / {}{} | {} / {} | {}/{} |",
            r.scenario,
            r.target,
            num(r.forwarded_pps, 0),
            num(r.cpu_s_per_1k_pkts * 1000.0, 2),
            num(r.server_cores, 2),
            num(r.latency_p50_ms, 2),
            num(r.latency_p99_ms, 2),
            num(r.loss_pct, 2),
            num(r.rss_per_participant_kib, 0),
            num(r.join_p50_ms, 0),
            num(r.join_p95_ms, 0),
            num(r.generator_cores, 2),
            num(r.generator_lag_p99_ms, 1),
            flag,
            r.generator_socket_drops,
            r.server_socket_drops,
            r.ready_bots,
            r.participants,
        );
    }
    let sampled: Vec<&RunResult> = report
        .results
        .iter()
        .filter(|r| r.verifying_bots < r.participants)
        .collect();
    if let Some(verifying) = sampled.iter().map(|r| r.verifying_bots).max() {
        let runs: Vec<String> = sampled
            .iter()
            .map(|r| format!("{} / {}", r.scenario, r.target))
            .collect();
        let _ = writeln!(
            s,
            "\nLatency and loss of {} come from the bots that verify every frame ({verifying} per \
             run; the others count RTP datagrams once the window opens, see \
             `Scenario::verifying_bots`).",
            runs.join(", "),
        );
    }
    s.push_str("\n| scenario | CPU/pkt Conclave ÷ Janus | CPU/pkt Conclave ÷ floor | p99 Conclave − floor (ms) | p99 Conclave ÷ Janus |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for r in &report.ratios {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.scenario,
            opt(r.cpu_conclave_over_janus, 2),
            opt(r.cpu_conclave_over_floor, 2),
            opt(r.p99_added_over_floor_ms, 2),
            opt(r.p99_conclave_over_janus, 2),
        );
    }
    let errors: Vec<String> = report
        .results
        .iter()
        .filter(|r| !r.errors.is_empty())
        .map(|r| format!("- {} / {}: {}", r.scenario, r.target, r.errors.join("; ")))
        .collect();
    if !errors.is_empty() {
        s.push_str("\nErrors seen by the generator:\n\n");
        for e in errors {
            let _ = writeln!(s, "{e}");
        }
    }
    s.push_str("\nTargets (computed from this run):\n\n");
    for line in targets(report) {
        let _ = writeln!(s, "- {line}");
    }
    s
}

/// The targets, checked against this run where it measured them.
pub fn targets(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let meetings: Vec<&Ratio> = report
        .ratios
        .iter()
        .filter(|r| r.scenario.starts_with("meeting-"))
        .collect();
    let check = |name: &str, vals: Vec<(String, Option<f64>)>, ok: &dyn Fn(f64) -> bool| {
        let known: Vec<_> = vals.iter().filter_map(|(s, v)| v.map(|v| (s, v))).collect();
        if known.is_empty() {
            return format!("{name}: not measured in this run");
        }
        let met = known.iter().all(|(_, v)| ok(*v));
        let detail: Vec<String> = known.iter().map(|(s, v)| format!("{s} {v:.2}")).collect();
        format!(
            "{name}: **{}** ({})",
            if met { "met" } else { "not met" },
            detail.join(", ")
        )
    };
    out.push(check(
        "CPU per forwarded packet ≤ 0.7 × Janus in every meeting scenario",
        meetings
            .iter()
            .map(|r| (r.scenario.clone(), r.cpu_conclave_over_janus))
            .collect(),
        &|v| v <= 0.7,
    ));
    out.push(check(
        "CPU per forwarded packet ≤ 3 × floor in every meeting scenario",
        meetings
            .iter()
            .map(|r| (r.scenario.clone(), r.cpu_conclave_over_floor))
            .collect(),
        &|v| v <= 3.0,
    ));
    out.push(check(
        "latency p99 added (Conclave − floor) < 2 ms at meeting-50",
        meetings
            .iter()
            .filter(|r| r.scenario == "meeting-50")
            .map(|r| (r.scenario.clone(), r.p99_added_over_floor_ms))
            .collect(),
        &|v| v < 2.0,
    ));
    let conclave: Vec<&RunResult> = report
        .results
        .iter()
        .filter(|r| r.target == TargetKind::Conclave)
        .collect();
    out.push(check(
        "Conclave loss < 0.5 % (%)",
        conclave
            .iter()
            .map(|r| (r.scenario.clone(), finite(r.loss_pct)))
            .collect(),
        &|v| v < 0.5,
    ));
    match conclave.iter().find(|r| r.scenario == "meeting-50") {
        Some(r) => {
            let met = r.server_cores < 0.95
                && r.loss_pct < 0.5
                && r.ready_bots == r.participants
                && !r.generator_bound;
            out.push(format!(
                "meeting-50 sustained on one server core: **{}** ({:.2} cores busy, loss {:.2} %, {}/{} bots ready{})",
                if met { "met" } else { "not met" },
                r.server_cores,
                r.loss_pct,
                r.ready_bots,
                r.participants,
                if r.generator_bound { ", generator-bound" } else { "" }
            ));
        }
        None => {
            out.push("meeting-50 sustained on one server core: not measured in this run".into())
        }
    }
    out
}

pub const START: &str = "<!-- bench:results:start -->";
pub const END: &str = "<!-- bench:results:end -->";
pub const SIMULCAST_START: &str = "<!-- bench:simulcast:start -->";
pub const SIMULCAST_END: &str = "<!-- bench:simulcast:end -->";

/// Writes the results between the markers of `path` (creating the file if needed).
pub fn write_markdown(path: &Path, report: &Report) -> Result<()> {
    write_section(path, "Results", START, END, &markdown(report))
}

/// Replaces what stands between `start` and `end` in `path` with `body`; without the markers,
/// appends a `heading` section holding them (creating the file if needed).
pub fn write_section(path: &Path, heading: &str, start: &str, end: &str, body: &str) -> Result<()> {
    let body = format!("{start}\n{body}{end}");
    let text = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(start), old.find(end)) {
            (Some(a), Some(b)) if b > a => {
                format!("{}{}{}", &old[..a], body, &old[b + end.len()..])
            }
            _ => format!("{old}\n## {heading}\n\n{body}\n"),
        },
        Err(_) => format!("# Benchmarks\n\n## {heading}\n\n{body}\n"),
    };
    std::fs::write(path, text)?;
    Ok(())
}
