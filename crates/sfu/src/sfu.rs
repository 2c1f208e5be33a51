use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaAdded, Mid, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive, TcpType};
use str0m::rtp::{
    Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor,
};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info, warn};

use crate::layers::{self, Layer, TrackDemand};
use crate::participant::Participant;
use crate::speakers::SpeakerDetector;
use crate::track::{
    default_source, PublishedLayer, PublishedTrack, Subscription, SubscriptionState, TileHint,
    TrackId, TrackKind, TrackSource,
};
use crate::{ParticipantId, RoomId, SfuConfig, SfuError, SfuEvent, SfuOutput, Transport};

use proto::ABS_CAPTURE_TIME_EXT_ID;

/// Counters for the server's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    pub datagrams_in: u64,
    /// Datagrams from an address no participant owns (or not STUN/DTLS/RTP at all).
    pub datagrams_rejected: u64,
    pub frames_in: u64,
    pub frames_forwarded: u64,
    /// Frames dropped because the meeting policy stopped their source (a host muted it).
    pub frames_blocked: u64,
    pub keyframe_requests: u64,
    /// Subscribers moved from one simulcast layer of a track to another (at a keyframe).
    pub layer_switches: u64,
}

/// Sees the payload of every RTP packet the SFU forwards, as the SFU sees it. For tests that
/// prove the server handles only ciphertext.
pub type FrameTap = Box<dyn FnMut(&[u8]) + Send>;

