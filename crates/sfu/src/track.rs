use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt};

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
    pub last_keyframe_request: Option<Instant>,
    /// The codec of the last payload type seen on this track: looked up in the publisher's
    /// codec config once per payload type, not once per packet.
    pub codec: Option<(Pt, PayloadParams)>,
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

/// A subscriber's copy of one remote track.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub source: TrackId,
    pub kind: TrackKind,
    pub track_source: TrackSource,
    pub state: SubscriptionState,
    /// Video waits for a keyframe before anything is forwarded: delta frames before it are
    /// undecodable for this subscriber and would only cost bandwidth.
    pub awaiting_keyframe: bool,
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
}

impl Subscription {
    pub fn new(source: TrackId, kind: TrackKind, track_source: TrackSource) -> Self {
        Subscription {
            source,
            kind,
            track_source,
            state: SubscriptionState::ToOpen,
            awaiting_keyframe: false,
            pt_map: None,
            seq_offset: None,
            next_seq: 0,
            seq_floor: 0,
            resync: false,
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
