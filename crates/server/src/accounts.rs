//! Optional accounts for hosts: names with argon2id passwords, and login sessions carried by
//! an HttpOnly cookie. Guests never need one.

use sha2::{Digest, Sha256};

/// A logged-in account, as the gate and the signaling session see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

impl From<crate::storage::UserRecord> for User {
    fn from(record: crate::storage::UserRecord) -> Self {
        User {
            id: record.id,
            name: record.name,
        }
    }
}

/// Name of the login cookie.
pub const SESSION_COOKIE: &str = "conclave_session";

/// How long a login lasts.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 60 * 60;

/// A fresh session token (256 random bits, base32) for the cookie.
pub fn new_session_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

/// What the database keeps of a session token: its SHA-256 (the token is 256 random bits, so a
/// slow hash would add nothing).
pub fn session_token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The login session token in a request's cookies, if any.
pub fn session_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The account logged in on this request, if its session cookie is valid. A storage error
/// counts as not logged in: the request goes on as a guest's.
pub async fn user_from_headers(
    storage: &crate::storage::Storage,
    headers: &axum::http::HeaderMap,
    now_secs: i64,
) -> Option<User> {
    let token = session_token(headers)?;
    match storage
        .session_user(&session_token_digest(token), now_secs)
        .await
    {
        Ok(user) => user.map(User::from),
        Err(e) => {
            tracing::warn!("cannot read login sessions: {e}");
            None
        }
    }
}

/// Failed logins are limited per source address and per account name (so that guessing one
/// account's password from many addresses is slow too). Successful logins are refunded.
pub struct LoginThrottle {
    by_source: crate::ratelimit::RateLimiter<std::net::IpAddr>,
    by_name: crate::ratelimit::RateLimiter<String>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            // 5 tries at once, then one every 10 s: ~8,600 guesses a day at most per name.
            by_source: crate::ratelimit::RateLimiter::new(5, 0.1),
            by_name: crate::ratelimit::RateLimiter::new(5, 0.1),
        }
    }
}

impl LoginThrottle {
    pub fn acquire(
        &self,
        peer: std::net::IpAddr,
        name: &str,
        now_ms: i64,
    ) -> Result<(), crate::ratelimit::RetryAfter> {
        let source = crate::ratelimit::source_key(peer);
        self.by_source.try_acquire(&source, now_ms)?;
        if let Err(wait) = self.by_name.try_acquire(&name.to_owned(), now_ms) {
            self.by_source.refund(&source);
            return Err(wait);
        }
        Ok(())
    }

    pub fn refund(&self, peer: std::net::IpAddr, name: &str) {
        self.by_source.refund(&crate::ratelimit::source_key(peer));
        self.by_name.refund(&name.to_owned());
    }
}
