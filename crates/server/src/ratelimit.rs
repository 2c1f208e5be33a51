//! Keyed token buckets with the time passed in, so that tests drive the clock.
//!
//! A caller takes a token before doing the work the limit protects and gives it back when
//! the attempt turned out legitimate ([`RateLimiter::refund`]). So failures (guessed ids,
//! wrong passcodes) drain the bucket, while a whole office behind one NAT address joining
//! a meeting at nine o'clock is not slowed down; and since the token is taken up front,
//! many attempts in flight at once cannot overdraw it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Above this many keys, full buckets are forgotten: an attacker cycling through source
/// addresses cannot grow the map without bound, and a full bucket carries no state.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// How long to wait before the next attempt can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, for a `Retry-After` header.
    pub fn secs(self) -> u64 {
        self.0.as_millis().div_ceil(1000).max(1) as u64
    }
}

pub struct RateLimiter<K> {
    burst: f64,
    refill_per_ms: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `burst` attempts at once, then one more every `1 / per_second` seconds.
    pub fn new(burst: u32, per_second: f64) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            refill_per_ms: per_second.max(1e-9) / 1000.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now_ms: i64) -> Bucket {
        let elapsed = now_ms.saturating_sub(bucket.at_ms).max(0) as f64;
        Bucket {
            tokens: (bucket.tokens + elapsed * self.refill_per_ms).min(self.burst),
            at_ms: now_ms,
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn try_acquire(&self, key: &K, now_ms: i64) -> Result<(), RetryAfter> {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; refusing would lock everyone out.
            return Ok(());
        };
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| self.refilled(*b, now_ms).tokens < self.burst);
        }
        let full = Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        };
        let bucket = buckets.entry(key.clone()).or_insert(full);
        *bucket = self.refilled(*bucket, now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing_ms = (1.0 - bucket.tokens) / self.refill_per_ms;
            Err(RetryAfter(Duration::from_millis(missing_ms.ceil() as u64)))
        }
    }

    /// Gives back the token of an attempt that turned out legitimate.
    pub fn refund(&self, key: &K) {
        if let Ok(mut buckets) = self.buckets.lock() {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
            }
        }
    }
}

/// The key for "one source": an IPv4 address, or the /64 of an IPv6 address, since one
/// IPv6 host commonly holds a whole /64 and could otherwise rotate through it.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_interval() {
        let limiter = RateLimiter::new(3, 1.0);
        for _ in 0..3 {
            assert!(limiter.try_acquire(&"a", 0).is_ok());
        }
        let wait = limiter.try_acquire(&"a", 0).unwrap_err();
        assert_eq!(wait.0, Duration::from_secs(1));
        assert_eq!(wait.secs(), 1);
        assert!(limiter.try_acquire(&"b", 0).is_ok(), "keys are separate");
        assert!(limiter.try_acquire(&"a", 500).is_err());
        assert!(limiter.try_acquire(&"a", 1000).is_ok());
        assert!(limiter.try_acquire(&"a", 1000).is_err());
        // Long idle refills to the burst, not beyond.
        for _ in 0..3 {
            assert!(limiter.try_acquire(&"a", 1_000_000).is_ok());
        }
        assert!(limiter.try_acquire(&"a", 1_000_000).is_err());
    }

    #[test]
    fn refunded_attempts_do_not_count() {
        let limiter = RateLimiter::new(2, 1.0);
        for _ in 0..100 {
            assert!(limiter.try_acquire(&"office", 0).is_ok());
            limiter.refund(&"office");
        }
        assert!(limiter.try_acquire(&"office", 0).is_ok());
        assert!(limiter.try_acquire(&"office", 0).is_ok());
        assert!(limiter.try_acquire(&"office", 0).is_err());
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
