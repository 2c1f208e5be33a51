//! The `conclave` command: `serve`, `meeting create`, `bot`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

mod embedded_web;
mod settings;

#[derive(Parser)]
#[command(
    name = "conclave",
    version,
    about = "End-to-end encrypted video meetings on your own server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: web app, API, signaling and the SFU.
    Serve(ServeArgs),
    /// Manage meetings.
    Meeting {
        #[command(subcommand)]
        command: MeetingCommand,
    },
    /// Manage accounts (they open the database in --data-dir directly).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check a config file, or print an example of one.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Join a meeting as a native participant that sends a test clip and checks what it receives.
    Bot(BotArgs),
    /// Check a running server from outside, as a participant reaches it: its address and
    /// certificate, a test meeting, the media address it names, and media over UDP, ICE-TCP
    /// and the TURN relay. Prints one line per check; exits 1 if any failed.
    Doctor(DoctorArgs),
    /// Load benchmark: this server side by side with Janus VideoRoom and a raw UDP relay
    /// (`conclave bench --help` for its options).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A config file (TOML) of the same settings; flags and environment variables win over
    /// it. Default: /etc/conclave/conclave.toml when it exists.
    #[arg(long, env = "CONCLAVE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: settings::Settings,
    #[command(flatten)]
    #[cfg(feature = "insecure-test-hooks")]
    test_lie: test_lie::TestLieArgs,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Read the config file (and the flags' environment variables) and check every setting
    /// as `conclave serve` would, without starting; prints `config ok: <path>`.
    Check {
        /// The config file (default: /etc/conclave/conclave.toml).
        #[arg(long, env = "CONCLAVE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a commented config file with every key.
    Example,
}

#[derive(Args)]
struct DataDirArg {
    /// Where the database lives (the same as `conclave serve`'s).
    #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "conclave-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (password from --password-stdin or a prompt).
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Delete an account and its login sessions.
    Remove {
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Subcommand)]
enum MeetingCommand {
    /// Create a meeting and print its join link and host link.
    Create {
        /// The server's base URL.
        #[arg(long, env = "CONCLAVE_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// A passcode guests must give (4 to 64 characters); it goes into the join link.
        #[arg(long)]
        passcode: Option<String>,
        /// Admit only people with a per-invitee invitation link (and hosts).
        #[arg(long)]
        require_invitation: bool,
        /// Log in as this account first (where `meeting_creation = "accounts"`); the password
        /// comes from --password-stdin or a prompt. The account becomes the meeting's owner.
        #[arg(long)]
        user: Option<String>,
        /// Read the account's password from the first line of standard input.
        #[arg(long, requires = "user")]
        password_stdin: bool,
    },
    /// Create a per-invitee invitation link and print it as `invite: <url>`.
    Invite {
        /// The meeting's host link.
        #[arg(long)]
        host_link: String,
        /// Who it is for (shown to hosts when that person knocks).
        #[arg(long)]
        label: String,
        /// How long it is valid: e.g. 90m, 24h, 7d (at most 90d).
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Valid for one entry only.
        #[arg(long)]
        single_use: bool,
        /// Enter without waiting in the lobby.
        #[arg(long)]
        skip_lobby: bool,
    },
    /// Print the meeting's security audit log (JSON).
    Audit {
        /// The meeting's host link.
        #[arg(long)]
        host_link: String,
    },
}

#[derive(Args)]
struct BotArgs {
    /// The join link (a host link makes the bot a host).
    #[arg(long)]
    join: String,
    #[arg(long, default_value = "bot")]
    name: String,
    /// How long to stay, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Video bitrate; the closest of the built-in clips (150, 500, 1500 kbps) is sent.
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// With a host link: admit everyone who waits in the lobby (for scripted meetings and
    /// benchmarks, where no person sits at the host's screen).
    #[arg(long)]
    admit_all: bool,
    /// With a host link: make the participant of this name a co-host when it joins, at the
    /// server and in the MLS group (a promotion signed with the meeting key). Repeatable.
    #[arg(long, value_name = "NAME")]
    promote: Vec<String>,
    /// Take each `--promote` back this many seconds after making it.
    #[arg(long, value_name = "SECONDS")]
    demote_after: Option<f64>,
    /// Send silence (RFC 6464 level -127, one comfort-noise frame every 400 ms as Opus DTX
    /// does) instead of speech-level audio.
    #[arg(long)]
    silent: bool,
    /// Publish the camera in three simulcast layers (RIDs q/h/f: 150, 500 and 1500 kbps).
    #[arg(long)]
    simulcast: bool,
    /// Ask the SFU to send at most this much in total (kbps).
    #[arg(long)]
    max_receive_kbps: Option<u32>,
    /// Emulated downlink: bottleneck rate in kbps (with a ~200 ms queue).
    #[arg(long)]
    downlink_kbps: Option<u64>,
    /// Emulated downlink: random loss, from 0 to 1 (0.05 = 5 %).
    #[arg(long, default_value_t = 0.0)]
    downlink_loss: f32,
    /// Emulated downlink: added one-way delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    downlink_delay_ms: u64,
    /// Emulated downlink: lift the rate limit after this many seconds.
    #[arg(long)]
    downlink_lift_after: Option<f64>,
    /// The path media takes: `udp`; `tcp` (ICE-TCP to the server's TCP media port, for
    /// networks that drop UDP); or `turn-tls` (through the TURN relay over TLS its welcome
    /// names, for networks that let only TLS out). The report's `"transport"` says which one
    /// connected.
    #[arg(long, default_value = "udp")]
    transport: client::Transport,
    /// Where to write the JSON report: a path, or - for stdout.
    #[arg(long, default_value = "-")]
    report: String,
}

#[derive(Args)]
struct DoctorArgs {
    /// The server's address (https://meet.example.org), or any link of it.
    url: String,
    /// A host link to test in, for a server where only accounts create meetings
    /// (the test meeting is otherwise made anonymously).
    #[arg(long)]
    host_link: Option<String>,
    /// How long the test bots exchange media, in seconds.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Print the findings as JSON (`{"ok": bool, "findings": [{"check", "verdict",
    /// "message"}]}`) instead of lines.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    // The benchmark runs its own single-threaded runtime and pins itself to a core, so it is
    // dispatched before this command builds one.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "bench") {
        let program = args.first().cloned().unwrap_or_else(|| "conclave".into());
        let rest = std::iter::once(program).chain(args.into_iter().skip(2));
        return bench::main_with("conclave bench", &["bench"], rest);
    }
    let cli = Cli::parse();
    // The doctor's findings are its output; the bots' progress would bury them.
    let default_filter = match cli.command {
        Command::Doctor(_) => "warn,str0m=error,is=error,dimpl=error",
        // stun_proto logs every 401 challenge (the first Allocate of every TURN client, as
        // RFC 8656 has it) as an error; the relay counts real refusals in /metrics instead.
        _ => "info,str0m=warn,is=warn,dimpl=warn,turn_client_proto=warn,stun_proto::auth=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Meeting {
                command:
                    MeetingCommand::Create {
                        server,
                        passcode,
                        require_invitation,
                        user,
                        password_stdin,
                    },
            } => {
                let account = match user {
                    Some(name) => {
                        let password = read_password(password_stdin, &name)?;
                        Some((name, password))
                    }
                    None => None,
                };
                create_meeting(&server, passcode, require_invitation, account).await
            }
            Command::Meeting {
                command:
                    MeetingCommand::Invite {
                        host_link,
                        label,
                        expires,
                        single_use,
                        skip_lobby,
                    },
            } => {
                let expires_in_secs = parse_duration(&expires)?;
                invite(&host_link, &label, expires_in_secs, single_use, skip_lobby).await
            }
            Command::Meeting {
                command: MeetingCommand::Audit { host_link },
            } => audit(&host_link).await,
            Command::User { command } => user(command).await,
            Command::Config { command } => config_command(command),
            Command::Bot(args) => bot(args).await,
            Command::Doctor(args) => doctor(args).await,
            Command::Bench { .. } => bail!("conclave bench runs before the runtime starts"),
        }
    })
}

