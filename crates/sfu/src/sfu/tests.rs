//! State-machine tests of the SFU: real str0m peers on one side, the SFU on the other, wired
//! together in memory. Time is synthetic: one `Instant::now()` to start, then durations added.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequest, KeyframeRequestKind, MediaKind, MediaTime, Mid,
};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::{Sfu, PROBE_REARM_BPS};
use crate::TrackSource;
use crate::{
    ParticipantId, RoomId, SfuConfig, SfuError, SfuEvent, SfuOutput, TrackKind, TrackSummary,
};
use proto::ABS_CAPTURE_TIME_EXT_ID;

/// One tick of the simulated clock.
const TICK: Duration = Duration::from_millis(10);
/// Spacing of the frames the peers send.
const FRAME_INTERVAL: Duration = Duration::from_millis(20);

fn sfu_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3478))
}

fn peer_addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16))
}

/// A frame, as the tests tag it so that its origin can be read back from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    publisher: u64,
    kind: TrackKind,
    seq: u32,
}

/// A VP8 keyframe: the 10-byte uncompressed keyframe header (frame tag with bit 0 clear,
/// start code, 640x480), then a tag and filler.
fn vp8_frame(publisher: u64, seq: u32, len: usize) -> Vec<u8> {
    let mut data = vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    data.push(publisher as u8);
    data.push(1);
    data.extend_from_slice(&seq.to_be_bytes());
    while data.len() < len {
        data.push((data.len() as u32 ^ seq) as u8);
    }
    data
}

/// The capture time the peers stamp on video frame `seq` (abs-capture-time).
fn capture_time(seq: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(u64::from(seq) * 33)
}

/// An Opus packet (TOC byte, then a tag and filler).
fn opus_frame(publisher: u64, seq: u32) -> Vec<u8> {
    let mut data = vec![0x78, publisher as u8, 0];
    data.extend_from_slice(&seq.to_be_bytes());
    while data.len() < 60 {
        data.push((data.len() as u32 ^ seq.rotate_left(3)) as u8);
    }
    data
}

fn read_tag(data: &[u8]) -> Option<Tag> {
    if data.len() >= 16 && data[..6] == [0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a] && data[11] == 1 {
        let seq = u32::from_be_bytes(data[12..16].try_into().ok()?);
        return Some(Tag {
            publisher: u64::from(data[10]),
            kind: TrackKind::Video,
            seq,
        });
    }
    if data.len() >= 7 && data[0] == 0x78 && data[2] == 0 {
        let seq = u32::from_be_bytes(data[3..7].try_into().ok()?);
        return Some(Tag {
            publisher: u64::from(data[1]),
            kind: TrackKind::Audio,
            seq,
        });
    }
    None
}

/// A frame as a peer received it.
#[derive(Debug, Clone)]
struct Received {
    mid: String,
    data: Vec<u8>,
    /// The abs-capture-time header extension, if the packet carried one.
    capture_time: Option<SystemTime>,
}

/// A client: a full-ICE str0m peer that publishes one audio and one video track.
struct Peer {
    id: ParticipantId,
    addr: SocketAddr,
    rtc: Rtc,
    audio_mid: Mid,
    video_mid: Mid,
    /// Its datagrams reach the SFU. Cleared to simulate a participant that went silent.
    online: bool,
    /// Answer the SFU's offers as soon as they arrive.
    auto_answer: bool,
    /// SFU offers not answered yet (only when `auto_answer` is off).
    unanswered: Vec<String>,
    /// The track list of every offer the SFU sent, in order.
    offers: Vec<Vec<TrackSummary>>,
    /// The remote tracks by the mid that carries them, as of the last answered offer.
    remote: HashMap<String, TrackSummary>,
    /// Every mid that ever carried a remote track, and whose.
    ever_remote: HashMap<String, TrackSummary>,
    /// Signaling the SFU produced for this participant.
    signals: Vec<SfuEvent>,
    /// str0m's `Event::Connected` on the client side.
    connected: bool,
    received: Vec<Received>,
    keyframe_requests: Vec<KeyframeRequest>,
    /// What it published, in order.
    sent: Vec<Vec<u8>>,
    next_timeout: Instant,
    audio_seq: u32,
    /// RFC 6464 level (dBov) sent with each audio frame, if any.
    audio_level: Option<i8>,
    video_seq: u32,
}

impl Peer {
    fn sfu_connected(&self) -> bool {
        self.signals.contains(&SfuEvent::Connected)
    }

    fn vanished(&self) -> bool {
        self.signals.contains(&SfuEvent::Vanished)
    }

    fn last_offer(&self) -> &[TrackSummary] {
        self.offers.last().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The frames received from `publisher` (by their tag), with the mid they arrived on.
    fn received_from(&self, publisher: u64) -> Vec<&Received> {
        self.received
            .iter()
            .filter(|r| read_tag(&r.data).is_some_and(|t| t.publisher == publisher))
            .collect()
    }

    /// The mid on which this peer receives `publisher`'s track of `kind`.
    fn remote_mid(&self, publisher: u64, kind: TrackKind) -> Mid {
        let summary = self
            .remote
            .values()
            .find(|t| t.publisher == ParticipantId(publisher) && t.kind == kind)
            .unwrap_or_else(|| panic!("{:?} has no {kind:?} track of {publisher}", self.id));
        Mid::from(summary.mid.as_str())
    }
}

/// `(publisher, kind)` pairs of a track list, sorted.
fn sources(tracks: &[TrackSummary]) -> Vec<(u64, TrackKind)> {
    let mut v: Vec<_> = tracks.iter().map(|t| (t.publisher.0, t.kind)).collect();
    v.sort_by_key(|(p, k)| (*p, *k == TrackKind::Video));
    v
}

/// The audio and video tracks of these publishers, sorted like [`sources`].
fn tracks_of(publishers: &[u64]) -> Vec<(u64, TrackKind)> {
    let mut v: Vec<_> = publishers
        .iter()
        .flat_map(|p| [(*p, TrackKind::Audio), (*p, TrackKind::Video)])
        .collect();
    v.sort_by_key(|(p, k)| (*p, *k == TrackKind::Video));
    v
}

fn client_rtc(now: Instant) -> Rtc {
    let mut extensions = ExtensionMap::standard();
    extensions.set(ABS_CAPTURE_TIME_EXT_ID, Extension::AbsoluteCaptureTime);
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_extension_map(extensions)
        .build(now)
}

/// The SFU and its clients, connected by a lossless zero-latency in-memory network.
struct Harness {
    now: Instant,
    sfu: Sfu,
    peers: Vec<Peer>,
    /// Datagrams from the peers that the SFU refused.
    refused: Vec<(ParticipantId, SfuError)>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(SfuConfig::new(sfu_addr(), sfu_addr()))
    }

    fn with_config(config: SfuConfig) -> Self {
        Harness {
            now: Instant::now(),
            sfu: Sfu::new(config),
            peers: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn peer(&self, id: u64) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.id == ParticipantId(id))
            .unwrap_or_else(|| panic!("no peer {id}"))
    }

