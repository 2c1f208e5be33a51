use crate::ParticipantId;

/// Why the SFU refused an input. None of these disturb other participants.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("participant {0:?} is not in the SFU")]
    UnknownParticipant(ParticipantId),
    #[error("participant {0:?} is already in the SFU")]
    DuplicateParticipant(ParticipantId),
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("SDP rejected: {0}")]
    SdpRejected(String),
    #[error("an answer arrived but no offer is pending")]
    NoPendingOffer,
    #[error("a datagram from {0} belongs to no participant")]
    UnknownSource(std::net::SocketAddr),
    #[error("not a STUN, DTLS, RTP or RTCP datagram")]
    UnknownDatagram,
}
