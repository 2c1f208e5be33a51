use std::net::SocketAddr;
use std::time::Duration;

/// How the SFU behaves. Validated by the server at start.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The address put in ICE candidates: where participants send media. With a single UDP
    /// port, this is the public IP and that port.
    pub candidate_addr: SocketAddr,
    /// The address the media socket is bound to (the source of every transmit).
    pub local_addr: SocketAddr,
    /// A connected participant from whom nothing (media, RTCP or STUN consent checks)
    /// arrives for this long has vanished. Browsers send consent checks every few seconds.
    pub media_timeout: Duration,
    /// A participant whose ICE has not connected this long after its first offer has vanished.
    pub connect_timeout: Duration,
    /// Minimum spacing of keyframe requests sent to one publisher's track, so that many
    /// subscribers asking at once cost the publisher one keyframe.
    pub keyframe_request_interval: Duration,
}

impl SfuConfig {
    pub fn new(candidate_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        SfuConfig {
            candidate_addr,
            local_addr,
            media_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(15),
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}
