//! The relay's own policy, applied to every frame a client sends before `turn-server-proto`
//! sees it. Pure: the time is passed in.
//!
//! - A request naming a USERNAME must carry an unexpired REST username; the password the
//!   protocol then checks MESSAGE-INTEGRITY against is derived from it ([`Verdict::Pass`]
//!   carries it), so a forged credential fails integrity and an expired one never reaches it.
//! - Allocations are UDP only: the SFU takes media over UDP, and TCP allocations (RFC 6062)
//!   would let a client open TCP connections from this machine.
//! - Every peer named in CreatePermission, ChannelBind and Send is one of the SFU's own media
//!   addresses (for CreatePermission, which is per IP, its address): this is never an open
//!   relay, and never a way into the operator's network.

use std::net::SocketAddr;

use turn_server_proto::stun::types::attribute::{
    AttributeStaticType, ErrorCode, Userhash, Username,
};
use turn_server_proto::stun::types::message::StunParseError;
use turn_server_proto::stun::types::message::{
    Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::types::attribute::{RequestedTransport, XorPeerAddress};
use turn_server_proto::types::message::{
    ALLOCATE, CHANNEL_BIND, CONNECT, CONNECTION_BIND, CREATE_PERMISSION, SEND,
};

use crate::credentials::{check_username, CredentialError, TurnSecret};

/// IANA protocol number of UDP, as REQUESTED-TRANSPORT names it.
const UDP: u8 = 17;

/// What the gate decided about one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the frame to the protocol; first make sure it knows this user.
    Pass { user: Option<(String, String)> },
    /// Drop the frame; answer with `reply` when it was a request.
    Refuse {
        reason: Refusal,
        reply: Option<Vec<u8>>,
    },
}

/// Why a frame was refused (counted per kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a STUN message")]
    Unparseable,
    #[error("{0}")]
    Credential(CredentialError),
    #[error("only UDP allocations are offered (asked for protocol {0})")]
    NotUdp(u8),
    #[error("TCP allocations (RFC 6062) are not offered")]
    TcpAllocation,
    #[error("relaying to {0} refused: only the SFU's media addresses are peers")]
    PeerNotAllowed(SocketAddr),
    /// RFC 8489's anonymous USERHASH hides the REST username, and with it the expiry that
    /// must be checked on every request: a hash the relay learnt once would otherwise keep
    /// authenticating after its credential expired.
    #[error("USERHASH is not accepted: send the REST username")]
    Userhash,
}

impl Refusal {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Unparseable => "unparseable",
            Refusal::Credential(CredentialError::Expired { .. }) => "expired",
            Refusal::Credential(_) | Refusal::Userhash => "bad_username",
            Refusal::NotUdp(_) | Refusal::TcpAllocation => "transport",
            Refusal::PeerNotAllowed(_) => "peer",
        }
    }
}

/// The policy's inputs that do not change while the relay runs.
#[derive(Debug, Clone)]
pub struct Gate {
    pub secret: TurnSecret,
    /// The longest credential life accepted (what the server mints, plus slack).
    pub max_ttl_secs: u64,
    /// The SFU's media addresses: the only peers.
    pub peers: Vec<SocketAddr>,
}

impl Gate {
    /// Judges one frame from a client at `now_unix`.
    pub fn judge(&self, frame: &[u8], now_unix: u64) -> Verdict {
        // ChannelData (first two bits 01) goes only to a channel ChannelBind bound, and every
        // ChannelBind passed this gate.
        if frame.first().is_some_and(|b| b >> 6 == 0b01) {
            return Verdict::Pass { user: None };
        }
        let Ok(message) = Message::from_bytes(frame) else {
            return Verdict::Refuse {
                reason: Refusal::Unparseable,
                reply: None,
            };
        };
        if message.has_attribute(Userhash::TYPE) {
            return refuse(&message, Refusal::Userhash, ErrorCode::BAD_REQUEST);
        }
        let user = match message.attribute::<Username>() {
            Ok(username) => {
                let name = username.username();
                if let Err(error) = check_username(name, now_unix, self.max_ttl_secs) {
                    return refuse(
                        &message,
                        Refusal::Credential(error),
                        ErrorCode::UNAUTHORIZED,
                    );
                }
                Some((name.to_owned(), self.secret.password_for(name)))
            }
            Err(_) => None,
        };
        let method = message.method();
        if method == ALLOCATE {
            if let Ok(transport) = message.attribute::<RequestedTransport>() {
                if transport.protocol() != UDP {
                    return refuse(
                        &message,
                        Refusal::NotUdp(transport.protocol()),
                        ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    );
                }
            }
        } else if method == CONNECT || method == CONNECTION_BIND {
            return refuse(&message, Refusal::TcpAllocation, ErrorCode::FORBIDDEN);
        } else if method == CREATE_PERMISSION || method == CHANNEL_BIND || method == SEND {
            let whole_address = method != CREATE_PERMISSION;
            let transaction = message.transaction_id();
            for n in 0.. {
                let peer = match message.nth_attribute::<XorPeerAddress>(n) {
                    Ok(peer) => peer,
                    Err(StunParseError::MissingAttribute(_)) => break,
                    Err(_) => {
                        return refuse(&message, Refusal::Unparseable, ErrorCode::BAD_REQUEST)
                    }
                };
                let peer = peer.addr(transaction);
                let allowed = self.peers.iter().any(|sfu| {
                    sfu.ip() == peer.ip() && (!whole_address || sfu.port() == peer.port())
                });
                if !allowed {
                    return refuse(
                        &message,
                        Refusal::PeerNotAllowed(peer),
                        ErrorCode::FORBIDDEN,
                    );
                }
            }
        }
        Verdict::Pass { user }
    }
}

