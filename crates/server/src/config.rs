use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// A test probe that sees every media datagram the server receives and every frame the SFU
/// forwards: the way tests prove the server never handles plaintext media.
#[derive(Clone)]
pub struct MediaTap(pub Arc<TapFn>);

/// The probe's signature: it is handed each datagram or frame.
pub type TapFn = dyn Fn(&[u8]) + Send + Sync;

impl std::fmt::Debug for MediaTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaTap")
    }
}

/// Everything `conclave serve` needs, validated before anything starts.
#[derive(Clone)]
pub struct ServerConfig {
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// The single UDP port all media uses (0: any free port, for tests).
    pub media_port: u16,
    /// ICE-TCP, for networks that drop UDP: which TCP port takes media connections.
    pub media_tcp: MediaTcp,
    /// The address media is bound to.
    pub media_bind_ip: IpAddr,
    /// The address put in ICE candidates: where participants send media.
    pub public_ip: IpAddr,
    /// The base of the links the server hands out; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// Tests only: a probe on the media path.
    pub media_tap: Option<MediaTap>,
    /// Who may create meetings.
    pub meeting_creation: MeetingCreation,
    /// Serve HTTPS and WSS with this certificate chain and key (PEM files); plain HTTP if None.
    pub tls: Option<TlsFiles>,
    /// Estimate each participant's downlink from TWCC feedback (and pace what it is sent to
    /// fit): simulcast layers then follow what each link carries. Off, layers follow only
    /// tiles, last-N and `max_kbps`.
    pub downlink_estimation: bool,
    /// The operator's web release key: the server refuses to start with a web app it did not
    /// sign, and browsers that pinned the app accept updates only under it.
    pub web_release_key: Option<crate::web_bundle::ReleaseKey>,
    /// The browser app: built into the binary, a folder the operator names, or none.
    pub web_app: crate::web_app::WebAppSource,
    /// TURN relays handed to participants: the built-in one, or an external coturn.
    pub turn: TurnConfig,
    /// Tests only (cargo feature `insecure-test-hooks`): the server lies to smuggle a listener
    /// into meetings, so that tests can check honest clients refuse it.
    #[cfg(feature = "insecure-test-hooks")]
    pub test_lie: Option<std::sync::Arc<crate::test_lie::TestLie>>,
}

/// TURN for networks that pass neither UDP nor ICE-TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnConfig {
    /// `--turn-port`: run the built-in TURN relay over TLS on this TCP port.
    pub port: Option<u16>,
    /// `--turn-server-name`: run the built-in TURN relay on the HTTPS port itself: TLS
    /// connections whose server name (SNI) is this host go to the relay, all others to the
    /// web app. For networks that pass TLS to 443 alone, on a machine with one address.
    pub server_name: Option<String>,
    /// `--turn-secret`: the TURN REST secret (shared with coturn when `urls` name one);
    /// for the built-in relay, generated and stored in the data directory when absent.
    pub secret: Option<String>,
    /// `--turn-url`: an external TURN server (coturn, `static-auth-secret`) to hand out
    /// instead of, or beside, the built-in one: `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
}

/// Where the SFU's passive ICE-TCP candidate listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaTcp {
    /// The same port number as the media UDP socket (the default).
    #[default]
    SameAsUdp,
    /// This TCP port.
    Port(u16),
    /// No ICE-TCP: media over UDP only.
    Off,
}

impl MediaTcp {
    /// `--media-tcp-port`: absent, the UDP port's number; 0, off; otherwise that port.
    pub fn from_flag(port: Option<u16>) -> Self {
        match port {
            None => MediaTcp::SameAsUdp,
            Some(0) => MediaTcp::Off,
            Some(port) => MediaTcp::Port(port),
        }
    }
}

/// Who may create meetings through `POST /api/meetings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MeetingCreation {
    /// Anyone who can reach the server (fine on loopback or a trusted network).
    #[default]
    Anyone,
    /// Only logged-in accounts; the creating account owns the meeting.
    Accounts,
}

