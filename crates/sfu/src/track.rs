use std::time::Instant;

use str0m::media::{MediaKind, Mid};

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
}

impl Subscription {
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
