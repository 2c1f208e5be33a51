use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequest, KeyframeRequestKind, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info, warn};

use crate::participant::Participant;
use crate::speakers::SpeakerDetector;
use crate::track::{default_source, PublishedTrack, Subscription, TrackId, TrackKind, TrackSource};
use crate::{ParticipantId, RoomId, SfuConfig, SfuError, SfuEvent, SfuOutput};

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
    /// Which participant a remote address belongs to, learned from STUN.
    by_address: HashMap<SocketAddr, ParticipantId>,
    dirty: Vec<ParticipantId>,
    /// Scratch space for one participant's events while it is polled.
    events: Vec<Event>,
    outputs: VecDeque<SfuOutput>,
    stats: SfuStats,
    /// Active speakers per room, from the audio levels publishers send.
    speakers: HashMap<RoomId, SpeakerDetector>,
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
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_extension_map(extensions)
            // Forward RTP packets as they come (SSRC, sequence number and payload type
            // rewritten by str0m per subscriber, payload shared by reference count) instead of
            // depacketizing every frame and packetizing it again for each subscriber.
            .set_rtp_mode(true)
            .build(now);
        let candidate = Candidate::host(self.config.candidate_addr, "udp")
            .map_err(|e| SfuError::SdpRejected(format!("bad candidate address: {e}")))?;
        rtc.add_local_candidate(candidate);

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
                            sub.awaiting_keyframe = true;
                        }
                    }
                }
            }
            if kind == TrackKind::Video {
                self.request_keyframe(now, id, mid, KeyframeRequestKind::Pli);
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
        for source in opened_video {
            self.request_keyframe(now, source.publisher, source.mid, KeyframeRequestKind::Pli);
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
        let id = self.input(now, source, destination, bytes)?;
        if let Some(participant) = self.participants.get_mut(&id) {
            mark_dirty(&mut self.dirty, participant);
        }
        self.drive(now);
        Ok(())
    }

    /// Feeds datagrams that arrived together (one `recvmmsg`). Each sender is polled right
    /// after its datagram, as str0m requires, but the subscribers its media went to are polled
    /// once for the whole batch: their packets leave together. Returns the datagrams refused,
    /// with why.
    pub fn handle_receive_batch<'a>(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
        mut refused: impl FnMut(SfuError),
    ) {
        let mut failed = Vec::new();
        for (source, bytes) in datagrams {
            match self.input(now, source, destination, bytes) {
                Ok(id) => {
                    if !self.poll_participant(now, id) {
                        failed.push(id);
                    }
                }
                Err(e) => refused(e),
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
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let owner = match self.by_address.get(&source) {
            Some(id) => Some(*id),
            None => {
                let found = self
                    .participants
                    .values()
                    .find(|p| p.rtc.accepts(&input))
                    .map(|p| p.id);
                if let Some(id) = found {
                    self.by_address.insert(source, id);
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
        loop {
            match participant.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    participant.next_rtc_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.outputs.push_back(SfuOutput::Transmit {
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
                self.publish(id, added.mid, added.kind.into());
            }
            Event::RtpPacket(packet) => self.forward(now, id, packet),
            Event::KeyframeRequest(request) => self.relay_keyframe_request(now, id, request),
            _ => {}
        }
    }

    /// A participant published a track: everyone else in its room subscribes.
    fn publish(&mut self, id: ParticipantId, mid: Mid, kind: TrackKind) {
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
            last_keyframe_request: None,
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

    /// Forwards one RTP packet from a publisher to every subscriber of its track. Frames are
    /// counted by their last packet (the marker bit for video; every audio packet is a frame).
    fn forward(&mut self, now: Instant, publisher_id: ParticipantId, packet: RtpPacket) {
        let Some(publisher) = self.participants.get_mut(&publisher_id) else {
            return;
        };
        let Some(mid) = publisher.rx_mid(packet.header.ssrc) else {
            return;
        };
        let room = publisher.room;
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
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
            let rebase = subscription.awaiting_keyframe || subscription.resync;
            if subscription.awaiting_keyframe {
                let starts_keyframe = *keyframe_start
                    .get_or_insert_with(|| starts_keyframe(&params, &packet.payload));
                if !starts_keyframe {
                    needs_keyframe = true;
                    continue;
                }
                subscription.awaiting_keyframe = false;
            }
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
            let mut direct = subscriber.rtc.direct_api();
            let Some(stream) = direct.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    out_pt,
                    seq.into(),
                    packet.header.timestamp,
                    packet.timestamp,
                    packet.payload.clone(),
                )
                .marker(packet.header.marker)
                .ext_vals(ext_vals.clone())
                // Video answers NACKs from str0m's resend cache; late audio is useless.
                .nackable(kind == TrackKind::Video),
            );
            self.stats.frames_forwarded += frames;
            mark_dirty(&mut self.dirty, subscriber);
        }
        if needs_keyframe {
            self.request_keyframe(now, publisher_id, mid, KeyframeRequestKind::Pli);
        }
    }

    /// A subscriber asked for a keyframe on one of its m-lines: pass it to the publisher.
    fn relay_keyframe_request(
        &mut self,
        now: Instant,
        subscriber_id: ParticipantId,
        request: KeyframeRequest,
    ) {
        let Some(source) = self.participants.get(&subscriber_id).and_then(|s| {
            s.subscriptions
                .iter()
                .find(|sub| sub.mid() == Some(request.mid))
                .map(|sub| sub.source)
        }) else {
            return;
        };
        self.request_keyframe(now, source.publisher, source.mid, request.kind);
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher_id: ParticipantId,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let interval = self.config.keyframe_request_interval;
        let Some(publisher) = self.participants.get_mut(&publisher_id) else {
            return;
        };
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if track
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        track.last_keyframe_request = Some(now);
        let mut direct = publisher.rtc.direct_api();
        let Some(stream) = direct.stream_rx_by_mid(mid, None) else {
            return;
        };
        stream.request_keyframe(kind);
        self.stats.keyframe_requests += 1;
        mark_dirty(&mut self.dirty, publisher);
    }
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
/// the P bit of the VP8 payload header that follows is 0 for a keyframe.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        // X: an extension byte follows, announcing picture ID (I), TL0PICIDX (L) and
        // TID/KEYIDX (T, K).
        let Some(&ext) = payload.get(at) else {
            return false;
        };
        at += 1;
        if ext & 0x80 != 0 {
            let Some(&picture_id) = payload.get(at) else {
                return false;
            };
            at += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
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

fn mark_dirty(dirty: &mut Vec<ParticipantId>, participant: &mut Participant) {
    if !participant.dirty {
        participant.dirty = true;
        dirty.push(participant.id);
    }
}

#[cfg(test)]
mod tests;
