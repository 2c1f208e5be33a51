//! The load benchmark: Conclave against Janus VideoRoom and a raw UDP relay floor, with one
//! load generator for all three. See BENCHMARKS.md at the repository root.
//!
//! The `bench` binary (`cargo xtask bench`) calls [`main_with`]; another binary (such as
//! `conclave bench`) can do the same before it starts an async runtime of its own.

mod conclave;
mod floor;
mod janus;
mod payload;
mod report;
mod rtcpeer;
mod run;
mod scenario;
mod shared;
mod simulcast;
mod sys;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use indicatif::{ProgressBar, ProgressStyle};

use scenario::{Scenario, TargetKind};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Conclave vs Janus VideoRoom vs a raw UDP relay floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// A small everyday subset (meeting-3 and meeting-10, 5 s windows), under 2 minutes.
    #[arg(long)]
    quick: bool,
    /// Comma-separated scenarios: meeting-N, webinar-M (default: all, or the quick set).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Comma-separated targets: conclave, janus, floor (default: all; janus is skipped with a
    /// note when it is not installed).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Measurement window per run, seconds (default 10, quick 5).
    #[arg(long)]
    duration: Option<f64>,
    /// The conclave binary (default: next to this one, built if missing).
    #[arg(long)]
    conclave_bin: Option<PathBuf>,
    /// Where BENCHMARKS.md and the JSON results go (default: the workspace root; quick runs:
    /// the target directory, so that everyday runs leave the repository alone).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Do not pin the server and the generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Nice value for the server and the generator (default -10 when permitted, so that
    /// other work on the machine disturbs the measurement less; 0 leaves priorities alone).
    #[arg(long, default_value_t = -10, allow_hyphen_values = true)]
    nice: i32,
    /// Write BENCHMARKS.md even in quick mode (quick runs only write their JSON by default).
    #[arg(long)]
    write_md: bool,
    /// Instead of the side-by-side scenarios: a meeting of real bots with simulcast and
    /// last-N against Conclave (egress per subscriber, CPU per packet, layer-switch time).
    #[arg(long)]
    simulcast: bool,
    /// Meeting sizes for `--simulcast`, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 30, 50])]
    simulcast_participants: Vec<usize>,
}

#[derive(Subcommand)]
enum Sub {
    /// (internal) The raw UDP relay of the floor target.
    FloorRelay {
        #[arg(long)]
        port: u16,
    },
}

/// Arguments that lead from the running executable to this CLI (empty for `bench`, `["bench"]`
/// inside `conclave bench`): the floor relay is started as `<exe> <prefix> floor-relay`.
static RELAY_PREFIX: OnceLock<Vec<String>> = OnceLock::new();