/// The SFU: every participant's PeerConnection and the routes between them.
pub struct Sfu {
    frame_tap: Option<FrameTap>,
    config: SfuConfig,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomId, Vec<ParticipantId>>,
    /// Which participant a remote address (on UDP or on a TCP connection) belongs to,
    /// learned from STUN.
    by_address: HashMap<(Transport, SocketAddr), ParticipantId>,
    dirty: Vec<ParticipantId>,
    /// Scratch space for one participant's events while it is polled.
    events: Vec<Event>,
    outputs: VecDeque<SfuOutput>,
    stats: SfuStats,
    /// Active speakers per room, from the audio levels publishers send.
    speakers: HashMap<RoomId, SpeakerDetector>,
    /// When layers are next chosen for every subscriber.
    next_allocation: Option<Instant>,
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        Sfu {
            frame_tap: None,
            config,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            by_address: HashMap::new(),
            dirty: Vec::new(),
            events: Vec::new(),
            outputs: VecDeque::new(),
            stats: SfuStats::default(),
            speakers: HashMap::new(),
            next_allocation: None,
        }
    }

    pub fn set_frame_tap(&mut self, tap: FrameTap) {
        self.frame_tap = Some(tap);
    }

    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Adds a participant to a room. It receives every track already published there once
    /// its first offer is answered.
    pub fn add_participant(
        &mut self,
        now: Instant,
        room: RoomId,
        id: ParticipantId,
    ) -> Result<(), SfuError> {
        if self.participants.contains_key(&id) {
            return Err(SfuError::DuplicateParticipant(id));
        }
        let mut extensions = ExtensionMap::standard();
        extensions.set(ABS_CAPTURE_TIME_EXT_ID, Extension::AbsoluteCaptureTime);
        let rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_extension_map(extensions)
            // Forward RTP packets as they come (SSRC, sequence number and payload type
            // rewritten by str0m per subscriber, payload shared by reference count) instead of
            // depacketizing every frame and packetizing it again for each subscriber.
            .set_rtp_mode(true);
        // Each subscriber's downlink estimate (TWCC feedback) decides its layers.
        let rtc = if self.config.downlink_estimation {
            rtc.enable_bwe(Some(Bitrate::bps(self.config.initial_downlink_bps)))
        } else {
            rtc
        };
        let mut rtc = rtc.build(now);
        let candidate = Candidate::host(self.config.candidate_addr, "udp")
            .map_err(|e| SfuError::SdpRejected(format!("bad candidate address: {e}")))?;
        rtc.add_local_candidate(candidate);
        if let Some(addr) = self.config.tcp_candidate_addr {
            // Passive: the participant connects to us (RFC 6544); Firefox takes only that type.
            let tcp = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| SfuError::SdpRejected(format!("bad TCP candidate address: {e}")))?;
            rtc.add_local_candidate(tcp);
        }

        let mut participant = Participant::new(id, room, rtc, now);
        let members = self.rooms.entry(room).or_default();
        for other in members.iter() {
            if let Some(publisher) = self.participants.get(other) {
                for track in &publisher.published {
                    participant.subscriptions.push(Subscription::new(
                        TrackId {
                            publisher: *other,
                            mid: track.mid,
                        },
                        track.kind,
                        track.source,
                    ));
                }
            }
        }
        members.push(id);
        self.participants.insert(id, participant);
        Ok(())
    }

    /// Removes a participant and unpublishes its tracks for everyone else.
    pub fn remove_participant(&mut self, now: Instant, id: ParticipantId) -> Result<(), SfuError> {
        let Some(mut participant) = self.participants.remove(&id) else {
            return Err(SfuError::UnknownParticipant(id));
        };
        participant.rtc.disconnect();
        self.by_address.retain(|_, owner| *owner != id);
        if let Some(detector) = self.speakers.get_mut(&participant.room) {
            detector.forget(id);
        }
        if let Some(members) = self.rooms.get_mut(&participant.room) {
            members.retain(|m| *m != id);
            for other in members.iter() {
                if let Some(p) = self.participants.get_mut(other) {
                    p.unsubscribe_publisher(id);
                    mark_dirty(&mut self.dirty, p);
                }
            }
            if members.is_empty() {
                self.rooms.remove(&participant.room);
                self.speakers.remove(&participant.room);
            }
        }
        self.drive(now);
        Ok(())
    }

    /// Records what the participant's sending m-lines carry (by mid), before its offer.
    pub fn set_track_sources(
        &mut self,
        id: ParticipantId,
        sources: impl IntoIterator<Item = (String, TrackSource)>,
    ) -> Result<(), SfuError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant(id))?;
        participant.declared_sources = sources
            .into_iter()
            .map(|(mid, source)| (Mid::from(mid.as_str()), source))
            .collect();
        Ok(())
    }

    /// Stops (or resumes) forwarding everything a participant publishes from `source`: the
    /// server-side half of a host's mute. Resumed video waits for a fresh keyframe.
    pub fn set_blocked(
        &mut self,
        now: Instant,
        id: ParticipantId,
        source: TrackSource,
        blocked: bool,
    ) -> Result<(), SfuError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant(id))?;
        let changed = if blocked {
            participant.blocked.insert(source)
        } else {
            participant.blocked.remove(&source)
        };
        if !changed || blocked {
            return Ok(());
        }
        let resumed: Vec<(Mid, TrackKind)> = participant
            .published
            .iter()
            .filter(|t| t.source == source)
            .map(|t| (t.mid, t.kind))
            .collect();
        for (mid, kind) in resumed {
            for subscriber in self.participants.values_mut() {
                for sub in subscriber.subscriptions.iter_mut() {
                    if sub.source.publisher == id && sub.source.mid == mid {
                        // The subscriber's sequence continues where it stopped: a gap the
                        // size of the mute would only make its jitter buffer wait for packets
                        // that never come.
                        sub.resync = true;
                        if kind == TrackKind::Video {
                            sub.current = None;
                        }
                    }
                }
            }
            if kind == TrackKind::Video {
                for layer in 0..=layers::top_layer(self.layer_count(id, mid)) {
                    self.request_keyframe(now, id, mid, layer, KeyframeRequestKind::Pli);
                }
            }
        }
        self.drive(now);
        Ok(())
    }

    /// Applies the participant's SDP offer and returns the answer.
    pub fn handle_offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: &str,
    ) -> Result<String, SfuError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant(id))?;
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        // str0m voids our own outstanding offer when it accepts theirs (glare: theirs wins).
        let had_pending = participant.pending_offer.is_some();
        let answer = participant
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::SdpRejected(e.to_string()))?;
        if had_pending {
            participant.offer_voided();
        }
        if !participant.negotiated {
            participant.offered_at = Some(now);
        }
        participant.negotiated = true;
        mark_dirty(&mut self.dirty, participant);
        self.drive(now);
        Ok(answer.to_sdp_string())
    }

    /// Applies the participant's answer to the SFU's last offer.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: &str,
    ) -> Result<(), SfuError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant(id))?;
        if participant.pending_offer.is_none() {
            return Err(SfuError::NoPendingOffer);
        }
        // A malformed answer leaves the offer pending, so that a good answer can still follow.
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let pending = participant
            .pending_offer
            .take()
            .ok_or(SfuError::NoPendingOffer)?;
        let result = participant.rtc.sdp_api().accept_answer(pending, answer);
        let opened_video = match result {
            Ok(()) => participant.offer_answered(),
            Err(_) => {
                participant.offer_voided();
                Vec::new()
            }
        };
        mark_dirty(&mut self.dirty, participant);
        if !opened_video.is_empty() {
            // New tracks start at the layer the budget allows, not at the smallest.
            self.allocate(now, id);
        }
        for source in opened_video {
            let layer = self.target_layer(id, source).unwrap_or(0);
            self.request_keyframe(
                now,
                source.publisher,
                source.mid,
                layer,
                KeyframeRequestKind::Pli,
            );
        }
        self.drive(now);
        result.map_err(|e| SfuError::SdpRejected(e.to_string()))
    }

    /// Feeds one datagram from the media socket.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), SfuError> {
        let id = self.input(now, Transport::Udp, source, destination, bytes)?;
        if let Some(participant) = self.participants.get_mut(&id) {
            mark_dirty(&mut self.dirty, participant);
        }
        self.drive(now);
        Ok(())
    }

    /// Feeds datagrams that arrived together (one `recvmmsg`, or the frames read from TCP
    /// connections in one turn). Each sender is polled right after its datagram, as str0m
    /// requires, but the subscribers its media went to are polled once for the whole batch:
    /// their packets leave together. `destination` is the candidate they arrived on (the UDP
    /// or the TCP one). Reports each datagram refused, with its source and why.
    pub fn handle_receive_batch<'a>(
        &mut self,
        now: Instant,
        transport: Transport,
        destination: SocketAddr,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
        mut refused: impl FnMut(SocketAddr, SfuError),
    ) {
        let mut failed = Vec::new();
        for (source, bytes) in datagrams {
            match self.input(now, transport, source, destination, bytes) {
                Ok(id) => {
                    if !self.poll_participant(now, id) {
                        failed.push(id);
                    }
                }
                Err(e) => refused(source, e),
            }
        }
        for id in failed {
            self.vanish(now, id);
        }
        self.drive(now);
    }

    /// Hands a datagram to the PeerConnection it belongs to, without polling it.
    fn input(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> Result<ParticipantId, SfuError> {
        self.stats.datagrams_in += 1;
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            self.stats.datagrams_rejected += 1;
            return Err(SfuError::UnknownDatagram);
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: match transport {
                    Transport::Udp => Protocol::Udp,
                    Transport::Tcp => Protocol::Tcp,
                },
                source,
                destination,
                contents,
            },
        );
        let owner = match self.by_address.get(&(transport, source)) {
            Some(id) => Some(*id),
            None => {
                let found = self
                    .participants
                    .values()
                    .find(|p| p.rtc.accepts(&input))
                    .map(|p| p.id);
                if let Some(id) = found {
                    self.by_address.insert((transport, source), id);
                }
                found
            }
        };
        let Some(participant) = owner.and_then(|id| self.participants.get_mut(&id)) else {
            self.stats.datagrams_rejected += 1;
            return Err(SfuError::UnknownSource(source));
        };
        participant.last_input = Some(now);
        if let Err(e) = participant.rtc.handle_input(input) {
            debug!(participant = participant.id.0, "input refused: {e}");
        }
        Ok(participant.id)
    }

    /// Advances time: str0m's timers, and the liveness of every participant.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut vanished = Vec::new();
        for participant in self.participants.values_mut() {
            let silent_since = participant.last_input.or(participant.offered_at);
            let limit = if participant.connected {
                self.config.media_timeout
            } else {
                self.config.connect_timeout
            };
            let timed_out =
                silent_since.is_some_and(|since| now.saturating_duration_since(since) >= limit);
            if timed_out || !participant.rtc.is_alive() {
                vanished.push(participant.id);
                continue;
            }
            if participant.next_rtc_timeout <= now {
                if let Err(e) = participant.rtc.handle_input(Input::Timeout(now)) {
                    debug!(participant = participant.id.0, "timeout input refused: {e}");
                }
                mark_dirty(&mut self.dirty, participant);
            }
        }
        for id in vanished {
            self.vanish(now, id);
        }
        if self.next_allocation.is_none_or(|at| at <= now) {
            self.next_allocation = Some(now + ALLOCATION_INTERVAL);
            let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
            for id in ids {
                self.allocate(now, id);
            }
            self.pause_unneeded_layers(now);
        }
        self.drive(now);
    }

    /// When [`Sfu::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.participants
            .values()
            .map(|p| {
                let limit = if p.connected {
                    self.config.media_timeout
                } else {
                    self.config.connect_timeout
                };
                match p.last_input.or(p.offered_at) {
                    Some(silent_since) => p.next_rtc_timeout.min(silent_since + limit),
                    None => p.next_rtc_timeout,
                }
            })
            .chain(
                self.next_allocation
                    .filter(|_| !self.participants.is_empty()),
            )
            .min()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<SfuOutput> {
        self.outputs.pop_front()
    }

    fn vanish(&mut self, now: Instant, id: ParticipantId) {
        info!(participant = id.0, "media connection vanished");
        if self.remove_participant(now, id).is_ok() {
            self.outputs.push_back(SfuOutput::Signal {
                participant: id,
                event: SfuEvent::Vanished,
            });
        }
    }

    /// Polls every participant touched by an input until str0m has nothing more to say,
    /// routing media between them as it goes.
    fn drive(&mut self, now: Instant) {
        let mut failed = Vec::new();
        while let Some(id) = self.dirty.pop() {
            if !self.poll_participant(now, id) {
                failed.push(id);
            }
        }
        for id in failed {
            self.vanish(now, id);
        }
        self.report_speakers(now);
    }

    /// Tells every member of a room when its active speakers change (rate limited per room).
    fn report_speakers(&mut self, now: Instant) {
        for (room, detector) in &mut self.speakers {
            let Some(speakers) = detector.poll_change(now) else {
                continue;
            };
            for member in self.rooms.get(room).into_iter().flatten() {
                self.outputs.push_back(SfuOutput::Signal {
                    participant: *member,
                    event: SfuEvent::ActiveSpeakers {
                        speakers: speakers.clone(),
                    },
                });
            }
        }
    }

    /// Polls one participant until str0m reports its next timeout and handles its events.
    /// Returns false if its PeerConnection failed.
    fn poll_participant(&mut self, now: Instant, id: ParticipantId) -> bool {
        let Some(participant) = self.participants.get_mut(&id) else {
            return true;
        };
        participant.dirty = false;
        if let Some((sdp, tracks)) = participant.offer_if_needed() {
            let tracks = tracks.into_iter().collect();
            self.outputs.push_back(SfuOutput::Signal {
                participant: id,
                event: SfuEvent::Offer { sdp, tracks },
            });
        }
        // Reused across polls: most polls yield one event (a packet to forward), and a fresh
        // Vec would cost an allocation each time.
        let mut events = std::mem::take(&mut self.events);
        let mut alive = true;
        let mut due_rounds = 0;
        loop {
            match participant.rtc.poll_output() {
                // str0m asks for a timeout that is already due when media was just queued
                // (its send queues are snapshot on timeouts). Handling it here sends the
                // packets in this drive, in the same `sendmmsg` batch, instead of one trip
                // around the media loop (and a scan of every participant) later. Bounded, so
                // a timer str0m keeps due cannot spin.
                Ok(Output::Timeout(t)) if t <= now && due_rounds < DUE_TIMEOUT_ROUNDS => {
                    due_rounds += 1;
                    if let Err(e) = participant.rtc.handle_input(Input::Timeout(now)) {
                        debug!(participant = id.0, "timeout input refused: {e}");
                    }
                }
                Ok(Output::Timeout(t)) => {
                    participant.next_rtc_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.outputs.push_back(SfuOutput::Transmit {
                    transport: match t.proto {
                        Protocol::Udp => Transport::Udp,
                        // str0m sends only on the pairs of our candidates: UDP or passive TCP.
                        _ => Transport::Tcp,
                    },
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(event)) => events.push(event),
                Err(e) => {
                    warn!(participant = id.0, "peer connection failed: {e}");
                    alive = false;
                    break;
                }
            }
        }
        for event in events.drain(..) {
            self.handle_event(now, id, event);
        }
        self.events = events;
        alive
    }

    fn handle_event(&mut self, now: Instant, id: ParticipantId, event: Event) {
        match event {
            Event::Connected => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.connected = true;
                }
                self.outputs.push_back(SfuOutput::Signal {
                    participant: id,
                    event: SfuEvent::Connected,
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Removal happens on the next timeout, outside of this drive.
                if let Some(p) = self.participants.get_mut(&id) {
                    p.rtc.disconnect();
                }
            }
            Event::MediaAdded(added) if added.direction.is_receiving() => {
                self.publish(id, &added);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(p) = self.participants.get_mut(&id) {
                    debug!(
                        participant = id.0,
                        bps = estimate.as_u64(),
                        "downlink estimate"
                    );
                    p.bwe_bps = Some(estimate.as_u64());
                }
            }
            Event::RtpPacket(packet) => self.forward(now, id, packet),
            Event::KeyframeRequest(request) => self.relay_keyframe_request(now, id, request),
            _ => {}
        }
    }

    /// A participant published a track: everyone else in its room subscribes.
    fn publish(&mut self, id: ParticipantId, added: &MediaAdded) {
        let (mid, kind) = (added.mid, TrackKind::from(added.kind));
        let Some(publisher) = self.participants.get_mut(&id) else {
            return;
        };
        let source = publisher
            .declared_sources
            .get(&mid)
            .copied()
            .filter(|s| (*s == TrackSource::Microphone) == (kind == TrackKind::Audio))
            .unwrap_or(default_source(kind));
        publisher.published.push(PublishedTrack {
            mid,
            kind,
            source,
            layers: simulcast_layers(added),
            codec: None,
        });
        let room = publisher.room;
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        for other in members.iter().filter(|m| **m != id) {
            if let Some(subscriber) = self.participants.get_mut(other) {
                subscriber.subscriptions.push(Subscription::new(
                    TrackId { publisher: id, mid },
                    kind,
                    source,
                ));
                mark_dirty(&mut self.dirty, subscriber);
            }
        }
    }

    /// Forwards one RTP packet from a publisher to every subscriber of its track (and layer).
    /// Frames are counted by their last packet (the marker bit for video; every audio packet
    /// is a frame).
    fn forward(&mut self, now: Instant, publisher_id: ParticipantId, packet: RtpPacket) {
        let Some(publisher) = self.participants.get_mut(&publisher_id) else {
            return;
        };
        let Some((mid, rid)) = publisher.rx_stream(packet.header.ssrc) else {
            return;
        };
        let room = publisher.room;
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let Some(layer) = track.layer_of(rid.or(packet.header.ext_vals.rid)) else {
            return;
        };
        if let Some(published) = track.layers.get_mut(usize::from(layer)) {
            published
                .meter
                .record(now, packet.payload.len() + RTP_OVERHEAD_BYTES);
        }
        let pt = packet.header.payload_type;
        let params = match track.codec {
            Some((known, params)) if known == pt => params,
            _ => {
                let Some(params) = publisher
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == pt)
                    .copied()
                else {
                    return;
                };
                track.codec = Some((pt, params));
                params
            }
        };
        let kind = track.kind;
        let ends_frame = kind == TrackKind::Audio || packet.header.marker;
        let frames = u64::from(ends_frame);
        self.stats.frames_in += frames;
        if let Some(tap) = &mut self.frame_tap {
            tap(&packet.payload);
        }
        if publisher.blocked.contains(&track.source) {
            self.stats.frames_blocked += frames;
            return;
        }
        if let Some(level) = packet.header.ext_vals.audio_level {
            self.speakers
                .entry(room)
                .or_default()
                .observe(publisher_id, level, now);
        }
        let source = TrackId {
            publisher: publisher_id,
            mid,
        };
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        // Only the header extensions that describe the media travel on; MID, RID and
        // transport-wide sequence numbers belong to the publisher's PeerConnection.
        let ext = &packet.header.ext_vals;
        let ext_vals = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            video_content_type: ext.video_content_type,
            abs_capture_time: ext.abs_capture_time,
            ..ExtensionValues::default()
        };
        // The clear VP8 payload descriptor: keyframe starts and the picture ids that a layer
        // switch renumbers. Parsed once for all subscribers.
        let vp8 = (params.spec().codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&packet.payload).ok())
            .flatten();
        let mut keyframe_start: Option<bool> = None;
        let mut needs_keyframe = false;
        for subscriber_id in members.iter().filter(|m| **m != publisher_id) {
            let Some(subscriber) = self.participants.get_mut(subscriber_id) else {
                continue;
            };
            let Some(subscription) = subscriber
                .subscriptions
                .iter_mut()
                .find(|s| s.source == source)
            else {
                continue;
            };
            let Some(out_mid) = subscription.forwarding_mid() else {
                continue;
            };
            let Some(target) = subscription.target else {
                continue;
            };
            let mut took_over = false;
            if subscription.current != Some(layer) {
                // Not the layer being forwarded: it takes over at its keyframe if it is the
                // one wanted, and is ignored otherwise.
                if target != layer {
                    continue;
                }
                let starts_keyframe = *keyframe_start.get_or_insert_with(|| match &vp8 {
                    Some(d) => d.starts_keyframe(&packet.payload),
                    None => starts_keyframe(&params, &packet.payload),
                });
                if !starts_keyframe {
                    needs_keyframe = true;
                    continue;
                }
                if subscription.current.is_some() && subscription.mid_frame {
                    // The old layer's last frame is cut short: leave a gap in the sequence
                    // so that the subscriber drops it instead of gluing it to this keyframe.
                    subscription.next_seq += 1;
                }
                subscription.current = Some(layer);
                took_over = true;
            }
            let rebase = took_over || subscription.resync;
            let out_pt = match subscription.pt_map {
                Some((from, to)) if from == pt => to,
                _ => {
                    let Some(to) = subscriber
                        .rtc
                        .codec_config()
                        .match_params(params)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    subscription.pt_map = Some((pt, to));
                    to
                }
            };
            let Some(seq) = subscription.map_seq(*packet.seq_no, rebase) else {
                continue;
            };
            subscription.resync = false;
            if subscription.last_layer != Some(layer) {
                if subscription.last_layer.is_some() {
                    self.stats.layer_switches += 1;
                }
                continue_stream(subscription, layer, &packet, vp8.as_ref(), now);
            }
            let time = packet.header.timestamp.wrapping_add(subscription.ts_offset);
            subscription.last_ts = Some((time, now));
            subscription.mid_frame = kind == TrackKind::Video && !packet.header.marker;
            let vp8_patch = vp8.as_ref().and_then(|d| renumber(subscription, d));
            let Some(ssrc) = send_ssrc(&mut subscriber.rtc, &mut subscription.out_ssrc, out_mid)
            else {
                continue;
            };
            let mut direct = subscriber.rtc.direct_api();
            let Some(stream) = direct.stream_tx(&ssrc) else {
                // Gone since it was remembered: look it up again next time.
                subscription.out_ssrc = None;
                continue;
            };
            let mut write = RtpWrite::new(
                out_pt,
                seq.into(),
                time,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .ext_vals(ext_vals.clone())
            // Video answers NACKs from str0m's resend cache; late audio is useless.
            .nackable(kind == TrackKind::Video);
            if let Some(patch) = vp8_patch {
                write = write.vp8_patch(patch);
            }
            stream.write_rtp(write);
            self.stats.frames_forwarded += frames;
            mark_dirty(&mut self.dirty, subscriber);
        }
        if needs_keyframe {
            self.request_keyframe(now, publisher_id, mid, layer, KeyframeRequestKind::Pli);
        }
    }

    /// A subscriber asked for a keyframe on one of its m-lines: pass it to the publisher, for
    /// the layer the subscriber gets.
    fn relay_keyframe_request(
        &mut self,
        now: Instant,
        subscriber_id: ParticipantId,
        request: KeyframeRequest,
    ) {
        let Some((source, layer)) = self.participants.get(&subscriber_id).and_then(|s| {
            s.subscriptions
                .iter()
                .find(|sub| sub.mid() == Some(request.mid))
                .map(|sub| (sub.source, sub.current.or(sub.target).unwrap_or(0)))
        }) else {
            return;
        };
        self.request_keyframe(now, source.publisher, source.mid, layer, request.kind);
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher_id: ParticipantId,
        mid: Mid,
        layer: Layer,
        kind: KeyframeRequestKind,
    ) {
        let interval = self.config.keyframe_request_interval;
        let Some(publisher) = self.participants.get_mut(&publisher_id) else {
            return;
        };
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let Some(published) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if published
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        published.last_keyframe_request = Some(now);
        let rid = published.rid;
        let mut direct = publisher.rtc.direct_api();
        let Some(stream) = direct.stream_rx_by_mid(mid, rid) else {
            return;
        };
        stream.request_keyframe(kind);
        self.stats.keyframe_requests += 1;
        mark_dirty(&mut self.dirty, publisher);
    }

    /// How many layers a published track has (1 when unknown).
    fn layer_count(&self, publisher: ParticipantId, mid: Mid) -> usize {
        self.participants
            .get(&publisher)
            .and_then(|p| p.published.iter().find(|t| t.mid == mid))
            .map_or(1, |t| t.layers.len())
    }

    fn target_layer(&self, subscriber: ParticipantId, source: TrackId) -> Option<Layer> {
        self.participants
            .get(&subscriber)?
            .subscriptions
            .iter()
            .find(|s| s.source == source)?
            .target
    }

    /// Records how a participant shows the videos it receives (by its own mids) and what it
    /// wants to receive at most, and chooses its layers again.
    pub fn set_video_layout(
        &mut self,
        now: Instant,
        id: ParticipantId,
        tiles: impl IntoIterator<Item = (String, Option<u32>)>,
        max_receive_bps: Option<u64>,
    ) -> Result<(), SfuError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant(id))?;
        participant.max_receive_bps = max_receive_bps;
        for (mid, height) in tiles {
            let mid = Mid::from(mid.as_str());
            if let Some(sub) = participant
                .subscriptions
                .iter_mut()
                .find(|s| s.kind == TrackKind::Video && s.mid() == Some(mid))
            {
                sub.tile = height.map_or(TileHint::Hidden, TileHint::Height);
            }
        }
        self.allocate(now, id);
        self.drive(now);
        Ok(())
    }

    /// Chooses, for every video track a participant receives, the layer it gets: from its
    /// downlink estimate, its tiles, and (in large rooms) who spoke last. A change waits for
    /// the new layer's keyframe, which is asked for here.
    fn allocate(&mut self, now: Instant, id: ParticipantId) {
        let Some(subscriber) = self.participants.get(&id) else {
            return;
        };
        let room_size = self.rooms.get(&subscriber.room).map_or(0, Vec::len);
        let speakers = self
            .speakers
            .get(&subscriber.room)
            .map(|d| d.speakers(now))
            .unwrap_or_default();
        let last_n = (room_size > self.config.last_n_above).then_some(self.config.last_n);
        let mut picked: Vec<usize> = Vec::new();
        let mut candidates: Vec<TrackDemand> = Vec::new();
        let mut audio_bps = 0;
        for (index, sub) in subscriber.subscriptions.iter().enumerate() {
            if !matches!(
                sub.state,
                SubscriptionState::Open(_) | SubscriptionState::Opening(_)
            ) {
                continue;
            }
            let Some(track) = self
                .participants
                .get(&sub.source.publisher)
                .and_then(|p| p.published.iter().find(|t| t.mid == sub.source.mid))
            else {
                continue;
            };
            if sub.kind == TrackKind::Audio {
                audio_bps += track.layers.first().map_or(0, |l| {
                    if l.meter.live(now) {
                        l.meter.rate_or_nominal(0).min(AUDIO_BPS_CAP)
                    } else {
                        0
                    }
                });
                continue;
            }
            let never_measured = track.layers.iter().all(|l| !l.meter.live(now));
            let layer_bps = track
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let layer = u8::try_from(i).unwrap_or(u8::MAX);
                    (l.meter.live(now) || l.paused || never_measured)
                        .then(|| l.meter.rate_or_nominal(layer))
                })
                .collect();
            let top = layers::top_layer(track.layers.len());
            let mut max_layer = match sub.tile {
                TileHint::Unknown => Some(top),
                TileHint::Hidden => None,
                TileHint::Height(h) => Some(layers::layer_for_height(h, track.layers.len())),
            };
            let rank = speakers.iter().position(|p| *p == sub.source.publisher);
            if let Some(n) = last_n {
                if track.source != TrackSource::Screen && rank.is_none_or(|r| r >= n) {
                    max_layer = max_layer.map(|_| 0);
                }
            }
            let priority = match (track.source, rank) {
                (TrackSource::Screen, _) => 0,
                (_, Some(r)) => 1 + u32::try_from(r).unwrap_or(u32::MAX - 1),
                (_, None) => layers::UNFEATURED,
            };
            picked.push(index);
            candidates.push(TrackDemand {
                layer_bps,
                max_layer,
                priority,
            });
        }
        // Without estimation a link is taken to carry whatever the subscriber asks for.
        let estimate = match self.config.downlink_estimation {
            true => subscriber
                .bwe_bps
                .unwrap_or(self.config.initial_downlink_bps),
            false => u64::MAX,
        };
        // A budget the subscriber set is kept with a margin for keyframes and retransmissions.
        let max_receive = subscriber.max_receive_bps.map(|max| max / 100 * 95);
        let limit = max_receive.unwrap_or(u64::MAX);
        let budget = limit.min(estimate).saturating_sub(audio_bps);
        // Thumbnails follow the estimate too, but not below a floor: an estimate grows only by
        // probing beyond what flows, so a subscriber that just joined is not left with empty
        // tiles while it does.
        let thumbnail_budget = limit
            .min(estimate.max(self.config.thumbnail_floor_bps))
            .saturating_sub(audio_bps);
        // Show and raise only with headroom, and cut or lower only when what flows no longer
        // fits: an estimate wobbling around a layer's cost must not switch it back and forth.
        let headroom = |bps: u64| bps / 100 * HEADROOM_PERCENT;
        let chosen = layers::allocate(headroom(budget), headroom(thumbnail_budget), &candidates);
        let previous: Vec<Option<Layer>> = picked
            .iter()
            .map(|i| subscriber.subscriptions[*i].target)
            .collect();
        let keep = layers::keep_previous(&previous, &chosen, &candidates, budget, thumbnail_budget);
        // Probing beyond what the subscriber accepts would only send padding it cannot use.
        let wanted = (layers::wanted_bps(&candidates) + audio_bps).min(limit);
        // str0m caps every probe at twice the desired rate, and its first probes set the
        // estimate outright. A subscriber's first allocations see little (audio, and video
        // not yet measured, counted at its nominal 150 kbps): its start-up probes went to
        // about half a megabit and left the estimate there, pausing the video that followed
        // for seconds. So the desired rate never goes below the initial estimate.
        let desired = wanted.max(self.config.initial_downlink_bps.min(limit));
        let Some(subscriber) = self.participants.get_mut(&id) else {
            return;
        };
        // str0m probes when the desired rate rises (and every 5 s while the link is idle).
        // While the estimate is short of what the tiles want, the desired rate is lowered a
        // little and raised again, so that a link that got better is found within seconds;
        // a probe that did not raise the estimate doubles the wait for the next (a link that
        // is really that narrow is not flooded with probes).
        let probe = &subscriber.probe;
        let short = self.config.downlink_estimation && estimate < wanted;
        let probe_due = probe
            .requested_at
            .is_none_or(|at| now.saturating_duration_since(at) >= probe.interval);
        let ask = if short && probe_due && subscriber.desired_bps == desired {
            desired.saturating_sub(PROBE_REARM_BPS)
        } else {
            desired
        };
        if subscriber.desired_bps != ask {
            if ask > subscriber.desired_bps {
                let probe = &mut subscriber.probe;
                let gained = probe
                    .estimate_before
                    .is_some_and(|before| estimate > before);
                probe.interval = if gained || probe.requested_at.is_none() {
                    PROBE_INTERVAL
                } else {
                    (probe.interval * 2).min(PROBE_INTERVAL_MAX)
                };
                probe.requested_at = Some(now);
                probe.estimate_before = Some(estimate);
            }
            subscriber.desired_bps = ask;
            subscriber
                .rtc
                .bwe()
                .set_bitrate(Bitrate::bps(0), Bitrate::bps(ask));
        }
        if keep {
            return;
        }
        let mut wanted_keyframes = Vec::new();
        for (index, layer) in picked.into_iter().zip(chosen) {
            let sub = &mut subscriber.subscriptions[index];
            sub.target = layer;
            match layer {
                None => sub.current = None,
                Some(layer) if sub.current != Some(layer) => {
                    wanted_keyframes.push((sub.source, layer));
                }
                Some(_) => {}
            }
        }
        for (source, layer) in wanted_keyframes {
            self.request_keyframe(
                now,
                source.publisher,
                source.mid,
                layer,
                KeyframeRequestKind::Pli,
            );
        }
    }

    /// Tells publishers to stop encoding simulcast layers nobody has needed for a while, and
    /// to start again the ones somebody needs.
    fn pause_unneeded_layers(&mut self, now: Instant) {
        let mut needed: HashMap<TrackId, u32> = HashMap::new();
        for subscriber in self.participants.values() {
            for sub in &subscriber.subscriptions {
                let mask = needed.entry(sub.source).or_default();
                for layer in [sub.target, sub.current].into_iter().flatten() {
                    *mask |= 1 << layer.min(31);
                }
            }
        }
        for publisher in self.participants.values_mut() {
            for track in publisher.published.iter_mut().filter(|t| t.is_simulcast()) {
                let mask = needed
                    .get(&TrackId {
                        publisher: publisher.id,
                        mid: track.mid,
                    })
                    .copied()
                    .unwrap_or(0);
                let mut changed = false;
                for (i, layer) in track.layers.iter_mut().enumerate() {
                    if mask & (1 << i.min(31)) != 0 {
                        layer.unneeded_since = None;
                        changed |= std::mem::replace(&mut layer.paused, false);
                    } else {
                        let since = *layer.unneeded_since.get_or_insert(now);
                        if !layer.paused && now.saturating_duration_since(since) >= PAUSE_AFTER {
                            layer.paused = true;
                            changed = true;
                        }
                    }
                }
                if changed {
                    let active = track
                        .layers
                        .iter()
                        .filter(|l| !l.paused)
                        .filter_map(|l| l.rid.map(|r| r.to_string()))
                        .collect();
                    self.outputs.push_back(SfuOutput::Signal {
                        participant: publisher.id,
                        event: SfuEvent::PublishLayers {
                            mid: track.mid.to_string(),
                            active,
                        },
                    });
                }
            }
        }
    }
}

