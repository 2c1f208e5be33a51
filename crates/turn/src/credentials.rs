//! Ephemeral TURN credentials in the TURN REST scheme (draft-uberti-behave-turn-rest, as coturn
//! and every WebRTC stack read it): `username = "<expiry unix seconds>:<participant>"`,
//! `credential = base64(HMAC-SHA1(secret, username))`. The relay needs no table of users: it
//! recomputes the credential from the username and checks the expiry on every request.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The shared REST secret, known to the signaling server (which mints) and the relay (which
/// checks); with coturn it is coturn's `static-auth-secret`.
#[derive(Clone)]
pub struct TurnSecret(Vec<u8>);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// What a participant's ICE agent is given: the WebRTC `RTCIceServer` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
}

/// Why a username was refused before any cryptography.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the TURN username is not <expiry>:<participant>")]
    Malformed,
    #[error("the TURN credential expired {ago} s ago")]
    Expired { ago: u64 },
    #[error("the TURN credential claims to be valid for {secs} s, more than the {max} s minted")]
    TooLong { secs: u64, max: u64 },
}

/// Shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the TURN secret must be at least {MIN_SECRET_BYTES} bytes (it is {0})")]
pub struct WeakSecret(pub usize);

impl TurnSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, WeakSecret> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        Ok(TurnSecret(secret))
    }

    /// The credential for `username`: what the relay checks MESSAGE-INTEGRITY against.
    pub fn password_for(&self, username: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(username.as_bytes());
        data_encoding::BASE64.encode(&mac.finalize().into_bytes())
    }

    /// A credential for `participant`, valid until `now_unix + ttl_secs`.
    pub fn mint(&self, participant: &str, now_unix: u64, ttl_secs: u64) -> TurnCredential {
        let username = format!("{}:{participant}", now_unix + ttl_secs);
        TurnCredential {
            credential: self.password_for(&username),
            username,
        }
    }
}

/// Checks a username's shape and expiry; `max_ttl_secs` refuses usernames that claim a life
/// longer than the server ever mints (a leaked secret elsewhere cannot buy a year-long pass).
pub fn check_username(
    username: &str,
    now_unix: u64,
    max_ttl_secs: u64,
) -> Result<(), CredentialError> {
    let (expiry, participant) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if participant.is_empty() || participant.len() > 128 {
        return Err(CredentialError::Malformed);
    }
    if expiry <= now_unix {
        return Err(CredentialError::Expired {
            ago: now_unix - expiry,
        });
    }
    if expiry - now_unix > max_ttl_secs {
        return Err(CredentialError::TooLong {
            secs: expiry - now_unix,
            max: max_ttl_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> TurnSecret {
        TurnSecret::new(*b"0123456789abcdef").unwrap()
    }

    #[test]
    fn the_credential_is_coturns_rest_credential() {
        // coturn computes base64(HMAC-SHA1(secret, username)); this vector is from
        // `echo -n 1700000000:alice | openssl dgst -sha1 -hmac 0123456789abcdef -binary | base64`.
        let minted = secret().mint("alice", 1_699_999_000, 1000);
        assert_eq!(minted.username, "1700000000:alice");
        assert_eq!(minted.credential, "QmpguVhgm8LJZp0MkvqhyKEkXps=");
    }

    #[test]
    fn usernames_are_checked_for_shape_and_time() {
        assert_eq!(check_username("1000:p", 999, 3600), Ok(()));
        assert_eq!(
            check_username("1000:p", 1000, 3600),
            Err(CredentialError::Expired { ago: 0 })
        );
        assert_eq!(
            check_username("999999:p", 1000, 3600),
            Err(CredentialError::TooLong {
                secs: 998999,
                max: 3600
            })
        );
        for bad in ["", "p", ":p", "x:p", "1000:", "-1:p"] {
            assert_eq!(
                check_username(bad, 0, 3600),
                Err(CredentialError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(TurnSecret::new(*b"short").unwrap_err(), WeakSecret(5));
    }
}
