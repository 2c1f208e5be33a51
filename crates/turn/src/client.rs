//! The client side of TURN over TLS, for Conclave's bots (`conclave bot --transport turn-tls`):
//! one TLS connection to a relay, one UDP allocation on it, and datagrams to and from peers
//! through it. The protocol is `turn-client-proto` (sans-IO); this is its IO edge.
//!
//! The relay's certificate is checked against the SHA-256 fingerprint the participant's
//! `welcome` names (the built-in relay's, self-signed or not), or else against the system's
//! trusted roots (an external relay such as coturn with a real certificate).
//!
//! Data goes as Send indications, never ChannelData: `turn-client-proto` does not pad
//! ChannelData over TCP as RFC 8656 §12.5 requires, and a relay that follows the RFC would
//! misread the stream. The 32 bytes more per datagram do not matter for a bot.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::debug;
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::auth::Feature;
use turn_client_proto::stun::Instant;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::{TransportType, TurnCredentials};

/// How long connecting, the TLS handshake and the allocation may take together.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the TLS stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Datagrams received but not yet taken: beyond this the oldest are dropped, as a UDP socket's
/// buffer would.
const MAX_QUEUED: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TurnClientError {
    #[error("not a TURN over TLS URL (turns:host:port?transport=tcp): {0}")]
    BadUrl(String),
    #[error("cannot reach the TURN relay {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS with the TURN relay failed: {0}")]
    Tls(String),
    #[error("the TURN relay refused the allocation (expired or wrong credentials?)")]
    Refused,
    #[error("the TURN relay closed the connection")]
    Closed,
    #[error("no allocation within {0:?}")]
    Timeout(Duration),
}

/// A `turns:` server as a participant's `welcome` names it.
#[derive(Debug, Clone)]
pub struct TurnServerSpec {
    pub url: String,
    pub username: String,
    pub credential: String,
    /// The relay certificate's fingerprint (`ab:cd:…`), when the welcome pins one.
    pub certificate_sha256: Option<String>,
}