/// What a forwarded packet costs on the subscriber's link beyond its payload: RTP header,
/// header extensions and the SRTP tag. Budgets are what clients measure, so layers are
/// costed with it.
const RTP_OVERHEAD_BYTES: usize = 48;
/// How many already-due str0m timeouts one poll of a participant handles before leaving the
/// rest to [`Sfu::handle_timeout`]: one snapshots freshly queued media; more are rare.
const DUE_TIMEOUT_ROUNDS: u32 = 4;
/// How often every subscriber's layers are chosen again (estimates and speakers move).
const ALLOCATION_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// How often a subscriber whose estimate is short of what its tiles want asks for a probe,
/// at first and at most.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
const PROBE_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_secs(16);
/// How far the desired rate dips so that restoring it counts as a rise.
const PROBE_REARM_BPS: u64 = 1000;
/// A layer nobody needs this long is paused at its publisher.
const PAUSE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// Tracks are shown and layers raised only within this share of the budget.
const HEADROOM_PERCENT: u64 = 85;
/// Opus at its highest sensible rate: a bogus measurement must not starve video.
const AUDIO_BPS_CAP: u64 = 128_000;

/// The layers of a newly published track, smallest first: RIDs ranked by name (q/h/f), the
/// others after them in the order the publisher's SDP gave.
fn simulcast_layers(added: &MediaAdded) -> Vec<PublishedLayer> {
    let rids: Vec<Rid> = added
        .simulcast
        .as_ref()
        .map(|s| if s.recv.is_empty() { &s.send } else { &s.recv })
        .map(|layers| layers.iter().map(|l| l.rid).collect())
        .unwrap_or_default();
    if rids.is_empty() {
        return vec![PublishedLayer::default()];
    }
    let mut ranked: Vec<(Rid, u8)> = rids
        .iter()
        .enumerate()
        .map(|(i, rid)| {
            let rank = layers::rid_rank(rid).unwrap_or(3 + u8::try_from(i).unwrap_or(200));
            (*rid, rank)
        })
        .collect();
    ranked.sort_by_key(|(_, rank)| *rank);
    ranked
        .into_iter()
        .map(|(rid, _)| PublishedLayer {
            rid: Some(rid),
            ..PublishedLayer::default()
        })
        .collect()
}

