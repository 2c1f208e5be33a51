//! State all bots of one run share (the generator is single-threaded: `Rc` and cells).

use std::cell::{Cell, RefCell};
use std::time::Instant;

use tokio::sync::watch;

use crate::payload::{self, Kind};

/// One bot's join progress.
#[derive(Debug, Clone, Default)]
pub struct BotState {
    /// When it started connecting (signaling or relay join).
    pub started: Option<Instant>,
    /// When the first verified remote frame arrived.
    pub first_frame: Option<Instant>,
    /// Which publishers it has received a verified video or audio frame from.
    pub heard: Vec<bool>,
    /// How many distinct publishers it should hear.
    pub expect: usize,
    pub heard_count: usize,
}

pub struct Shared {
    /// Measurement window in generator nanoseconds: frames sent inside it count.
    window_start: Cell<u64>,
    window_end: Cell<u64>,
    pub rtp_rx: Cell<u64>,
    pub datagrams_rx: Cell<u64>,
    pub frames_rx: Cell<u64>,
    pub frames_sent_audio: Cell<u64>,
    pub frames_sent_video: Cell<u64>,
    /// Frames sent in the window by publishers that are themselves verifying receivers.
    pub frames_sent_by_verifiers: Cell<u64>,
    /// Bots `0..verifying` decrypt and verify every frame; the others (large meetings only,
    /// see [`crate::scenario::Scenario::verifying_bots`]) count RTP datagrams in the window
    /// without handing them to their PeerConnection.
    pub verifying: usize,
    pub bad_frames: Cell<u64>,
    /// Frames sent at any time (also outside the window).
    pub sent_total: Cell<u64>,
    pub latency_us: RefCell<Vec<u32>>,
    /// How late the generator's 1 ms probe timer fired, microseconds, in the window.
    pub lag_us: RefCell<Vec<u32>>,
    pub bots: RefCell<Vec<BotState>>,
    pub errors: RefCell<Vec<String>>,
    pub stop: watch::Sender<bool>,
}

impl Shared {
    pub fn new(bots: usize, publishers: usize, verifying: usize) -> Self {
        Shared {
            window_start: Cell::new(u64::MAX),
            window_end: Cell::new(u64::MAX),
            rtp_rx: Cell::new(0),
            datagrams_rx: Cell::new(0),
            frames_rx: Cell::new(0),
            frames_sent_audio: Cell::new(0),
            frames_sent_video: Cell::new(0),
            frames_sent_by_verifiers: Cell::new(0),
            verifying,
            bad_frames: Cell::new(0),
            sent_total: Cell::new(0),
            latency_us: RefCell::new(Vec::with_capacity(1 << 20)),
            lag_us: RefCell::new(Vec::with_capacity(1 << 16)),
            bots: RefCell::new(vec![
                BotState {
                    heard: vec![false; publishers],
                    ..Default::default()
                };
                bots
            ]),
            errors: RefCell::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }

    pub fn start_window(&self, at_ns: u64) {
        self.window_start.set(at_ns);
    }

    pub fn end_window(&self, at_ns: u64) {
        self.window_end.set(at_ns);
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.window_start.get() && t < self.window_end.get()
    }

    pub fn error(&self, e: impl Into<String>) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < 200 {
            errors.push(e.into());
        }
    }

    pub fn started(&self, bot: usize) {
        self.bots.borrow_mut()[bot].started = Some(Instant::now());
    }

    /// A datagram arrived at a bot.
    #[inline]
    pub fn on_datagram(&self, d: &[u8]) {
        let now = payload::now_ns();
        if self.in_window(now) {
            self.datagrams_rx.set(self.datagrams_rx.get() + 1);
            if crate::sys::is_rtp(d) {
                self.rtp_rx.set(self.rtp_rx.get() + 1);
            }
        }
    }

