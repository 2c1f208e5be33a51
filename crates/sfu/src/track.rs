use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use crate::layers::{Layer, RateMeter};
use crate::ParticipantId;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

impl From<MediaKind> for TrackKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        }
    }
}

impl From<TrackKind> for MediaKind {
    fn from(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        }
    }
}

/// A track as named in an offer to a subscriber: which of the subscriber's m-lines carries
/// which publisher's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSummary {
    pub mid: String,
    pub publisher: ParticipantId,
    pub kind: TrackKind,
    pub source: TrackSource,
}

/// What a published track carries, as its publisher declared it (see
/// [`crate::Sfu::set_track_sources`]); undeclared audio is a microphone, undeclared video a
/// camera, so a client cannot slip a screen share past the screen-share permission.
pub use proto::TrackSource;

pub(crate) fn default_source(kind: TrackKind) -> TrackSource {
    match kind {
        TrackKind::Audio => TrackSource::Microphone,
        TrackKind::Video => TrackSource::Camera,
    }
}

/// Identifies a published track across the SFU: its publisher and the publisher's m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TrackId {
    pub publisher: ParticipantId,
    pub mid: Mid,
}

/// A track a participant publishes.
#[derive(Debug)]
pub(crate) struct PublishedTrack {
    pub mid: Mid,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// Its simulcast layers, smallest first; one layer without a RID when it has none.
    pub layers: Vec<PublishedLayer>,
    /// The codec of the last payload type seen on this track: looked up in the publisher's
    /// codec config once per payload type, not once per packet.
    pub codec: Option<(Pt, PayloadParams)>,
}

impl PublishedTrack {
    /// The layer a packet with this RID belongs to (packets without one: the first).
    pub fn layer_of(&self, rid: Option<Rid>) -> Option<Layer> {
        match rid {
            None => Some(0),
            Some(rid) => self
                .layers
                .iter()
                .position(|l| l.rid == Some(rid))
                .and_then(|i| u8::try_from(i).ok()),
        }
    }

    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }
}

/// One simulcast layer of a published track (or the only stream of a plain one).
#[derive(Debug, Default)]
pub(crate) struct PublishedLayer {
    pub rid: Option<Rid>,
    pub meter: RateMeter,
    pub last_keyframe_request: Option<Instant>,
    /// The publisher was told to stop encoding it (no subscriber needs it).
    pub paused: bool,
    /// Since when no subscriber has needed it: paused after a grace period, so that a
    /// subscriber flipping between layers does not start and stop an encoder each time.
    pub unneeded_since: Option<Instant>,
}

/// Where a subscriber's copy of a remote track is in negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionState {
    /// Needs an m-line in the next offer.
    ToOpen,
    /// In an offer that awaits the subscriber's answer.
    Opening(Mid),
    /// Negotiated: media flows.
    Open(Mid),
    /// The publisher left: the m-line must be stopped in the next offer.
    ToStop(Mid),
    /// In an offer that stops it; gone once answered.
    Stopping(Mid),
}

/// How a subscriber shows a video track (from its `video_layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileHint {
    /// Not said: every layer may be sent.
    Unknown,
    /// Off screen: nothing is sent.
    Hidden,
    /// Rendered this many CSS pixels tall.
    Height(u32),
}

