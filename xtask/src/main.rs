//! `cargo xtask`: the project's only build entry points.
//!
//! - `setup`: installs what the project needs on a fresh Debian machine with Rust.
//! - `run [ARGS]`: setup, release build, then `conclave serve ARGS`.
//! - `test`: setup, formatting and lint checks, every test, the browser suite, then bounded
//!   fuzzing.
//! - `web`: builds the browser app (wasm E2EE core + Vite) into web/dist.
//! - `web-test`: builds it and runs the browser suite only.
//! - `clips`: regenerates the bots' media clips with ffmpeg.
//! - `bench [ARGS]`: the load benchmark (Conclave, Janus and the raw UDP floor side by side).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo xtask run -- --flag` hands us the `--` too: it only separates cargo's arguments.
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match task.as_str() {
        "setup" => setup(),
        "web" => {
            setup()?;
            web_build()
        }
        "web-test" => {
            setup()?;
            web_build()?;
            web_test()
        }
        "run" => {
            setup()?;
            web_build()?;
            run_serve(&rest)
        }
        "test" => {
            setup()?;
            test()
        }
        "clips" => clips(),
        "bench" => {
            setup()?;
            // The benchmark starts Janus VideoRoom itself, side by side with Conclave.
            if !have("janus") {
                apt_install(&["janus"])?;
            }
            run(cargo()
                .args(["run", "--release", "-p", "bench", "--"])
                .args(&rest))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <setup | run [serve args] | test | web | web-test | clips | bench [args]>"
            );
            bail!("unknown task {task:?}")
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Debian packages the tests need, with a command that proves each is there.
/// g++ builds libFuzzer for the bounded fuzz runs.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("pkg-config", "pkg-config"),
    ("procps", "ps"),
    ("g++", "g++"),
    // The browser tests drive Debian's Chromium; the web app builds with Node.
    ("chromium", "chromium"),
    ("nodejs", "node"),
    ("npm", "npm"),
];

/// Rust targets beyond the host's: the `e2ee` crate also builds for the browser.
const RUST_TARGETS: &[&str] = &["wasm32-unknown-unknown"];

fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, command)| !have(command))
        .map(|(package, _)| *package)
        .collect();
    apt_install(&missing)?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm target")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in RUST_TARGETS {
        if !installed.lines().any(|line| line.trim() == *target) {
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    install_wasm_bindgen()?;
    if !Path::new("web/node_modules/.package-lock.json").is_file() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir("web"))?;
    }
    Ok(())
}

/// The wasm-bindgen version in Cargo.lock: the CLI must match it exactly.
fn wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
            {
                return Ok(version.to_owned());
            }
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn install_wasm_bindgen() -> Result<()> {
    let version = wasm_bindgen_version()?;
    let installed = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if installed == format!("wasm-bindgen {version}") {
        return Ok(());
    }
    let exact = format!("={version}");
    let locked = cargo()
        .args([
            "install",
            "wasm-bindgen-cli",
            "--locked",
            "--version",
            &exact,
        ])
        .status();
    if locked.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    // Its own lock file can name a dependency version the registry no longer serves.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &exact]))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Builds the browser app: the `web-session` wasm (the E2EE core for the browser) with its
/// JS bindings into web/src/wasm, then the Vite build into web/dist (served by the server).
fn web_build() -> Result<()> {
    run(cargo().args([
        "build",
        "-p",
        "web-session",
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ]))?;
    let wasm = target_dir().join("wasm32-unknown-unknown/release/web_session.wasm");
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-dir", "web/src/wasm"])
        .arg(&wasm))?;
    run(Command::new("npm")
        .args(["run", "build"])
        .current_dir("web"))
}

/// The browser suite (Playwright + Chromium) against a real `conclave serve` and bots.
fn web_test() -> Result<()> {
    run(cargo().args(["build", "-p", "conclave"]))?;
    let bin = std::fs::canonicalize(target_dir().join("debug/conclave"))
        .context("the conclave binary")?;
    run(Command::new("npm")
        .args(["run", "typecheck"])
        .current_dir("web"))?;
    run(Command::new("npx")
        .args(["playwright", "test"])
        .env("CONCLAVE_BIN", bin)
        .current_dir("web"))
}

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {}", packages.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let mut update = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !sudo.is_empty() {
        update.arg("apt-get");
    }
    run(update.args(["update", "-qq"]))?;
    let mut install = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !sudo.is_empty() {
        install.arg("apt-get");
    }
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages);
    run(&mut install)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn run_serve(args: &[String]) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "conclave"]))?;
    run(Command::new("target/release/conclave")
        .arg("serve")
        .args(args))
}

fn test() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The browser's build of the E2EE core must keep compiling.
    run(cargo().args(["build", "-p", "e2ee", "--target", "wasm32-unknown-unknown"]))?;
    run(cargo().args([
        "clippy",
        "-p",
        "web-session",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace", "--all-targets"]))?;
    web_build()?;
    web_test()?;
    // Bounded fuzzing of everything that reads bytes from the network in the E2EE core.
    run(Command::new("bash").args(["crates/e2ee/fuzz/run.sh", FUZZ_SECONDS_PER_TARGET]))
}

/// Each fuzz target runs this long in `cargo xtask test`; longer runs: `crates/e2ee/fuzz/run.sh N`.
const FUZZ_SECONDS_PER_TARGET: &str = "30";

fn clips() -> Result<()> {
    if !have("ffmpeg") {
        apt_install(&["ffmpeg"])?;
    }
    let dir = Path::new("crates/client/clips");
    for kbps in [150, 500, 1500] {
        let rate = format!("{kbps}k");
        // 2 s at 30 fps, one keyframe, constant rate, no alt-ref frames: a loop a
        // receiver can check frame by frame.
        let video = [
            "-t",
            "2",
            "-c:v",
            "libvpx",
            "-b:v",
            &rate,
            "-minrate",
            &rate,
            "-maxrate",
            &rate,
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-auto-alt-ref",
            "0",
            "-lag-in-frames",
            "0",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-error-resilient",
            "1",
        ];
        let out = dir.join(format!("video-{kbps}k.ivf"));
        ffmpeg("testsrc2=size=640x360:rate=30", &video, &out)?;
    }
    let audio = [
        "-t",
        "1",
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-frame_duration",
        "20",
    ];
    ffmpeg(
        "sine=frequency=440:sample_rate=48000",
        &audio,
        &dir.join("audio.opus"),
    )
}

/// Encodes ffmpeg's synthetic `lavfi` source with the given output options.
fn ffmpeg(source: &str, options: &[&str], out: &Path) -> Result<()> {
    run(Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", source])
        .args(options)
        .arg(out))
}
