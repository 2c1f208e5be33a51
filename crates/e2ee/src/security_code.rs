//! Human-comparable security codes derived from the MLS `epoch_authenticator`.
//!
//! RFC 9420 §8.7 exports the epoch authenticator precisely so members can confirm out of band
//! that they share one epoch (and hence one group key and one member list): a malicious
//! delivery service that split the group or slipped a member in cannot make two screens show
//! the same code. We hash it under a Conclave label first so the displayed value is
//! domain-separated from any other use of the authenticator.

use sha2::{Digest, Sha256};

/// 6 groups of 5 decimal digits; each group reads 40 bits of the digest (mod 10^5), ~99 bits in
/// total, plenty against an online attacker who gets one try per epoch.
pub(crate) fn digits(epoch_authenticator: &[u8]) -> String {
    let d = digest(b"conclave security code digits v1", epoch_authenticator);
    let groups: Vec<String> = d
        .chunks_exact(5)
        .take(6)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect();
    groups.join(" ")
}

/// 64 visually distinct emoji; 8 of them (48 bits) are quick to compare aloud in a call.
const EMOJI: [&str; 64] = [
    "🐶", "🐱", "🦁", "🐴", "🦄", "🐷", "🐘", "🐰", "🐼", "🐓", "🐧", "🐢", "🐟", "🐙", "🦋", "🌷",
    "🌳", "🌵", "🍄", "🌏", "🌙", "☁️", "🔥", "🍌", "🍎", "🍓", "🌽", "🍕", "🎂", "❤️", "😀", "🤖",
    "🎩", "👓", "🔧", "🎅", "👍", "☂️", "⌛", "⏰", "🎁", "💡", "📕", "✏️", "📎", "✂️", "🔒", "🔑",
    "🔨", "☎️", "🏁", "🚂", "🚲", "✈️", "🚀", "🏆", "⚽", "🎸", "🎺", "🔔", "⚓", "🎧", "📁", "📌",
];

pub(crate) fn emoji(epoch_authenticator: &[u8]) -> String {
    let d = digest(b"conclave security code emoji v1", epoch_authenticator);
    let bits = d[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (0..8)
        .map(|i| EMOJI[((bits >> (42 - 6 * i)) & 63) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

fn digest(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((label.len() as u32).to_be_bytes());
    h.update(label);
    h.update(data);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_shaped() {
        let a = digits(&[1; 32]);
        assert_eq!(a, digits(&[1; 32]));
        assert_ne!(a, digits(&[2; 32]));
        assert_eq!(a.len(), 6 * 5 + 5);
        assert!(a
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        assert_eq!(emoji(&[1; 32]).split(' ').count(), 8);
        assert_ne!(emoji(&[1; 32]), emoji(&[2; 32]));
    }
}