/// A subscriber starts receiving `layer` (its first packet, or a switch at a keyframe):
/// continue its RTP clock and VP8 picture numbering from where the last layer left them.
fn continue_stream(
    sub: &mut Subscription,
    layer: Layer,
    packet: &RtpPacket,
    vp8: Option<&Vp8Descriptor>,
    now: Instant,
) {
    let switching = sub.last_layer.is_some();
    sub.last_layer = Some(layer);
    if !switching {
        return;
    }
    if let Some((last, at)) = sub.last_ts {
        // Layers have unrelated timestamp bases: continue from the last one by the time
        // that passed (at least one tick, so that the new frame is later).
        let elapsed = u32::try_from(now.saturating_duration_since(at).as_micros() * 90 / 1000)
            .unwrap_or(u32::MAX)
            .max(1);
        sub.ts_offset = last
            .wrapping_add(elapsed)
            .wrapping_sub(packet.header.timestamp);
    }
    if let (Some(d), Some((last_pid, last_tl0))) = (vp8, sub.last_picture_id) {
        if let Some(pid) = d.picture_id() {
            sub.picture_id_offset = last_pid.wrapping_add(1).wrapping_sub(pid);
        }
        if let Some(tl0) = d.tl0_pic_idx() {
            sub.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(tl0);
        }
    }
}