    fn peer_mut(&mut self, id: u64) -> &mut Peer {
        self.peers
            .iter_mut()
            .find(|p| p.id == ParticipantId(id))
            .unwrap_or_else(|| panic!("no peer {id}"))
    }

    /// Adds participant `id` to `room` and runs its initial offer/answer (client offers).
    fn join(&mut self, room: u64, id: u64) {
        self.sfu
            .add_participant(self.now, RoomId(room), ParticipantId(id))
            .expect("add_participant");
        self.connect_client(id);
    }

    /// Starts the client of the already added participant `id`: it offers, the SFU answers.
    fn connect_client(&mut self, id: u64) {
        let pid = ParticipantId(id);
        let addr = peer_addr(id);
        let mut rtc = client_rtc(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        let mut change = rtc.sdp_api();
        let audio_mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video_mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("client offer");
        let answer = self
            .sfu
            .handle_offer(self.now, pid, &offer.to_sdp_string())
            .expect("sfu answers the client offer");
        let answer = SdpAnswer::from_sdp_string(&answer).expect("sfu answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("client accepts sfu answer");
        self.peers.push(Peer {
            id: pid,
            addr,
            rtc,
            audio_mid,
            video_mid,
            online: true,
            auto_answer: true,
            audio_level: None,
            unanswered: Vec::new(),
            offers: Vec::new(),
            remote: HashMap::new(),
            ever_remote: HashMap::new(),
            signals: Vec::new(),
            connected: false,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            sent: Vec::new(),
            next_timeout: self.now,
            audio_seq: 0,
            video_seq: 0,
        });
    }

    /// Advances the clock by `dt`, then moves datagrams both ways until nobody has anything
    /// more to say at this instant.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        for _ in 0..1000 {
            let mut moved = false;

            if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
            }

            while let Some(output) = self.sfu.poll_output() {
                moved = true;
                match output {
                    SfuOutput::Transmit {
                        source,
                        destination,
                        contents,
                        ..
                    } => {
                        assert_eq!(source, sfu_addr(), "SFU transmits from its local address");
                        let Some(peer) = self.peers.iter_mut().find(|p| p.addr == destination)
                        else {
                            panic!("SFU sent to {destination}, which is nobody");
                        };
                        let input = Input::Receive(
                            now,
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination,
                                contents: contents.as_slice().try_into().expect("SFU datagram"),
                            },
                        );
                        peer.rtc
                            .handle_input(input)
                            .expect("peer takes SFU datagram");
                    }
                    SfuOutput::Signal { participant, event } => self.signal(participant, event),
                }
            }

            let mut to_sfu = Vec::new();
            for peer in &mut self.peers {
                if peer.next_timeout <= now {
                    peer.rtc
                        .handle_input(Input::Timeout(now))
                        .expect("peer timeout");
                }
                // Like the SFU, a client handles timeouts that are already due (str0m asks
                // for one right after media is written) before it settles.
                let mut due_rounds = 0;
                loop {
                    match peer.rtc.poll_output().expect("peer poll") {
                        Output::Timeout(t) if t <= now && due_rounds < 4 => {
                            due_rounds += 1;
                            peer.rtc
                                .handle_input(Input::Timeout(now))
                                .expect("peer timeout");
                        }
                        Output::Timeout(t) => {
                            peer.next_timeout = t;
                            break;
                        }
                        Output::Transmit(t) => {
                            assert_eq!(t.destination, sfu_addr(), "peers only talk to the SFU");
                            if peer.online {
                                to_sfu.push((
                                    peer.id,
                                    t.source,
                                    t.destination,
                                    t.contents.to_vec(),
                                ));
                            }
                        }
                        Output::Event(event) => match event {
                            Event::Connected => peer.connected = true,
                            Event::MediaData(data) => peer.received.push(Received {
                                mid: data.mid.to_string(),
                                data: data.data.to_vec(),
                                capture_time: data
                                    .ext_vals
                                    .abs_capture_time
                                    .map(|a| a.capture_time),
                            }),
                            Event::KeyframeRequest(request) => peer.keyframe_requests.push(request),
                            _ => {}
                        },
                    }
                }
            }

            for (id, source, destination, contents) in to_sfu {
                moved = true;
                if let Err(e) = self.sfu.handle_receive(now, source, destination, &contents) {
                    self.refused.push((id, e));
                }
            }

