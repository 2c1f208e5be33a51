//! Invitation tokens: `<invitation id>.<expires unix secs>.<base32 HMAC-SHA256>`, signed with
//! a server key over the meeting id, the invitation id and the expiry.
//!
//! The signature and expiry are checked before the database is touched, so forged or stale
//! tokens cost the server one HMAC. A token names its meeting only through the signature: a
//! token presented at another meeting simply does not verify.

use hmac::{Hmac, Mac};
use proto::MeetingId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted: id (16) + expiry (≤ 20) + signature (52) + dots, with slack.
const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused before any database lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not valid")]
    NotValid,
    #[error("expired")]
    Expired,
}

/// What a well-signed, unexpired token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub invitation_id: String,
    pub expires_at: i64,
}

/// The server's invitation-signing key.
#[derive(Clone)]
pub struct InvitationKey([u8; 32]);

impl InvitationKey {
    pub fn new(key: [u8; 32]) -> Self {
        InvitationKey(key)
    }

    fn mac(&self, meeting: &MeetingId, invitation_id: &str, expires_at: i64) -> HmacSha256 {
        // `new_from_slice` accepts any key length for HMAC; 32 bytes cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        // '|' cannot occur in a meeting id, an invitation id or a number: unambiguous.
        mac.update(format!("{meeting}|{invitation_id}|{expires_at}").as_bytes());
        mac
    }

    /// A fresh random invitation id (80 bits, base32).
    pub fn new_invitation_id() -> String {
        let mut bytes = [0u8; 10];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase()
    }

    pub fn sign(&self, meeting: &MeetingId, invitation_id: &str, expires_at: i64) -> String {
        let tag = self
            .mac(meeting, invitation_id, expires_at)
            .finalize()
            .into_bytes();
        let tag = data_encoding::BASE32_NOPAD
            .encode(&tag)
            .to_ascii_lowercase();
        format!("{invitation_id}.{expires_at}.{tag}")
    }

    /// Checks the signature (constant time) and then the expiry against `now_secs`.
    pub fn verify(
        &self,
        meeting: &MeetingId,
        token: &str,
        now_secs: i64,
    ) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::NotValid);
        }
        let mut parts = token.split('.');
        let (Some(id), Some(expires), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotValid);
        };
        let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
        let expires_at: i64 = expires.parse().map_err(|_| TokenError::NotValid)?;
        let tag = data_encoding::BASE32_NOPAD
            .decode(tag.to_ascii_uppercase().as_bytes())
            .map_err(|_| TokenError::NotValid)?;
        if !id_ok {
            return Err(TokenError::NotValid);
        }
        self.mac(meeting, id, expires_at)
            .verify_slice(&tag)
            .map_err(|_| TokenError::NotValid)?;
        if expires_at <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            invitation_id: id.to_owned(),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(n: u8) -> MeetingId {
        MeetingId::from_random_bytes([n; 16])
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = InvitationKey::new([7; 32]);
        let id = InvitationKey::new_invitation_id();
        let token = key.sign(&meeting(1), &id, 1000);
        let verified = key.verify(&meeting(1), &token, 999).unwrap();
        assert_eq!(verified.invitation_id, id);
        assert_eq!(verified.expires_at, 1000);
        assert_eq!(
            key.verify(&meeting(1), &token, 1000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_moved_or_tampered_tokens_are_not_valid() {
        let key = InvitationKey::new([7; 32]);
        let token = key.sign(&meeting(1), "abc", 1000);
        let other_key = InvitationKey::new([8; 32]);
        assert_eq!(
            other_key.verify(&meeting(1), &token, 0),
            Err(TokenError::NotValid),
            "another server's key"
        );
        assert_eq!(
            key.verify(&meeting(2), &token, 0),
            Err(TokenError::NotValid),
            "another meeting"
        );
        let extended = token.replace(".1000.", ".9999.");
        assert_eq!(
            key.verify(&meeting(1), &extended, 0),
            Err(TokenError::NotValid),
            "a pushed-back expiry"
        );
        for junk in ["", "a.b", "a.1.c.d", "abc.1000.!!!", &"x".repeat(500)] {
            assert_eq!(key.verify(&meeting(1), junk, 0), Err(TokenError::NotValid));
        }
    }
}
