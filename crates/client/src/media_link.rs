//! How a bot's media reaches the SFU: UDP datagrams; ICE-TCP (RFC 6544) where every
//! datagram travels on one TCP connection framed per RFC 4571 (a 2-byte length before each);
//! or a TURN relay over TLS (the `turns:` server in the bot's welcome), for networks that let
//! only TLS out. Tests and load runs exercise all three.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::net::{Protocol, TcpType};
use str0m::Candidate;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;
use turn::client::{TurnServerSpec, TurnTlsClient};

/// Which path a bot's media takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP to the media port (a host candidate).
    #[default]
    Udp,
    /// ICE-TCP to the SFU's passive TCP candidate (an active candidate of our own).
    Tcp,
    /// A relayed candidate on the `turns:` server the welcome names.
    TurnTls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::TurnTls => "turn-tls",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown transport {0:?} (udp, tcp or turn-tls)")]
pub struct UnknownTransport(String);

impl std::str::FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "turn-tls" => Ok(Transport::TurnTls),
            other => Err(UnknownTransport(other.into())),
        }
    }
}

/// RFC 4571 frames carry at most 65535 bytes.
const MAX_FRAME: usize = u16::MAX as usize;
/// How long a TCP connect may take before ICE is left to try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, transmits are dropped this long instead of connecting again:
/// str0m retransmits its checks, and each connect attempt would hold up the bot's loop.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// The bot's end of its media path.
pub struct MediaLink {
    /// The address of our local ICE candidate: what str0m sends from and receives on.
    local: SocketAddr,
    path: Path,
}

enum Path {
    Udp(UdpSocket),
    /// Connected when str0m first sends to the SFU's passive candidate.
    Tcp {
        connection: Option<(SocketAddr, Framed<TcpStream, LengthDelimitedCodec>)>,
        failed_at: Option<Instant>,
    },
    Turn(Box<TurnTlsClient>),
}

fn rfc4571() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

impl MediaLink {
    /// Opens the local end of `transport` on `local_ip`; for TURN, allocates on the first
    /// `turns:` server of `ice_servers` (the welcome's).
    pub async fn open(
        transport: Transport,
        local_ip: IpAddr,
        ice_servers: &[proto::IceServer],
    ) -> Result<MediaLink, String> {
        match transport {
            Transport::Udp => {
                let socket = bind_udp(SocketAddr::new(local_ip, 0)).map_err(|e| e.to_string())?;
                Ok(MediaLink {
                    local: socket.local_addr().map_err(|e| e.to_string())?,
                    path: Path::Udp(socket),
                })
            }
            // An active candidate's port is 9, the discard port (RFC 6544 §4.5): the real
            // one is whatever connect() picks.
            Transport::Tcp => Ok(MediaLink {
                local: SocketAddr::new(local_ip, 9),
                path: Path::Tcp {
                    connection: None,
                    failed_at: None,
                },
            }),
            Transport::TurnTls => {
                let spec = turns_server(ice_servers)
                    .ok_or("the welcome names no turns: server (is --turn-port set?)")?;
                let client = TurnTlsClient::allocate(&spec)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(MediaLink {
                    local: client.relayed_addr(),
                    path: Path::Turn(Box::new(client)),
                })
            }
        }
    }