            if !moved {
                return;
            }
        }
        panic!("the network did not settle within one instant");
    }

    fn signal(&mut self, participant: ParticipantId, event: SfuEvent) {
        let now = self.now;
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == participant) else {
            panic!("SFU signaled {participant:?}, which is nobody");
        };
        peer.signals.push(event.clone());
        if let SfuEvent::Offer { sdp, tracks } = event {
            for track in &tracks {
                assert!(
                    sdp.contains(&format!("a=mid:{}", track.mid)),
                    "offer to {participant:?} names mid {} that is not in its SDP",
                    track.mid
                );
            }
            peer.offers.push(tracks);
            if peer.auto_answer {
                answer_offer(&mut self.sfu, now, peer, &sdp);
            } else {
                peer.unanswered.push(sdp);
            }
        }
    }

    /// Answers the SFU offers `id` holds back (see `Peer::auto_answer`).
    fn answer_pending(&mut self, id: u64) {
        let now = self.now;
        let peer = self
            .peers
            .iter_mut()
            .find(|p| p.id == ParticipantId(id))
            .expect("peer");
        for sdp in std::mem::take(&mut peer.unanswered) {
            answer_offer(&mut self.sfu, now, peer, &sdp);
        }
    }

    /// Steps for `duration`.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step(TICK);
        }
    }

    /// Steps until `done` holds; false if it did not within `limit`.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Harness) -> bool) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if self.now >= end {
                return false;
            }
            self.step(TICK);
        }
        true
    }

    /// Steps until every peer is connected (both sides agree) and has answered every offer.
    fn connect_all(&mut self) {
        let ok = self.run_until(Duration::from_secs(5), |h| {
            h.peers.iter().all(|p| p.connected && p.sfu_connected())
        });
        assert!(ok, "peers did not connect: {}", self.describe());
        // Let renegotiations triggered by the last publisher settle.
        self.run(Duration::from_millis(100));
    }

    fn describe(&self) -> String {
        self.peers
            .iter()
            .map(|p| {
                format!(
                    "{:?}: client connected {}, signals {:?}",
                    p.id,
                    p.connected,
                    p.signals
                        .iter()
                        .map(|s| match s {
                            SfuEvent::Offer { tracks, .. } => format!("Offer({})", tracks.len()),
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `id` publishes one video frame of `len` bytes, and returns it.
    fn send_video(&mut self, id: u64, len: usize) -> Vec<u8> {
        let peer = self.peer_mut(id);
        peer.video_seq += 1;
        let (seq, mid) = (peer.video_seq, peer.video_mid);
        self.send_video_on(id, mid, seq, len)
    }

    /// `id` publishes video frame number `seq` on its m-line `mid`, and returns it.
    fn send_video_on(&mut self, id: u64, mid: Mid, seq: u32, len: usize) -> Vec<u8> {
        let now = self.now;
        let peer = self.peer_mut(id);
        let data = vp8_frame(id, seq, len);
        let mut writer = peer.rtc.writer(mid).expect("video writer");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .expect("VP8 negotiated");
        let time = MediaTime::from_90khz(u64::from(seq) * 3000);
        writer = writer.abs_capture_time(str0m::rtp::AbsCaptureTime {
            capture_time: capture_time(seq),
            clock_offset: None,
        });
        writer
            .write(pt, now, time, data.clone())
            .expect("write video");
        peer.sent.push(data.clone());
        data
    }

    /// `id` publishes one audio frame, and returns it.
    fn send_audio(&mut self, id: u64) -> Vec<u8> {
        let now = self.now;
        let peer = self.peer_mut(id);
        peer.audio_seq += 1;
        let seq = peer.audio_seq;
        let data = opus_frame(id, seq);
        let mid = peer.audio_mid;
        let level = peer.audio_level;
        let writer = peer.rtc.writer(mid).expect("audio writer");
        let writer = match level {
            Some(level) => writer.audio_level(level, level > -127),
            None => writer,
        };
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .expect("Opus negotiated");
        let time = MediaTime::new(u64::from(seq) * 960, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(pt, now, time, data.clone())
            .expect("write audio");
        peer.sent.push(data.clone());
        data
    }

    /// Every one of `ids` publishes `rounds` video and audio frames, one round per
    /// [`FRAME_INTERVAL`]. Then the network drains.
    fn exchange(&mut self, ids: &[u64], rounds: usize) {
        for _ in 0..rounds {
            for id in ids {
                self.send_video(*id, 300);
                self.send_audio(*id);
            }
            self.run(FRAME_INTERVAL);
        }
        self.run(Duration::from_millis(100));
    }

    /// The participant leaves: the SFU removes it and its client is gone from the network.
    fn leave(&mut self, id: u64) {
        self.sfu
            .remove_participant(self.now, ParticipantId(id))
            .expect("remove_participant");
        self.peers.retain(|p| p.id != ParticipantId(id));
    }

    fn clear_received(&mut self) {
        for peer in &mut self.peers {
            peer.received.clear();
            peer.keyframe_requests.clear();
        }
    }

    /// Asserts that every frame `subscriber` got from `publisher` is byte-identical to one the
    /// publisher sent, arrived on the m-line the SFU said carries that publisher's track of
    /// that kind, and that all `expected` frames came through in order.
    fn assert_received(&self, subscriber: u64, publisher: u64, expected: &[Vec<u8>]) {
        let sub = self.peer(subscriber);
        let got = sub.received_from(publisher);
        for r in &got {
            let tag = read_tag(&r.data).expect("tagged");
            let track = sub.ever_remote.get(&r.mid).unwrap_or_else(|| {
                panic!(
                    "{subscriber} got a frame on mid {} the SFU never offered",
                    r.mid
                )
            });
            assert_eq!(
                (track.publisher, track.kind),
                (ParticipantId(publisher), tag.kind),
                "{subscriber} got {publisher}'s {:?} frame on the m-line of {:?}",
                tag.kind,
                track
            );
        }
        let got: Vec<&Vec<u8>> = got.iter().map(|r| &r.data).collect();
        let expected: Vec<&Vec<u8>> = expected.iter().collect();
        let video = |v: &Vec<&Vec<u8>>| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|d| read_tag(d).is_some_and(|t| t.kind == TrackKind::Video))
                .map(|d| d.to_vec())
                .collect()
        };
        let audio = |v: &Vec<&Vec<u8>>| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|d| read_tag(d).is_some_and(|t| t.kind == TrackKind::Audio))
                .map(|d| d.to_vec())
                .collect()
        };
        assert_eq!(
            video(&got).len(),
            video(&expected).len(),
            "{subscriber} got {} of {publisher}'s {} video frames",
            video(&got).len(),
            video(&expected).len()
        );
        assert!(
            video(&got) == video(&expected),
            "{subscriber} got different video bytes from {publisher}"
        );
        assert_eq!(
            audio(&got).len(),
            audio(&expected).len(),
            "{subscriber} got {} of {publisher}'s {} audio frames",
            audio(&got).len(),
            audio(&expected).len()
        );
        assert!(
            audio(&got) == audio(&expected),
            "{subscriber} got different audio bytes from {publisher}"
        );
    }
}

/// The client accepts an SFU offer and the SFU gets the answer.
fn answer_offer(sfu: &mut Sfu, now: Instant, peer: &mut Peer, sdp: &str) {
    let offer = SdpOffer::from_sdp_string(sdp).expect("SFU offer parses");
    let answer = peer
        .rtc
        .sdp_api()
        .accept_offer(offer)
        .expect("client accepts SFU offer");
    sfu.handle_answer(now, peer.id, &answer.to_sdp_string())
        .expect("SFU accepts the answer");
    let tracks = peer.offers.last().cloned().unwrap_or_default();
    peer.remote = tracks.iter().map(|t| (t.mid.clone(), t.clone())).collect();
    for t in tracks {
        peer.ever_remote.insert(t.mid.clone(), t);
    }
}

/// Every frame `id` published so far.
fn sent_by(h: &Harness, id: u64) -> Vec<Vec<u8>> {
    h.peer(id).sent.clone()
}

#[test]
fn two_participants_connect_negotiate_and_exchange_media() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    assert_eq!(h.sfu.participant_count(), 2);

    for (me, other) in [(1, 2), (2, 1)] {
        let peer = h.peer(me);
        assert!(peer.sfu_connected(), "{me} never got Connected");
        assert_eq!(
            peer.signals
                .iter()
                .filter(|s| **s == SfuEvent::Connected)
                .count(),
            1,
            "{me} got Connected more than once"
        );
        assert!(!peer.vanished());
        assert!(!peer.offers.is_empty(), "{me} got no SFU offer");
        for offer in &peer.offers {
            assert!(
                offer.iter().all(|t| t.publisher == ParticipantId(other)),
                "{me} was offered tracks not of {other}: {offer:?}"
            );
        }
        assert_eq!(sources(peer.last_offer()), tracks_of(&[other]));
        assert!(peer.unanswered.is_empty());
    }
    let stats_before = h.sfu.stats();
    assert_eq!(stats_before.frames_forwarded, 0);

    h.exchange(&[1, 2], 10);
    // One frame spanning several RTP packets.
    let big = h.send_video(1, 5000);
    // The subscriber's pacer spreads a large frame over its bandwidth estimate.
    let arrived = h.run_until(Duration::from_secs(1), |h| {
        h.peer(2).received.iter().any(|r| r.data == big)
    });
    assert!(arrived, "the big frame never arrived: {}", h.describe());

    assert_eq!(h.peer(1).sent.len(), 21);
    h.assert_received(2, 1, &sent_by(&h, 1));
    h.assert_received(1, 2, &sent_by(&h, 2));
    assert!(h.peer(2).received.iter().any(|r| r.data == big));
    // abs-capture-time survives the SFU (to NTP precision).
    let mut stamped = 0;
    for r in h.peer(2).received_from(1) {
        let tag = read_tag(&r.data).unwrap();
        if tag.kind != TrackKind::Video {
            continue;
        }
        let got = r
            .capture_time
            .expect("forwarded video carries abs-capture-time");
        let want = capture_time(tag.seq);
        let diff = got
            .duration_since(want)
            .or_else(|_| want.duration_since(got))
            .unwrap();
        assert!(diff < Duration::from_micros(1), "{got:?} vs {want:?}");
        stamped += 1;
    }
    assert_eq!(stamped, 11);
    // Nobody gets their own media back.
    assert!(h.peer(1).received_from(1).is_empty());
    assert!(h.peer(2).received_from(2).is_empty());

    let stats = h.sfu.stats();
    assert_eq!(stats.frames_in, 41, "{stats:?}");
    assert_eq!(stats.frames_forwarded, 41, "{stats:?}");
    assert!(stats.datagrams_in > stats_before.datagrams_in);
    assert_eq!(stats.datagrams_rejected, 0);
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);

    // And the counter keeps growing.
    h.exchange(&[2], 3);
    assert_eq!(h.sfu.stats().frames_forwarded, 47);
}

