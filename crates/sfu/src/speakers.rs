//! Active speakers from the RFC 6464 audio level every Opus packet carries in a header
//! extension (in the clear even with end-to-end encryption: it is not part of the frame).
//!
//! Each publisher's loudness is smoothed so that a cough or a click does not make a speaker;
//! a publisher starts speaking above [`START_LOUDNESS`] and stops below [`STOP_LOUDNESS`] or
//! after [`SILENCE_AFTER`] without audio. The room's list is ordered by who started speaking
//! last (most recent first), which is what last-N forwarding and the UI highlight need.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ParticipantId;

/// Smoothed loudness (127 + dBov, so 0 is silence and 127 full scale) to start speaking:
/// about -60 dBov, below ordinary speech (-20 to -50 dBov) and above room noise.
const START_LOUDNESS: f32 = 67.0;
/// Hysteresis: stop only clearly below the start level.
const STOP_LOUDNESS: f32 = 55.0;
/// Weight of each new packet (about 20 ms of audio) in the smoothed loudness: ~100 ms to rise.
const SMOOTHING: f32 = 0.2;
/// A publisher with no audio for this long is silent.
const SILENCE_AFTER: Duration = Duration::from_millis(1000);
/// Changes are reported at most this often per room.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Voice {
    loudness: f32,
    speaking: bool,
    last_heard: Instant,
    /// When it last started speaking: the recency order.
    since: Instant,
}

/// One room's speakers.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    voices: HashMap<ParticipantId, Voice>,
    reported: Vec<ParticipantId>,
    reported_at: Option<Instant>,
}

impl SpeakerDetector {
    /// An audio packet's level from `publisher`, in dBov (0 loudest, -127 silence).
    pub fn observe(&mut self, publisher: ParticipantId, level_dbov: i8, now: Instant) {
        let loudness = 127.0 + f32::from(level_dbov.clamp(-127, 0));
        let voice = self.voices.entry(publisher).or_insert(Voice {
            loudness: 0.0,
            speaking: false,
            last_heard: now,
            since: now,
        });
        voice.loudness += SMOOTHING * (loudness - voice.loudness);
        voice.last_heard = now;
        if !voice.speaking && voice.loudness >= START_LOUDNESS {
            voice.speaking = true;
            voice.since = now;
        } else if voice.speaking && voice.loudness < STOP_LOUDNESS {
            voice.speaking = false;
        }
    }

    pub fn forget(&mut self, publisher: ParticipantId) {
        self.voices.remove(&publisher);
    }

    /// Who speaks now, most recent first.
    pub fn speakers(&self, now: Instant) -> Vec<ParticipantId> {
        let mut speaking: Vec<(&ParticipantId, &Voice)> = self
            .voices
            .iter()
            .filter(|(_, v)| {
                v.speaking && now.saturating_duration_since(v.last_heard) < SILENCE_AFTER
            })
            .collect();
        speaking.sort_by(|a, b| b.1.since.cmp(&a.1.since).then(a.0.cmp(b.0)));
        speaking.into_iter().map(|(id, _)| *id).collect()
    }

    /// The new list when it changed and the last report is old enough.
    pub fn poll_change(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        if self
            .reported_at
            .is_some_and(|at| now.saturating_duration_since(at) < REPORT_INTERVAL)
        {
            return None;
        }
        let speakers = self.speakers(now);
        if speakers == self.reported {
            return None;
        }
        self.reported = speakers.clone();
        self.reported_at = Some(now);
        Some(speakers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut SpeakerDetector, who: u64, level: i8, from: Instant, ms: u64) {
        for i in 0..ms / 20 {
            d.observe(
                ParticipantId(who),
                level,
                from + Duration::from_millis(i * 20),
            );
        }
    }

    #[test]
    fn speech_starts_speaking_silence_and_clicks_do_not() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, 1, -127, t0, 1000);
        // A single loud packet in silence is not speech.
        d.observe(ParticipantId(2), -10, t0);
        feed(&mut d, 2, -127, t0 + Duration::from_millis(20), 500);
        assert_eq!(d.speakers(t0 + Duration::from_millis(600)), vec![]);
        feed(&mut d, 3, -35, t0, 600);
        assert_eq!(
            d.speakers(t0 + Duration::from_millis(600)),
            vec![ParticipantId(3)]
        );
    }

    #[test]
    fn the_most_recent_speaker_comes_first_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, 1, -30, t0, 400);
        feed(&mut d, 2, -30, t0 + Duration::from_millis(400), 400);
        let t1 = t0 + Duration::from_millis(800);
        assert_eq!(d.speakers(t1), vec![ParticipantId(2), ParticipantId(1)]);
        assert_eq!(
            d.poll_change(t1),
            Some(vec![ParticipantId(2), ParticipantId(1)])
        );
        assert_eq!(
            d.poll_change(t1 + Duration::from_millis(400)),
            None,
            "unchanged"
        );
        // 1 goes quiet; 2 stops sending at all.
        feed(&mut d, 1, -127, t1, 600);
        let t2 = t1 + Duration::from_millis(1600);
        assert_eq!(d.speakers(t2), vec![]);
        assert_eq!(d.poll_change(t2), Some(vec![]));
        d.forget(ParticipantId(1));
        assert!(d.voices.len() == 1);
    }
}
