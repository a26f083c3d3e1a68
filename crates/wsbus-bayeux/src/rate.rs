//! A message rate limit: [`RateLimit`] and its [`TokenBucket`], used per
//! bus session by the engine and per connection by the runtime
//! (`wsbus::limits` re-exports them).

use std::time::{Duration, Instant};

/// Nanoseconds in a second: the unit the bucket's arithmetic is done in.
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A message rate: `per_second` on average, with bursts of up to `burst`.
///
/// [`RateLimit::new`] sets `burst` to `per_second`, one second's worth:
/// a client that has been quiet for a second may send what it would have
/// sent over that second at once (a reconnect flushing its queue, a
/// long-poll batch), which well-behaved clients do, while over any window of
/// `w` seconds it still sends at most `per_second × w + burst` messages, so
/// never more than twice the rate in any one second. A smaller burst
/// punishes ordinary batching; a larger one lets an idle client flood.
///
/// A zero `per_second` or a zero `burst` refuses every message; to turn
/// limiting off, do not keep a bucket at all (an `Option<TokenBucket>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Messages per second, on average.
    pub per_second: u32,
    /// Messages that may arrive back to back after an idle period.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` with the default burst of one second's worth.
    pub const fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            burst: per_second,
        }
    }

    /// The same rate with another burst.
    pub const fn with_burst(self, burst: u32) -> Self {
        RateLimit { burst, ..self }
    }

    /// The time one message's worth of credit takes to come back, in
    /// nanoseconds; at least 1 so rates above 10⁹/s stay well defined.
    ///
    /// The division truncates, so the effective rate is a little *higher*
    /// than configured, by less than `per_second² / 10⁹` messages per second
    /// (a hundredth of a message per second at 100 000/s): it never refuses
    /// a client that keeps to the configured rate.
    fn interval_nanos(self) -> u64 {
        (NANOS_PER_SECOND / u64::from(self.per_second)).max(1)
    }
}

/// A token bucket for one connection or bus session, refilled continuously
/// at [`RateLimit::per_second`] and holding at most [`RateLimit::burst`]
/// tokens; it starts full.
///
/// It stores only one instant (16 bytes or less): the limit is passed to
/// each call rather than kept, because every socket task holds a bucket and
/// they all share the same configured limit. Internally it is the generic
/// cell rate algorithm (GCRA, ITU-T I.371), which is exactly a token bucket
/// kept as the *theoretical arrival time* of the next message: the instant
/// at which the bucket would be full again, advanced by one interval per
/// message taken. All arithmetic is on integer nanoseconds, so there is no
/// floating-point drift however long the connection lives.
///
/// Time is passed in by the caller (`now`), normally `Instant::now()` or
/// `tokio::time::Instant::now().into_std()`; an instant earlier than one
/// already seen is treated as no time passing, never as a panic.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// When the bucket is full again: `now` or earlier means full; each
    /// message taken pushes it one interval later.
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket (`limit.burst` tokens) at `now`.
    ///
    /// The limit is not stored; it is taken here so the constructor reads
    /// like the call sites, and so a future representation may use it.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let _ = limit;
        TokenBucket { full_at: now }
    }

    /// Takes one token if there is one: `true` if the message may go on,
    /// `false` if it is over the limit (and nothing is taken).
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> bool {
        if limit.per_second == 0 || limit.burst == 0 {
            return false;
        }
        let interval = limit.interval_nanos();
        // Credit used so far, in nanoseconds of refill: 0 when full. It is
        // saturating: a `full_at` in the past is a full bucket, never more
        // (a long idle period does not bank tokens beyond the burst).
        let used = self.full_at.saturating_duration_since(now);
        // Taking one more token must leave the used credit within
        // `burst` intervals; in u128 so no burst and interval overflow.
        let after = used.as_nanos() + u128::from(interval);
        if after > u128::from(limit.burst) * u128::from(interval) {
            return false;
        }
        // `after` ≤ u32::MAX × 10⁹ ns (about 136 years), which fits a u64
        // and an `Instant`; should a platform's clock not hold it, refusing
        // is the safe answer.
        let after = Duration::from_nanos(u64::try_from(after).unwrap_or(u64::MAX));
        match now.checked_add(after) {
            Some(full_at) => {
                self.full_at = full_at;
                true
            }
            None => false,
        }
    }
}
