use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A meeting id: 128 random bits, base32 (RFC 4648 alphabet, lower case, no padding), 26
/// characters. Unguessable, and safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MeetingId(String);

/// Length of the text form of a [`MeetingId`].
pub const MEETING_ID_LEN: usize = 26;

impl MeetingId {
    /// Builds an id from 16 random bytes.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        // 128 bits as 26 five-bit digits (the last one holds 3 bits).
        let value = u128::from_be_bytes(bytes);
        let mut text = String::with_capacity(MEETING_ID_LEN);
        for i in (0..MEETING_ID_LEN).rev() {
            let shift = i * 5;
            let digit = if shift >= 128 {
                0
            } else {
                (value >> shift) & 31
            };
            text.push(ALPHABET[digit as usize] as char);
        }
        MeetingId(text)
    }

    /// Checks the text form; anything else is not an id this server ever issued.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == MEETING_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        valid.then(|| MeetingId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MeetingId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        MeetingId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("not a meeting id (26 base32 characters)"))
    }
}

/// A participant's id, unique within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}