    pub fn transport(&self) -> Transport {
        match self.path {
            Path::Udp(_) => Transport::Udp,
            Path::Tcp { .. } => Transport::Tcp,
            Path::Turn(_) => Transport::TurnTls,
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self.path {
            // A relayed candidate's protocol is the allocation's, not the TLS connection's.
            Path::Udp(_) | Path::Turn(_) => Protocol::Udp,
            Path::Tcp { .. } => Protocol::Tcp,
        }
    }

    /// Where str0m should see every received datagram addressed to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The ICE candidate to offer for this link.
    pub fn candidate(&self) -> Result<Candidate, String> {
        match self.path {
            Path::Udp(_) => Candidate::host(self.local, "udp").map_err(|e| e.to_string()),
            Path::Tcp { .. } => Candidate::builder()
                .tcp()
                .host(self.local)
                .tcptype(TcpType::Active)
                .build()
                .map_err(|e| e.to_string()),
            Path::Turn(ref client) => Candidate::relayed(self.local, client.local_addr(), "udp")
                .map_err(|e| e.to_string()),
        }
    }

    /// Sends one datagram to `destination`. Over TCP it is queued on the connection (opened
    /// now if need be) until [`MediaLink::flush`].
    pub async fn send(&mut self, destination: SocketAddr, contents: &[u8]) {
        match &mut self.path {
            Path::Udp(socket) => {
                if let Err(e) = socket.send_to(contents, destination).await {
                    debug!("media send failed: {e}");
                }
            }
            Path::Tcp {
                connection,
                failed_at,
            } => {
                if connection.as_ref().is_none_or(|(to, _)| *to != destination) {
                    if failed_at.is_some_and(|at| at.elapsed() < CONNECT_BACKOFF) {
                        return;
                    }
                    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(destination))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            *connection = Some((destination, Framed::new(stream, rfc4571())));
                            *failed_at = None;
                        }
                        Ok(Err(e)) => {
                            debug!("ICE-TCP connect to {destination} failed: {e}");
                            *failed_at = Some(Instant::now());
                            return;
                        }
                        Err(_) => {
                            debug!("ICE-TCP connect to {destination} timed out");
                            *failed_at = Some(Instant::now());
                            return;
                        }
                    }
                }
                if let Some((_, framed)) = connection {
                    if let Err(e) = framed.feed(contents).await {
                        debug!("ICE-TCP send failed: {e}");
                        *connection = None;
                    }
                }
            }
            Path::Turn(client) => client.send(destination, contents),
        }
    }

    /// Writes out what [`MediaLink::send`] queued (TCP and TURN; a no-op on UDP).
    pub async fn flush(&mut self) {
        match &mut self.path {
            Path::Tcp { connection, .. } => {
                if let Some((_, framed)) = connection {
                    if let Err(e) = SinkExt::<&[u8]>::flush(framed).await {
                        debug!("ICE-TCP send failed: {e}");
                        *connection = None;
                    }
                }
            }
            Path::Turn(client) => {
                if let Err(e) = client.flush().await {
                    debug!("TURN send failed: {e}");
                }
            }
            Path::Udp(_) => {}
        }
    }

    /// Waits for the next datagram: its sender and its length in `buf` (grown to fit).
    /// Cancel-safe, so it can sit in a `select!`. Over TCP before a connection exists it
    /// waits forever; a closed connection is an error.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> std::io::Result<(SocketAddr, usize)> {
        match &mut self.path {
            Path::Udp(socket) => {
                let (n, source) = socket.recv_from(buf).await?;
                Ok((source, n))
            }
            Path::Tcp {
                connection: Some((peer, framed)),
                ..
            } => match framed.next().await {
                Some(Ok(frame)) => {
                    if buf.len() < frame.len() {
                        buf.resize(frame.len(), 0);
                    }
                    buf[..frame.len()].copy_from_slice(&frame);
                    Ok((*peer, frame.len()))
                }
                Some(Err(e)) => Err(e),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the SFU closed the ICE-TCP connection",
                )),
            },
            Path::Tcp {
                connection: None, ..
            } => std::future::pending().await,
            Path::Turn(client) => client
                .recv(buf)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e)),
        }
    }
}

/// The first `turns:` URL of the welcome's ICE servers, with its credential.
fn turns_server(ice_servers: &[proto::IceServer]) -> Option<TurnServerSpec> {
    ice_servers.iter().find_map(|server| {
        let url = server.urls.iter().find(|u| u.starts_with("turns:"))?;
        Some(TurnServerSpec {
            url: url.clone(),
            username: server.username.clone(),
            credential: server.credential.clone(),
            certificate_sha256: server.certificate_sha256.clone(),
        })
    })
}

/// Binds the bot's media socket with a kernel receive buffer big enough for a large meeting's
/// bursts (the default ~200 KiB drops packets when a loaded machine schedules the bot late).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    const BUFFER: usize = 1024 * 1024;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_print_their_cli_names() {
        for t in [Transport::Udp, Transport::Tcp, Transport::TurnTls] {
            assert_eq!(t.as_str().parse::<Transport>().ok(), Some(t));
        }
        assert!("turn".parse::<Transport>().is_err());
    }

    #[tokio::test]
    async fn tcp_datagrams_are_framed_per_rfc4571_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sfu = listener.local_addr().unwrap();
        let mut link = MediaLink::open(Transport::Tcp, "127.0.0.1".parse().unwrap(), &[])
            .await
            .unwrap();
        assert_eq!(link.local().port(), 9);
        assert!(link
            .candidate()
            .unwrap()
            .to_sdp_string()
            .contains("tcptype active"));
        link.send(sfu, b"hello").await;
        link.send(sfu, b"ice").await;
        link.flush().await;
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut wire = [0u8; 12];
        peer.read_exact(&mut wire).await.unwrap();
        assert_eq!(&wire, b"\x00\x05hello\x00\x03ice");
        peer.write_all(b"\x00\x02ok").await.unwrap();
        let mut buf = vec![0u8; 1];
        let (from, n) = link.recv(&mut buf).await.unwrap();
        assert_eq!((from, &buf[..n]), (sfu, &b"ok"[..]));
        drop(peer);
        assert!(link.recv(&mut buf).await.is_err());
    }
}