#[test]
fn rooms_are_isolated() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.join(2, 3);
    h.join(2, 4);
    h.connect_all();

    for (me, other) in [(1, 2), (2, 1), (3, 4), (4, 3)] {
        let peer = h.peer(me);
        for offer in &peer.offers {
            assert!(
                offer.iter().all(|t| t.publisher == ParticipantId(other)),
                "{me} was offered tracks from outside its room: {offer:?}"
            );
        }
        assert_eq!(sources(peer.last_offer()), tracks_of(&[other]));
    }

    h.exchange(&[1, 2, 3, 4], 8);
    for (me, other) in [(1, 2), (2, 1), (3, 4), (4, 3)] {
        h.assert_received(me, other, &sent_by(&h, other));
    }
    for (me, stranger) in [
        (1, 3),
        (1, 4),
        (2, 3),
        (2, 4),
        (3, 1),
        (3, 2),
        (4, 1),
        (4, 2),
    ] {
        assert!(
            h.peer(me).received_from(stranger).is_empty(),
            "{me} received media from {stranger} in another room"
        );
    }
    // 4 publishers x 16 frames, each forwarded to exactly one subscriber.
    assert_eq!(h.sfu.stats().frames_forwarded, 64);
}

#[test]
fn late_joiner_receives_existing_tracks() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 3);

    h.join(1, 3);
    h.connect_all();

    let late = h.peer(3);
    assert_eq!(
        sources(late.last_offer()),
        tracks_of(&[1, 2]),
        "the late joiner's offer lists the existing tracks"
    );
    for me in [1, 2] {
        let other = 3 - me;
        assert_eq!(
            sources(h.peer(me).last_offer()),
            tracks_of(&[other, 3]),
            "{me} is offered the late joiner's tracks next to {other}'s"
        );
    }

    h.clear_received();
    let before: HashMap<u64, usize> = [1, 2, 3].map(|id| (id, h.peer(id).sent.len())).into();
    h.exchange(&[1, 2, 3], 6);
    let new = |h: &Harness, id: u64| h.peer(id).sent[before[&id]..].to_vec();
    h.assert_received(3, 1, &new(&h, 1));
    h.assert_received(3, 2, &new(&h, 2));
    h.assert_received(1, 3, &new(&h, 3));
    h.assert_received(2, 3, &new(&h, 3));
    h.assert_received(1, 2, &new(&h, 2));
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);
}

#[test]
fn removed_participant_is_unpublished() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.join(1, 3);
    h.connect_all();
    h.exchange(&[1, 2, 3], 3);
    h.assert_received(2, 1, &sent_by(&h, 1));

    let offers_before = h.peer(2).offers.len();
    h.peer_mut(2).auto_answer = false;
    h.sfu.remove_participant(h.now, ParticipantId(1)).unwrap();
    assert_eq!(h.sfu.participant_count(), 2);
    h.step(TICK);

    let b = h.peer(2);
    assert_eq!(b.offers.len(), offers_before + 1, "2 got a new offer");
    assert_eq!(
        sources(b.last_offer()),
        tracks_of(&[3]),
        "the new offer drops 1's tracks"
    );
    assert_eq!(b.unanswered.len(), 1);
    h.answer_pending(2);
    h.peer_mut(2).auto_answer = true;
    assert_eq!(sources(h.peer(3).last_offer()), tracks_of(&[2]));
    h.run(Duration::from_millis(100));

    h.clear_received();
    let refused_before = h.sfu.stats().datagrams_rejected;
    // 1's client does not know it was removed and keeps sending.
    h.exchange(&[1, 2, 3], 6);
    assert!(
        h.peer(2).received_from(1).is_empty(),
        "1's media still reaches 2 after removal"
    );
    assert!(h.peer(3).received_from(1).is_empty());
    assert!(
        h.sfu.stats().datagrams_rejected > refused_before,
        "1's datagrams are refused"
    );
    assert!(h
        .refused
        .iter()
        .all(|(id, e)| *id == ParticipantId(1) && matches!(e, SfuError::UnknownSource(_))));
    let tail = |h: &Harness, id: u64| h.peer(id).sent[h.peer(id).sent.len() - 12..].to_vec();
    h.assert_received(2, 3, &tail(&h, 3));
    h.assert_received(3, 2, &tail(&h, 2));
    assert!(matches!(
        h.sfu.remove_participant(h.now, ParticipantId(1)),
        Err(SfuError::UnknownParticipant(ParticipantId(1)))
    ));
    // Removal is not vanishing: nobody is told that 1 vanished.
    assert!(h.peers.iter().all(|p| !p.vanished()));
}

#[test]
fn silent_participant_vanishes_and_is_unpublished() {
    let mut h = Harness::new();
    let media_timeout = SfuConfig::new(sfu_addr(), sfu_addr()).media_timeout;
    h.join(1, 1);
    h.join(1, 2);
    h.join(1, 3);
    h.connect_all();
    h.exchange(&[1, 2, 3], 3);

    h.peer_mut(1).online = false;
    let silent_at = h.now;
    let offers_2 = h.peer(2).offers.len();
    let offers_3 = h.peer(3).offers.len();
    // The others keep talking; 1 keeps "sending" into the void.
    let vanished = loop {
        if h.peer(1).vanished() {
            break true;
        }
        if h.now > silent_at + media_timeout + Duration::from_secs(1) {
            break false;
        }
        for id in [1, 2, 3] {
            h.send_audio(id);
        }
        h.run(Duration::from_millis(100));
    };
    assert!(vanished, "1 did not vanish: {}", h.describe());
    let vanished_after = h.now - silent_at;
    assert!(
        vanished_after >= media_timeout - Duration::from_millis(200)
            && vanished_after <= media_timeout + Duration::from_millis(200),
        "vanished only after {vanished_after:?}"
    );
    assert_eq!(h.sfu.participant_count(), 2);
    assert!(!h.peer(2).vanished() && !h.peer(3).vanished());
    assert_eq!(
        h.peer(1)
            .signals
            .iter()
            .filter(|s| **s == SfuEvent::Vanished)
            .count(),
        1
    );

    for (me, other, before) in [(2, 3, offers_2), (3, 2, offers_3)] {
        let peer = h.peer(me);
        assert!(peer.offers.len() > before, "{me} got no renegotiation");
        assert_eq!(sources(peer.last_offer()), tracks_of(&[other]));
    }

    h.clear_received();
    h.exchange(&[2, 3], 5);
    let tail = |h: &Harness, id: u64| h.peer(id).sent[h.peer(id).sent.len() - 10..].to_vec();
    h.assert_received(2, 3, &tail(&h, 3));
    h.assert_received(3, 2, &tail(&h, 2));
}

