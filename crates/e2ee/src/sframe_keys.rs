//! SFrame keys derived from MLS epochs (RFC 9605 §5.2), per-sender replay windows and the
//! grace period for frames still in flight across an epoch change.
//!
//! ```text
//! base_key = MLS-Exporter("SFrame 1.0 Base Key", "", AEAD.Nk)        (Nk = 16)
//! KID      = (context << (S + E)) + (sender_leaf << E) + (epoch mod 2^E), context = 0
//! key, salt per KID from base_key as in RFC 9605 §4.4.2
//! ```
//!
//! With context 0 the KID does not depend on S, so the receiver recovers the leaf as
//! `KID >> E` without knowing the group size.

use std::collections::{BTreeSet, HashMap};

use sframe::key::{DecryptionKey, EncryptionKey};

use crate::error::E2eeError;
use crate::frame::{self, DecryptedFrame, MediaKind, CIPHER_SUITE};

/// The exporter label of RFC 9605 §5.2. (Pre-RFC drafts used other labels such as
/// "SFrame 10 MLS"; interoperability needs the published one.)
pub const SFRAME_EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";
/// `E`: low epoch bits carried in the KID. 16 epochs is far more than the epochs we keep
/// alive at once, so an epoch number is never ambiguous within the grace period.
pub const EPOCH_BITS: u32 = 4;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
/// How long a replaced epoch's keys keep decrypting, measured from the merge of its successor.
pub const GRACE_PERIOD_MS: u64 = 2000;
/// Replaced epochs kept at most (several commits can land within one grace period).
const MAX_RETIRED: usize = 3;
/// Replay window width in counters. Video frames are reordered by at most a few frames; 128
/// covers a second of 60 fps even with simulcast layers sharing nothing.
const REPLAY_WINDOW: u64 = 128;

/// KID for `leaf` sending in `epoch` (context 0).
pub fn kid_for(leaf: u32, epoch: u64) -> u64 {
    (u64::from(leaf) << EPOCH_BITS) | (epoch & EPOCH_MASK)
}

