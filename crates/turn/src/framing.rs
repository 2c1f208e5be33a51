//! Splits a TURN-over-TCP/TLS byte stream into frames (RFC 8656 §12.5): a STUN message (its
//! first two bits 00, 20-byte header with its length) or a ChannelData message (first two bits
//! 01, 4-byte header, padded to a multiple of 4 over TCP).
//!
//! Written here rather than taken from `turn_types::tcp::TurnTcpBuffer` because that buffer
//! keeps bytes it cannot parse and grows without bound; a relay facing strangers must instead
//! refuse garbage at once and cap what one connection may hold.

/// The most a single frame may be: a STUN header plus the largest length field.
pub const MAX_FRAME: usize = 20 + u16::MAX as usize;

/// RFC 5389's magic cookie, in every STUN header.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the stream is not TURN: a frame cannot start with 0x{0:02x}")]
    NotTurn(u8),
    #[error("a STUN frame without the magic cookie")]
    NoMagicCookie,
    #[error("a STUN frame has a length of {0}, not a multiple of 4")]
    BadLength(usize),
}

/// One connection's reassembly buffer.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes; call [`StreamFramer::next_frame`] until it yields None.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame (without ChannelData padding), None when more bytes are needed.
    /// Never holds more than [`MAX_FRAME`] + 3 bytes of an incomplete frame.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(&first) = self.buffer.first() else {
            return Ok(None);
        };
        // Channel numbers are 0x4000-0x4FFF; anything else that is not STUN is not TURN.
        let is_channel = first >> 4 == 0x4;
        if !is_channel && first >> 6 != 0b00 {
            return Err(FramingError::NotTurn(first));
        }
        if self.buffer.len() < if is_channel { 4 } else { 8 } {
            return Ok(None);
        }
        let length = u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize;
        let (frame_len, consumed) = if is_channel {
            (4 + length, (4 + length).div_ceil(4) * 4)
        } else {
            if self.buffer[4..8] != MAGIC_COOKIE {
                return Err(FramingError::NoMagicCookie);
            }
            if !length.is_multiple_of(4) {
                return Err(FramingError::BadLength(length));
            }
            (20 + length, 20 + length)
        };
        if self.buffer.len() < consumed {
            return Ok(None);
        }
        let frame = self.buffer[..frame_len].to_vec();
        self.buffer.drain(..consumed);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stun(len: u16) -> Vec<u8> {
        let mut frame = vec![0x00, 0x01];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        frame.extend_from_slice(&[7; 12]);
        frame.extend(std::iter::repeat_n(9, len as usize));
        frame
    }

    fn channel(len: u16) -> Vec<u8> {
        let mut frame = vec![0x40, 0x00];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend(std::iter::repeat_n(5, len as usize));
        frame
    }

    fn padded(frame: &[u8]) -> Vec<u8> {
        let mut bytes = frame.to_vec();
        bytes.resize(frame.len().div_ceil(4) * 4, 0);
        bytes
    }

    proptest! {
        #[test]
        fn frames_come_out_whole_however_the_stream_is_cut(
            lengths in proptest::collection::vec((any::<bool>(), 0u16..300), 1..8),
            cut in 1usize..97,
        ) {
            let frames: Vec<Vec<u8>> = lengths
                .iter()
                .map(|&(is_stun, len)| if is_stun { stun(len / 4 * 4) } else { channel(len) })
                .collect();
            let stream: Vec<u8> = frames.iter().flat_map(|f| padded(f)).collect();
            let mut framer = StreamFramer::new();
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                framer.push(piece);
                while let Some(frame) = framer.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            prop_assert_eq!(out, frames);
        }
    }

    #[test]
    fn garbage_is_refused_at_once() {
        let mut framer = StreamFramer::new();
        // A TLS record inside the TLS stream, as a confused client sends.
        framer.push(&[0x16, 0x03, 0x01, 0x00, 0x10, 0x01, 0x00, 0x00]);
        assert_eq!(framer.next_frame(), Err(FramingError::NoMagicCookie));
        let mut framer = StreamFramer::new();
        framer.push(&[0x80]);
        assert_eq!(framer.next_frame(), Err(FramingError::NotTurn(0x80)));
        let mut framer = StreamFramer::new();
        framer.push(b"\x00\x01\x00\x04GET / HTTP/1.1");
        assert_eq!(framer.next_frame(), Err(FramingError::NoMagicCookie));
        let mut framer = StreamFramer::new();
        framer.push(&[0x00, 0x01, 0x00, 0x03, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(framer.next_frame(), Err(FramingError::BadLength(3)));
    }
}
