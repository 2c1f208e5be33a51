//! `conclave serve`'s settings: each one a flag, an environment variable and a key of the
//! config file (TOML), in that order of precedence, then the built-in default.
//!
//! One struct serves clap and serde so that a setting cannot exist in one and be missing in
//! the other; every field is an `Option` so that "not given" stays distinguishable from "given
//! the default" until the layers are merged.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// Where `conclave serve` and `conclave config check` look for a config file when none is
/// named: used only when it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/conclave/conclave.toml";

#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP and WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "CONCLAVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The one UDP port all media uses [default: 10000].
    #[arg(long, env = "CONCLAVE_MEDIA_PORT")]
    pub media_port: Option<u16>,
    /// ICE over TCP (RFC 6544, framed per RFC 4571) for networks that drop UDP: listens on
    /// this TCP port (default: the media port's number); 0 turns it off.
    #[arg(long, env = "CONCLAVE_MEDIA_TCP_PORT")]
    pub media_tcp_port: Option<u16>,
    /// The address participants send media to (put in ICE candidates) [default: 127.0.0.1].
    #[arg(long, env = "CONCLAVE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// The base URL of the links the server hands out (default: http://<listen>).
    #[arg(long, env = "CONCLAVE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where the database lives [default: conclave-data].
    #[arg(long, env = "CONCLAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM): serve HTTPS and WSS. Needs --tls-key.
    #[arg(long, env = "CONCLAVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Needs --tls-cert.
    #[arg(long, env = "CONCLAVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Who may create meetings: `anyone`, or only logged-in `accounts` [default: anyone].
    #[arg(long, env = "CONCLAVE_MEETING_CREATION")]
    #[serde(default, deserialize_with = "from_text")]
    pub meeting_creation: Option<server::MeetingCreation>,
    /// Estimate each participant's downlink (TWCC) and choose simulcast layers and paused
    /// tracks to fit it. `false` forwards every track a participant subscribes to whatever
    /// its link carries, as an SFU without congestion control does [default: true].
    #[arg(long, env = "CONCLAVE_DOWNLINK_ESTIMATION", action = clap::ArgAction::Set)]
    pub downlink_estimation: Option<bool>,
    /// The web app's release key (Ed25519 public key, 64 hex digits): refuse to start with a
    /// web app it did not sign; browsers that pinned the app take only updates it signed.
    #[arg(long, env = "CONCLAVE_WEB_RELEASE_KEY")]
    #[serde(default, deserialize_with = "from_text")]
    pub web_release_key: Option<server::ReleaseKey>,
    /// Serve the web app from this folder (a build of your own, e.g. `web/dist`) instead of
    /// the one built into the binary.
    #[arg(long, env = "CONCLAVE_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Run the built-in TURN relay over TLS on this TCP port (for networks that pass only TLS,
    /// e.g. 443), with the --tls-cert/--tls-key certificate or a self-signed one.
    #[arg(long, env = "CONCLAVE_TURN_PORT")]
    pub turn_port: Option<u16>,
    /// Run the built-in TURN relay on the HTTPS port itself (443 for networks that pass
    /// nothing else, on a machine with one address): TLS connections naming this host go to
    /// the relay, all others to the web app. Needs --tls-cert/--tls-key naming this host too.
    #[arg(long, env = "CONCLAVE_TURN_SERVER_NAME")]
    pub turn_server_name: Option<String>,
    /// The TURN REST secret (at least 16 characters; coturn's static-auth-secret); generated
    /// and kept in the data directory when absent.
    #[arg(long, env = "CONCLAVE_TURN_SECRET")]
    pub turn_secret: Option<String>,
    /// An external TURN server to hand out (turn: or turns: URL; repeatable, or
    /// comma-separated): coturn with `use-auth-secret` and the same --turn-secret.
    #[arg(long, env = "CONCLAVE_TURN_URL", value_delimiter = ',')]
    pub turn_url: Option<Vec<String>>,
}

/// A key whose value is text parsed by the same `FromStr` as its flag, so the file and the
/// command line accept exactly the same spellings.
fn from_text<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// A commented config file with every key, printed by `conclave config example`; the test
/// suite checks that it parses.
pub const EXAMPLE: &str = r#"# /etc/conclave/conclave.toml: conclave serve's settings.
# Each key is also a flag (--media-port) and an environment variable (CONCLAVE_MEDIA_PORT);
# a flag wins over the variable, the variable over this file.

# HTTP and WebSocket listen address (put a reverse proxy or the TLS keys below in front).
listen = "0.0.0.0:443"
# The base of the links the server hands out.
public_url = "https://meet.example.org"
# The address participants send media to: this machine's public address.
public_ip = "203.0.113.10"
# The one UDP port all media uses.
media_port = 10000
# ICE over TCP for networks that drop UDP (default: the media port's number; 0 turns it off).
media_tcp_port = 10000
# Where the database lives.
data_dir = "/var/lib/conclave"
# HTTPS and WSS (both or neither).
tls_cert = "/etc/conclave/tls/fullchain.pem"
tls_key = "/etc/conclave/tls/privkey.pem"
# Who may create meetings: "anyone" or "accounts".
meeting_creation = "accounts"
# Choose simulcast layers to fit each participant's downlink.
downlink_estimation = true
# The web app's release key (64 hex digits), when you sign your own web app builds.
# web_release_key = "..."
# Serve the web app from a folder instead of the copy built into the binary.
# web_dir = "/usr/share/conclave/web"
# The built-in TURN relay over TLS, for networks that pass only TLS (uses tls_cert/tls_key).
turn_port = 5349
# Or the relay on the HTTPS port itself, for TLS connections naming this host (a DNS name of
# this machine that the certificate covers too), instead of turn_port.
# turn_server_name = "turn.example.org"
# The TURN REST secret; generated and kept in data_dir when absent.
# turn_secret = "a long random string"
# Or an external coturn (use-auth-secret, static-auth-secret = turn_secret).
# turn_url = ["turns:turn.example.org:443?transport=tcp"]
"#;