/// RFC 3711-style sliding window over SFrame counters of one sender key.
#[derive(Debug, Default, Clone)]
struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: counter `highest - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    fn check(&self, ctr: u64) -> Result<(), E2eeError> {
        let Some(high) = self.highest else {
            return Ok(());
        };
        if ctr > high {
            return Ok(());
        }
        let age = high - ctr;
        if age >= REPLAY_WINDOW || (self.seen >> age) & 1 == 1 {
            return Err(E2eeError::Replay(ctr));
        }
        Ok(())
    }

    /// Only called after the frame authenticated, so a forged counter cannot move the window.
    fn record(&mut self, ctr: u64) {
        match self.highest {
            Some(high) if ctr <= high => self.seen |= 1u128 << (high - ctr),
            Some(high) => {
                let shift = ctr - high;
                self.seen = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(ctr);
            }
            None => {
                self.seen = 1;
                self.highest = Some(ctr);
            }
        }
    }
}

struct Receiver {
    key: DecryptionKey,
    window: ReplayWindow,
}

/// Everything needed to decrypt one epoch's frames.
struct EpochKeys {
    epoch: u64,
    base_key: Vec<u8>,
    /// Leaves that were members in this epoch; a KID naming any other leaf is refused before
    /// any key is derived for it.
    members: BTreeSet<u32>,
    /// Set when a newer epoch replaced this one.
    expires_at: Option<u64>,
    receivers: HashMap<u32, Receiver>,
}

impl EpochKeys {
    fn receiver(&mut self, leaf: u32, kid: u64) -> Result<&mut Receiver, E2eeError> {
        if !self.members.contains(&leaf) {
            return Err(E2eeError::UnknownKid(kid));
        }
        if !self.receivers.contains_key(&leaf) {
            let key = DecryptionKey::derive_from(CIPHER_SUITE, kid, &self.base_key)
                .map_err(|e| E2eeError::Sframe(e.to_string()))?;
            self.receivers.insert(
                leaf,
                Receiver {
                    key,
                    window: ReplayWindow::default(),
                },
            );
        }
        self.receivers
            .get_mut(&leaf)
            .ok_or(E2eeError::UnknownKid(kid))
    }
}

/// Media key state of one member: its own sending key for the current epoch plus receive keys
/// for the current epoch and recently replaced ones.
pub(crate) struct MediaKeys {
    current: EpochKeys,
    send_key: EncryptionKey,
    /// Next SFrame CTR for `send_key`. A new epoch means a new key, so restarting at 0 never
    /// repeats a (key, nonce) pair (RFC 9605 §9.1).
    next_counter: u64,
    retired: Vec<EpochKeys>,
}

impl MediaKeys {
    pub(crate) fn new(
        own_leaf: u32,
        epoch: u64,
        base_key: Vec<u8>,
        members: BTreeSet<u32>,
    ) -> Result<Self, E2eeError> {
        let send_key =
            EncryptionKey::derive_from(CIPHER_SUITE, kid_for(own_leaf, epoch), &base_key)
                .map_err(|e| E2eeError::Sframe(e.to_string()))?;
        Ok(Self {
            current: EpochKeys {
                epoch,
                base_key,
                members,
                expires_at: None,
                receivers: HashMap::new(),
            },
            send_key,
            next_counter: 0,
            retired: Vec::new(),
        })
    }

    /// Switch sending to the new epoch; keep the old one decrypting until `now_ms + grace`.
    pub(crate) fn advance(
        &mut self,
        own_leaf: u32,
        epoch: u64,
        base_key: Vec<u8>,
        members: BTreeSet<u32>,
        now_ms: u64,
    ) -> Result<(), E2eeError> {
        let next = MediaKeys::new(own_leaf, epoch, base_key, members)?;
        let mut old = std::mem::replace(self, next);
        old.current.expires_at = Some(now_ms.saturating_add(GRACE_PERIOD_MS));
        let mut retired = old.retired;
        retired.push(old.current);
        // RFC 9605 §5.2: an epoch sharing the new one's low E bits must go.
        retired.retain(|k| {
            k.epoch & EPOCH_MASK != epoch & EPOCH_MASK && k.expires_at.is_some_and(|t| now_ms < t)
        });
        while retired.len() > MAX_RETIRED {
            retired.remove(0);
        }
        self.retired = retired;
        Ok(())
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.current.epoch
    }

    pub(crate) fn encrypt_into(
        &mut self,
        kind: MediaKind,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), E2eeError> {
        // u64 counters cannot run out in a meeting, but never reuse a nonce if they did.
        let ctr = self.next_counter;
        self.next_counter = ctr
            .checked_add(1)
            .ok_or(E2eeError::Sframe("counter exhausted".into()))?;
        frame::seal(&self.send_key, ctr, kind, frame, out)
    }

    pub(crate) fn decrypt(
        &mut self,
        kind: MediaKind,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<DecryptedFrame, E2eeError> {
        let parsed = frame::parse(kind, bytes)?;
        let kid = parsed.header.key_id();
        let ctr = parsed.header.counter();
        let leaf = u32::try_from(kid >> EPOCH_BITS).map_err(|_| E2eeError::UnknownKid(kid))?;
        let lsb = kid & EPOCH_MASK;

        let current_epoch = self.current.epoch;
        let keys = if current_epoch & EPOCH_MASK == lsb {
            &mut self.current
        } else {
            match self
                .retired
                .iter_mut()
                .rev()
                .find(|k| k.epoch & EPOCH_MASK == lsb)
            {
                Some(k) if k.expires_at.is_some_and(|t| now_ms < t) => k,
                Some(k) => {
                    return Err(E2eeError::WrongEpoch {
                        got: k.epoch,
                        current: current_epoch,
                    })
                }
                None => return Err(E2eeError::UnknownKid(kid)),
            }
        };
        let epoch = keys.epoch;
        let receiver = keys.receiver(leaf, kid)?;
        receiver.window.check(ctr)?;
        let mut plaintext = Vec::with_capacity(bytes.len());
        frame::open(&receiver.key, &parsed, &mut plaintext)?;
        receiver.window.record(ctr);
        Ok(DecryptedFrame {
            sender_leaf: leaf,
            epoch,
            counter: ctr,
            plaintext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_layout_matches_rfc9605_section_5_2() {
        // KID = (sender_index << E) + (epoch % (1 << E)), context 0.
        assert_eq!(kid_for(0, 0), 0);
        assert_eq!(kid_for(3, 17), (3 << 4) + 1);
        assert_eq!(
            kid_for(u32::MAX, u64::MAX),
            (u64::from(u32::MAX) << 4) | 0xF
        );
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        w.check(5).unwrap();
        w.record(5);
        assert_eq!(w.check(5), Err(E2eeError::Replay(5)));
        w.check(3).unwrap();
        w.record(3);
        assert!(w.check(3).is_err());
        w.check(4).unwrap();
        w.record(500);
        assert!(w.check(500 - 128).is_err());
        w.check(500 - 127).unwrap();
        assert!(w.check(5).is_err());
        w.record(u64::MAX);
        assert!(w.check(u64::MAX).is_err());
    }

    fn keys(leaf: u32, epoch: u64, base: u8) -> MediaKeys {
        MediaKeys::new(leaf, epoch, vec![base; 16], [0, 1, 2].into()).unwrap()
    }

    #[test]
    fn grace_period_and_epoch_retirement() {
        let mut alice = keys(0, 1, 1);
        let mut bob = keys(1, 1, 1);
        let mut f = Vec::new();
        alice
            .encrypt_into(MediaKind::Raw, b"old epoch", &mut f)
            .unwrap();

        bob.advance(1, 2, vec![2; 16], [0, 1, 2].into(), 10_000)
            .unwrap();
        let d = bob.decrypt(MediaKind::Raw, &f, 11_999).unwrap();
        assert_eq!(
            (d.epoch, d.sender_leaf, &d.plaintext[..]),
            (1, 0, &b"old epoch"[..])
        );

        let mut g = Vec::new();
        alice.encrypt_into(MediaKind::Raw, b"late", &mut g).unwrap();
        assert_eq!(
            bob.decrypt(MediaKind::Raw, &g, 12_000),
            Err(E2eeError::WrongEpoch { got: 1, current: 2 })
        );
    }
}
