//! The Debian package: `cargo xtask deb` builds it (cargo-deb, release profile), and the test
//! suite installs one on this machine, starts the unit (through systemd where it runs, or the
//! unit's own command line as its dynamic user where it does not), holds a meeting on it with
//! `conclave doctor`'s bots, stops it, and purges it.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run, target_dir};

/// cargo-deb, pinned: its options and the maintainer scripts it writes are part of the package.
const CARGO_DEB_VERSION: &str = "3.8.0";

const UNIT: &str = "/usr/lib/systemd/system/conclave.service";
const CONFIG: &str = "/etc/conclave/conclave.toml";
const ENV_FILE: &str = "/etc/conclave/conclave.env";
const STATE: &str = "/var/lib/conclave";
/// The highest `systemd-analyze security` exposure (tenths: 1.7 is 17) the unit may have; it
/// has 1.7, where a unit with no sandboxing has 9.6.
const MAX_EXPOSURE: &str = "25";
/// Where the unit's dynamic user is emulated without systemd: a uid from systemd's own
/// dynamic range (61184-65519), so it owns nothing else on the machine.
const EMULATED_UID: &str = "61184";

pub fn install_cargo_deb() -> Result<()> {
    let installed = cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION));
    if !installed {
        run(cargo().args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ]))?;
    }
    Ok(())
}

/// `cargo xtask deb`: the release package in target/debian (the web app must be built).
pub fn build_release() -> Result<()> {
    install_cargo_deb()?;
    // Debug symbols go in a -dbgsym package beside it, as Debian ships them.
    run(cargo().args(["deb", "-p", "conclave", "--locked", "--dbgsym"]))
}

/// Packages the already built test binary (target/debug, web app embedded) and puts the
/// package through an operator's life on this machine: install, start, a meeting, stop, purge.
pub fn test() -> Result<()> {
    if !is_root() {
        bail!("the package test installs a .deb on this machine: run it as root (CI does)");
    }
    if is_installed()? {
        bail!(
            "a conclave package is already installed here, and the package test purges its own: \
             remove it first (dpkg --purge conclave)"
        );
    }
    install_cargo_deb()?;
    let out = target_dir().join("debian/test");
    let _ = std::fs::remove_dir_all(&out);
    // The dev profile's binary is the one every other test ran (cargo-deb warns that it is
    // meant for releases; the release package is `cargo xtask deb`'s and has the same files).
    run(cargo()
        .args([
            "deb",
            "-p",
            "conclave",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
        ])
        .arg("-o")
        .arg(&out))?;
    let deb = std::fs::read_dir(&out)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("cargo deb wrote no .deb")?;
    let listing = stdout_of(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    for path in [
        "./usr/bin/conclave",
        "./etc/conclave/conclave.toml",
        "./usr/lib/systemd/system/conclave.service",
    ] {
        if !listing.lines().any(|line| line.ends_with(path)) {
            bail!("the package lacks {path}:\n{listing}");
        }
    }

    let installed = Installed;
    run(Command::new("dpkg")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("-i")
        .arg(&deb))?;
    check_unit()?;
    let check = stdout_of(Command::new("/usr/bin/conclave").args(["config", "check"]))?;
    if !check.contains(&format!("config ok: {CONFIG}")) {
        bail!("the packaged config does not pass `conclave config check`: {check}");
    }

    // Ports of this run's own, set the way an operator overrides the config: the env file.
    let http_port = free_tcp_port()?;
    let media_port = free_media_port()?;
    write_private(
        Path::new(ENV_FILE),
        &format!("CONCLAVE_LISTEN=127.0.0.1:{http_port}\nCONCLAVE_MEDIA_PORT={media_port}\n"),
    )?;
    let mut service = Service::start()?;
    service.wait_until_listening(http_port)?;
    let server = format!("http://127.0.0.1:{http_port}");

    // The packaged config lets only accounts create meetings: make one, as the README says.
    service.as_service_user(
        &[
            "user",
            "add",
            "--data-dir",
            STATE,
            "operator",
            "--password-stdin",
        ],
        "a packaged password\n",
    )?;
    let created = service.as_service_user(
        &[
            "meeting",
            "create",
            "--server",
            &server,
            "--user",
            "operator",
            "--password-stdin",
        ],
        "a packaged password\n",
    )?;
    let host_link = created
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .with_context(|| format!("no host link from meeting create: {created}"))?;
    // Three bots (UDP, ICE-TCP, the relay if offered) hold the meeting and verify each
    // other's end-to-end encrypted frames; doctor exits 1 if any path failed.
    let doctor = Command::new("/usr/bin/conclave")
        .args(["doctor", &format!("{server}/"), "--host-link", host_link])
        .args(["--seconds", "4"])
        .output()
        .context("conclave doctor")?;
    let findings = String::from_utf8_lossy(&doctor.stdout).into_owned();
    print!("{findings}");
    if !doctor.status.success() {
        bail!(
            "doctor failed against the installed service:\n{findings}{}",
            String::from_utf8_lossy(&doctor.stderr)
        );
    }
    for check in ["udp", "tcp"] {
        let passed = findings.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some("ok") && words.next() == Some(check)
        });
        if !passed {
            bail!("no verified media over {check} through the installed service:\n{findings}");
        }
    }
    service.stop()?;
    if !Path::new(STATE).join("conclave.db").is_file() {
        bail!("the service kept no database in {STATE}");
    }

    drop(installed);
    for gone in ["/usr/bin/conclave", CONFIG, UNIT, STATE] {
        if Path::new(gone).exists() {
            bail!("{gone} is still there after dpkg --purge conclave");
        }
    }
    println!(
        "package test: installed, served a meeting, stopped and purged {}",
        deb.display()
    );
    Ok(())
}

