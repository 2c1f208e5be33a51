//! The media a bot sends: short VP8 and Opus clips, generated once by `cargo xtask clips`
//! (ffmpeg's test pattern and a sine tone) and compiled into the binary.
//!
//! Using real encoded frames means browsers decode what bots send; using a known clip means
//! receivers can check every frame byte for byte against what the sender must have sent.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

/// Frames of one clip, in sending order.
#[derive(Debug)]
pub struct Clip {
    pub frames: Vec<Arc<[u8]>>,
}

/// Video clips at three bitrates; 30 fps, 60 frames, one keyframe at the start.
const VIDEO_150K: &[u8] = include_bytes!("../clips/video-150k.ivf");
const VIDEO_500K: &[u8] = include_bytes!("../clips/video-500k.ivf");
const VIDEO_1500K: &[u8] = include_bytes!("../clips/video-1500k.ivf");
/// 1 s of 20 ms Opus frames.
const AUDIO: &[u8] = include_bytes!("../clips/audio.opus");

/// RTP clock ticks between video frames (90 kHz at 30 fps).
pub const VIDEO_TICKS_PER_FRAME: u64 = 3000;
/// RTP clock ticks between audio frames (48 kHz, 20 ms).
pub const AUDIO_TICKS_PER_FRAME: u64 = 960;
pub const VIDEO_FRAME_INTERVAL: std::time::Duration = std::time::Duration::from_micros(33_333);
pub const AUDIO_FRAME_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The bitrates clips exist for, in kbps.
pub const VIDEO_KBPS: [u32; 3] = [150, 500, 1500];

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("the IVF clip is malformed: {0}")]
    Ivf(&'static str),
    #[error("the Ogg clip is malformed: {0}")]
    Ogg(String),
}

/// The video clip closest to the wanted bitrate.
pub fn video(kbps: u32) -> &'static Clip {
    static CLIPS: OnceLock<[Clip; 3]> = OnceLock::new();
    let clips = CLIPS.get_or_init(|| {
        // The clips are part of the binary and checked by tests: failing here is a build defect.
        [VIDEO_150K, VIDEO_500K, VIDEO_1500K]
            .map(|bytes| parse_ivf(bytes).unwrap_or_else(|e| panic!("built-in video clip: {e}")))
    });
    let index = VIDEO_KBPS
        .iter()
        .enumerate()
        .min_by_key(|(_, k)| k.abs_diff(kbps))
        .map_or(1, |(i, _)| i);
    &clips[index]
}

pub fn audio() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| {
        parse_ogg_opus(AUDIO).unwrap_or_else(|e| panic!("built-in audio clip: {e}"))
    })
}

/// Every video clip, smallest bitrate first.
pub fn video_clips() -> impl Iterator<Item = &'static Clip> {
    VIDEO_KBPS.iter().map(|k| video(*k))
}

/// The clip (and its bitrate) a keyframe starts, if it is one of ours.
pub fn identify_keyframe(frame: &[u8]) -> Option<(u32, &'static Clip)> {
    VIDEO_KBPS
        .iter()
        .map(|k| (*k, video(*k)))
        .find(|(_, c)| c.frames[0].as_ref() == frame)
}

/// Reads the frames of an IVF file (32-byte header, then 12-byte frame headers).
pub fn parse_ivf(bytes: &[u8]) -> Result<Clip, ClipError> {
    if bytes.len() < 32 || &bytes[0..4] != b"DKIF" {
        return Err(ClipError::Ivf("no DKIF header"));
    }
    let header_len = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    let mut offset = header_len;
    let mut frames = Vec::new();
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + 12)
            .ok_or(ClipError::Ivf("truncated frame header"))?;
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let frame = bytes
            .get(offset + 12..offset + 12 + size)
            .ok_or(ClipError::Ivf("truncated frame"))?;
        frames.push(Arc::from(frame));
        offset += 12 + size;
    }
    if frames.is_empty() {
        return Err(ClipError::Ivf("no frames"));
    }
    Ok(Clip { frames })
}

/// Reads the Opus packets of an Ogg file, skipping the OpusHead and OpusTags headers.
pub fn parse_ogg_opus(bytes: &[u8]) -> Result<Clip, ClipError> {
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let mut frames = Vec::new();
    while let Some(packet) = reader
        .read_packet()
        .map_err(|e| ClipError::Ogg(e.to_string()))?
    {
        if packet.data.starts_with(b"OpusHead") || packet.data.starts_with(b"OpusTags") {
            continue;
        }
        frames.push(Arc::from(packet.data));
    }
    if frames.is_empty() {
        return Err(ClipError::Ogg("no Opus packets".into()));
    }
    Ok(Clip { frames })
}

/// A VP8 frame is a keyframe when bit 0 of its first byte is clear (RFC 6386, 9.1).
pub fn is_vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_parse_with_one_leading_keyframe_and_distinct_frames() {
        for kbps in VIDEO_KBPS {
            let clip = video(kbps);
            assert_eq!(clip.frames.len(), 60);
            assert!(is_vp8_keyframe(&clip.frames[0]));
            assert_eq!(clip.frames.iter().filter(|f| is_vp8_keyframe(f)).count(), 1);
            let distinct: std::collections::HashSet<_> = clip.frames.iter().collect();
            assert_eq!(distinct.len(), clip.frames.len());
        }
        // One second of 20 ms frames, plus the encoder's final partial frame.
        let audio = audio();
        assert!(
            (50..=51).contains(&audio.frames.len()),
            "{}",
            audio.frames.len()
        );
    }

    #[test]
    fn closest_clip_is_chosen() {
        assert!(std::ptr::eq(video(100), video(150)));
        assert!(std::ptr::eq(video(600), video(500)));
        assert!(std::ptr::eq(video(5000), video(1500)));
    }

    #[test]
    fn malformed_clips_are_errors() {
        assert!(parse_ivf(b"nope").is_err());
        let mut ivf = VIDEO_150K[..40].to_vec();
        ivf[32] = 0xff;
        assert!(parse_ivf(&ivf).is_err());
        assert!(parse_ogg_opus(b"OggS garbage").is_err());
    }
}
