//! Slow hashing for human-chosen secrets (meeting passcodes, account passwords): argon2id with
//! the crate's recommended parameters, stored as PHC strings so parameters can change later.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the secret: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// The argon2id PHC string of `secret`, with a fresh random salt.
pub fn hash(secret: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|phc| phc.to_string())
        .map_err(PasswordError::Hash)
}

/// Whether `candidate` matches the PHC string (the final comparison is constant time). An
/// unreadable PHC string matches nothing.
pub fn verify(phc: &str, candidate: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(candidate.as_bytes(), &parsed)
        .is_ok()
}

/// [`verify`] off the async runtime: argon2 takes tens of milliseconds and ~19 MiB by design.
pub async fn verify_blocking(phc: String, candidate: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&phc, &candidate))
        .await
        .unwrap_or(false)
}

/// [`hash`] off the async runtime.
pub async fn hash_blocking(secret: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash(&secret))
        .await
        .map_err(PasswordError::Task)?
}

/// A PHC string that matches no passcode, verified when a meeting does not exist so that an
/// unknown meeting and a wrong passcode take the same time to refuse.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy: matches nothing a caller can send\u{0}").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_secret_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct hors"));
        assert!(!verify("not a phc string", "correct horse"));
    }
}