fn is_installed() -> Result<bool> {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "conclave"])
        .output()
        .context("dpkg-query")?;
    Ok(String::from_utf8_lossy(&status.stdout).contains("install ok installed"))
}

/// The unit is valid as systemd reads it and keeps its sandbox.
fn check_unit() -> Result<()> {
    run(Command::new("systemd-analyze").args(["verify", "--man=no", UNIT]))?;
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(UNIT)
        .output()
        .context("systemd-analyze security")?;
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or("no overall exposure level");
    println!("{}", overall.trim());
    if !security.status.success() {
        bail!("the unit's sandbox weakened (exposure above {MAX_EXPOSURE}/100): {overall}");
    }
    Ok(())
}

/// Purges the package when dropped, so a failed test leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        // The env file is the operator's (not the package's): dpkg would leave it behind.
        let _ = std::fs::remove_file(ENV_FILE);
        let _ = Command::new("dpkg")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["--purge", "conclave"])
            .status();
    }
}

/// The installed service, run by systemd or, where systemd is not PID 1 (containers, CI),
/// by this process exactly as the unit says: its ExecStart, its EnvironmentFile, its dynamic
/// user, its state directory, its umask, no new privileges.
enum Service {
    Systemd,
    Emulated(Child),
}

impl Service {
    fn start() -> Result<Service> {
        if Path::new("/run/systemd/system").is_dir() {
            run(Command::new("systemctl").args(["daemon-reload"]))?;
            run(Command::new("systemctl").args(["restart", "conclave.service"]))?;
            return Ok(Service::Systemd);
        }
        let unit = std::fs::read_to_string(UNIT).context("the installed unit")?;
        let exec_start = unit_value(&unit, "ExecStart").context("the unit has no ExecStart")?;
        for (key, want) in [("DynamicUser", "yes"), ("StateDirectory", "conclave")] {
            if unit_value(&unit, key) != Some(want) {
                bail!("the unit's {key} is not {want}: the emulation below assumes it");
            }
        }
        std::fs::create_dir_all(STATE)?;
        run(Command::new("chown").args([&format!("{EMULATED_UID}:{EMULATED_UID}"), STATE]))?;
        run(Command::new("chmod").args(["0700", STATE]))?;
        let mut command = as_dynamic_user(exec_start);
        for line in std::fs::read_to_string(ENV_FILE)
            .unwrap_or_default()
            .lines()
        {
            if let Some((key, value)) = line.split_once('=') {
                command.env(key.trim(), value.trim());
            }
        }
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .context("starting the unit's ExecStart")?;
        Ok(Service::Emulated(child))
    }

    /// Until the listen port accepts connections (the server binds it once it is ready).
    fn wait_until_listening(&mut self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Service::Emulated(child) = self {
                if let Some(status) = child.try_wait()? {
                    bail!("the service exited before listening: {status}");
                }
            }
            if Instant::now() > deadline {
                bail!("the service did not listen on 127.0.0.1:{port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `conclave ARGS` as the service's own user, `stdin` on its standard input; its
    /// standard output.
    fn as_service_user(&self, args: &[&str], stdin: &str) -> Result<String> {
        let mut command = match self {
            Service::Systemd => {
                // Units that name the same dynamic user share it (systemd.exec, DynamicUser=).
                let mut c = Command::new("systemd-run");
                c.args(["--wait", "--pipe", "--quiet", "--collect"])
                    .args(["-p", "DynamicUser=yes", "-p", "User=conclave"])
                    .args(["-p", "StateDirectory=conclave", "/usr/bin/conclave"])
                    .args(args);
                c
            }
            Service::Emulated(_) => {
                let mut c = as_dynamic_user("/usr/bin/conclave");
                c.args(args);
                c
            }
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("conclave {args:?}"))?;
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, stdin.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "conclave {args:?} as the service user failed: {}",
                output.status
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops it as systemd would (SIGTERM) and checks that it ended cleanly.
    fn stop(mut self) -> Result<()> {
        match &mut self {
            Service::Systemd => run(Command::new("systemctl").args(["stop", "conclave.service"])),
            Service::Emulated(child) => {
                run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
                let status = child.wait()?;
                if !status.success() {
                    bail!("the service did not stop cleanly on SIGTERM: {status}");
                }
                Ok(())
            }
        }
    }
}

impl Drop for Service {
    /// A test that failed half way leaves no server running.
    fn drop(&mut self) {
        if let Service::Emulated(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sh -c 'umask 077; exec LINE'` as the emulated dynamic user, without new privileges or
/// inheritable capabilities (the unit's UMask, DynamicUser and NoNewPrivileges).
fn as_dynamic_user(line: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            EMULATED_UID,
            "--regid",
            EMULATED_UID,
            "--clear-groups",
        ])
        .args(["--no-new-privs", "--inh-caps=-all", "--"])
        .args([
            "sh",
            "-c",
            &format!("umask 077; exec {line} \"$@\""),
            "conclave",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", STATE);
    command
}

/// A key's value in a unit file (the last one wins, as systemd reads single-valued keys).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::trim)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(())
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free for both UDP and TCP (media uses the one number for both).
fn free_media_port() -> Result<u16> {
    for _ in 0..100 {
        let udp = UdpSocket::bind("0.0.0.0:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

fn stdout_of(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