#[test]
fn silence_timeout_follows_config() {
    let mut config = SfuConfig::new(sfu_addr(), sfu_addr());
    config.media_timeout = Duration::from_secs(2);
    let mut h = Harness::with_config(config);
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    // 1 talks until it goes silent, so the SFU last heard from it just now.
    h.exchange(&[1, 2], 5);
    h.send_audio(1);
    h.step(TICK);
    h.peer_mut(1).online = false;
    let silent_at = h.now;

    let ok = h.run_until(Duration::from_secs(5), |h| h.peer(1).vanished());
    assert!(ok, "1 did not vanish");
    let after = h.now - silent_at;
    assert!(
        after >= Duration::from_millis(1900) && after <= Duration::from_millis(2100),
        "vanished {after:?} after going silent, the timeout is 2s"
    );
    assert!(!h.peer(2).vanished());
}

#[test]
fn participant_that_never_connects_vanishes() {
    let mut config = SfuConfig::new(sfu_addr(), sfu_addr());
    config.connect_timeout = Duration::from_secs(3);
    let connect_timeout = config.connect_timeout;
    let mut h = Harness::with_config(config);
    h.sfu
        .add_participant(h.now, RoomId(1), ParticipantId(1))
        .unwrap();
    h.run(Duration::from_secs(1));
    // The connect clock starts with the first offer.
    h.connect_client(1);
    h.peer_mut(1).online = false;
    let start = h.now;
    let ok = h.run_until(Duration::from_secs(5), |h| h.peer(1).vanished());
    assert!(ok, "1 did not vanish");
    let after = h.now - start;
    assert!(
        after >= connect_timeout && after <= connect_timeout + TICK,
        "vanished after {after:?}"
    );
    assert_eq!(h.sfu.participant_count(), 0);
    assert!(!h.peer(1).sfu_connected());
}

/// A STUN binding request (USERNAME, PRIORITY, ICE-CONTROLLING, MESSAGE-INTEGRITY,
/// FINGERPRINT) for ICE credentials nobody here has.
fn stray_stun_request() -> Vec<u8> {
    let mut attrs = Vec::new();
    // USERNAME
    let username = b"nobody:else";
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    // PRIORITY
    attrs.extend_from_slice(&0x0024u16.to_be_bytes());
    attrs.extend_from_slice(&4u16.to_be_bytes());
    attrs.extend_from_slice(&0x6e00_1effu32.to_be_bytes());
    // ICE-CONTROLLING
    attrs.extend_from_slice(&0x802au16.to_be_bytes());
    attrs.extend_from_slice(&8u16.to_be_bytes());
    attrs.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    // MESSAGE-INTEGRITY (wrong, of course)
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0xab; 20]);
    // FINGERPRINT
    attrs.extend_from_slice(&0x8028u16.to_be_bytes());
    attrs.extend_from_slice(&4u16.to_be_bytes());
    attrs.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

/// An RTP packet (VP8-ish payload type, random SSRC) that belongs to no session.
fn stray_rtp_packet() -> Vec<u8> {
    let mut p = vec![0x80, 96, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef];
    p.extend_from_slice(&[0x10, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, 0]);
    p
}

#[test]
fn bad_input_is_refused_without_disturbing_others() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 3);
    let stranger = SocketAddr::from(([10, 9, 8, 7], 5555));
    let base = h.sfu.stats();

    // Not STUN, DTLS, RTP or RTCP at all.
    let mut unknown_datagram = 0;
    for bytes in [
        &[][..],
        &[0xff; 40],
        &[0x40; 12],
        &[0x70, 1, 2],
        &[0x00, 0x01],
    ] {
        let r = h.sfu.handle_receive(h.now, stranger, sfu_addr(), bytes);
        assert!(
            matches!(r, Err(SfuError::UnknownDatagram)),
            "{bytes:?}: {r:?}"
        );
        unknown_datagram += 1;
    }
    // Well-formed, but from an address nobody owns and for no session.
    let stun = stray_stun_request();
    assert!(
        DatagramRecv::try_from(stun.as_slice()).is_ok(),
        "test STUN parses"
    );
    for bytes in [stun, stray_rtp_packet()] {
        let r = h.sfu.handle_receive(h.now, stranger, sfu_addr(), &bytes);
        assert!(
            matches!(r, Err(SfuError::UnknownSource(a)) if a == stranger),
            "{r:?}"
        );
    }
    // Random garbage: refused one way or the other.
    let mut seed: u64 = 0x5eed;
    let mut random = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let garbage = 200;
    for _ in 0..garbage {
        let len = (random() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| random() as u8).collect();
        let r = h.sfu.handle_receive(h.now, stranger, sfu_addr(), &bytes);
        assert!(
            matches!(
                r,
                Err(SfuError::UnknownDatagram) | Err(SfuError::UnknownSource(_))
            ),
            "{r:?}"
        );
    }
    let stats = h.sfu.stats();
    let total = unknown_datagram + 2 + garbage;
    assert_eq!(stats.datagrams_rejected - base.datagrams_rejected, total);
    assert_eq!(stats.datagrams_in - base.datagrams_in, total);
    assert_eq!(stats.frames_in, base.frames_in);

    // Garbage that claims to come from a participant's own address must not break it.
    let spoofed = h.peer(1).addr;
    for i in 0..100u32 {
        let mut bytes: Vec<u8> = (0..(20 + random() % 200)).map(|_| random() as u8).collect();
        // Cycle through the DTLS, RTP and RTCP ranges.
        bytes[0] = [22, 0x80, 0x80][i as usize % 3];
        if i % 3 == 2 {
            bytes[1] = 200; // RTCP sender report
        }
        let _ = h.sfu.handle_receive(h.now, spoofed, sfu_addr(), &bytes);
    }

    // Signaling errors.
    h.sfu
        .add_participant(h.now, RoomId(1), ParticipantId(3))
        .unwrap();
    assert!(matches!(
        h.sfu
            .handle_offer(h.now, ParticipantId(3), "this is not SDP"),
        Err(SfuError::InvalidSdp(_))
    ));
    assert!(matches!(
        h.sfu.handle_answer(h.now, ParticipantId(3), "v=0"),
        Err(SfuError::NoPendingOffer)
    ));
    assert!(matches!(
        h.sfu.handle_answer(h.now, ParticipantId(1), "v=0"),
        Err(SfuError::NoPendingOffer)
    ));
    let nobody = ParticipantId(99);
    assert!(matches!(
        h.sfu.handle_offer(h.now, nobody, "v=0"),
        Err(SfuError::UnknownParticipant(p)) if p == nobody
    ));
    assert!(matches!(
        h.sfu.handle_answer(h.now, nobody, "v=0"),
        Err(SfuError::UnknownParticipant(p)) if p == nobody
    ));
    assert!(matches!(
        h.sfu.remove_participant(h.now, nobody),
        Err(SfuError::UnknownParticipant(p)) if p == nobody
    ));
    for room in [1, 2] {
        assert!(matches!(
            h.sfu.add_participant(h.now, RoomId(room), ParticipantId(1)),
            Err(SfuError::DuplicateParticipant(p)) if p == ParticipantId(1)
        ));
    }
    h.sfu.remove_participant(h.now, ParticipantId(3)).unwrap();
    assert_eq!(h.sfu.participant_count(), 2);

    // Media between 1 and 2 still flows.
    h.clear_received();
    h.exchange(&[1, 2], 6);
    let tail = |h: &Harness, id: u64| h.peer(id).sent[h.peer(id).sent.len() - 12..].to_vec();
    h.assert_received(2, 1, &tail(&h, 1));
    h.assert_received(1, 2, &tail(&h, 2));
    assert!(h.peers.iter().all(|p| !p.vanished()));
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);
}

