//! Checks every received frame against the clip its sender plays.

use std::time::{Duration, Instant, SystemTime};

use proto::TrackKind;

use crate::clip::{self, Clip};
use crate::report::{LayerChange, ReceivedTrack};

/// Gap between decodable video frames counted as a freeze.
const FREEZE: Duration = Duration::from_millis(500);

/// A remote track being received.
#[derive(Debug)]
pub struct TrackReceiver {
    pub from: String,
    pub participant_id: u64,
    pub kind: TrackKind,
    frames: u64,
    verified: u64,
    out_of_order: u64,
    freezes: u64,
    latencies_us: Vec<u64>,
    /// Audio: the clip position of the last frame. Video: its RTP time.
    last_position: Option<u64>,
    /// Video: the clip (and its bitrate) and the RTP time of its last keyframe; deltas follow
    /// from there. Relative to the keyframe, because an SFU that switches simulcast layers
    /// continues the RTP clock by elapsed time, not by the sender's frame count.
    anchor: Option<(&'static Clip, u32, u64)>,
    /// Video: when the received layer (the clip's bitrate) changed, and to what.
    layer_changes: Vec<(Instant, u32)>,
    /// The clock `layer_changes` are reported against (the bot's start).
    started: Instant,
    last_decodable: Option<Instant>,
    /// Video delta frames before the first keyframe: no decoder can use them, so they are
    /// not counted as received; the receiver asks for a keyframe instead.
    skipped_before_keyframe: u64,
    pub removed: bool,
}

/// What a receiver makes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    Verified,
    Unverified,
    /// Video without a keyframe yet: ask the sender for one.
    NeedsKeyframe,
}

impl TrackReceiver {
    /// A receiver whose layer changes are timed from `started`.
    pub fn new(from: String, participant_id: u64, kind: TrackKind, started: Instant) -> Self {
        TrackReceiver {
            from,
            participant_id,
            kind,
            frames: 0,
            verified: 0,
            out_of_order: 0,
            freezes: 0,
            latencies_us: Vec::new(),
            last_position: None,
            anchor: None,
            layer_changes: Vec::new(),
            started,
            last_decodable: None,
            skipped_before_keyframe: 0,
            removed: false,
        }
    }

    /// Records one frame. `rtp_time` is the frame's RTP timestamp in ticks; the sender puts
    /// frame `n` of its sending at `n * ticks_per_frame`.
    pub fn check(
        &mut self,
        now: Instant,
        rtp_time: u64,
        data: &[u8],
        capture_time: Option<SystemTime>,
    ) -> FrameCheck {
        if self.kind == TrackKind::Video && self.anchor.is_none() && !clip::is_vp8_keyframe(data) {
            self.skipped_before_keyframe += 1;
            return FrameCheck::NeedsKeyframe;
        }
        if self.on_frame(now, rtp_time, data, capture_time) {
            FrameCheck::Verified
        } else {
            FrameCheck::Unverified
        }
    }

    /// Records one frame and returns whether it verified.
    pub fn on_frame(
        &mut self,
        now: Instant,
        rtp_time: u64,
        data: &[u8],
        capture_time: Option<SystemTime>,
    ) -> bool {
        self.frames += 1;
        if let Some(latency) = capture_time.and_then(|t| SystemTime::now().duration_since(t).ok()) {
            self.latencies_us.push(latency.as_micros() as u64);
        }
        let position = match self.kind {
            TrackKind::Audio if !rtp_time.is_multiple_of(clip::AUDIO_TICKS_PER_FRAME) => {
                return false
            }
            TrackKind::Audio => rtp_time / clip::AUDIO_TICKS_PER_FRAME,
            TrackKind::Video => rtp_time,
        };
        if self.last_position.is_some_and(|last| position <= last) {
            self.out_of_order += 1;
            return false;
        }
        self.last_position = Some(position);
        let verified = match self.kind {
            TrackKind::Audio => {
                let clip = clip::audio();
                clip.frames[(position % clip.frames.len() as u64) as usize].as_ref() == data
            }
            TrackKind::Video => self.verify_video(now, rtp_time, data),
        };
        if verified {
            self.verified += 1;
            if self.kind == TrackKind::Video {
                if self
                    .last_decodable
                    .is_some_and(|last| now.saturating_duration_since(last) > FREEZE)
                {
                    self.freezes += 1;
                }
                self.last_decodable = Some(now);
            }
        }
        verified
    }

    fn verify_video(&mut self, now: Instant, rtp_time: u64, data: &[u8]) -> bool {
        if clip::is_vp8_keyframe(data) {
            // Senders restart their clip at a keyframe; find which clip (layer) it is.
            let previous = self.anchor.map(|(_, kbps, _)| kbps);
            self.anchor = clip::identify_keyframe(data).map(|(kbps, c)| (c, kbps, rtp_time));
            if let Some((_, kbps, _)) = self.anchor {
                if previous != Some(kbps) {
                    self.layer_changes.push((now, kbps));
                }
            }
            return self.anchor.is_some();
        }
        let Some((clip, _, start)) = self.anchor else {
            return false;
        };
        let since = rtp_time - start;
        if !since.is_multiple_of(clip::VIDEO_TICKS_PER_FRAME) {
            return false;
        }
        let index = ((since / clip::VIDEO_TICKS_PER_FRAME) % clip.frames.len() as u64) as usize;
        clip.frames[index].as_ref() == data
    }