    /// Whether bot `bot` only counts the RTP datagram `d` instead of decrypting and verifying
    /// it: a counting bot, once the window opened (before, it joins and verifies like any
    /// other, so join times and readiness cover every bot).
    #[inline]
    pub fn only_counts(&self, bot: usize, d: &[u8]) -> bool {
        // The window opens with its start time set (`u64::MAX` until then).
        bot >= self.verifying && self.window_start.get() != u64::MAX && crate::sys::is_rtp(d)
    }

    /// Frames the verifying bots should receive, given what was sent in the window: each
    /// frame reaches every verifying bot but its own publisher.
    pub fn frames_expected(&self) -> u64 {
        let sent = self.frames_sent_audio.get() + self.frames_sent_video.get();
        (sent * self.verifying as u64).saturating_sub(self.frames_sent_by_verifiers.get())
    }

    /// Publisher `publisher` (a bot index) sent a frame.
    pub fn on_sent(&self, kind: Kind, publisher: usize, sent_ns: u64) {
        self.sent_total.set(self.sent_total.get() + 1);
        if self.in_window(sent_ns) {
            if publisher < self.verifying {
                self.frames_sent_by_verifiers
                    .set(self.frames_sent_by_verifiers.get() + 1);
            }
            let c = match kind {
                Kind::Audio => &self.frames_sent_audio,
                Kind::Video => &self.frames_sent_video,
            };
            c.set(c.get() + 1);
        }
    }

    /// A complete frame arrived at a bot.
    pub fn on_frame(&self, bot: usize, data: &[u8]) {
        let now_ns = payload::now_ns();
        let Some(tag) = payload::verify(data) else {
            self.bad_frames.set(self.bad_frames.get() + 1);
            return;
        };
        {
            let mut bots = self.bots.borrow_mut();
            let b = &mut bots[bot];
            if b.first_frame.is_none() {
                b.first_frame = Some(Instant::now());
            }
            if let Some(h) = b.heard.get_mut(tag.publisher as usize) {
                if !*h {
                    *h = true;
                    b.heard_count += 1;
                }
            }
        }
        if self.in_window(tag.sent_ns) {
            self.frames_rx.set(self.frames_rx.get() + 1);
            let us = now_ns.saturating_sub(tag.sent_ns) / 1000;
            self.latency_us
                .borrow_mut()
                .push(us.min(u32::MAX as u64) as u32);
        }
    }

    /// Bots that have heard every publisher they expect.
    pub fn ready_count(&self) -> usize {
        self.bots
            .borrow()
            .iter()
            .filter(|b| b.heard_count >= b.expect)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP header (version 2, payload type 96) and a little payload.
    const RTP: [u8; 16] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 1, 2, 3, 4];
    /// An RTCP sender report header.
    const RTCP: [u8; 8] = [0x80, 200, 0, 1, 0, 0, 0, 7];

    #[test]
    fn expected_frames_count_only_verifying_receivers() {
        // Three bots, the first two verify. Publisher 0 (a verifier) reaches one other
        // verifier, publisher 2 (counting only) reaches both.
        let shared = Shared::new(3, 3, 2);
        shared.start_window(0);
        let t = payload::now_ns();
        for _ in 0..10 {
            shared.on_sent(Kind::Video, 0, t);
            shared.on_sent(Kind::Audio, 2, t);
        }
        assert_eq!(shared.frames_expected(), 10 + 20);

        // Without sampling every frame reaches every bot but its publisher.
        let all = Shared::new(3, 3, 3);
        all.start_window(0);
        for publisher in 0..3 {
            all.on_sent(Kind::Video, publisher, t);
        }
        assert_eq!(all.frames_expected(), 3 * 2);
    }

    #[test]
    fn counting_bots_skip_rtp_only_once_the_window_opens() {
        let shared = Shared::new(3, 3, 2);
        assert!(
            !shared.only_counts(2, &RTP),
            "before the window every bot verifies"
        );
        shared.start_window(payload::now_ns());
        assert!(shared.only_counts(2, &RTP));
        assert!(!shared.only_counts(2, &RTCP), "RTCP still goes to str0m");
        assert!(
            !shared.only_counts(0, &RTP),
            "verifying bots see everything"
        );
        assert!(!shared.only_counts(1, &RTP));
    }
}