/// The VP8 descriptor patch that renumbers this packet for the subscriber (after a layer
/// switch), and the numbers it ends up with.
fn renumber(sub: &mut Subscription, d: &Vp8Descriptor) -> Option<str0m::rtp::Vp8Patch> {
    let pid = d.picture_id()?;
    let shifted = pid.wrapping_add(sub.picture_id_offset);
    let out_tl0 = d.tl0_pic_idx().map(|t| t.wrapping_add(sub.tl0_offset));
    if sub.picture_id_offset == 0 && sub.tl0_offset == 0 {
        sub.last_picture_id = Some((pid, out_tl0.unwrap_or(0)));
        return None;
    }
    let build = |out_pid: u16| {
        let mut patch = d.patch().picture_id(out_pid);
        if let Some(t) = out_tl0 {
            patch = patch.tl0_pic_idx(t);
        }
        patch.build().ok().map(|p| (p, out_pid))
    };
    // Picture ids wrap at 2^15, or at 2^7 when the sender uses the short form; the patch
    // keeps the sender's width, so the 15-bit value is tried first.
    let (patch, out_pid) = build(shifted & 0x7fff).or_else(|| build(shifted & 0x7f))?;
    sub.last_picture_id = Some((out_pid, out_tl0.unwrap_or(0)));
    Some(patch)
}

