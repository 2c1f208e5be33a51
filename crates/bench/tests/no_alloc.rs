//! Heap allocations per forwarded packet on the SFU's forwarding path.
//!
//! A counting global allocator counts every allocation made while `sfu::Sfu` handles a
//! datagram or a timeout and while its outputs are drained, in a 3-person meeting (everyone publishes
//! Opus-like audio at 50 frames/s and VP8-like video at 30 fps, 2 RTP packets a frame) with
//! real str0m peers wired to the SFU in memory and synthetic time (the approach of
//! crates/sfu/src/sfu/tests.rs). The peers' own work is not counted.
//!
//! The target is zero allocations per forwarded packet. The SFU forwards RTP packets
//! through str0m's RTP mode (payloads shared by reference count, no depacketizing, no
//! per-frame copies; see crates/sfu/src/sfu.rs `forward`), and what still allocates is inside
//! str0m 0.25: one `Arc<[u8]>` per received packet's payload, one `Vec<u8>` per datagram it
//! sends (its `DatagramSend`), RTCP and resend-cache bookkeeping. The test prints the measured
//! number and asserts an upper bound just above it, so that it fails on a regression; lower
//! the bound as the forwarding path improves (and make it 0 when the target is met).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sfu::{ParticipantId, RoomId, Sfu, SfuConfig, SfuEvent, SfuOutput};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Allocations per forwarded RTP packet that this test tolerates. Measured on the RTP-level
/// forwarding path of str0m 0.25 (see the module comment): 2.86 per packet (5,997 allocations
/// for 2,100 forwarded packets; deterministic: synthetic time, fixed frame sizes; RTCP, STUN
/// and timer work of the same window are included, as they are part of forwarding). It was
/// 7.00 with frame-level forwarding. The margin allows small changes in str0m's internal
/// buffering; it does not hide one new allocation per packet (that would add 1.0). Lower it
/// whenever the forwarding path improves; 0 is the target.
/// 2.93 without downlink estimation; str0m's TWCC estimator and pacer (on by default, for
/// simulcast layer choice) add about 0.55 per packet: 3.48 measured, 3.44 once due timeouts
/// were handled inside the poll (7,248 allocations for 2,104 packets).
const MAX_ALLOCS_PER_PACKET: f64 = 3.5;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TICK: Duration = Duration::from_millis(10);

fn sfu_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3478))
}

struct Peer {
    id: u64,
    addr: SocketAddr,
    rtc: Rtc,
    audio: Mid,
    video: Mid,
    next_timeout: Instant,
    received: u64,
}

fn vp8_frame(seq: u32) -> Vec<u8> {
    // Keyframe header (so the SFU forwards at once), then filler: 500 kbps at 30 fps.
    let mut d = vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    d.resize(2083, seq as u8);
    d
}

fn opus_frame(seq: u32) -> Vec<u8> {
    let mut d = vec![0xf8];
    d.resize(80, seq as u8);
    d
}

fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

struct Net {
    now: Instant,
    sfu: Sfu,
    peers: Vec<Peer>,
    counted_allocs: u64,
    /// Of which while draining outputs (`poll_output`).
    output_allocs: u64,
    counted_packets: u64,
}

impl Net {
    /// Runs an SFU call with allocation counting on.
    fn counted<T>(&mut self, f: impl FnOnce(&mut Sfu) -> T) -> T {
        let before = ALLOCS.load(Ordering::Relaxed);
        COUNTING.store(true, Ordering::SeqCst);
        let r = f(&mut self.sfu);
        COUNTING.store(false, Ordering::SeqCst);
        self.counted_allocs += ALLOCS.load(Ordering::Relaxed) - before;
        r
    }

