//! TURN for participants: starts the built-in relay (on a port of its own, `--turn-port`, or
//! on the HTTPS port by server name, `--turn-server-name`) and mints each admitted
//! participant's ephemeral credentials for it, or for an external coturn (`--turn-url`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::info;
use turn::gate::Gate;
use turn::tls::RelayTls;
use turn::{RelayConfig, RelayStats, RunningRelay, TurnRelay, TurnSecret};

use crate::config::{ConfigError, ServerConfig};
use crate::shared_port::RelayRoute;

/// How long a minted credential lives. The REST scheme checks expiry on every request,
/// refreshes included, so this bounds the longest meeting a relayed participant can stay in
/// without reconnecting; a working day, as coturn's documentation suggests for the scheme.
/// Admission is what protects a meeting: the relay only reaches the SFU, which checks every
/// packet's ICE credentials, so a leaked TURN credential opens no meeting.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(12 * 3600);
/// Expiries a client may present: a day (what coturn's tools mint, so an operator can test the
/// relay with `turnutils_uclient -W`) plus clock slack.
const MAX_TTL_SECS: u64 = 24 * 3600 + 300;

/// The file in the data directory holding a generated secret.
const SECRET_FILE: &str = "turn-secret";

/// What the signaling sessions need to hand out TURN servers.
pub struct TurnOffer {
    secret: TurnSecret,
    /// The built-in relay's URL and its certificate's fingerprint.
    builtin: Option<(String, String)>,
    /// External relays (`--turn-url`), sharing the secret.
    external: Vec<String>,
}

impl TurnOffer {
    /// The `iceServers` entries for a participant (the built-in relay first), with one
    /// credential valid for [`CREDENTIAL_TTL`].
    pub fn ice_servers(&self, participant: &str) -> Vec<proto::IceServer> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let minted = self.secret.mint(participant, now, CREDENTIAL_TTL.as_secs());
        let entry = |urls: Vec<String>, certificate_sha256: Option<String>| proto::IceServer {
            urls,
            username: minted.username.clone(),
            credential: minted.credential.clone(),
            certificate_sha256,
        };
        let mut servers = Vec::new();
        if let Some((url, fingerprint)) = &self.builtin {
            servers.push(entry(vec![url.clone()], Some(fingerprint.clone())));
        }
        if !self.external.is_empty() {
            servers.push(entry(self.external.clone(), None));
        }
        servers
    }
}

/// The relay that runs, as `conclave serve` reports it.
pub struct RelayInfo {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub self_signed: bool,
    pub stats: Arc<RelayStats>,
    /// How the HTTPS listener reaches the relay when they share a port.
    pub route: Option<RelayRoute>,
    /// Kept so the relay lives as long as the server.
    _relay: RunningRelay,
}

#[derive(Debug, thiserror::Error)]
pub enum TurnStartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TURN secret file {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("TURN TLS: {0}")]
    Tls(#[from] turn::tls::TlsError),
    #[error("cannot bind the TURN relay on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts the built-in relay when configured, and says what participants are offered.
/// `http_addr` is the bound HTTPS listener, which a relay placed by server name shares.
pub async fn start(
    config: &ServerConfig,
    media_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(Option<TurnOffer>, Option<RelayInfo>), TurnStartError> {
    let turn = &config.turn;
    if turn.port.is_none() && turn.server_name.is_none() && turn.urls.is_empty() {
        return Ok((None, None));
    }
    let secret_text = match &turn.secret {
        Some(secret) => secret.clone(),
        None => load_or_make_secret(&config.data_dir)?,
    };
    let secret =
        TurnSecret::new(secret_text.into_bytes()).map_err(|_| ConfigError::WeakTurnSecret)?;
    let mut builtin = None;
    let mut relay = None;
    // Validation made these exclusive: a port of its own, or the HTTPS port by name.
    let placement = match (turn.port, &turn.server_name) {
        (Some(port), _) => Some((SocketAddr::new(config.media_bind_ip, port), None)),
        (None, Some(name)) => Some((http_addr, Some(name.clone()))),
        (None, None) => None,
    };
    if let Some((listen, shared_name)) = placement {
        let host = shared_name.clone().unwrap_or_else(|| config.public_host());
        let tls = match &config.tls {
            Some(files) => RelayTls::from_files(&files.cert, &files.key)?,
            None => RelayTls::self_signed(vec![host.trim_matches(['[', ']']).to_owned()])?,
        };
        // The SFU's media address as participants name it in their permissions.
        let sfu = SocketAddr::new(config.public_ip, media_addr.port());
        let relay_config = RelayConfig {
            listen,
            relay_bind_ip: config.media_bind_ip,
            relay_public_ip: config.public_ip,
            gate: Gate {
                secret: secret.clone(),
                max_ttl_secs: MAX_TTL_SECS,
                peers: vec![sfu],
            },
            tls,
            realm: host.clone(),
            max_connections: 4096,
            max_connections_per_ip: 64,
            max_allocations: 4096,
        };
        let (running, route, port) = match shared_name {
            None => {
                let running = TurnRelay::start(relay_config, stop)
                    .await
                    .map_err(|source| TurnStartError::Bind {
                        addr: listen,
                        source,
                    })?;
                let port = running.addr.port();
                (running, None, port)
            }
            Some(server_name) => {
                let running = TurnRelay::start_shared(relay_config, stop);
                let route = RelayRoute {
                    server_name,
                    intake: running.intake(),
                };
                (running, Some(route), config.public_port(http_addr))
            }
        };
        builtin = Some((
            format!("turns:{host}:{port}?transport=tcp"),
            running.fingerprint.clone(),
        ));
        info!(addr = %running.addr, fingerprint = %running.fingerprint, "built-in TURN relay");
        relay = Some(RelayInfo {
            addr: running.addr,
            fingerprint: running.fingerprint.clone(),
            self_signed: running.self_signed,
            stats: running.stats.clone(),
            route,
            _relay: running,
        });
    }
    let offer = TurnOffer {
        secret,
        builtin,
        external: turn.urls.clone(),
    };
    Ok((Some(offer), relay))
}

/// The stored secret, or a new random one written (mode 0600) beside the database.
fn load_or_make_secret(data_dir: &Path) -> Result<String, TurnStartError> {
    let path = data_dir.join(SECRET_FILE);
    let error = |reason: String| TurnStartError::Secret {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e.to_string())),
    }
    let secret = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
    std::fs::create_dir_all(data_dir).map_err(|e| error(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| error(e.to_string()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes()).map_err(|e| error(e.to_string()))?;
    Ok(secret)
}