#[test]
fn malformed_answer_leaves_offer_pending() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.peer_mut(1).auto_answer = false;
    h.join(1, 2);
    h.connect_all();
    assert_eq!(h.peer(1).unanswered.len(), 1, "1 holds the SFU's offer");
    assert!(matches!(
        h.sfu.handle_answer(h.now, ParticipantId(1), "garbage"),
        Err(SfuError::InvalidSdp(_))
    ));
    h.answer_pending(1);
    h.peer_mut(1).auto_answer = true;
    h.run(Duration::from_millis(100));
    h.exchange(&[2], 4);
    h.assert_received(1, 2, &sent_by(&h, 2));
}

#[test]
fn subscriber_keyframe_request_reaches_publisher() {
    let mut h = Harness::new();
    // The publisher is connected before anyone subscribes: a keyframe request sent while its
    // own DTLS handshake is still finishing could not be decrypted by it (the SFU's side of
    // the handshake completes first), and a client that just connected sends a keyframe
    // anyway.
    h.join(1, 1);
    h.connect_all();
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 5);
    h.assert_received(2, 1, &sent_by(&h, 1));
    // Opening 2's subscription to 1's video asked 1 for a keyframe once (the SFU forwards
    // video to a new subscriber from a keyframe on).
    assert_eq!(
        h.peer(1).keyframe_requests.len(),
        1,
        "one keyframe request for the new subscription: {:?}",
        h.peer(1).keyframe_requests
    );
    h.peer_mut(1).keyframe_requests.clear();
    h.peer_mut(2).keyframe_requests.clear();
    // Past the coalescing interval, so the subscriber's own request goes through.
    h.run(Duration::from_millis(600));
    let requests_before = h.sfu.stats().keyframe_requests;

    let mid = h.peer(2).remote_mid(1, TrackKind::Video);
    assert_ne!(mid, h.peer(2).video_mid);
    h.peer_mut(2)
        .rtc
        .writer(mid)
        .expect("subscriber writer")
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .expect("PLI possible");
    let ok = h.run_until(Duration::from_secs(1), |h| {
        !h.peer(1).keyframe_requests.is_empty()
    });
    assert!(ok, "1 never got the keyframe request");
    let publisher = h.peer(1);
    let request = &publisher.keyframe_requests[0];
    assert_eq!(request.mid, publisher.video_mid);
    assert_eq!(request.kind, KeyframeRequestKind::Pli);
    assert_eq!(h.sfu.stats().keyframe_requests, requests_before + 1);
    // 2 asked for 1's video only: 2's own publisher side saw nothing.
    assert!(h.peer(2).keyframe_requests.is_empty());
}

#[test]
fn keyframe_requests_within_interval_are_coalesced() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.join(1, 3);
    h.connect_all();
    h.exchange(&[1], 5);
    h.clear_received();
    // Forget the requests made when 2's and 3's subscriptions opened, and let their
    // coalescing interval pass.
    h.run(Duration::from_millis(600));
    h.peer_mut(1).keyframe_requests.clear();

    // 2 and 3 ask 100 ms apart, well within the 500 ms keyframe_request_interval.
    for id in [2, 3] {
        let mid = h.peer(id).remote_mid(1, TrackKind::Video);
        h.peer_mut(id)
            .rtc
            .writer(mid)
            .unwrap()
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .unwrap();
        h.run(Duration::from_millis(100));
    }
    h.run(Duration::from_millis(100));
    assert!(h.sfu.stats().keyframe_requests >= 1);
    assert_eq!(
        h.peer(1).keyframe_requests.len(),
        1,
        "two subscribers asking within the interval cost one keyframe request"
    );

    // After the interval, a new request goes through.
    h.run(Duration::from_millis(500));
    let mid = h.peer(2).remote_mid(1, TrackKind::Video);
    h.peer_mut(2)
        .rtc
        .writer(mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    h.run(Duration::from_millis(200));
    assert_eq!(h.peer(1).keyframe_requests.len(), 2);
}

#[test]
fn publisher_leaving_while_subscriber_holds_an_offer() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.join(1, 3);
    h.peer_mut(3).auto_answer = false;
    h.connect_all();
    assert_eq!(h.peer(3).unanswered.len(), 1);
    assert_eq!(sources(h.peer(3).last_offer()), tracks_of(&[1, 2]));

    h.leave(1);
    h.run(Duration::from_millis(50));
    assert_eq!(
        h.peer(3).offers.len(),
        1,
        "no second offer while the first is out"
    );
    assert_eq!(sources(h.peer(2).last_offer()), tracks_of(&[3]));

    // 3 answers the stale offer: the SFU follows up with one that stops 1's tracks.
    h.answer_pending(3);
    h.peer_mut(3).auto_answer = true;
    h.run(Duration::from_millis(50));
    assert_eq!(h.peer(3).offers.len(), 2);
    assert_eq!(sources(h.peer(3).last_offer()), tracks_of(&[2]));

    h.clear_received();
    h.exchange(&[2, 3], 5);
    let tail = |h: &Harness, id: u64| h.peer(id).sent[h.peer(id).sent.len() - 10..].to_vec();
    h.assert_received(3, 2, &tail(&h, 2));
    h.assert_received(2, 3, &tail(&h, 3));
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);
}