pub(crate) fn relay_prefix() -> &'static [String] {
    RELAY_PREFIX.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Runs the benchmark CLI. `program` is how the command is written in reports (such as
/// `cargo xtask bench`), `prefix` the arguments between the executable and this CLI, `args`
/// the command line, starting with the program name as clap expects. It builds its own
/// single-threaded runtime: call it outside any async runtime.
pub fn main_with(
    program: &str,
    prefix: &[&str],
    args: impl IntoIterator<Item = OsString>,
) -> Result<()> {
    let args: Vec<OsString> = args.into_iter().collect();
    let _ = RELAY_PREFIX.set(prefix.iter().map(|s| s.to_string()).collect());
    let cli = Cli::parse_from(&args);
    if let Some(Sub::FloorRelay { port }) = cli.command {
        return floor::relay_main(port);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();

    let scenarios: Vec<Scenario> = if cli.scenarios.is_empty() {
        if cli.quick {
            scenario::QUICK.to_vec()
        } else {
            scenario::ALL.to_vec()
        }
    } else {
        cli.scenarios
            .iter()
            .map(|s| Scenario::parse(s).with_context(|| format!("unknown scenario {s}")))
            .collect::<Result<_>>()?
    };
    let mut targets: Vec<TargetKind> = if cli.targets.is_empty() {
        vec![TargetKind::Conclave, TargetKind::Janus, TargetKind::Floor]
    } else {
        cli.targets
            .iter()
            .map(|t| TargetKind::parse(t).with_context(|| format!("unknown target {t}")))
            .collect::<Result<_>>()?
    };
    let mut notes = Vec::new();
    if targets.contains(&TargetKind::Janus) && !janus::available() {
        if !cli.targets.is_empty() {
            bail!("janus is not installed (apt-get install -y janus)");
        }
        notes.push("janus not installed (apt-get install -y janus): skipped".to_owned());
        targets.retain(|t| *t != TargetKind::Janus);
    }
    let duration =
        Duration::from_secs_f64(cli.duration.unwrap_or(if cli.quick { 5.0 } else { 10.0 }));
    let conclave_bin = if targets
        .iter()
        .any(|t| matches!(t, TargetKind::Conclave | TargetKind::ConclaveBwe))
    {
        conclave::find_or_build(cli.conclave_bin.as_deref())?
    } else {
        PathBuf::new()
    };
    let root = cli.out_dir.clone().unwrap_or_else(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from("."));
        let target = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
        match target {
            Some(target) if cli.quick && !cli.write_md => target,
            _ => workspace,
        }
    });

    let machine = report::machine();
    let cores = sys::cpu_count();
    let (server_cpu, pinning) = if cli.no_pin || cores < 2 {
        (None, "not pinned".to_owned())
    } else {
        sys::pin_current_thread(1).context("pin the generator to CPU 1")?;
        (
            Some(0),
            "server pinned to CPU 0 (taskset -c 0), generator to CPU 1 (sched_setaffinity)"
                .to_owned(),
        )
    };
    let mut pinning = pinning;
    if cli.nice != 0 {
        match sys::set_nice(cli.nice) {
            Ok(()) => pinning.push_str(&format!(
                ", both at nice {} (process and scheduler autogroup)",
                cli.nice
            )),
            Err(e) => pinning.push_str(&format!(
                ", default priority (nice {} refused: {e})",
                cli.nice
            )),
        }
    }
    let opts = run::RunOptions {
        duration,
        placement: sys::Placement { cpu: server_cpu },
        conclave_bin,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if cli.simulcast {
        return simulcast_main(&cli, program, &args, &root, &opts, &pinning, runtime);
    }
    let local = tokio::task::LocalSet::new();
    let plan: Vec<(Scenario, TargetKind)> = scenarios
        .iter()
        .flat_map(|s| targets.iter().map(move |t| (*s, *t)))
        .collect();
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut results = Vec::new();
    local.block_on(&runtime, async {
        for (scenario, target) in &plan {
            let label = format!("{scenario} {target}");
            bar.set_message(label.clone());
            let tick = |status: &str| bar.set_message(format!("{label}: {status}"));
            match run::run(*scenario, *target, &opts, &tick).await {
                Ok(r) => {
                    say(&bar, format!(
                        "{label}: {:.0} pkt/s, {:.3} ms CPU/1k pkts, {:.2} cores, p50/p99 {:.2}/{:.2} ms, loss {:.2} %, join p50 {:.0} ms, ready {}/{}, generator {:.2} cores (lag p99 {:.1} ms), socket drops generator {} server {}{}",
                        r.forwarded_pps,
                        r.cpu_s_per_1k_pkts * 1000.0,
                        r.server_cores,
                        r.latency_p50_ms,
                        r.latency_p99_ms,
                        r.loss_pct,
                        r.join_p50_ms,
                        r.ready_bots,
                        r.participants,
                        r.generator_cores,
                        r.generator_lag_p99_ms,
                        r.generator_socket_drops,
                        r.server_socket_drops,
                        if r.errors.is_empty() { String::new() } else { format!(", errors: {}", r.errors.join("; ")) }
                    ));
                    results.push(r);
                }
                Err(e) => {
                    say(&bar, format!("{label}: failed: {e:#}"));
                    notes.push(format!("{label} failed: {e:#}"));
                }
            }
            bar.inc(1);
            // Let sockets and processes of the last run go away.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    bar.finish_and_clear();

    let command = command_line(program, &args);
    for n in &notes {
        pinning.push_str(&format!("; {n}"));
    }
    let report = report::Report {
        date: report::utc_now(),
        command,
        machine,
        quick: cli.quick,
        duration_s: duration.as_secs_f64(),
        pinning,
        ratios: report::ratios(&results),
        results,
    };
    let md = report::markdown(&report);
    println!("{md}");
    let json_name = if cli.quick {
        "bench-results-quick.json"
    } else {
        "bench-results.json"
    };
    std::fs::create_dir_all(&root)?;
    let json_path = root.join(json_name);
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", json_path.display());
    if !cli.quick || cli.write_md {
        let md_path = root.join("BENCHMARKS.md");
        report::write_markdown(&md_path, &report)?;
        println!("wrote {}", md_path.display());
    }
    Ok(())
}

/// `--simulcast`: one meeting of real bots, its section of BENCHMARKS.md and its JSON.
fn simulcast_main(
    cli: &Cli,
    program: &str,
    args: &[OsString],
    root: &std::path::Path,
    opts: &run::RunOptions,
    pinning: &str,
    runtime: tokio::runtime::Runtime,
) -> Result<()> {
    let bin = conclave::find_or_build(cli.conclave_bin.as_deref())?;
    let mut results = Vec::new();
    for &participants in &cli.simulcast_participants {
        let options = simulcast::SimulcastOptions {
            participants,
            ..simulcast::SimulcastOptions::default()
        };
        eprintln!(
            "meeting-{participants} with simulcast and last-N: {:.0} s of real bots...",
            (options.lift_after + options.after_lift).as_secs_f64()
        );
        results.push(runtime.block_on(simulcast::run(&bin, opts.placement, &options))?);
    }
    let m = report::machine();
    let machine = format!(
        "{} ({} cores, {:.0} GiB, Linux {})",
        m.cpu, m.cores, m.memory_gib, m.kernel
    );
    let command = command_line(program, args);
    let md = simulcast::markdown(&results, &report::utc_now(), &command, &machine, pinning);
    println!("{md}");
    std::fs::create_dir_all(root)?;
    let json_path = root.join("bench-simulcast.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("wrote {}", json_path.display());
    let md_path = root.join("BENCHMARKS.md");
    report::write_section(
        &md_path,
        "Simulcast and last-N (meeting-20/30/50)",
        report::SIMULCAST_START,
        report::SIMULCAST_END,
        &md,
    )?;
    println!("wrote {}", md_path.display());
    Ok(())
}

/// A line above the progress bar, or on stderr when there is no bar (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// The command as reports show it: `program` and the arguments after the program name.
fn command_line(program: &str, args: &[OsString]) -> String {
    let rest: String = args
        .iter()
        .skip(1)
        .map(|a| format!(" {}", a.to_string_lossy()))
        .collect();
    format!("{program}{rest}")
}
