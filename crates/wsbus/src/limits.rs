//! Limits against abuse (SPEC §5): a message rate per connection or bus
//! session ([`TokenBucket`]) and a cap on live connections per key — client
//! address or user ([`ConnectionLimiter`]).
//!
//! Both are pure and deterministic: the bucket is told the time by its
//! caller, so it is tested without sleeping, and neither logs nor decides
//! what a violation does (close `1008`, a Bayeux error): the caller does.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use wsbus_bayeux::{RateLimit, TokenBucket};

/// Live connections per key (a client address, a user), each key capped at
/// `max_per_key`.
///
/// Cloning shares the counts. [`try_acquire`](Self::try_acquire) is called
/// once per handshake, so a single mutex is enough; a key's entry is removed
/// when its last [`ConnectionPermit`] drops, so the map holds only keys with
/// live connections and its memory is bounded by them.
pub struct ConnectionLimiter<K: Hash + Eq + Clone> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    max_per_key: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K> Shared<K> {
    /// The map, even after a panic elsewhere while it was locked: every
    /// update is a single insert, increment or removal, so it is never left
    /// half-done, and refusing all connections forever would be worse.
    fn counts(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> ConnectionLimiter<K> {
    /// A limiter allowing `max_per_key` live connections per key (0 refuses
    /// every connection).
    pub fn new(max_per_key: usize) -> Self {
        ConnectionLimiter {
            shared: Arc::new(Shared {
                max_per_key,
                counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The cap per key.
    pub fn max_per_key(&self) -> usize {
        self.shared.max_per_key
    }

    /// Counts one more connection for `key`, or `None` if `key` is at the
    /// limit. Keep the permit for as long as the connection lives.
    pub fn try_acquire(&self, key: K) -> Option<ConnectionPermit<K>> {
        let max = self.shared.max_per_key;
        if max == 0 {
            return None;
        }
        let mut counts = self.shared.counts();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        drop(counts);
        Some(ConnectionPermit {
            shared: Arc::clone(&self.shared),
            key,
        })
    }

    /// Live connections of `key`.
    pub fn count(&self, key: &K) -> usize {
        self.shared.counts().get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one live connection.
    pub fn keys(&self) -> usize {
        self.shared.counts().len()
    }
}

impl<K: Hash + Eq + Clone> Clone for ConnectionLimiter<K> {
    fn clone(&self) -> Self {
        ConnectionLimiter {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Keys are not shown: they may be user ids.
impl<K: Hash + Eq + Clone> fmt::Debug for ConnectionLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("max_per_key", &self.shared.max_per_key)
            .field("keys", &self.keys())
            .finish()
    }
}

/// One live connection counted by a [`ConnectionLimiter`]; dropping it
/// releases the count.
#[must_use = "the connection is counted only while the permit lives"]
pub struct ConnectionPermit<K: Hash + Eq> {
    shared: Arc<Shared<K>>,
    key: K,
}

impl<K: Hash + Eq> ConnectionPermit<K> {
    /// The key this permit counts against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq> Drop for ConnectionPermit<K> {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The key is not shown: it may be a user id.
impl<K: Hash + Eq> fmt::Debug for ConnectionPermit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_is_small() {
        assert!(std::mem::size_of::<TokenBucket>() <= 16);
    }

    #[test]
    fn default_burst_is_one_second() {
        assert_eq!(
            RateLimit::new(100),
            RateLimit {
                per_second: 100,
                burst: 100
            }
        );
        assert_eq!(RateLimit::new(100).with_burst(5).burst, 5);
    }

    #[test]
    fn burst_then_refuse() {
        let limit = RateLimit::new(10).with_burst(3);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        assert!(bucket.try_take(limit, t0));
        assert!(bucket.try_take(limit, t0));
        assert!(bucket.try_take(limit, t0));
        assert!(!bucket.try_take(limit, t0));
        // A refusal takes nothing: still refused just before the refill.
        assert!(!bucket.try_take(limit, t0 + ms(99)));
    }

    #[test]
    fn refills_one_token_per_interval() {
        let limit = RateLimit::new(10).with_burst(2);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        assert!(bucket.try_take(limit, t0));
        assert!(bucket.try_take(limit, t0));
        assert!(!bucket.try_take(limit, t0));
        let just_before = t0 + ms(100) - Duration::from_nanos(1);
        assert!(!bucket.try_take(limit, just_before));
        // Exactly 1/rate later: one token, and only one.
        assert!(bucket.try_take(limit, t0 + ms(100)));
        assert!(!bucket.try_take(limit, t0 + ms(100)));
        // Continuous refill: 250 ms more is two tokens (burst 2).
        assert!(bucket.try_take(limit, t0 + ms(350)));
        assert!(bucket.try_take(limit, t0 + ms(350)));
        assert!(!bucket.try_take(limit, t0 + ms(350)));
    }

    #[test]
    fn steady_rate_is_never_refused() {
        let limit = RateLimit::new(3).with_burst(1);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        // 1/3 s truncates to 333 333 333 ns: exact thirds always pass.
        for i in 0..3_000u64 {
            let now = t0 + Duration::from_nanos(i * 1_000_000_000 / 3);
            assert!(bucket.try_take(limit, now), "message {i}");
        }
    }

    #[test]
    fn long_idle_does_not_exceed_burst() {
        let limit = RateLimit::new(100);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        assert!(bucket.try_take(limit, t0));
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..1000).filter(|_| bucket.try_take(limit, later)).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn fresh_bucket_holds_burst() {
        let limit = RateLimit::new(5);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        let taken = (0..100).filter(|_| bucket.try_take(limit, t0)).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn zero_rate_or_burst_refuses() {
        let t0 = Instant::now();
        for limit in [RateLimit::new(0), RateLimit::new(10).with_burst(0)] {
            let mut bucket = TokenBucket::new(limit, t0);
            assert!(!bucket.try_take(limit, t0 + Duration::from_secs(10)));
        }
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_refill() {
        let limit = RateLimit::new(1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(limit, t0);
        assert!(bucket.try_take(limit, t0));
        assert!(!bucket.try_take(limit, t0 - Duration::from_secs(5)));
        assert!(!bucket.try_take(limit, t0));
        assert!(bucket.try_take(limit, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        let t0 = Instant::now();
        let huge = RateLimit {
            per_second: u32::MAX,
            burst: u32::MAX,
        };
        let mut bucket = TokenBucket::new(huge, t0);
        assert!((0..10_000).all(|_| bucket.try_take(huge, t0)));
        let slow = RateLimit {
            per_second: 1,
            burst: u32::MAX,
        };
        let mut bucket = TokenBucket::new(slow, t0);
        assert!((0..10_000).all(|_| bucket.try_take(slow, t0)));
    }

    #[test]
    fn limiter_acquire_release_remove_at_zero() {
        let limiter = ConnectionLimiter::new(2);
        let a1 = limiter.try_acquire("a").unwrap();
        let a2 = limiter.try_acquire("a").unwrap();
        assert!(limiter.try_acquire("a").is_none());
        let b1 = limiter.try_acquire("b").unwrap();
        assert_eq!(limiter.count(&"a"), 2);
        assert_eq!(limiter.count(&"b"), 1);
        assert_eq!(limiter.keys(), 2);
        assert_eq!(a1.key(), &"a");

        drop(a1);
        assert_eq!(limiter.count(&"a"), 1);
        let a3 = limiter.try_acquire("a").unwrap();
        drop((a2, a3));
        assert_eq!(limiter.count(&"a"), 0);
        assert_eq!(limiter.keys(), 1);
        drop(b1);
        assert_eq!(limiter.keys(), 0);
    }

    #[test]
    fn refused_acquire_leaves_no_entry() {
        let limiter = ConnectionLimiter::new(0);
        assert!(limiter.try_acquire(1u32).is_none());
        assert_eq!(limiter.keys(), 0);
        let limiter = ConnectionLimiter::new(1);
        let _p = limiter.try_acquire(1u32).unwrap();
        assert!(limiter.try_acquire(1u32).is_none());
        assert_eq!(limiter.keys(), 1);
        assert_eq!(limiter.count(&1), 1);
    }

    #[test]
    fn clones_share_counts_and_debug_hides_keys() {
        let limiter = ConnectionLimiter::new(1);
        let other = limiter.clone();
        let permit = limiter.try_acquire("user-secretish".to_owned()).unwrap();
        assert!(other.try_acquire("user-secretish".to_owned()).is_none());
        assert!(!format!("{limiter:?}{permit:?}").contains("secretish"));
        assert_eq!(other.max_per_key(), 1);
    }

    #[test]
    fn limiter_is_thread_safe() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 2_000;
        let limiter = ConnectionLimiter::new(3);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let limiter = limiter.clone();
                scope.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..ROUNDS {
                        let key = (t + i) % 4;
                        if let Some(permit) = limiter.try_acquire(key) {
                            assert!(limiter.count(&key) <= 3);
                            held.push(permit);
                        }
                        if held.len() > 2 {
                            drop(held.swap_remove(i % held.len()));
                        }
                    }
                });
            }
        });
        for key in 0..4 {
            assert_eq!(limiter.count(&key), 0);
        }
        assert_eq!(limiter.keys(), 0);
    }
}
