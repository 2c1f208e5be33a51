//! Conclave's built-in TURN relay: TURN (RFC 8656) over TLS for participants whose network
//! lets only TLS on 443 out, relaying to this server's own SFU and nowhere else.
//!
//! The protocol is `turn-server-proto` (sans-IO). Around it, this crate adds what a relay that
//! faces the whole internet needs and that crate leaves to its user:
//! - [`credentials`]: ephemeral TURN REST credentials, checked on every request;
//! - [`gate`]: the pure policy run on each request before the protocol sees it (expiry, UDP
//!   allocations only, peers limited to the SFU's media addresses);
//! - [`framing`]: a bounded splitter of the TLS stream into frames;
//! - [`relay`]: the IO edge (TLS listener or a shared one's hand-over, relayed UDP sockets,
//!   timers);
//! - [`client`]: the other end, a TURN/TLS client for bots (`turn-client-proto`).

pub mod client;
pub mod credentials;
pub mod framing;
pub mod gate;
pub mod relay;
pub mod tls;

pub use credentials::{CredentialError, TurnCredential, TurnSecret};
pub use relay::{RelayConfig, RelayIntake, RelayStats, RunningRelay, TurnRelay};