impl Settings {
    /// Reads and checks a config file; the error names the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Settings::from_toml(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses config text. toml's errors say the line, the column and the key; unknown keys
    /// are refused so a misspelt setting is not silently ignored.
    pub fn from_toml(text: &str) -> Result<Settings> {
        toml::from_str(text).map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// These settings, with any left unset taken from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            media_port: self.media_port.or(lower.media_port),
            media_tcp_port: self.media_tcp_port.or(lower.media_tcp_port),
            public_ip: self.public_ip.or(lower.public_ip),
            public_url: self.public_url.or(lower.public_url),
            data_dir: self.data_dir.or(lower.data_dir),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            meeting_creation: self.meeting_creation.or(lower.meeting_creation),
            downlink_estimation: self.downlink_estimation.or(lower.downlink_estimation),
            web_release_key: self.web_release_key.or(lower.web_release_key),
            web_dir: self.web_dir.or(lower.web_dir),
            turn_port: self.turn_port.or(lower.turn_port),
            turn_server_name: self.turn_server_name.or(lower.turn_server_name),
            turn_secret: self.turn_secret.or(lower.turn_secret),
            turn_url: self.turn_url.or(lower.turn_url),
        }
    }

    /// The server's configuration: what is still unset takes the built-in default.
    pub fn server_config(self) -> Result<server::ServerConfig> {
        let defaults = server::ServerConfig::default();
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(server::TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(server::ConfigError::TlsHalfConfigured.into()),
        };
        let config = server::ServerConfig {
            listen: self.listen.unwrap_or(defaults.listen),
            media_port: self.media_port.unwrap_or(defaults.media_port),
            media_tcp: server::MediaTcp::from_flag(self.media_tcp_port),
            public_ip: self.public_ip.unwrap_or(defaults.public_ip),
            public_url: self.public_url,
            data_dir: self.data_dir.unwrap_or(defaults.data_dir.clone()),
            meeting_creation: self.meeting_creation.unwrap_or(defaults.meeting_creation),
            tls,
            downlink_estimation: self
                .downlink_estimation
                .unwrap_or(defaults.downlink_estimation),
            web_release_key: self.web_release_key,
            web_app: match self.web_dir {
                Some(dir) => server::WebAppSource::Dir(dir),
                None if crate::embedded_web::FILES.is_empty() => server::WebAppSource::None,
                None => server::WebAppSource::Embedded(crate::embedded_web::FILES),
            },
            turn: server::TurnConfig {
                port: self.turn_port,
                server_name: self.turn_server_name,
                secret: self.turn_secret,
                urls: self.turn_url.unwrap_or_default(),
            },
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

/// The config file to read: the one named (`--config`/`CONCLAVE_CONFIG`, which must exist),
/// else the default path when it exists, else none.
pub fn config_path(named: Option<PathBuf>) -> Option<PathBuf> {
    named.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.is_file().then_some(default)
    })
}

/// Flags and environment (already merged by clap) over the config file.
pub fn resolve(named: Option<PathBuf>, given: Settings) -> Result<(Option<PathBuf>, Settings)> {
    let path = config_path(named);
    let from_file = match &path {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    Ok((path, given.or(from_file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_validates() {
        let settings = Settings::from_toml(EXAMPLE).expect("example parses");
        assert_eq!(settings.media_port, Some(10000));
        assert_eq!(
            settings.meeting_creation,
            Some(server::MeetingCreation::Accounts)
        );
        // The example names TLS files that do not exist here; everything else must hold.
        let config = Settings {
            tls_cert: None,
            tls_key: None,
            ..settings
        }
        .server_config()
        .expect("example validates");
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://meet.example.org")
        );
    }

    #[test]
    fn an_unknown_or_mistyped_key_is_refused_by_name() {
        let unknown = Settings::from_toml("media_prot = 10000\n").unwrap_err();
        assert!(format!("{unknown:#}").contains("media_prot"), "{unknown:#}");
        let mistyped = Settings::from_toml("media_port = \"ten\"\n").unwrap_err();
        assert!(
            format!("{mistyped:#}").contains("media_port"),
            "{mistyped:#}"
        );
        let bad_value = Settings::from_toml("meeting_creation = \"everyone\"\n").unwrap_err();
        assert!(
            format!("{bad_value:#}").contains("meeting_creation"),
            "{bad_value:#}"
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = Settings::from_toml("media_port = 20000\ndata_dir = \"/srv/c\"\n").unwrap();
        let flags = Settings {
            media_port: Some(30000),
            ..Settings::default()
        };
        let config = flags.or(file).server_config().unwrap();
        assert_eq!(config.media_port, 30000);
        assert_eq!(config.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(config.listen, server::ServerConfig::default().listen);
    }
}