#[test]
fn client_offer_crossing_an_sfu_offer() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.peer_mut(1).auto_answer = false;
    h.join(1, 2);
    h.connect_all();
    assert_eq!(h.peer(1).unanswered.len(), 1, "1 holds the SFU's offer");

    // Glare: 1 offers a second video track while the SFU's offer is out. Theirs wins.
    let now = h.now;
    let peer = h.peer_mut(1);
    let mut change = peer.rtc.sdp_api();
    let screen = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let answer = h
        .sfu
        .handle_offer(now, ParticipantId(1), &offer.to_sdp_string())
        .expect("the SFU takes the crossing offer");
    let peer = h.peer_mut(1);
    peer.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    // The client drops the SFU's stale offer; the SFU sends a fresh one.
    peer.unanswered.clear();
    h.step(TICK);
    assert_eq!(h.peer(1).unanswered.len(), 1, "the SFU re-offers");
    assert_eq!(sources(h.peer(1).last_offer()), tracks_of(&[2]));
    h.answer_pending(1);
    h.peer_mut(1).auto_answer = true;
    h.run(Duration::from_millis(100));

    let mut expected_2 = tracks_of(&[1]);
    expected_2.push((1, TrackKind::Video));
    expected_2.sort_by_key(|(p, k)| (*p, *k == TrackKind::Video));
    assert_eq!(sources(h.peer(2).last_offer()), expected_2);

    h.exchange(&[1, 2], 4);
    h.assert_received(1, 2, &sent_by(&h, 2));
    h.assert_received(2, 1, &sent_by(&h, 1));

    // Media on the new track arrives on its own m-line.
    let shared = h.send_video_on(1, screen, 1000, 400);
    h.run(Duration::from_millis(50));
    let b = h.peer(2);
    let got: Vec<_> = b.received.iter().filter(|r| r.data == shared).collect();
    assert_eq!(got.len(), 1);
    let camera_mid = b.received_from(1)[0].mid.clone();
    assert_ne!(got[0].mid, camera_mid, "two tracks, two m-lines");
    assert_eq!(b.remote[&got[0].mid].kind, TrackKind::Video);
    assert_eq!(b.remote[&got[0].mid].publisher, ParticipantId(1));
}

#[test]
fn participant_can_rejoin_after_leaving() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 2);

    h.leave(1);
    h.run(Duration::from_millis(100));
    assert_eq!(sources(h.peer(2).last_offer()), []);

    // Same id, same address, new client.
    h.join(1, 1);
    h.connect_all();
    assert_eq!(sources(h.peer(1).last_offer()), tracks_of(&[2]));
    assert_eq!(sources(h.peer(2).last_offer()), tracks_of(&[1]));
    h.clear_received();
    h.exchange(&[1, 2], 4);
    h.assert_received(2, 1, &sent_by(&h, 1));
    let tail = h.peer(2).sent[h.peer(2).sent.len() - 8..].to_vec();
    h.assert_received(1, 2, &tail);
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);
}

#[test]
fn idle_participants_stay_alive_on_ice_consent_checks() {
    let mut h = Harness::new();
    let media_timeout = SfuConfig::new(sfu_addr(), sfu_addr()).media_timeout;
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    // Nobody publishes anything for several media timeouts: STUN keeps them alive.
    let datagrams = h.sfu.stats().datagrams_in;
    h.run(media_timeout * 3);
    assert!(h.sfu.stats().datagrams_in > datagrams, "no consent checks");
    assert!(h.peers.iter().all(|p| !p.vanished()), "{}", h.describe());
    assert_eq!(h.sfu.participant_count(), 2);
    h.exchange(&[1, 2], 3);
    h.assert_received(1, 2, &sent_by(&h, 2));
    h.assert_received(2, 1, &sent_by(&h, 1));
}

#[test]
fn five_participants_fan_out() {
    let mut h = Harness::new();
    let ids = [1, 2, 3, 4, 5];
    for id in ids {
        h.join(7, id);
    }
    h.connect_all();
    for me in ids {
        let others: Vec<u64> = ids.into_iter().filter(|o| *o != me).collect();
        assert_eq!(sources(h.peer(me).last_offer()), tracks_of(&others));
    }
    h.exchange(&ids, 3);
    for me in ids {
        for other in ids.into_iter().filter(|o| *o != me) {
            h.assert_received(me, other, &sent_by(&h, other));
        }
    }
    let stats = h.sfu.stats();
    assert_eq!(stats.frames_in, 5 * 6);
    assert_eq!(stats.frames_forwarded, 5 * 6 * 4);
    assert!(h.refused.is_empty(), "refused: {:?}", h.refused);
}

#[test]
fn connect_timeout_counts_from_the_first_offer() {
    // A client may take its time between joining and offering (a camera permission prompt):
    // SfuConfig::connect_timeout runs "after its first offer".
    let mut h = Harness::new();
    let connect_timeout = SfuConfig::new(sfu_addr(), sfu_addr()).connect_timeout;
    h.join(1, 1);
    h.sfu
        .add_participant(h.now, RoomId(1), ParticipantId(2))
        .unwrap();
    h.run(connect_timeout + Duration::from_secs(5));
    assert_eq!(h.sfu.participant_count(), 2, "2 vanished before it offered");

    h.connect_client(2);
    h.connect_all();
    assert!(!h.peer(2).vanished());
    h.exchange(&[1, 2], 3);
    h.assert_received(1, 2, &sent_by(&h, 2));
    h.assert_received(2, 1, &sent_by(&h, 1));
}

#[test]
fn a_blocked_source_is_not_forwarded_and_resumes_from_a_keyframe() {
    let mut h = Harness::new();
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 5);
    let sources: Vec<TrackSource> = h.peer(2).last_offer().iter().map(|t| t.source).collect();
    assert!(sources.contains(&TrackSource::Microphone) && sources.contains(&TrackSource::Camera));
    h.clear_received();

    // A host mutes 1's microphone: 2 keeps getting 1's video, no audio.
    h.sfu
        .set_blocked(h.now, ParticipantId(1), TrackSource::Microphone, true)
        .unwrap();
    h.exchange(&[1, 2], 5);
    let kinds = |h: &Harness| -> Vec<TrackKind> {
        h.peer(2)
            .received_from(1)
            .iter()
            .map(|r| read_tag(&r.data).expect("tagged").kind)
            .collect()
    };
    assert!(kinds(&h).contains(&TrackKind::Video));
    assert!(!kinds(&h).contains(&TrackKind::Audio));
    assert!(h.sfu.stats().frames_blocked >= 5);
    // 1 still gets 2's audio: only 1's source is stopped.
    assert!(h
        .peer(1)
        .received_from(2)
        .iter()
        .any(|r| read_tag(&r.data).map(|t| t.kind) == Some(TrackKind::Audio)));

    // Camera blocked, then resumed: the SFU asks 1 for a keyframe for its subscribers.
    h.run(Duration::from_millis(600));
    h.sfu
        .set_blocked(h.now, ParticipantId(1), TrackSource::Camera, true)
        .unwrap();
    h.peer_mut(1).keyframe_requests.clear();
    h.sfu
        .set_blocked(h.now, ParticipantId(1), TrackSource::Camera, false)
        .unwrap();
    h.sfu
        .set_blocked(h.now, ParticipantId(1), TrackSource::Microphone, false)
        .unwrap();
    let asked = h.run_until(Duration::from_secs(1), |h| {
        !h.peer(1).keyframe_requests.is_empty()
    });
    assert!(asked, "no keyframe request after resuming the camera");
    h.clear_received();
    h.exchange(&[1, 2], 5);
    assert!(kinds(&h).contains(&TrackKind::Audio), "audio resumed");

    // Unknown participants are refused.
    assert!(h
        .sfu
        .set_blocked(h.now, ParticipantId(99), TrackSource::Camera, true)
        .is_err());
}

