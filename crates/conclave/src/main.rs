//! The `conclave` command: `serve`, `meeting create`, `bot`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

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
    /// Join a meeting as a native participant that sends a test clip and checks what it receives.
    Bot(BotArgs),
    /// Load benchmark: this server side by side with Janus VideoRoom and a raw UDP relay
    /// (`conclave bench --help` for its options).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// HTTP and WebSocket listen address.
    #[arg(long, env = "CONCLAVE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The one UDP port all media uses.
    #[arg(long, env = "CONCLAVE_MEDIA_PORT", default_value_t = 10000)]
    media_port: u16,
    /// The address participants send media to (put in ICE candidates).
    #[arg(long, env = "CONCLAVE_PUBLIC_IP", default_value = "127.0.0.1")]
    public_ip: IpAddr,
    /// The base URL of the links the server hands out (default: http://<listen>).
    #[arg(long, env = "CONCLAVE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the database lives.
    #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "conclave-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum MeetingCommand {
    /// Create a meeting and print its join link and host link.
    Create {
        /// The server's base URL.
        #[arg(long, env = "CONCLAVE_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
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
    /// Where to write the JSON report: a path, or - for stdout.
    #[arg(long, default_value = "-")]
    report: String,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,str0m=warn,is=warn,dimpl=warn")),
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
                command: MeetingCommand::Create { server },
            } => create_meeting(&server).await,
            Command::Bot(args) => bot(args).await,
            Command::Bench { .. } => bail!("conclave bench runs before the runtime starts"),
        }
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = server::ServerConfig {
        listen: args.listen,
        media_port: args.media_port,
        public_ip: args.public_ip,
        public_url: args.public_url,
        data_dir: args.data_dir,
        ..server::ServerConfig::default()
    };
    let running = server::Server::start(config)
        .await
        .context("conclave serve could not start")?;
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

async fn create_meeting(server: &str) -> Result<()> {
    let url = format!("{}/api/meetings", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
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
    let (Some(join), Some(host)) = (body["join_url"].as_str(), body["host_url"].as_str()) else {
        bail!("{url} answered without join_url/host_url: {body}");
    };
    println!("join: {join}");
    println!("host: {host}");
    Ok(())
}

async fn bot(args: BotArgs) -> Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    let report = client::run(client::BotOptions {
        video_kbps: args.video_kbps,
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
