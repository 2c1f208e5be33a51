//! The JSON report a bot prints when it is done.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub name: String,
    pub participant_id: Option<u64>,
    pub received: Vec<ReceivedTrack>,
    pub errors: Vec<String>,
    pub sent: SentCounts,
    /// Times the bot lost its signaling connection and joined again.
    pub reconnects: u32,
    /// For each reconnect: milliseconds from losing the connection to media flowing again.
    pub reconnect_ms: Vec<u64>,
    /// End-to-end encryption: the last session's group state, counters over all sessions.
    pub e2ee: session::E2eeReport,
    /// Datagrams the emulated downlink dropped (0 without one).
    #[serde(default)]
    pub downlink_dropped: u64,
    /// The last active speakers the server named (by signaling name), most recent first.
    #[serde(default)]
    pub active_speakers: Vec<String>,
    /// Datagrams that arrived over the media connection (all sessions).
    #[serde(default)]
    pub received_datagrams: u64,
    /// The path media last connected over: `"udp"` or `"tcp"` (ICE-TCP); absent if it
    /// never connected.
    #[serde(default)]
    pub transport: Option<String>,
    /// The SFU's ICE candidates from its first answer: `"udp 203.0.113.7:10000"`,
    /// `"tcp 203.0.113.7:443"`.
    #[serde(default)]
    pub media_candidates: Vec<String>,
    /// The TURN URLs the welcome offered (`turns:host:443?transport=tcp`).
    #[serde(default)]
    pub turn_urls: Vec<String>,
    /// What arrived over the media connection while it was up (all sessions), in kbps.
    #[serde(default)]
    pub received_kbps: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SentCounts {
    pub audio: u64,
    pub video: u64,
}

/// What arrived from one sender on one kind of track.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReceivedTrack {
    pub from: String,
    pub participant_id: u64,
    pub kind: String,
    pub frames: u64,
    /// Frames whose bytes, once decrypted, are exactly what the sender (named by its MLS
    /// credential) must have sent at that position, in order.
    pub verified: u64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// Frames that arrived out of order (an RTP time not after the last one).
    pub out_of_order: u64,
    /// Video only: gaps of more than 500 ms between decodable frames.
    pub freezes: u64,
    /// Video only: delta frames before the first keyframe (useless to any decoder; a
    /// keyframe was requested instead). Not counted in `frames`.
    pub skipped_before_keyframe: u64,
    /// The SFU removed this track (its sender left).
    pub removed: bool,
    /// Video only: the simulcast layer received (the sender's clip bitrate) each time it
    /// changed, first one included.
    #[serde(default)]
    pub layer_changes: Vec<LayerChange>,
}

/// The received layer changed (found at a keyframe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerChange {
    /// Milliseconds since the bot started.
    pub at_ms: u64,
    pub kbps: u32,
}
