//! A participant's long-term-for-this-meeting identity: an Ed25519 signature key and a
//! BasicCredential naming them.
//!
//! The credential identity is our own small encoding of (participant id, display name). It is
//! length-prefixed rather than delimited so that no display name can forge a participant id.

use openmls::prelude::{BasicCredential, Credential, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;

use crate::continuity::DeviceKey;
use crate::error::E2eeError;

/// Version byte of the credential identity encoding, so it can evolve.
const IDENTITY_V1: u8 = 1;

/// Signing key plus credential of one participant.
pub struct Identity {
    pub(crate) signer: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
    name: String,
    participant_id: String,
    /// The device this identity runs on, proven in its KeyPackage so it can come back after a
    /// dropped connection (see [`crate::continuity`]).
    pub(crate) device: Option<DeviceKey>,
}

impl Identity {
    /// Fresh Ed25519 key pair and a BasicCredential carrying `name` and `participant_id`.
    pub fn generate(name: &str, participant_id: &str) -> Result<Self, E2eeError> {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(crate::error::mls)?;
        let identity = encode_identity(participant_id, name)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Ok(Self {
            signer,
            credential,
            name: name.to_owned(),
            participant_id: participant_id.to_owned(),
            device: None,
        })
    }

    /// This identity's KeyPackages prove they come from `device`.
    pub fn with_device(mut self, device: DeviceKey) -> Self {
        self.device = Some(device);
        self
    }

    /// Display name carried in the credential.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Participant id carried in the credential.
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// Ed25519 public key (32 bytes); this is what the host set records.
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }
}

/// `[version][u16 id_len][id][name]`.
fn encode_identity(participant_id: &str, name: &str) -> Result<Vec<u8>, E2eeError> {
    let id_len = u16::try_from(participant_id.len())
        .map_err(|_| E2eeError::Malformed("participant id too long"))?;
    let mut out = Vec::with_capacity(3 + participant_id.len() + name.len());
    out.push(IDENTITY_V1);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(participant_id.as_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// `(name, participant_id)` from a member's credential. Credentials come from other clients, so
/// this must tolerate anything; an undecodable one yields an error the caller can map to a
/// placeholder.
pub(crate) fn decode_credential(credential: &Credential) -> Result<(String, String), E2eeError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| E2eeError::Malformed("not a basic credential"))?;
    decode_identity(basic.identity())
}

fn decode_identity(bytes: &[u8]) -> Result<(String, String), E2eeError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or(E2eeError::Malformed("empty identity"))?;
    if version != IDENTITY_V1 || rest.len() < 2 {
        return Err(E2eeError::Malformed("identity encoding"));
    }
    let id_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() < id_len {
        return Err(E2eeError::Malformed("identity encoding"));
    }
    let (id, name) = rest.split_at(id_len);
    let id = std::str::from_utf8(id).map_err(|_| E2eeError::Malformed("identity utf-8"))?;
    let name = std::str::from_utf8(name).map_err(|_| E2eeError::Malformed("identity utf-8"))?;
    Ok((name.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_rejects_garbage() {
        let enc = encode_identity("p-1", "Ada: the \u{1F600} one").unwrap();
        assert_eq!(
            decode_identity(&enc).unwrap(),
            ("Ada: the \u{1F600} one".to_owned(), "p-1".to_owned())
        );
        assert!(decode_identity(&[]).is_err());
        assert!(decode_identity(&[1, 0, 9, b'a']).is_err());
        assert!(decode_identity(&[2, 0, 0]).is_err());
    }
}