/// Refuses `message`; a request gets an error response with `code` (unsigned: the gate does
/// not hold the protocol's nonce state), an indication nothing.
fn refuse(message: &Message<'_>, reason: Refusal, code: u16) -> Verdict {
    let reply = message.has_class(MessageClass::Request).then(|| {
        let mut builder = Message::builder_error(message, MessageWriteVec::new());
        let text = reason.to_string();
        let error = ErrorCode::builder(code)
            .reason(&text)
            .build()
            .or_else(|_| ErrorCode::builder(code).build());
        if let Ok(error) = error {
            // Adding the first attribute of a fresh message cannot fail.
            let _ = builder.add_attribute(&error);
        }
        builder.finish()
    });
    Verdict::Refuse { reason, reply }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn_server_proto::stun::types::message::TransactionId;

    const NOW: u64 = 1_800_000_000;

    fn gate() -> Gate {
        Gate {
            secret: TurnSecret::new(*b"0123456789abcdef").unwrap(),
            max_ttl_secs: 3600,
            peers: vec!["198.18.0.1:10000".parse().unwrap()],
        }
    }

    fn request(
        method: turn_server_proto::stun::types::message::Method,
        username: Option<&str>,
        peers: &[&str],
    ) -> Vec<u8> {
        let mut builder = Message::builder_request(method, MessageWriteVec::new());
        let transaction: TransactionId = builder.transaction_id();
        if let Some(name) = username {
            builder
                .add_attribute(&Username::new(name).unwrap())
                .unwrap();
        }
        for peer in peers {
            let peer = XorPeerAddress::new(peer.parse().unwrap(), transaction);
            builder.add_attribute(&peer).unwrap();
        }
        builder.finish()
    }

    fn error_code(reply: &[u8]) -> u16 {
        let message = Message::from_bytes(reply).unwrap();
        assert!(message.has_class(MessageClass::Error));
        message.attribute::<ErrorCode>().unwrap().code()
    }

    #[test]
    fn a_fresh_username_passes_with_its_derived_password() {
        let name = format!("{}:alice", NOW + 60);
        let verdict = gate().judge(&request(ALLOCATE, Some(&name), &[]), NOW);
        let password = gate().secret.password_for(&name);
        assert_eq!(
            verdict,
            Verdict::Pass {
                user: Some((name, password))
            }
        );
    }

    #[test]
    fn an_expired_username_is_refused_with_401() {
        let name = format!("{}:alice", NOW - 1);
        let Verdict::Refuse { reason, reply } =
            gate().judge(&request(ALLOCATE, Some(&name), &[]), NOW)
        else {
            panic!("expired passed");
        };
        assert_eq!(reason.kind(), "expired");
        assert_eq!(error_code(&reply.unwrap()), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn a_userhash_that_hides_the_expiry_is_refused_with_400() {
        let mut builder = Message::builder_request(
            turn_server_proto::types::message::REFRESH,
            MessageWriteVec::new(),
        );
        builder.add_attribute(&Userhash::new([7; 32])).unwrap();
        let Verdict::Refuse { reason, reply } = gate().judge(&builder.finish(), NOW) else {
            panic!("a userhash passed");
        };
        assert_eq!(reason, Refusal::Userhash);
        assert_eq!(error_code(&reply.unwrap()), ErrorCode::BAD_REQUEST);
    }

    #[test]
    fn peers_other_than_the_sfu_are_refused_with_403() {
        let name = format!("{}:alice", NOW + 60);
        let sfu_host = request(CREATE_PERMISSION, Some(&name), &["198.18.0.1:9"]);
        assert!(matches!(gate().judge(&sfu_host, NOW), Verdict::Pass { .. }));
        let sfu = request(CHANNEL_BIND, Some(&name), &["198.18.0.1:10000"]);
        assert!(matches!(gate().judge(&sfu, NOW), Verdict::Pass { .. }));
        for (method, peers) in [
            (CREATE_PERMISSION, &["198.18.0.1:1", "10.0.0.1:10000"][..]),
            (CHANNEL_BIND, &["198.18.0.1:22"][..]),
            (CHANNEL_BIND, &["127.0.0.1:10000"][..]),
        ] {
            let Verdict::Refuse { reason, reply } =
                gate().judge(&request(method, Some(&name), peers), NOW)
            else {
                panic!("{peers:?} passed");
            };
            assert_eq!(reason.kind(), "peer");
            assert_eq!(error_code(&reply.unwrap()), ErrorCode::FORBIDDEN);
        }
    }

    #[test]
    fn tcp_allocations_and_garbage_are_refused() {
        let mut builder = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        builder.add_attribute(&RequestedTransport::new(6)).unwrap();
        let tcp = builder.finish();
        let Verdict::Refuse { reason, .. } = gate().judge(&tcp, NOW) else {
            panic!("tcp allocation passed");
        };
        assert_eq!(reason, Refusal::NotUdp(6));
        let connect = request(CONNECT, None, &["198.18.0.1:10000"]);
        assert!(matches!(
            gate().judge(&connect, NOW),
            Verdict::Refuse {
                reason: Refusal::TcpAllocation,
                ..
            }
        ));
        assert!(matches!(
            gate().judge(&[0u8; 20], NOW),
            Verdict::Refuse {
                reason: Refusal::Unparseable,
                ..
            }
        ));
    }
}
