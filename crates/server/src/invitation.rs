//! Invitation tokens as the server sees them: `<invitation id>.<token>`.
//!
//! A host's client makes every invitation (see `e2ee::link_secrets`): it keeps the
//! invitation's secret in the link's `#fragment` and registers only the SHA-256 of the token
//! derived from it one-way. A joiner's client sends that token. So the server can check a link
//! for revocation, expiry, single use and rate limiting, but it cannot mint an invitation that
//! members accept: what admits someone to the group is the meeting key's certificate, which the
//! server never has. A token the server made up for itself passes this gate, and nothing more.

use sha2::{Digest, Sha256};

/// Longest token accepted: id (16) + token (26) + dot, with slack.
const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused before any database lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not valid")]
    NotValid,
}

/// A token as presented in `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedToken {
    pub invitation_id: String,
    pub token_sha256: [u8; 32],
}

/// A fresh random invitation id (80 bits, base32).
pub fn new_invitation_id() -> String {
    let mut bytes = [0u8; 10];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

/// Reads `<id>.<token>`; only its shape is checked here, the digest against the database.
pub fn parse(token: &str) -> Result<PresentedToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::NotValid);
    }
    let (id, secret) = token.split_once('.').ok_or(TokenError::NotValid)?;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain(id) || !plain(secret) {
        return Err(TokenError::NotValid);
    }
    Ok(PresentedToken {
        invitation_id: id.to_owned(),
        token_sha256: Sha256::digest(secret.as_bytes()).into(),
    })
}

/// Compares digests in constant time (timing would reveal digest bytes, which do not help
/// find a token, but there is no reason to leak them).
pub fn digests_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_garbage_is_refused() {
        let t = parse("abc234.tokentoken").unwrap();
        assert_eq!(t.invitation_id, "abc234");
        assert_eq!(
            t.token_sha256,
            <[u8; 32]>::from(Sha256::digest(b"tokentoken"))
        );
        for bad in ["", "abc", ".x", "x.", "a.b.c", "a b.c", &"a.".repeat(100)] {
            assert_eq!(parse(bad), Err(TokenError::NotValid), "{bad}");
        }
        assert!(digests_match(&[1, 2], &[1, 2]));
        assert!(!digests_match(&[1, 2], &[1, 3]));
        assert!(!digests_match(&[1, 2], &[1]));
    }
}
