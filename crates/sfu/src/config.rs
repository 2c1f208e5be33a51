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
    /// The passive ICE-TCP candidate, beside the UDP one, for networks that drop UDP: the
    /// public IP and the TCP port the server accepts media connections on. None: UDP only.
    pub tcp_candidate_addr: Option<SocketAddr>,
    /// A connected participant from whom nothing (media, RTCP or STUN consent checks)
    /// arrives for this long has vanished. Browsers send consent checks every few seconds.
    pub media_timeout: Duration,
    /// A participant whose ICE has not connected this long after its first offer has vanished.
    pub connect_timeout: Duration,
    /// Minimum spacing of keyframe requests sent to one publisher's track, so that many
    /// subscribers asking at once cost the publisher one keyframe.
    pub keyframe_request_interval: Duration,
    /// Estimate each subscriber's downlink from its TWCC feedback (str0m's estimator, which
    /// also paces what it is sent). Without it a subscriber's link is taken to carry what it
    /// asks for (its tiles, last-N and its own `max_kbps` still apply).
    pub downlink_estimation: bool,
    /// A subscriber's downlink estimate before its TWCC feedback says otherwise.
    pub initial_downlink_bps: u64,
    /// Thumbnails (smallest layers) are sent within the downlink estimate, but never cut
    /// below this much: the estimate grows only by probing, which takes a few seconds after a
    /// join.
    pub thumbnail_floor_bps: u64,
    /// In rooms of more than `last_n_above` participants, only the `last_n` most recent
    /// speakers' cameras are sent above the smallest layer (screen shares always may be).
    pub last_n: usize,
    pub last_n_above: usize,
}

impl SfuConfig {
    pub fn new(candidate_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        SfuConfig {
            candidate_addr,
            local_addr,
            tcp_candidate_addr: None,
            media_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(15),
            keyframe_request_interval: Duration::from_millis(500),
            downlink_estimation: true,
            initial_downlink_bps: 1_000_000,
            thumbnail_floor_bps: 1_000_000,
            last_n: 4,
            last_n_above: 8,
        }
    }
}
