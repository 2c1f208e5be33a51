use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

use std::collections::{BTreeSet, HashMap};

use str0m::media::{Mid, Rid};
use str0m::rtp::Ssrc;

use crate::track::{
    PublishedTrack, Subscription, SubscriptionState, TrackId, TrackKind, TrackSource, TrackSummary,
};
use crate::{ParticipantId, RoomId};

/// One participant's PeerConnection and what flows over it.
pub(crate) struct Participant {
    pub id: ParticipantId,
    pub room: RoomId,
    pub rtc: Rtc,
    pub published: Vec<PublishedTrack>,
    /// What the participant said each of its sending m-lines carries.
    pub declared_sources: HashMap<Mid, TrackSource>,
    /// Sources the meeting policy stopped: nothing from them is forwarded.
    pub blocked: BTreeSet<TrackSource>,
    pub subscriptions: Vec<Subscription>,
    /// The server's own offer awaiting the participant's answer.
    pub pending_offer: Option<SdpPendingOffer>,
    /// The participant's first offer has been answered: the SFU may now send offers.
    pub negotiated: bool,
    pub connected: bool,
    /// When its first offer was applied: the connect timeout runs from there. Before that the
    /// SFU does not time the participant out (signaling removes it if it leaves).
    pub offered_at: Option<Instant>,
    pub last_input: Option<Instant>,
    /// When str0m wants to be polled next.
    pub next_rtc_timeout: Instant,
    /// Queued for polling in the current drive.
    pub dirty: bool,
    /// Which m-line (and simulcast layer) each incoming SSRC belongs to: a participant has a
    /// handful, so a short list beats asking str0m for every packet.
    rx_streams: Vec<(Ssrc, Mid, Option<Rid>)>,
    /// The participant's latest downlink estimate from str0m's TWCC bandwidth estimator.
    pub bwe_bps: Option<u64>,
    /// The most the participant asked to receive (`video_layout.max_kbps`).
    pub max_receive_bps: Option<u64>,
    /// What the participant's bandwidth estimator was last told to probe for.
    pub desired_bps: u64,
    /// Probes asked of str0m for this participant's downlink.
    pub probe: ProbeRequests,
}

/// When the SFU last asked str0m to probe a downlink, and how long it waits before the next.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProbeRequests {
    pub requested_at: Option<Instant>,
    /// The estimate when it asked: a probe that did not raise it backs the next one off.
    pub estimate_before: Option<u64>,
    pub interval: std::time::Duration,
}

impl Participant {
    pub fn new(id: ParticipantId, room: RoomId, rtc: Rtc, now: Instant) -> Self {
        Participant {
            id,
            room,
            rtc,
            published: Vec::new(),
            declared_sources: HashMap::new(),
            blocked: BTreeSet::new(),
            subscriptions: Vec::new(),
            pending_offer: None,
            negotiated: false,
            connected: false,
            offered_at: None,
            last_input: None,
            next_rtc_timeout: now,
            dirty: false,
            rx_streams: Vec::new(),
            bwe_bps: None,
            max_receive_bps: None,
            desired_bps: 0,
            probe: ProbeRequests::default(),
        }
    }

    /// The m-line and simulcast RID an incoming RTP stream belongs to.
    pub fn rx_stream(&mut self, ssrc: Ssrc) -> Option<(Mid, Option<Rid>)> {
        if let Some((_, mid, rid)) = self.rx_streams.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((*mid, *rid));
        }
        let mut direct = self.rtc.direct_api();
        let stream = direct.stream_rx(&ssrc)?;
        let (mid, rid) = (stream.mid(), stream.rid());
        self.rx_streams.push((ssrc, mid, rid));
        Some((mid, rid))
    }

    /// Builds an offer for every subscription change, unless one is already out.
    pub fn offer_if_needed(&mut self) -> Option<(String, Vec<TrackSummary>)> {
        if !self.negotiated || self.pending_offer.is_some() {
            return None;
        }
        let mut change = self.rtc.sdp_api();
        for sub in &mut self.subscriptions {
            match sub.state {
                SubscriptionState::ToOpen => {
                    let stream_id = format!("p{}", sub.source.publisher.0);
                    let mid = change.add_media(
                        MediaKind::from(sub.kind),
                        Direction::SendOnly,
                        Some(stream_id),
                        None,
                        None,
                    );
                    sub.state = SubscriptionState::Opening(mid);
                }
                SubscriptionState::ToStop(mid) => {
                    change.stop_media(mid);
                    sub.state = SubscriptionState::Stopping(mid);
                }
                _ => {}
            }
        }
        let (offer, pending) = change.apply()?;
        self.pending_offer = Some(pending);
        Some((offer.to_sdp_string(), self.track_summaries()))
    }

    /// The remote tracks this participant receives once its pending offer is applied.
    pub fn track_summaries(&self) -> Vec<TrackSummary> {
        self.subscriptions
            .iter()
            .filter_map(|sub| match sub.state {
                SubscriptionState::Opening(mid) | SubscriptionState::Open(mid) => {
                    Some(TrackSummary {
                        mid: mid.to_string(),
                        publisher: sub.source.publisher,
                        kind: sub.kind,
                        source: sub.track_source,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// The participant answered our offer: what was opening is open, what was stopping is
    /// gone. Returns the video tracks that just opened: they need a keyframe.
    pub fn offer_answered(&mut self) -> Vec<TrackId> {
        let mut opened_video = Vec::new();
        for sub in &mut self.subscriptions {
            if let SubscriptionState::Opening(mid) = sub.state {
                sub.state = SubscriptionState::Open(mid);
                if sub.kind == TrackKind::Video {
                    sub.current = None;
                    opened_video.push(sub.source);
                }
            }
        }
        self.subscriptions
            .retain(|sub| !matches!(sub.state, SubscriptionState::Stopping(_)));
        opened_video
    }

    /// Our offer is void (refused, or the participant's own offer crossed it): redo it later.
    pub fn offer_voided(&mut self) {
        self.pending_offer = None;
        for sub in &mut self.subscriptions {
            sub.state = match sub.state {
                SubscriptionState::Opening(_) => SubscriptionState::ToOpen,
                SubscriptionState::Stopping(mid) => SubscriptionState::ToStop(mid),
                other => other,
            };
        }
    }

    /// The publisher of some subscribed tracks left: stop them.
    pub fn unsubscribe_publisher(&mut self, publisher: ParticipantId) {
        self.subscriptions.retain(|sub| {
            !(sub.source.publisher == publisher && sub.state == SubscriptionState::ToOpen)
        });
        for sub in &mut self.subscriptions {
            if sub.source.publisher != publisher {
                continue;
            }
            sub.state = match sub.state {
                SubscriptionState::Opening(mid) | SubscriptionState::Open(mid) => {
                    SubscriptionState::ToStop(mid)
                }
                other => other,
            };
        }
    }
}