#[cfg(feature = "insecure-test-hooks")]
mod test_lie;

async fn serve(args: ServeArgs) -> Result<()> {
    let (path, settings) = settings::resolve(args.config, args.settings)?;
    if let Some(path) = &path {
        info!(config = %path.display(), "settings from the config file, under flags and env");
    }
    #[allow(unused_mut)]
    let mut config = settings.server_config()?;
    #[cfg(feature = "insecure-test-hooks")]
    {
        config.test_lie = args.test_lie.start()?;
    }
    let running = server::Server::start(config)
        .await
        .context("conclave serve could not start")?;
    println!("{}", running.web_bundle_line());
    match running.media_tcp_addr {
        Some(tcp) => println!("media: udp {} tcp {tcp}", running.media_addr),
        None => println!("media: udp {} (ICE-TCP off)", running.media_addr),
    }
    if let Some((addr, fingerprint)) = &running.turn_relay {
        println!("turn: tls {addr} sha256 {fingerprint}");
    }
    info!(
        media = %running.media_addr,
        "Conclave is running: open {}/ in a browser",
        running.base_url
    );
    let stop = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: telling participants, closing sockets, flushing the database");
        let _ = stop.send(true);
    });
    running.wait().await.context("server failed")?;
    Ok(())
}

fn config_command(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Example => print!("{}", settings::EXAMPLE),
        ConfigCommand::Check { config } => {
            let Some(path) = settings::config_path(config) else {
                bail!(
                    "no config file: name one with --config, or put one at {}",
                    settings::DEFAULT_CONFIG_PATH
                );
            };
            // The same layering `serve` does: the environment's CONCLAVE_* settings count.
            let given = <ServeArgs as clap::FromArgMatches>::from_arg_matches(
                &<ServeArgs as clap::Args>::augment_args(clap::Command::new("check"))
                    .try_get_matches_from(["check"])?,
            )?;
            let settings = given.settings.or(settings::Settings::from_file(&path)?);
            settings
                .server_config()
                .with_context(|| format!("config file {}", path.display()))?;
            println!("config ok: {}", path.display());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Makes the meeting's host link here (the server gets only a digest of its host secret) and
/// prints both links.
async fn create_meeting(
    server: &str,
    passcode: Option<String>,
    require_invitation: bool,
    account: Option<(String, String)>,
) -> Result<()> {
    let mut options = serde_json::json!({ "require_invitation": require_invitation });
    if let Some(passcode) = passcode {
        options["passcode"] = passcode.into();
    }
    let cookie = match account {
        Some((name, password)) => Some(
            client::meeting_links::log_in(server, &name, &password)
                .await
                .with_context(|| format!("logging in as {name}"))?,
        ),
        None => None,
    };
    let links = client::meeting_links::create_meeting(server, options, cookie.as_deref()).await?;
    println!("join: {}", links.join_url);
    println!("host: {}", links.host_url);
    Ok(())
}

/// `90s`, `90m`, `24h`, `7d` or plain seconds.
fn parse_duration(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("{text:?}: give a duration like 90m, 24h or 7d"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?}: give a duration like 90m, 24h or 7d"))?;
    Ok(number.saturating_mul(scale))
}

/// Sends a host-authenticated API request and returns its JSON answer.
async fn host_request(
    method: reqwest::Method,
    url: &str,
    secret: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut request = client::tls::http().request(method, url).bearer_auth(secret);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send_json(request, url).await
}

/// Sends an API request and returns its JSON answer; a non-2xx answer is an error.
async fn send_json(request: reqwest::RequestBuilder, url: &str) -> Result<serde_json::Value> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(body)
}

/// Issues an invitation with the host link's meeting key, here: the server never holds what
/// admits its holder to the group.
async fn invite(
    host_link: &str,
    label: &str,
    expires_in_secs: u64,
    single_use: bool,
    skip_lobby: bool,
) -> Result<()> {
    let invitation =
        client::meeting_links::invite(host_link, label, expires_in_secs, single_use, skip_lobby)
            .await?;
    println!("invite: {}", invitation.url);
    Ok(())
}

async fn audit(host_link: &str) -> Result<()> {
    let host = client::meeting_links::HostLink::parse(host_link)?;
    let url = format!("{}/audit", host.api());
    let answer = host_request(reqwest::Method::GET, &url, &host.server_secret, None).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Longest account name.
const MAX_USER_NAME_CHARS: usize = 64;
/// Shortest password `conclave user add` accepts.
const MIN_PASSWORD_CHARS: usize = 10;

async fn user(command: UserCommand) -> Result<()> {
    let data_dir = match &command {
        UserCommand::Add { data, .. }
        | UserCommand::List { data }
        | UserCommand::Remove { data, .. } => data.data_dir.clone(),
    };
    let storage = server::Storage::open(&data_dir)
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let result = user_command(&storage, command).await;
    storage.close().await;
    result
}

/// `name`'s password from the first line of standard input, or a prompt on the terminal.
fn read_password(from_stdin: bool, name: &str) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        rpassword::prompt_password(format!("password for {name}: "))
            .context("cannot read the password (use --password-stdin without a terminal)")
    }
}

