//! SFrame (RFC 9605) media frame protection with a codec-aware clear prefix.
//!
//! Output layout: `[clear prefix][SFrame header][ciphertext][16-byte tag]`.
//!
//! The clear prefix is the codec header a browser depacketizer/SFU needs to read (VP8 payload
//! descriptor keyframe bit and dimensions, Opus TOC byte). It travels in the clear but is fed to
//! the AEAD as SFrame `metadata`, so RFC 9605 §4.4.3's `AAD = header || metadata` authenticates
//! it: flipping a clear byte makes decryption fail.
//!
//! Header, key/salt derivation (§4.4.2) and AES-128-GCM come from the `sframe` crate, whose
//! `MediaFrameView::try_with_meta_data` produces exactly this layout. We keep our own counter,
//! replay window and key lookup (in `sframe_keys`) because they are tied to MLS epochs and
//! leaves, which the crate does not model.

use sframe::{
    frame::{EncryptedFrameView, MediaFrameView, SingleUseCounter},
    header::SframeHeader,
    key::{DecryptionKey, EncryptionKey},
    CipherSuite,
};

use crate::error::E2eeError;

/// RFC 9605 `AES_128_GCM_SHA256_128` (0x0004).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// `AEAD.Nk` of [`CIPHER_SUITE`]: the length of the MLS-exported base key.
pub const KEY_LEN: usize = 16;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// Which codec a frame carries, so the right number of leading bytes stays in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// VP8: 10 clear bytes on keyframes (3-byte frame tag + start code + dimensions), 3 on delta
    /// frames (frame tag). The keyframe bit is bit 0 of byte 0, 0 meaning keyframe (RFC 6386
    /// §9.1).
    Vp8,
    /// Opus: the 1-byte TOC stays clear.
    Opus,
    /// Anything else (data channel payloads, other codecs): fully encrypted.
    Raw,
}

impl MediaKind {
    /// Number of leading bytes of `frame` that stay in the clear. The decision reads only
    /// byte 0, which is itself clear, so sender and receiver agree.
    pub fn clear_prefix_len(self, frame: &[u8]) -> Result<usize, E2eeError> {
        let need = match self {
            MediaKind::Raw => return Ok(0),
            MediaKind::Opus => 1,
            MediaKind::Vp8 => match frame.first() {
                Some(b) if b & 1 == 0 => 10,
                Some(_) => 3,
                None => return Err(E2eeError::FrameTooShort),
            },
        };
        if frame.len() < need {
            return Err(E2eeError::FrameTooShort);
        }
        Ok(need)
    }

    /// Parse the names the JS side uses (`"vp8"`, `"opus"`, `"raw"`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "vp8" | "VP8" | "video/VP8" => Some(MediaKind::Vp8),
            "opus" | "OPUS" | "audio/opus" => Some(MediaKind::Opus),
            "raw" | "" => Some(MediaKind::Raw),
            _ => None,
        }
    }
}

/// A frame that authenticated and was not a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptedFrame {
    /// MLS leaf index of the sender, from the KID.
    pub sender_leaf: u32,
    /// Full MLS epoch the frame was encrypted in.
    pub epoch: u64,
    /// SFrame counter of the frame.
    pub counter: u64,
    /// The original frame, clear prefix included.
    pub plaintext: Vec<u8>,
}

/// Encrypt `frame` under `key` with SFrame counter `counter` into `out` (overwritten).
pub(crate) fn seal(
    key: &EncryptionKey,
    counter: u64,
    kind: MediaKind,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), E2eeError> {
    let prefix = kind.clear_prefix_len(frame)?;
    let (clear, payload) = frame.split_at(prefix);
    seal_with_metadata(key, counter, clear, payload, out)
}

pub(crate) fn seal_with_metadata(
    key: &EncryptionKey,
    counter: u64,
    clear: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), E2eeError> {
    let mut ctr = SingleUseCounter::new(counter);
    let media = MediaFrameView::try_with_meta_data(&mut ctr, payload, clear)
        .map_err(|e| E2eeError::Sframe(e.to_string()))?;
    media
        .encrypt_into(key, out)
        .map_err(|e| E2eeError::Sframe(e.to_string()))?;
    Ok(())
}

/// The parts of a protected frame that can be read before any key is chosen.
pub(crate) struct ParsedFrame<'a> {
    pub(crate) clear: &'a [u8],
    pub(crate) sframe: &'a [u8],
    pub(crate) header: SframeHeader,
}

