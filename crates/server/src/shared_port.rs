//! The HTTPS listener's TLS: each connection's ClientHello is read before a certificate is
//! chosen, so that one port (443) can carry both the web app and the built-in TURN relay.
//!
//! Networks that let only TLS to 443 out are common, and a machine often has one address:
//! the relay cannot have 443 of its own. A TURN/TLS client names the relay's host in its
//! server name (SNI) while a browser loading the app names the app's, so the listener routes
//! by that name, as nginx's `ssl_preread` would in front of coturn. Everything that is not
//! the relay's name (no name at all included) is the web app's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::debug;

/// A TLS handshake must finish within this (slowloris), the relay's own deadline too.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The relay's half of a shared port.
#[derive(Clone)]
pub struct RelayRoute {
    /// The server name that selects the relay, compared without case.
    pub server_name: String,
    /// The relay's door; its TLS (the operator's certificate, which must name `server_name`)
    /// finishes the handshake.
    pub intake: turn::RelayIntake,
}

/// The acceptor of the HTTPS listener: TLS for the web app, or the connection handed whole to
/// the relay when its ClientHello names the relay.
#[derive(Clone)]
pub struct SharedPortAcceptor {
    pub https: Arc<rustls::ServerConfig>,
    pub relay: Option<RelayRoute>,
}

/// Whether a ClientHello's server name selects the relay.
fn names_relay(server_name: Option<&str>, relay_name: &str) -> bool {
    server_name.is_some_and(|name| name.eq_ignore_ascii_case(relay_name))
}

impl SharedPortAcceptor {
    async fn handshake(self, stream: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
        let client = stream.peer_addr()?;
        let _ = stream.set_nodelay(true);
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        match self.relay {
            Some(relay) if names_relay(hello.server_name(), &relay.server_name) => {
                let tls = start.into_stream(relay.intake.tls_config()).await?;
                debug!(%client, "TLS connection on the HTTPS port handed to the TURN relay");
                relay.intake.hand_over(tls, client);
                Ok(None)
            }
            _ => Ok(Some(start.into_stream(self.https).await?)),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for SharedPortAcceptor {
    type Stream = TlsStream<TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // An error here closes just this connection (axum-server drops it); a connection
            // handed to the relay is not the web app's either.
            match tokio::time::timeout(HANDSHAKE_DEADLINE, this.handshake(stream)).await {
                Ok(Ok(Some(tls))) => Ok((tls, service)),
                Ok(Ok(None)) => Err(io::Error::other("handed to the TURN relay")),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake too slow",
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::names_relay;

    #[test]
    fn only_the_relays_own_name_reaches_the_relay() {
        assert!(names_relay(Some("turn.example.org"), "turn.example.org"));
        assert!(names_relay(Some("TURN.Example.org"), "turn.example.org"));
        assert!(!names_relay(Some("meet.example.org"), "turn.example.org"));
        assert!(!names_relay(
            Some("turn.example.org.evil"),
            "turn.example.org"
        ));
        // No server name (an IP address was dialled): the web app's.
        assert!(!names_relay(None, "turn.example.org"));
    }
}