#[test]
fn keyframe_starts_are_recognised_on_packets() {
    use super::{h264_starts_keyframe, vp8_starts_keyframe};
    // S=1, PID=0, no extension; VP8 header P bit clear: keyframe start.
    assert!(vp8_starts_keyframe(&[0x10, 0x50, 0x02]));
    // Same with X, I (15-bit picture ID), L and T/K bytes before the VP8 header.
    assert!(vp8_starts_keyframe(&[
        0x90, 0xf0, 0x80, 0x01, 0x00, 0x00, 0x50
    ]));
    // Delta frame (P bit set), continuation packet (S=0), other partition, truncated.
    assert!(!vp8_starts_keyframe(&[0x10, 0x51]));
    assert!(!vp8_starts_keyframe(&[0x00, 0x50]));
    assert!(!vp8_starts_keyframe(&[0x11, 0x50]));
    assert!(!vp8_starts_keyframe(&[0x90, 0x80]));
    assert!(!vp8_starts_keyframe(&[]));
    // H.264: IDR alone, SPS in a STAP-A, IDR starting an FU-A; a non-IDR slice is not.
    assert!(h264_starts_keyframe(&[0x65, 0x88]));
    assert!(h264_starts_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42]));
    assert!(h264_starts_keyframe(&[0x7c, 0x85, 0x00]));
    assert!(!h264_starts_keyframe(&[0x7c, 0x05, 0x00]));
    assert!(!h264_starts_keyframe(&[0x41, 0x9a]));
    assert!(!h264_starts_keyframe(&[0x78, 0x00]));
}

#[test]
fn active_speakers_follow_the_audio_levels_and_reach_every_member() {
    let mut h = Harness::new();
    for id in 1..=3 {
        h.join(1, id);
    }
    h.connect_all();
    h.peer_mut(1).audio_level = Some(-30);
    h.peer_mut(2).audio_level = Some(-127);
    h.exchange(&[1, 2, 3], 30);
    let speakers_seen_by = |h: &Harness, id: u64| -> Option<Vec<ParticipantId>> {
        h.peer(id).signals.iter().rev().find_map(|s| match s {
            SfuEvent::ActiveSpeakers { speakers } => Some(speakers.clone()),
            _ => None,
        })
    };
    for id in 1..=3 {
        assert_eq!(
            speakers_seen_by(&h, id),
            Some(vec![ParticipantId(1)]),
            "{}",
            h.describe()
        );
    }
    // 2 starts talking: most recent first. 1 falls silent: gone from the list.
    h.peer_mut(2).audio_level = Some(-25);
    h.exchange(&[1, 2, 3], 30);
    assert_eq!(
        speakers_seen_by(&h, 3),
        Some(vec![ParticipantId(2), ParticipantId(1)])
    );
    h.peer_mut(1).audio_level = Some(-127);
    h.exchange(&[1, 2, 3], 40);
    assert_eq!(speakers_seen_by(&h, 3), Some(vec![ParticipantId(2)]));
}

/// Polls a client's PeerConnection at `now` (handling timeouts already due, as the SFU does)
/// and returns the datagrams it sends.
fn client_datagrams(rtc: &mut Rtc, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut due_rounds = 0;
    loop {
        match rtc.poll_output().expect("client poll") {
            Output::Timeout(t) if t <= now && due_rounds < 4 => {
                due_rounds += 1;
                rtc.handle_input(Input::Timeout(now))
                    .expect("client timeout");
            }
            Output::Timeout(_) => return out,
            Output::Transmit(t) => out.push((t.source, t.contents.to_vec())),
            Output::Event(_) => {}
        }
    }
}

#[test]
fn forwarded_media_leaves_in_the_drive_that_brought_it() {
    // Without a downlink estimator str0m does not pace, so nothing but the SFU's own polling
    // stands between a publisher's packet and its copies: they must be out by the time
    // `handle_receive` returns, with no `handle_timeout` (another trip around the media loop).
    let mut h = Harness::with_config(SfuConfig {
        downlink_estimation: false,
        ..SfuConfig::new(sfu_addr(), sfu_addr())
    });
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1], 5);
    h.run(Duration::from_millis(100));
    while h.sfu.poll_output().is_some() {}

    let frame = h.send_audio(1);
    let now = h.now;
    let datagrams = client_datagrams(&mut h.peer_mut(1).rtc, now);
    assert!(!datagrams.is_empty(), "the publisher sent nothing");
    for (source, bytes) in &datagrams {
        h.sfu
            .handle_receive(now, *source, sfu_addr(), bytes)
            .expect("SFU takes the publisher's datagram");
    }
    let mut to_subscriber = Vec::new();
    while let Some(output) = h.sfu.poll_output() {
        if let SfuOutput::Transmit {
            destination,
            contents,
            ..
        } = output
        {
            if destination == peer_addr(2) {
                to_subscriber.push(contents);
            }
        }
    }
    assert!(
        !to_subscriber.is_empty(),
        "the forwarded packet waits for a timeout"
    );
    let subscriber = &mut h.peer_mut(2).rtc;
    for contents in &to_subscriber {
        subscriber
            .handle_input(Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: sfu_addr(),
                    destination: peer_addr(2),
                    contents: contents.as_slice().try_into().expect("SFU datagram"),
                },
            ))
            .expect("subscriber takes the datagram");
    }
    let mut got = Vec::new();
    loop {
        match subscriber.poll_output().expect("subscriber poll") {
            Output::Event(Event::MediaData(data)) => got.push(data.data.to_vec()),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(got.contains(&frame), "the subscriber did not get the frame");
}

#[test]
fn probing_starts_from_the_initial_estimate_not_from_the_first_tracks() {
    // str0m caps its probes at twice the desired rate and its first probes set the
    // estimate. A subscriber's first allocation sees little (audio, a video track not yet
    // measured): the rate it asks str0m for must not fall below the initial estimate, or
    // the start-up probes would pull the estimate down and cut the video that follows.
    let config = SfuConfig::new(sfu_addr(), sfu_addr());
    let initial = config.initial_downlink_bps;
    let mut h = Harness::with_config(config);
    h.join(1, 1);
    h.join(1, 2);
    h.connect_all();
    h.exchange(&[1, 2], 3);
    for id in [1, 2] {
        let desired = h.sfu.participants[&ParticipantId(id)].desired_bps;
        assert!(
            desired + PROBE_REARM_BPS >= initial,
            "{id} asks str0m for {desired} bps, below the initial {initial}"
        );
    }
    // What the subscriber accepts still caps it: no probing for what it refuses.
    h.sfu
        .set_video_layout(h.now, ParticipantId(2), [], Some(300_000))
        .expect("layout");
    assert!(h.sfu.participants[&ParticipantId(2)].desired_bps <= 300_000);
}
