//! The media the load generator sends: VP8-like and Opus-like frames of realistic sizes that
//! carry who sent them, their sequence number and their send time, so that every receiver can
//! verify a frame and measure its latency on the generator's single clock. The same frames go
//! to every target (Conclave, Janus, the raw UDP floor).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Audio: one Opus-like packet every 20 ms.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video: 30 frames per second.
pub const VIDEO_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / 30);
/// Bytes of an audio frame (a typical 20 ms Opus packet at ~32 kbps).
pub const AUDIO_FRAME_BYTES: usize = 80;
/// Bytes of a video frame: 500 kbps at 30 fps.
pub const VIDEO_FRAME_BYTES: usize = 500_000 / 8 / 30;
/// Largest media payload per RTP packet in the floor relay (what str0m's packetizer yields
/// for 1200-byte datagrams, roughly).
pub const FLOOR_CHUNK_BYTES: usize = 1100;

/// A VP8 keyframe header (frame tag with the inter-frame bit clear, start code, 640x480).
/// Every frame looks like a keyframe, so SFUs that gate on keyframes forward at once.
const VP8_HEADER: [u8; 10] = [0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
/// Opus TOC byte (CELT fullband 20 ms).
const OPUS_TOC: u8 = 0xf8;
const MAGIC: [u8; 4] = *b"CBNC";
const TAG_BYTES: usize = 4 + 4 + 1 + 4 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Audio,
    Video,
}

/// What a frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub publisher: u32,
    pub kind: Kind,
    pub seq: u32,
    /// Nanoseconds since [`epoch`].
    pub sent_ns: u64,
}

/// The generator's clock origin: every send and receive time is measured from it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn filler(publisher: u32, seq: u32, i: usize) -> u8 {
    (i as u32 ^ seq.wrapping_mul(31) ^ publisher.wrapping_mul(7)) as u8
}

fn prefix(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Video => &VP8_HEADER,
        Kind::Audio => std::slice::from_ref(&OPUS_TOC),
    }
}

/// Builds a frame.
pub fn make(publisher: u32, kind: Kind, seq: u32, sent_ns: u64) -> Vec<u8> {
    let len = match kind {
        Kind::Audio => AUDIO_FRAME_BYTES,
        Kind::Video => VIDEO_FRAME_BYTES,
    };
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(prefix(kind));
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&publisher.to_be_bytes());
    data.push(kind as u8);
    data.extend_from_slice(&seq.to_be_bytes());
    data.extend_from_slice(&sent_ns.to_be_bytes());
    data.extend_from_slice(&(len as u32).to_be_bytes());
    for i in data.len()..len {
        data.push(filler(publisher, seq, i));
    }
    data
}

/// Reads and verifies a frame: prefix, magic, length and filler (its last 16 bytes).
pub fn verify(data: &[u8]) -> Option<Tag> {
    let kind = if data.starts_with(&VP8_HEADER) {
        Kind::Video
    } else if data.first() == Some(&OPUS_TOC) {
        Kind::Audio
    } else {
        return None;
    };
    let t = &data[prefix(kind).len()..];
    if t.len() < TAG_BYTES || t[..4] != MAGIC {
        return None;
    }
    let publisher = u32::from_be_bytes(t[4..8].try_into().ok()?);
    if t[8] != kind as u8 {
        return None;
    }
    let seq = u32::from_be_bytes(t[9..13].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(t[13..21].try_into().ok()?);
    let len = u32::from_be_bytes(t[21..25].try_into().ok()?) as usize;
    if len != data.len() {
        return None;
    }
    let start = data
        .len()
        .saturating_sub(16)
        .max(prefix(kind).len() + TAG_BYTES);
    if (start..data.len()).any(|i| data[i] != filler(publisher, seq, i)) {
        return None;
    }
    Some(Tag {
        publisher,
        kind,
        seq,
        sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_tampering_is_caught() {
        for kind in [Kind::Audio, Kind::Video] {
            let mut f = make(7, kind, 42, 123_456);
            let tag = verify(&f).unwrap();
            assert_eq!(
                tag,
                Tag {
                    publisher: 7,
                    kind,
                    seq: 42,
                    sent_ns: 123_456
                }
            );
            let last = f.len() - 1;
            f[last] ^= 1;
            assert!(verify(&f).is_none());
            f.truncate(last);
            assert!(verify(&f).is_none());
        }
        assert_eq!(make(1, Kind::Video, 1, 1).len(), VIDEO_FRAME_BYTES);
    }
}