/// A subscriber's copy of one remote track.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub source: TrackId,
    pub kind: TrackKind,
    pub track_source: TrackSource,
    pub state: SubscriptionState,
    /// The layer being forwarded. `None` for video waiting for a keyframe (new, resumed after
    /// a mute, or switched off): delta frames before it are undecodable for this subscriber
    /// and would only cost bandwidth.
    pub current: Option<Layer>,
    /// The layer the allocator chose; a switch to it happens at its next keyframe, and until
    /// then `current` keeps flowing. `None`: forward nothing.
    pub target: Option<Layer>,
    /// How the subscriber shows this track.
    pub tile: TileHint,
    /// The last layer forwarded, which the timestamp and picture id offsets continue from.
    pub last_layer: Option<Layer>,
    /// Added to the publisher's RTP timestamps: layers have their own timestamp bases, so a
    /// switch must continue the subscriber's clock where the last layer left it.
    pub ts_offset: u32,
    /// The last timestamp sent and when, for the next switch.
    pub last_ts: Option<(u32, Instant)>,
    /// Added to VP8 picture ids and TL0PICIDX after a switch, so that the subscriber's
    /// decoder sees one continuous stream rather than a jump it may take for reordering.
    pub picture_id_offset: u16,
    pub tl0_offset: u8,
    pub last_picture_id: Option<(u16, u8)>,
    /// The last packet forwarded did not end its frame.
    pub mid_frame: bool,
    /// The subscriber's payload type for the publisher's last one (payload types are
    /// negotiated per PeerConnection, so they may differ).
    pub pt_map: Option<(Pt, Pt)>,
    /// Added to the publisher's extended sequence numbers to get this subscriber's: set when
    /// the first packet (or, for gated video, the first keyframe packet) is forwarded, so
    /// that the subscriber sees a contiguous sequence starting below 2^16 (its SRTP rollover
    /// counter starts at 0) and no gap for what the SFU chose not to forward.
    pub seq_offset: Option<i64>,
    /// One past the highest sequence number sent to this subscriber.
    pub next_seq: u64,
    /// The first sequence number after the last rebase.
    pub seq_floor: u64,
    /// Forwarding resumes after packets were withheld (a mute): rebase the sequence numbers.
    pub resync: bool,
    /// The SSRC of the subscriber's send stream on the forwarding m-line (whose MID an open
    /// subscription keeps), once looked up: str0m finds a stream by SSRC in a hash map but by
    /// MID only by walking every stream, which for every forwarded packet made the cost grow
    /// with the meeting's size.
    pub out_ssrc: Option<Ssrc>,
}

impl Subscription {
    pub fn new(source: TrackId, kind: TrackKind, track_source: TrackSource) -> Self {
        Subscription {
            source,
            kind,
            track_source,
            state: SubscriptionState::ToOpen,
            current: (kind == TrackKind::Audio).then_some(0),
            target: Some(0),
            tile: TileHint::Unknown,
            last_layer: None,
            ts_offset: 0,
            last_ts: None,
            picture_id_offset: 0,
            tl0_offset: 0,
            last_picture_id: None,
            mid_frame: false,
            pt_map: None,
            seq_offset: None,
            next_seq: 0,
            seq_floor: 0,
            resync: false,
            out_ssrc: None,
        }
    }

    /// The subscriber's sequence number for the publisher's `seq`, rebasing first when
    /// `rebase` (first packet, end of a keyframe gate, end of a mute). `None` for a straggler
    /// from before the last rebase: its number would collide with one already sent.
    pub fn map_seq(&mut self, seq: u64, rebase: bool) -> Option<u64> {
        let offset = match self.seq_offset {
            Some(offset) if !rebase => offset,
            previous => {
                // Continue right after the last packet sent; a first packet keeps the
                // publisher's low 16 bits (the subscriber's rollover counter starts at 0).
                let start = if previous.is_some() {
                    self.next_seq
                } else {
                    seq & 0xffff
                };
                self.seq_floor = start;
                let offset = start as i64 - seq as i64;
                self.seq_offset = Some(offset);
                offset
            }
        };
        let out = u64::try_from(seq as i64 + offset).ok()?;
        if out < self.seq_floor {
            return None;
        }
        self.next_seq = self.next_seq.max(out + 1);
        Some(out)
    }

    /// The subscriber's m-line for this track, once it has one.
    pub fn mid(&self) -> Option<Mid> {
        match self.state {
            SubscriptionState::ToOpen => None,
            SubscriptionState::Opening(m)
            | SubscriptionState::Open(m)
            | SubscriptionState::ToStop(m)
            | SubscriptionState::Stopping(m) => Some(m),
        }
    }

    /// Whether media for this track is written to the subscriber now.
    pub fn forwarding_mid(&self) -> Option<Mid> {
        match self.state {
            SubscriptionState::Open(m) => Some(m),
            _ => None,
        }
    }
}