/// `turns:host:port?transport=tcp` → (host, port). Port 443 when absent, as browsers assume
/// for `turns:` (RFC 7065).
pub fn parse_turns_url(url: &str) -> Result<(String, u16), TurnClientError> {
    let bad = || TurnClientError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("turns:").ok_or_else(bad)?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !query.is_empty() && query != "transport=tcp" {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port: `[::1]`.
        Some((host, port)) if !port.ends_with(']') => {
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (authority, 443),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// One UDP allocation on a TURN relay, over TLS.
pub struct TurnTlsClient {
    client: TurnClientTcp,
    stream: TlsStream<TcpStream>,
    base: std::time::Instant,
    relayed: SocketAddr,
    /// Bytes for the relay, written out by [`TurnTlsClient::flush`].
    out: Vec<u8>,
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    read_buf: Vec<u8>,
    /// Peers whose permission has been asked for.
    asked: Vec<IpAddr>,
}

impl TurnTlsClient {
    /// Connects, handshakes and allocates a relayed UDP address.
    pub async fn allocate(spec: &TurnServerSpec) -> Result<TurnTlsClient, TurnClientError> {
        tokio::time::timeout(ALLOCATE_TIMEOUT, Self::allocate_now(spec))
            .await
            .map_err(|_| TurnClientError::Timeout(ALLOCATE_TIMEOUT))?
    }

    async fn allocate_now(spec: &TurnServerSpec) -> Result<TurnTlsClient, TurnClientError> {
        let (host, port) = parse_turns_url(&spec.url)?;
        let stream = connect_tls(
            &format!("{host}:{port}"),
            &host,
            spec.certificate_sha256.as_deref(),
        )
        .await?;
        let (tcp, _) = stream.get_ref();
        let (local, remote) = (
            tcp.local_addr()
                .map_err(|e| TurnClientError::Tls(e.to_string()))?,
            tcp.peer_addr()
                .map_err(|e| TurnClientError::Tls(e.to_string()))?,
        );
        let mut config = TurnConfig::new(TurnCredentials::new(&spec.username, &spec.credential));
        config.set_allocation_transport(TransportType::Udp);
        // The relay must read the REST username (its expiry) on every request; see
        // `gate::Refusal::Userhash`.
        config.set_anonymous_username(Feature::Disabled);
        let mut link = TurnTlsClient {
            client: TurnClientTcp::allocate(local, remote, config),
            stream,
            base: std::time::Instant::now(),
            relayed: local,
            out: Vec::new(),
            received: VecDeque::new(),
            read_buf: vec![0; READ_CHUNK],
            asked: Vec::new(),
        };
        loop {
            link.service();
            link.flush().await?;
            while let Some(event) = link.client.poll_event() {
                match event {
                    TurnEvent::AllocationCreated(TransportType::Udp, relayed) => {
                        link.relayed = relayed;
                        return Ok(link);
                    }
                    TurnEvent::AllocationCreateFailed(_) => return Err(TurnClientError::Refused),
                    other => debug!(?other, "TURN event while allocating"),
                }
            }
            // The protocol paces its requests (a retry after a 401 waits its turn): read
            // until the relay answers or the protocol's next deadline, whichever comes first.
            let wait = match link.client.poll(link.now()) {
                TurnPollRet::Closed => return Err(TurnClientError::Refused),
                TurnPollRet::WaitUntil(at) => at.saturating_duration_since(link.now()),
                _ => Duration::ZERO,
            };
            if let Ok(read) = tokio::time::timeout(wait, link.read_some()).await {
                read?;
            }
        }
    }

    /// The address the relay allocated: this side's relayed ICE candidate.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// The local end of the TLS connection (the relayed candidate's base).
    pub fn local_addr(&self) -> SocketAddr {
        self.client.local_addr()
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    /// Runs the client's timers (allocation and permission refreshes) and queues what it
    /// wants sent. Called on every send and flush: a meeting sends many times a second, far
    /// more often than the minutes between refreshes.
    fn service(&mut self) {
        let now = self.now();
        let _ = self.client.poll(now);
        while let Some(transmit) = self.client.poll_transmit(now) {
            self.out.extend_from_slice(transmit.data.as_ref());
        }
    }

    /// Queues `data` for `peer` through the relay. The first datagram to a new peer asks for
    /// its permission and is dropped (ICE retransmits its checks).
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let now = self.now();
        if !self.client.have_permission(TransportType::Udp, peer.ip()) {
            if !self.asked.contains(&peer.ip()) {
                self.asked.push(peer.ip());
                if let Err(e) = self
                    .client
                    .create_permission(TransportType::Udp, peer.ip(), now)
                {
                    debug!("TURN permission for {peer}: {e:?}");
                }
            }
            self.service();
            return;
        }
        match self.client.send_to(TransportType::Udp, peer, data, now) {
            Ok(Some(transmit)) => self.out.extend_from_slice(&transmit.build().data),
            Ok(None) => {}
            Err(e) => debug!("TURN send to {peer}: {e:?}"),
        }
        self.service();
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), TurnClientError> {
        self.service();
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|_| TurnClientError::Closed)?;
        self.stream
            .flush()
            .await
            .map_err(|_| TurnClientError::Closed)
    }

    /// The next datagram from a peer: its sender and bytes, copied into `buf` (grown to fit).
    /// Cancel-safe: what was read stays queued.
    pub async fn recv(
        &mut self,
        buf: &mut Vec<u8>,
    ) -> Result<(SocketAddr, usize), TurnClientError> {
        loop {
            if let Some((peer, data)) = self.received.pop_front() {
                if buf.len() < data.len() {
                    buf.resize(data.len(), 0);
                }
                buf[..data.len()].copy_from_slice(&data);
                return Ok((peer, data.len()));
            }
            self.read_some().await?;
        }
    }

    /// Reads what the relay sent and hands it to the protocol.
    async fn read_some(&mut self) -> Result<(), TurnClientError> {
        let n = self
            .stream
            .read(&mut self.read_buf)
            .await
            .map_err(|_| TurnClientError::Closed)?;
        if n == 0 {
            return Err(TurnClientError::Closed);
        }
        let now = self.now();
        let transmit = turn_client_proto::api::Transmit::new(
            &self.read_buf[..n],
            TransportType::Tcp,
            self.client.remote_addr(),
            self.client.local_addr(),
        );
        let mut got = Vec::new();
        match self.client.recv(transmit, now) {
            TurnRecvRet::PeerData(data) => got.push((data.peer, data.data().to_vec())),
            TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => {}
        }
        while let Some(data) = self.client.poll_recv(now) {
            got.push((data.peer, data.data().to_vec()));
        }
        for datagram in got {
            if self.received.len() == MAX_QUEUED {
                self.received.pop_front();
            }
            self.received.push_back(datagram);
        }
        Ok(())
    }
}

/// A TLS connection to a relay at `addr` named `host`, its certificate checked against
/// `pinned` (a fingerprint) when given, else against the system's roots.
pub async fn connect_tls(
    addr: &str,
    host: &str,
    pinned: Option<&str>,
) -> Result<TlsStream<TcpStream>, TurnClientError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| TurnClientError::Connect {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| TurnClientError::BadUrl(host.to_owned()))?;
    TlsConnector::from(Arc::new(tls_config(pinned)?))
        .connect(name, tcp)
        .await
        .map_err(|e| TurnClientError::Tls(e.to_string()))
}

fn tls_config(pinned: Option<&str>) -> Result<rustls::ClientConfig, TurnClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnClientError::Tls(e.to_string()))?;
    let config = match pinned {
        Some(pinned) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                fingerprint: pinned.to_ascii_lowercase(),
                provider,
            }))
            .with_no_client_auth(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// Accepts exactly the certificate the welcome names: the server that admitted the participant
/// vouches for its own relay, so a CA adds nothing here.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if crate::tls::fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the TURN relay's certificate is not the one the welcome names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_urls_parse_and_others_are_refused() {
        assert_eq!(
            parse_turns_url("turns:meet.example.org:443?transport=tcp").unwrap(),
            ("meet.example.org".to_owned(), 443)
        );
        assert_eq!(
            parse_turns_url("turns:198.18.0.1:5349").unwrap(),
            ("198.18.0.1".to_owned(), 5349)
        );
        assert_eq!(
            parse_turns_url("turns:[::1]:5349").unwrap(),
            ("::1".to_owned(), 5349)
        );
        assert_eq!(
            parse_turns_url("turns:meet.example.org").unwrap(),
            ("meet.example.org".to_owned(), 443)
        );
        for bad in [
            "turn:meet.example.org:3478",
            "turns:meet.example.org:443?transport=udp",
            "turns::443",
            "turns:host:port",
        ] {
            assert!(parse_turns_url(bad).is_err(), "{bad}");
        }
    }
}