/// Whether an RTP payload is the first packet of a keyframe. Under end-to-end encryption the
/// codec's payload descriptor and the first bytes of the frame stay in the clear (SFrame
/// leaves them unencrypted for exactly this), so this works on ciphertext too.
fn starts_keyframe(params: &PayloadParams, payload: &[u8]) -> bool {
    match params.spec().codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        // Gating is for video; anything else is never held back.
        _ => true,
    }
}

/// VP8 (RFC 7741): the payload descriptor's S bit and partition index 0 mark a frame start;
/// the P bit of the VP8 payload header after the descriptor is 0 for a keyframe. str0m's
/// descriptor parser (the one layer switching uses) reads it.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload))
}

/// H.264 (RFC 6184): an IDR slice or SPS, alone, first in a STAP-A, or starting an FU-A.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut at = 1;
            while let Some(len) = payload.get(at..at + 2) {
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if payload
                    .get(at + 2)
                    .is_some_and(|nal| matches!(nal & 0x1f, IDR | SPS))
                {
                    return true;
                }
                at += 2 + len;
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// The SSRC of the subscriber's send stream for `mid`, remembered after the first lookup.
fn send_ssrc(rtc: &mut Rtc, cached: &mut Option<Ssrc>, mid: Mid) -> Option<Ssrc> {
    if cached.is_none() {
        *cached = Some(rtc.direct_api().stream_tx_by_mid(mid, None)?.ssrc());
    }
    *cached
}

fn mark_dirty(dirty: &mut Vec<ParticipantId>, participant: &mut Participant) {
    if !participant.dirty {
        participant.dirty = true;
        dirty.push(participant.id);
    }
}

#[cfg(test)]
mod tests;
