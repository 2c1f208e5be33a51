//! Conclave's selective forwarding unit as a pure state machine.
//!
//! The SFU owns one str0m [`Rtc`](str0m::Rtc) (one PeerConnection) per participant, in str0m's
//! RTP mode, routes every published RTP packet to the other participants of the same room
//! (str0m gives each subscriber its own SSRC, sequence numbers and SRTP, and answers its NACKs
//! from a resend cache), and renegotiates when tracks come and go. It never opens a socket, spawns a task or reads a clock: the IO edge
//! feeds it datagrams and the current time, and drains [`SfuOutput`]s (datagrams to send,
//! signaling for the participant, the next time it wants to be woken).
//!
//! Payloads stay opaque: with end-to-end encryption they are SFrame ciphertext behind the
//! clear codec payload descriptor (which is all keyframe gating reads), and the SFU only ever
//! shares them (by reference count) with subscribers.

mod config;
mod error;
mod layers;
mod participant;
mod sfu;
mod speakers;
mod track;

pub use config::SfuConfig;
pub use error::SfuError;
pub use sfu::{FrameTap, Sfu, SfuStats};
pub use track::{TrackKind, TrackSource, TrackSummary};

use std::net::SocketAddr;

/// A participant, as the SFU knows it. The IO edge chooses the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// A room: participants in one room receive each other's media and nobody else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u64);

/// How a datagram travels between a participant and the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// On the media UDP socket.
    Udp,
    /// On a TCP connection the participant opened to the SFU's passive ICE-TCP candidate
    /// (RFC 6544), framed per RFC 4571: one connection per remote address.
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the SFU wants done.
#[derive(Debug)]
pub enum SfuOutput {
    /// Send a datagram: on the UDP socket, or framed on the TCP connection from `destination`.
    Transmit {
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Tell a participant something through signaling.
    Signal {
        participant: ParticipantId,
        event: SfuEvent,
    },
}

/// Signaling the SFU produces for a participant.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// An SDP offer to forward to the participant; its answer goes to
    /// [`Sfu::handle_answer`]. `tracks` lists every remote track it will receive.
    Offer {
        sdp: String,
        tracks: Vec<TrackSummary>,
    },
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The participant's media connection is gone (no traffic within the timeout, or ICE
    /// failed). The SFU has already removed it and unpublished its tracks.
    Vanished,
    /// Who speaks in the participant's room now, most recent first (from RFC 6464 audio
    /// levels). Sent when it changes, at most every 300 ms.
    ActiveSpeakers { speakers: Vec<ParticipantId> },
    /// Which simulcast layers (RIDs) of the participant's video m-line `mid` anyone receives:
    /// the publisher encodes those and pauses the rest.
    PublishLayers { mid: String, active: Vec<String> },
}