/// Split a protected frame and parse its SFrame header. Rejects anything too short to hold a
/// header and tag before any crypto runs.
pub(crate) fn parse(kind: MediaKind, bytes: &[u8]) -> Result<ParsedFrame<'_>, E2eeError> {
    let prefix = kind
        .clear_prefix_len(bytes)
        .map_err(|_| E2eeError::Truncated)?;
    let (clear, sframe) = bytes.split_at(prefix);
    let header = SframeHeader::deserialize(sframe).map_err(|_| E2eeError::Truncated)?;
    if sframe.len() < header.len().saturating_add(TAG_LEN) {
        return Err(E2eeError::Truncated);
    }
    Ok(ParsedFrame {
        clear,
        sframe,
        header,
    })
}

/// Decrypt an already parsed frame into `out` (overwritten with the full original frame).
pub(crate) fn open(
    key: &DecryptionKey,
    parsed: &ParsedFrame<'_>,
    out: &mut Vec<u8>,
) -> Result<(), E2eeError> {
    let view = EncryptedFrameView::try_with_meta_data(parsed.sframe, parsed.clear)
        .map_err(|_| E2eeError::Truncated)?;
    view.decrypt_into(key, out)
        .map_err(|_| E2eeError::Authentication)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9605 Appendix C.4, cipher suite 0x0004 (AES_128_GCM_SHA256_128), run through the
    /// same `seal`/`open` used for media (metadata = our clear prefix).
    #[test]
    fn rfc9605_appendix_c4_aes_128_gcm_sha256_128() {
        let kid = 0x123u64;
        let ctr = 0x4567u64;
        let base_key = unhex("000102030405060708090a0b0c0d0e0f");
        let metadata = unhex("4945544620534672616d65205747");
        let pt = unhex("64726166742d696574662d736672616d652d656e63");
        let ct = unhex(
            "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
        );

        let enc = EncryptionKey::derive_from(CIPHER_SUITE, kid, &base_key).unwrap();
        let mut out = Vec::new();
        seal_with_metadata(&enc, ctr, &metadata, &pt, &mut out).unwrap();
        assert_eq!(&out[..metadata.len()], &metadata[..]);
        assert_eq!(&out[metadata.len()..], &ct[..]);

        let dec = DecryptionKey::derive_from(CIPHER_SUITE, kid, &base_key).unwrap();
        let (clear, sframe) = out.split_at(metadata.len());
        let parsed = ParsedFrame {
            clear,
            sframe,
            header: SframeHeader::deserialize(sframe).unwrap(),
        };
        assert_eq!(parsed.header.key_id(), kid);
        assert_eq!(parsed.header.counter(), ctr);
        let mut back = Vec::new();
        open(&dec, &parsed, &mut back).unwrap();
        assert_eq!(back, [metadata.clone(), pt].concat());

        // The metadata is authenticated: flip one clear bit and the tag must fail.
        let mut tampered = out.clone();
        tampered[0] ^= 1;
        let (clear, sframe) = tampered.split_at(metadata.len());
        let parsed = ParsedFrame {
            clear,
            sframe,
            header: SframeHeader::deserialize(sframe).unwrap(),
        };
        assert_eq!(
            open(&dec, &parsed, &mut back),
            Err(E2eeError::Authentication)
        );
    }

    /// RFC 9605 Appendix C.2 header encodings (a selection covering every length class).
    #[test]
    fn rfc9605_appendix_c2_headers() {
        for (kid, ctr, hex) in [
            (0u64, 0u64, "00"),
            (0, 1, "01"),
            (0, 255, "08ff"),
            (0, 65536, "0a010000"),
            (0, u64::MAX, "0fffffffffffffffff"),
            (1, 0, "10"),
            (0xffff, 0x100, "99ffff0100"),
            (u64::MAX, u64::MAX, "ffffffffffffffffffffffffffffffffff"),
        ] {
            let header = SframeHeader::new(kid, ctr);
            assert_eq!(Vec::from(&header), unhex(hex), "kid {kid} ctr {ctr}");
            let back = SframeHeader::deserialize(unhex(hex)).unwrap();
            assert_eq!((back.key_id(), back.counter()), (kid, ctr));
        }
    }

    #[test]
    fn clear_prefix_lengths() {
        assert_eq!(MediaKind::Vp8.clear_prefix_len(&[0u8; 20]).unwrap(), 10);
        assert_eq!(MediaKind::Vp8.clear_prefix_len(&[1u8; 20]).unwrap(), 3);
        assert_eq!(MediaKind::Opus.clear_prefix_len(&[9u8; 5]).unwrap(), 1);
        assert_eq!(MediaKind::Raw.clear_prefix_len(&[]).unwrap(), 0);
        assert_eq!(
            MediaKind::Vp8.clear_prefix_len(&[0u8; 9]),
            Err(E2eeError::FrameTooShort)
        );
        assert_eq!(
            MediaKind::Vp8.clear_prefix_len(&[]),
            Err(E2eeError::FrameTooShort)
        );
        assert_eq!(
            MediaKind::Opus.clear_prefix_len(&[]),
            Err(E2eeError::FrameTooShort)
        );
    }
}