impl std::str::FromStr for MeetingCreation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "anyone" => Ok(MeetingCreation::Anyone),
            "accounts" => Ok(MeetingCreation::Accounts),
            other => Err(format!("{other:?} is not one of: anyone, accounts")),
        }
    }
}

/// The PEM files of the TLS certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("public_ip (--public-ip) {0} is unspecified: give the address participants can reach")]
    UnspecifiedPublicIp(IpAddr),
    #[error(
        "public_url (--public-url) {0:?} must start with http:// or https:// and have no trailing slash"
    )]
    BadPublicUrl(String),
    #[error(
        "TLS needs both tls_cert and tls_key (--tls-cert, --tls-key), or neither for plain HTTP"
    )]
    TlsHalfConfigured,
    #[error("turn_url (--turn-url) {0:?} must start with turn: or turns:")]
    BadTurnUrl(String),
    #[error("turn_url (--turn-url) needs turn_secret (--turn-secret), the secret coturn shares")]
    TurnUrlWithoutSecret,
    #[error("turn_secret (--turn-secret) must be at least 16 characters")]
    WeakTurnSecret,
    #[error(
        "turn_port (--turn-port) {0} is the HTTP listen port; give the relay a port of its own"
    )]
    TurnPortTaken(u16),
    #[error(
        "turn_server_name (--turn-server-name) shares the HTTPS port: it needs tls_cert and tls_key (--tls-cert, --tls-key), a certificate that also names {0}"
    )]
    TurnSharingWithoutTls(String),
    #[error(
        "turn_server_name (--turn-server-name) {0:?} must be a DNS name other than the web app's ({1}): clients send no server name for an IP address, and the web app's name must stay the web app's"
    )]
    BadTurnServerName(String, String),
    #[error(
        "turn_port (--turn-port) and turn_server_name (--turn-server-name) both place the built-in relay: choose a port of its own or the shared HTTPS port"
    )]
    TurnPortAndServerName,
    #[error("cannot read TLS {what} {path}: {reason}")]
    Tls {
        what: &'static str,
        path: String,
        reason: String,
    },
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_port: 10000,
            media_tcp: MediaTcp::SameAsUdp,
            media_bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_url: None,
            data_dir: PathBuf::from("conclave-data"),
            media_tap: None,
            meeting_creation: MeetingCreation::Anyone,
            tls: None,
            downlink_estimation: true,
            web_release_key: None,
            web_app: crate::web_app::WebAppSource::None,
            turn: TurnConfig::default(),
            #[cfg(feature = "insecure-test-hooks")]
            test_lie: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.public_ip.is_unspecified() {
            return Err(ConfigError::UnspecifiedPublicIp(self.public_ip));
        }
        if let Some(url) = &self.public_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.ends_with('/') {
                return Err(ConfigError::BadPublicUrl(url.clone()));
            }
        }
        for url in &self.turn.urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err(ConfigError::BadTurnUrl(url.clone()));
            }
        }
        if !self.turn.urls.is_empty() && self.turn.secret.is_none() {
            return Err(ConfigError::TurnUrlWithoutSecret);
        }
        if self.turn.secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::WeakTurnSecret);
        }
        if let Some(port) = self.turn.port {
            if port != 0 && port == self.listen.port() {
                return Err(ConfigError::TurnPortTaken(port));
            }
        }
        if let Some(name) = &self.turn.server_name {
            if self.turn.port.is_some() {
                return Err(ConfigError::TurnPortAndServerName);
            }
            if self.tls.is_none() {
                return Err(ConfigError::TurnSharingWithoutTls(name.clone()));
            }
            let web = self.public_host();
            let is_dns_name = matches!(
                rustls::pki_types::ServerName::try_from(name.as_str()),
                Ok(rustls::pki_types::ServerName::DnsName(_))
            );
            if !is_dns_name || name.eq_ignore_ascii_case(&web) {
                return Err(ConfigError::BadTurnServerName(name.clone(), web));
            }
        }
        Ok(())
    }

    /// The host name participants reach this server by: `public_url`'s host, else the public
    /// IP (what TURN URLs and the relay's self-signed certificate name).
    pub fn public_host(&self) -> String {
        let from_url = self.public_url.as_deref().and_then(|url| {
            let rest = url.split_once("://")?.1;
            let authority = rest.split('/').next()?;
            let host = if authority.starts_with('[') {
                authority.split_inclusive(']').next()?
            } else {
                authority.split(':').next()?
            };
            (!host.is_empty()).then(|| host.to_owned())
        });
        from_url.unwrap_or_else(|| match self.public_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        })
    }

    /// The TCP port ICE-TCP binds, None when it is off. 0 means the port number the UDP socket
    /// gets (any free one when `media_port` is 0).
    pub fn media_tcp_port(&self) -> Option<u16> {
        match self.media_tcp {
            MediaTcp::SameAsUdp => Some(0),
            MediaTcp::Port(port) => Some(port),
            MediaTcp::Off => None,
        }
    }

    /// The port participants reach the web app on: `public_url`'s (its scheme's default when
    /// it names none), else the one the listener bound.
    pub fn public_port(&self, bound: SocketAddr) -> u16 {
        let from_url = self.public_url.as_deref().and_then(|url| {
            let (scheme, rest) = url.split_once("://")?;
            let authority = rest.split('/').next()?;
            let after_host = authority.rsplit_once(']').map_or(authority, |(_, a)| a);
            match after_host.rsplit_once(':') {
                Some((_, port)) => port.parse().ok(),
                None => Some(if scheme == "https" { 443 } else { 80 }),
            }
        });
        from_url.unwrap_or(bound.port())
    }

    /// The base of join links, given the address the listener actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{bound}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tls() -> ServerConfig {
        ServerConfig {
            tls: Some(TlsFiles {
                cert: "cert.pem".into(),
                key: "key.pem".into(),
            }),
            public_url: Some("https://meet.example.org".into()),
            ..ServerConfig::default()
        }
    }

    fn sharing(config: ServerConfig, name: &str) -> Result<(), ConfigError> {
        let mut config = config;
        config.turn.server_name = Some(name.into());
        config.validate()
    }

    #[test]
    fn the_relay_shares_the_https_port_only_under_a_name_of_its_own() {
        assert!(sharing(with_tls(), "turn.example.org").is_ok());
        // Plain HTTP has no ClientHello to route by.
        let plain = ServerConfig::default();
        assert!(matches!(
            sharing(plain, "turn.example.org"),
            Err(ConfigError::TurnSharingWithoutTls(_))
        ));
        // The web app's own name, any case, or an address (no SNI is sent for one).
        for name in ["meet.example.org", "MEET.example.org", "203.0.113.10", ""] {
            assert!(
                matches!(
                    sharing(with_tls(), name),
                    Err(ConfigError::BadTurnServerName(..))
                ),
                "{name:?}"
            );
        }
        let mut both = with_tls();
        both.turn.port = Some(5349);
        assert!(matches!(
            sharing(both, "turn.example.org"),
            Err(ConfigError::TurnPortAndServerName)
        ));
    }

    #[test]
    fn the_public_port_is_the_urls_then_the_bound_one() {
        let bound: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let with_url = |url: &str| ServerConfig {
            public_url: Some(url.into()),
            ..ServerConfig::default()
        };
        assert_eq!(with_url("https://meet.example.org").public_port(bound), 443);
        assert_eq!(with_url("http://meet.example.org").public_port(bound), 80);
        assert_eq!(
            with_url("https://meet.example.org:8443/x").public_port(bound),
            8443
        );
        assert_eq!(with_url("https://[2001:db8::1]").public_port(bound), 443);
        assert_eq!(
            with_url("https://[2001:db8::1]:9443").public_port(bound),
            9443
        );
        assert_eq!(ServerConfig::default().public_port(bound), 8443);
    }
}