async fn user_command(storage: &server::Storage, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            ..
        } => {
            let name = name.trim().to_owned();
            if name.is_empty()
                || name.chars().count() > MAX_USER_NAME_CHARS
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                bail!("a user name has 1 to {MAX_USER_NAME_CHARS} characters, no spaces");
            }
            let password = read_password(password_stdin, &name)?;
            // A new password typed at a prompt is asked twice: a typo would lock the user out.
            if !password_stdin && rpassword::prompt_password("again: ")? != password {
                bail!("the passwords differ");
            }
            if password.chars().count() < MIN_PASSWORD_CHARS {
                bail!("a password has at least {MIN_PASSWORD_CHARS} characters");
            }
            let hash = server::password::hash_blocking(password).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match storage.create_user(&name, &hash, now).await? {
                Some(_) => println!("added user {name}"),
                None => bail!("there is already a user called {name}"),
            }
        }
        UserCommand::List { .. } => {
            for user in storage.users().await? {
                println!("{}", user.name);
            }
        }
        UserCommand::Remove { name, .. } => {
            if !storage.remove_user(&name).await? {
                bail!("there is no user called {name}");
            }
            println!("removed user {name}");
        }
    }
    Ok(())
}

async fn doctor(args: DoctorArgs) -> Result<()> {
    if !(args.seconds.is_finite() && (1.0..=120.0).contains(&args.seconds)) {
        bail!("--seconds must be from 1 to 120");
    }
    let findings = client::doctor::examine(&client::doctor::DoctorOptions {
        url: args.url,
        host_link: args.host_link,
        media_seconds: args.seconds,
    })
    .await;
    let ok = !findings
        .iter()
        .any(|f| f.verdict == client::doctor::Verdict::Fail);
    if args.json {
        let out = serde_json::json!({ "ok": ok, "findings": findings });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for finding in &findings {
            println!("{finding}");
        }
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn bot(args: BotArgs) -> Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(0.0..=1.0).contains(&args.downlink_loss) {
        bail!("--downlink-loss is a fraction from 0 to 1");
    }
    if args.downlink_kbps == Some(0) {
        bail!("--downlink-kbps must be at least 1");
    }
    if args
        .downlink_lift_after
        .is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        bail!("--downlink-lift-after must be a number of seconds");
    }
    if args
        .demote_after
        .is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        bail!("--demote-after must be a number of seconds");
    }
    let report = client::run(client::BotOptions {
        video_kbps: args.video_kbps,
        admit_all: args.admit_all,
        speaking: !args.silent,
        simulcast: args.simulcast,
        max_receive_kbps: args.max_receive_kbps,
        promote: args.promote,
        demote_after: args.demote_after.map(Duration::from_secs_f64),
        transport: args.transport,
        downlink: Some(client::downlink::DownlinkShape {
            kbps: args.downlink_kbps,
            loss: args.downlink_loss,
            delay: Duration::from_millis(args.downlink_delay_ms),
            lift_after: args.downlink_lift_after.map(Duration::from_secs_f64),
        }),
        ..client::BotOptions::new(args.join, args.name, Duration::from_secs_f64(args.duration))
    })
    .await?;
    let json = serde_json::to_string_pretty(&report)?;
    if args.report == "-" {
        println!("{json}");
    } else {
        std::fs::write(&args.report, json + "\n")
            .with_context(|| format!("cannot write the report to {}", args.report))?;
    }
    Ok(())
}
