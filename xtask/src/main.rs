//! `cargo xtask`: the project's only build entry points.
//!
//! - `setup`: installs what the project needs on a fresh Debian machine with Rust.
//! - `run [ARGS]`: setup, release build, then `conclave serve ARGS`.
//! - `test`: setup, formatting and lint checks, every test, the browser suite, then bounded
//!   fuzzing.
//! - `web`: builds the browser app (wasm E2EE core + Vite) into web/dist, reproducibly, and
//!   writes its manifest and bundle hash (web/dist/bundle-manifest.json).
//! - `web-test`: builds it and runs the browser suite only.
//! - `web-reproducible`: builds it, then again from a clean web/dist, and compares.
//! - `web-keygen PATH`: makes a web release signing key (prints its public key).
//! - `web-sign --key PATH [--web-dir DIR]`: signs the built app (writes DIR/bundle.sig).
//! - `clips`: regenerates the bots' media clips with ffmpeg.
//! - `bench [ARGS]`: the load benchmark (Conclave, Janus and the raw UDP floor side by side).
//! - `deb`: the Debian package (cargo-deb) in target/debian; `test` installs one and holds a
//!   meeting on it (deb.rs); `deb-test` runs that part alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod deb;

/// The bundle hash and release signatures: the server's own definition, compiled in here too
/// so that `cargo xtask` needs no server build.
#[allow(dead_code)]
#[path = "../../crates/server/src/web_bundle.rs"]
mod web_bundle;

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
            web_test(None)
        }
        "web-reproducible" => {
            setup()?;
            web_build()?;
            web_reproducible()
        }
        "web-keygen" => web_keygen(&rest),
        "web-sign" => web_sign(&rest),
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
        "deb" => {
            setup()?;
            // The package's binary carries the web app: build it first.
            web_build()?;
            deb::build_release()
        }
        "deb-test" => {
            setup()?;
            web_build()?;
            run(cargo().args(["build", "-p", "conclave"]))?;
            deb::test()
        }
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
                "usage: cargo xtask <setup | run [serve args] | test | web | web-test | web-reproducible | web-keygen PATH | web-sign --key PATH [--web-dir DIR] | clips | bench [args] | deb | deb-test>"
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
    // The firewall tests build network namespaces with a real nftables ruleset.
    ("iproute2", "ip"),
    ("nftables", "nft"),
    // The TURN relay is tested with coturn's own client.
    ("coturn", "turnutils_uclient"),
    // The package test checks the systemd unit and runs it as its dynamic user without systemd.
    ("systemd", "systemd-analyze"),
    ("util-linux", "setpriv"),
    // The browser firewall tests: Chromium trusts a test CA through its NSS database.
    ("libnss3-tools", "certutil"),
    // ... and reaches the server only through an HTTP proxy in one of them.
    ("tinyproxy", "tinyproxy"),
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
/// JS bindings into web/src/wasm, then the Vite build into web/dist (served by the server),
/// then web/dist/bundle-manifest.json. Reproducible: the same tree and tools give the same
/// bytes, wherever the tree and the cargo home are (their paths, which panic messages carry
/// into the wasm, are remapped; Vite names files by content and writes no dates).
fn web_build() -> Result<()> {
    let root = std::fs::canonicalize(".").context("the project root")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .and_then(|dir| std::fs::canonicalize(dir).ok());
    let mut remap = vec![format!("--remap-path-prefix={}=/conclave", root.display())];
    if let Some(home) = cargo_home {
        remap.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    // With `--target`, these flags reach only the wasm crates, not build scripts or the host
    // builds (whose caches stay as they are). They replace any RUSTFLAGS: the build is the same
    // whatever the environment says.
    run(cargo()
        .args([
            "build",
            "-p",
            "web-session",
            "--target",
            "wasm32-unknown-unknown",
            "--release",
        ])
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", remap.join("\x1f")))?;
    let wasm = target_dir().join("wasm32-unknown-unknown/release/web_session.wasm");
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-dir", "web/src/wasm"])
        .arg(&wasm))?;
    run(Command::new("npm")
        .args(["run", "build"])
        .current_dir("web")
        .env("SOURCE_DATE_EPOCH", "0"))?;
    let dist = Path::new("web/dist");
    let manifest = web_bundle::Manifest::of_dir(dist)?;
    std::fs::write(dist.join(web_bundle::MANIFEST_FILE), manifest.to_json())
        .context("writing the bundle manifest")?;
    println!(
        "xtask: web bundle sha256: {} ({} files)",
        web_bundle::hex(&manifest.sha256()),
        manifest.files.len()
    );
    Ok(())
}

/// Builds the app a second time from a clean output (web/dist and the wasm bindings deleted)
/// and fails unless every file comes out the same. Cargo's cache of the wasm compile is kept:
/// what this proves is that nothing after rustc (wasm-bindgen, tsc, Vite) adds anything of the
/// moment, and rustc's part is pinned by the remapped paths (see `web_build`).
fn web_reproducible() -> Result<()> {
    let first = web_bundle::Manifest::of_dir(Path::new("web/dist"))?;
    for dir in ["web/dist", "web/src/wasm"] {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {dir}"))?;
    }
    let started = std::time::Instant::now();
    web_build()?;
    let second = web_bundle::Manifest::of_dir(Path::new("web/dist"))?;
    let mut differ: Vec<String> = Vec::new();
    for (path, digest) in &first.files {
        if second.files.get(path) != Some(digest) {
            differ.push(path.clone());
        }
    }
    differ.extend(
        second
            .files
            .keys()
            .filter(|path| !first.files.contains_key(*path))
            .cloned(),
    );
    if !differ.is_empty() || first.sha256() != second.sha256() {
        bail!(
            "the web app is not reproducible: a second build from a clean web/dist differs in {}",
            differ.join(", ")
        );
    }
    println!(
        "xtask: web build reproducible: two builds give web bundle sha256 {} (second build {:.0} s)",
        web_bundle::hex(&second.sha256()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask web-keygen PATH`: a new Ed25519 release key, its 32-byte seed written to PATH
/// as hex (owner-only), its public key printed for `conclave serve --web-release-key`.
fn web_keygen(args: &[String]) -> Result<()> {
    let [path] = args else {
        bail!("usage: cargo xtask web-keygen PATH")
    };
    let path = Path::new(path);
    if path.exists() {
        bail!("{} exists: not overwriting a key", path.display());
    }
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut seed,
    )?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let mut file = file
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(
        &mut file,
        format!("{}\n", web_bundle::hex(&seed)).as_bytes(),
    )?;
    let public = web_bundle::release_key_of(&web_bundle::signing_key(&seed));
    println!("release key: {public}");
    println!("serve with: conclave serve --web-release-key {public}");
    Ok(())
}

/// `cargo xtask web-sign --key PATH [--web-dir DIR]`: signs the app in DIR (default web/dist)
/// as it is on disk, writing DIR/bundle.sig.
fn web_sign(args: &[String]) -> Result<()> {
    let mut key = None;
    let mut dir = PathBuf::from("web/dist");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--key", Some(value)) => key = Some(PathBuf::from(value)),
            ("--web-dir", Some(value)) => dir = PathBuf::from(value),
            _ => bail!("usage: cargo xtask web-sign --key PATH [--web-dir DIR]"),
        }
    }
    let Some(key) = key else {
        bail!("usage: cargo xtask web-sign --key PATH [--web-dir DIR]")
    };
    let text = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
    let seed: [u8; 32] = match <[u8; 32]>::try_from(text.as_slice()) {
        Ok(raw) => raw,
        Err(_) => web_bundle::parse_hex(String::from_utf8_lossy(&text).trim(), "key file")?,
    };
    let signing = web_bundle::signing_key(&seed);
    let manifest = web_bundle::Manifest::of_dir(&dir)?;
    let bundle = manifest.sha256();
    let signature = web_bundle::sign(&signing, &bundle);
    std::fs::write(
        dir.join(web_bundle::SIGNATURE_FILE),
        format!("{signature}\n"),
    )
    .with_context(|| format!("writing {}", dir.join(web_bundle::SIGNATURE_FILE).display()))?;
    println!(
        "signed web bundle {} with release key {}",
        web_bundle::hex(&bundle),
        web_bundle::release_key_of(&signing)
    );
    Ok(())
}

/// The browser suite (Playwright + Chromium) against a real `conclave serve` and bots.
/// The browser suite against target/debug/conclave. `lies_bin`: a hooked binary already
/// built for the lying-server test; without one the suite builds its own in target/lies.
fn web_test(lies_bin: Option<&Path>) -> Result<()> {
    run(cargo().args(["build", "-p", "conclave"]))?;
    let bin = std::fs::canonicalize(target_dir().join("debug/conclave"))
        .context("the conclave binary")?;
    run(Command::new("npm")
        .args(["run", "typecheck"])
        .current_dir("web"))?;
    let mut suite = Command::new("npx");
    suite
        .args(["playwright", "test"])
        .env("CONCLAVE_BIN", bin)
        .current_dir("web");
    if let Some(lies) = lies_bin {
        suite.env(
            "CONCLAVE_LIES_BIN",
            std::fs::canonicalize(lies).context("the hooked conclave binary")?,
        );
    }
    run(&mut suite)
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
    // The lying server (`conclave serve --test-lie`) exists only with this feature: its own
    // lint and its tests, after everything else so the hook-free build above stays the one
    // every other test ran against.
    let lies = ["-p", "conclave", "--features", "insecure-test-hooks"];
    run(cargo()
        .arg("clippy")
        .args(lies)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    // In a target dir of its own, so target/debug/conclave stays the binary without hooks;
    // the browser suite's lying-server test builds its binary there too and reuses this build.
    run(cargo().arg("test").args(lies).args([
        "--target-dir",
        "target/lies",
        "--test",
        "server_lies",
    ]))?;
    web_build()?;
    web_reproducible()?;
    // `cargo test` just built the hooked binary (for its CARGO_BIN_EXE): the browser suite's
    // lying server reuses it rather than building it again with other features.
    web_test(Some(Path::new("target/lies/debug/conclave")))?;
    // The Debian package of the binary the browser suite just ran: installed, a meeting, purged.
    deb::test()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_from_web_keygen_signs_an_app_the_server_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("dist");
        std::fs::create_dir_all(app.join("assets")).unwrap();
        std::fs::write(app.join("index.html"), "<html>").unwrap();
        std::fs::write(app.join("assets/a.js"), "1").unwrap();
        let key = dir.path().join("release.key").display().to_string();
        web_keygen(std::slice::from_ref(&key)).unwrap();
        let err = web_keygen(std::slice::from_ref(&key)).unwrap_err();
        assert!(err.to_string().contains("not overwriting"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key file is the owner's only");
        }
        let sign_args = ["--key", &key, "--web-dir", &app.display().to_string()].map(String::from);
        web_sign(&sign_args).unwrap();
        let seed: [u8; 32] =
            web_bundle::parse_hex(std::fs::read_to_string(&key).unwrap().trim(), "key").unwrap();
        let public = web_bundle::release_key_of(&web_bundle::signing_key(&seed));
        web_bundle::WebBundle::load(&app, Some(public)).unwrap();
        // A changed file after signing: the signature no longer holds.
        std::fs::write(app.join("assets/a.js"), "2").unwrap();
        let err = web_bundle::WebBundle::load(&app, Some(public)).unwrap_err();
        assert!(err.to_string().contains("is not a signature"), "{err}");
    }
}