    /// A frame arrived that could not be opened (failed decryption or a wrong sender).
    pub fn on_unreadable(&mut self) {
        self.frames += 1;
    }

    pub fn summary(&self) -> ReceivedTrack {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        ReceivedTrack {
            from: self.from.clone(),
            participant_id: self.participant_id,
            kind: self.kind.as_str().into(),
            frames: self.frames,
            verified: self.verified,
            latency_ms_p50: percentile_ms(&sorted, 0.50),
            latency_ms_p99: percentile_ms(&sorted, 0.99),
            out_of_order: self.out_of_order,
            freezes: self.freezes,
            skipped_before_keyframe: self.skipped_before_keyframe,
            removed: self.removed,
            layer_changes: self
                .layer_changes
                .iter()
                .map(|(at, kbps)| LayerChange {
                    at_ms: at.saturating_duration_since(self.started).as_millis() as u64,
                    kbps: *kbps,
                })
                .collect(),
        }
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_verifies_from_a_keyframe_in_order() {
        let clip = clip::video(500);
        let mut rx = TrackReceiver::new("a".into(), 1, TrackKind::Video, Instant::now());
        let now = Instant::now();
        // A delta before any keyframe cannot be checked.
        assert!(!rx.on_frame(now, 3000 * 7, &clip.frames[3], None));
        assert!(rx.on_frame(now, 3000 * 10, &clip.frames[0], None));
        assert!(rx.on_frame(now, 3000 * 11, &clip.frames[1], None));
        // Wrong content at a position, and a frame from the past.
        assert!(!rx.on_frame(now, 3000 * 12, &clip.frames[5], None));
        assert!(!rx.on_frame(now, 3000 * 11, &clip.frames[1], None));
        // Loss is fine: position 14 is clip frame 4.
        assert!(rx.on_frame(now, 3000 * 14, &clip.frames[4], None));
        let summary = rx.summary();
        assert_eq!(
            (summary.frames, summary.verified, summary.out_of_order),
            (6, 3, 1)
        );
    }

    #[test]
    fn audio_verifies_by_position_and_counts_freezes_only_for_video() {
        let clip = clip::audio();
        let len = clip.frames.len() as u64;
        let mut rx = TrackReceiver::new("a".into(), 1, TrackKind::Audio, Instant::now());
        let now = Instant::now();
        assert!(rx.on_frame(now, 960 * (len + 1), &clip.frames[1], None));
        assert!(!rx.on_frame(now, 960 * (len + 2), b"tampered", None));
        assert!(!rx.on_frame(now, 960 * (len + 3) + 1, &clip.frames[3], None));
        assert_eq!(rx.summary().freezes, 0);
    }

    #[test]
    fn video_before_the_first_keyframe_asks_for_one_and_is_not_counted() {
        let clip = clip::video(500);
        let mut rx = TrackReceiver::new("a".into(), 1, TrackKind::Video, Instant::now());
        let now = Instant::now();
        assert_eq!(
            rx.check(now, 3000, &clip.frames[1], None),
            FrameCheck::NeedsKeyframe
        );
        assert_eq!(
            rx.check(now, 6000, &clip.frames[0], None),
            FrameCheck::Verified
        );
        assert_eq!(
            rx.check(now, 9000, &clip.frames[1], None),
            FrameCheck::Verified
        );
        assert_eq!(
            rx.check(now, 12000, &clip.frames[5], None),
            FrameCheck::Unverified
        );
        let summary = rx.summary();
        assert_eq!(
            (
                summary.frames,
                summary.verified,
                summary.skipped_before_keyframe
            ),
            (3, 2, 1)
        );
    }

    #[test]
    fn freezes_are_gaps_over_half_a_second() {
        let clip = clip::video(150);
        let mut rx = TrackReceiver::new("a".into(), 1, TrackKind::Video, Instant::now());
        let t0 = Instant::now();
        assert!(rx.on_frame(t0, 0, &clip.frames[0], None));
        assert!(rx.on_frame(t0 + Duration::from_millis(33), 3000, &clip.frames[1], None));
        assert!(rx.on_frame(t0 + Duration::from_millis(900), 6000, &clip.frames[2], None));
        assert_eq!(rx.summary().freezes, 1);
    }

    #[test]
    fn a_layer_switch_at_a_keyframe_verifies_and_is_recorded() {
        let low = clip::video(150);
        let high = clip::video(1500);
        let mut rx = TrackReceiver::new("a".into(), 1, TrackKind::Video, Instant::now());
        let t0 = rx.started;
        assert!(rx.on_frame(t0, 3000, &low.frames[0], None));
        assert!(rx.on_frame(t0, 6000, &low.frames[1], None));
        // The SFU continued the clock by elapsed time: not a multiple of the frame interval.
        let at = t0 + Duration::from_millis(100);
        assert!(rx.on_frame(at, 6000 + 2917, &high.frames[0], None));
        assert!(rx.on_frame(at, 6000 + 2917 + 3000, &high.frames[1], None));
        assert!(!rx.on_frame(at, 6000 + 2917 + 6000, &low.frames[2], None));
        let summary = rx.summary();
        assert_eq!(
            summary.layer_changes,
            [
                LayerChange {
                    at_ms: 0,
                    kbps: 150
                },
                LayerChange {
                    at_ms: 100,
                    kbps: 1500
                }
            ]
        );
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile_ms(&[], 0.5), None);
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
    }
}