    fn join(&mut self, id: u64) {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16));
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.sfu
            .add_participant(self.now, RoomId(1), ParticipantId(id))
            .unwrap();
        let mut change = rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let answer = self
            .sfu
            .handle_offer(self.now, ParticipantId(id), &offer.to_sdp_string())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.peers.push(Peer {
            id,
            addr,
            rtc,
            audio,
            video,
            next_timeout: self.now,
            received: 0,
        });
    }

    fn write(
        peer: &mut Peer,
        mid: Mid,
        codec: Codec,
        time: MediaTime,
        data: Vec<u8>,
        now: Instant,
    ) {
        let Some(w) = peer.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        let _ = w.write(pt, now, time, data);
    }

    fn step(&mut self, tick: u64, measure: bool) {
        self.now += TICK;
        let now = self.now;
        // Media: audio every 20 ms, video every 30 ms.
        for p in &mut self.peers {
            if tick % 2 == 0 {
                let seq = (tick / 2) as u32;
                let t = MediaTime::new(u64::from(seq) * 960, Frequency::FORTY_EIGHT_KHZ);
                Self::write(p, p.audio, Codec::Opus, t, opus_frame(seq), now);
            }
            if tick % 3 == 0 {
                let seq = (tick / 3) as u32;
                let t = MediaTime::new(u64::from(seq) * 2700, Frequency::NINETY_KHZ);
                Self::write(p, p.video, Codec::Vp8, t, vp8_frame(seq), now);
            }
        }
        for _ in 0..1000 {
            let mut moved = false;
            if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
                if measure {
                    self.counted(|s| s.handle_timeout(now));
                } else {
                    self.sfu.handle_timeout(now);
                }
            }
            loop {
                let out = if measure {
                    let before = self.counted_allocs;
                    let out = self.counted(|s| s.poll_output());
                    self.output_allocs += self.counted_allocs - before;
                    out
                } else {
                    self.sfu.poll_output()
                };
                let Some(out) = out else { break };
                moved = true;
                match out {
                    SfuOutput::Transmit {
                        source,
                        destination,
                        contents,
                        ..
                    } => {
                        if measure && is_rtp(&contents) {
                            self.counted_packets += 1;
                        }
                        let peer = self
                            .peers
                            .iter_mut()
                            .find(|p| p.addr == destination)
                            .unwrap();
                        let input = Input::Receive(
                            now,
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination,
                                contents: contents.as_slice().try_into().unwrap(),
                            },
                        );
                        peer.rtc.handle_input(input).unwrap();
                    }
                    SfuOutput::Signal { participant, event } => {
                        if let SfuEvent::Offer { sdp, .. } = event {
                            let peer = self
                                .peers
                                .iter_mut()
                                .find(|p| p.id == participant.0)
                                .unwrap();
                            let answer = peer
                                .rtc
                                .sdp_api()
                                .accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap())
                                .unwrap();
                            self.sfu
                                .handle_answer(now, participant, &answer.to_sdp_string())
                                .unwrap();
                        }
                    }
                }
            }
            let mut to_sfu = Vec::new();
            for p in &mut self.peers {
                if p.next_timeout <= now {
                    p.rtc.handle_input(Input::Timeout(now)).unwrap();
                }
                loop {
                    match p.rtc.poll_output().unwrap() {
                        Output::Timeout(t) => {
                            p.next_timeout = t;
                            break;
                        }
                        Output::Transmit(t) => {
                            to_sfu.push((t.source, t.destination, t.contents.to_vec()))
                        }
                        Output::Event(Event::MediaData(_)) => p.received += 1,
                        Output::Event(_) => {}
                    }
                }
            }
            for (source, destination, contents) in to_sfu {
                moved = true;
                if measure {
                    self.counted(|s| s.handle_receive(now, source, destination, &contents))
                        .ok();
                } else {
                    self.sfu
                        .handle_receive(now, source, destination, &contents)
                        .ok();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }
}

#[test]
fn allocations_per_forwarded_packet() {
    let now = Instant::now();
    let mut net = Net {
        now,
        // The downlink estimator and pacer run as deployed; only the layer policy is told to
        // forward every track, whatever the estimate of this synthetic network says, so that
        // the same packets are counted in every run.
        sfu: Sfu::new(SfuConfig {
            thumbnail_floor_bps: u64::MAX,
            ..SfuConfig::new(sfu_addr(), sfu_addr())
        }),
        peers: Vec::new(),
        counted_allocs: 0,
        output_allocs: 0,
        counted_packets: 0,
    };
    for id in 1..=3 {
        net.join(id);
    }
    // Connect, renegotiate, reach steady forwarding (3 s of simulated time).
    for tick in 0..300 {
        net.step(tick, false);
    }
    let received_before: u64 = net.peers.iter().map(|p| p.received).sum();
    assert!(received_before > 0, "no media forwarded during warm-up");
    // Measure 3 s of steady state.
    for tick in 300..600 {
        net.step(tick, true);
    }
    let received: u64 = net.peers.iter().map(|p| p.received).sum::<u64>() - received_before;
    assert!(
        net.counted_packets > 1000,
        "too few packets forwarded: {}",
        net.counted_packets
    );
    let per_packet = net.counted_allocs as f64 / net.counted_packets as f64;
    println!(
        "SFU forwarding path: {} allocations ({} of them in poll_output) for {} forwarded RTP packets ({} frames received): {per_packet:.2} allocations per forwarded packet (target: 0; bound: {MAX_ALLOCS_PER_PACKET})",
        net.counted_allocs, net.output_allocs, net.counted_packets, received
    );
    assert!(
        per_packet <= MAX_ALLOCS_PER_PACKET,
        "allocations per forwarded packet rose to {per_packet:.2} (bound {MAX_ALLOCS_PER_PACKET})"
    );
}
