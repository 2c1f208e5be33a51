//! Coming back after a dropped connection, proven by the device rather than by the server.
//!
//! A client makes one [`DeviceKey`] when it opens a meeting (a bot run, a browser tab) and
//! keeps it in memory for as long as it stays in that meeting; it is never sent. Each
//! signaling session has a fresh leaf (a new participant id, credential and signature key),
//! and every KeyPackage carries a LeafNode extension ([`CONTINUITY_EXTENSION_TYPE`]): the
//! device's public key and its signature over that leaf's signature key.
//!
//! When a leaf leaves the group, every member remembers its device key for
//! [`REJOIN_WINDOW_MS`]. A later KeyPackage whose continuity verifies against one of those
//! keys comes from the same device: the server cannot make one, because the signature binds
//! the new leaf's own key and needs the device's private key, and copying the extension into
//! a KeyPackage of its own listener fails the binding. A host's client then admits the
//! returning device with an Admission of its own, as it admitted it the first time; the
//! server saying "they were here before" proves nothing. A host who removes someone bars
//! their device ([`crate::Member::bar`]), so a kicked participant cannot come back this way.

use ed25519_dalek::{Signer, SigningKey};

use crate::error::E2eeError;
use crate::link_secrets::{random_seed, verify, Purpose, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// LeafNode extension (private use, RFC 9420 §17.3) carrying a leaf's continuity.
pub const CONTINUITY_EXTENSION_TYPE: u16 = 0xF0C4;
/// How long after a leaf left the group its device may come back without the lobby.
pub const REJOIN_WINDOW_MS: u64 = 120_000;

const CONTINUITY_V1: u8 = 1;
/// Version byte, device public key, signature.
const CONTINUITY_LEN: usize = 1 + PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// The key a client keeps across its reconnections to one meeting.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// A fresh device key.
    pub fn generate() -> Result<Self, E2eeError> {
        Ok(DeviceKey(SigningKey::from_bytes(&random_seed()?)))
    }

    /// The public key other members remember.
    pub fn public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.verifying_key().to_bytes()
    }

    /// The LeafNode extension bytes for a leaf whose signature key is `leaf_key`.
    pub(crate) fn continuity_for(&self, leaf_key: &[u8]) -> Vec<u8> {
        let signature = self
            .0
            .sign(&Purpose::Continuity.message(leaf_key))
            .to_bytes();
        let mut out = Vec::with_capacity(CONTINUITY_LEN);
        out.push(CONTINUITY_V1);
        out.extend_from_slice(&self.public());
        out.extend_from_slice(&signature);
        out
    }
}

/// The device key a leaf's continuity extension proves, for a leaf whose signature key is
/// `leaf_key`. The bytes come from other clients through the server: anything malformed or
/// forged is an error.
pub(crate) fn device_of(bytes: &[u8], leaf_key: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], E2eeError> {
    if bytes.len() != CONTINUITY_LEN || bytes[0] != CONTINUITY_V1 {
        return Err(E2eeError::Malformed("continuity encoding"));
    }
    let (device, signature) = bytes[1..].split_at(PUBLIC_KEY_LEN);
    if !verify(device, Purpose::Continuity, leaf_key, signature) {
        return Err(E2eeError::ForgedProof(
            "the device key did not sign this leaf",
        ));
    }
    <[u8; PUBLIC_KEY_LEN]>::try_from(device).map_err(|_| E2eeError::Malformed("device key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_binds_the_device_to_one_leaf_key() {
        let device = DeviceKey::generate().unwrap();
        let bytes = device.continuity_for(b"leaf key one");
        assert_eq!(device_of(&bytes, b"leaf key one").unwrap(), device.public());
        // Copied onto another leaf, it proves nothing.
        assert!(matches!(
            device_of(&bytes, b"leaf key two"),
            Err(E2eeError::ForgedProof(_))
        ));
        // Another device's key in front of this signature fails too.
        let mut swapped = bytes.clone();
        swapped[1..1 + PUBLIC_KEY_LEN].copy_from_slice(&DeviceKey::generate().unwrap().public());
        assert!(device_of(&swapped, b"leaf key one").is_err());
        assert!(device_of(&bytes[..40], b"leaf key one").is_err());
        assert!(device_of(&[], b"leaf key one").is_err());
        let mut other_version = bytes;
        other_version[0] = 2;
        assert!(device_of(&other_version, b"leaf key one").is_err());
    }
}
