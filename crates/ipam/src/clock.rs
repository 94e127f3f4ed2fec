//! Time, randomness and retry pacing, all injectable so tests are deterministic.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where IPAM gets the time from (allocation timestamps for the GC grace period, the allocation
/// deadline) and how it waits between retries.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Wait before a retry.
    fn sleep(&self, d: Duration);
}

/// The real clock: system time and `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock for tests: time moves only when told to; `sleep` advances it instead of waiting.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_us: AtomicI64,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self {
            now_us: AtomicI64::new(start_ms.saturating_mul(1000)),
        }
    }

    pub fn advance(&self, d: Duration) {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.now_us.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_us.load(Ordering::SeqCst) / 1000
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

/// SplitMix64: a tiny, good-enough PRNG for jitter and fault injection (not cryptographic).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`) for claim offsets and jitter seeds.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Full-jitter exponential backoff with a bounded number of attempts.
#[derive(Debug)]
pub(crate) struct Backoff<'a> {
    clock: &'a dyn Clock,
    rng: SplitMix64,
    base: Duration,
    cap: Duration,
    max_attempts: u32,
    /// Conflicts seen so far.
    pub(crate) conflicts: u32,
}

impl<'a> Backoff<'a> {
    pub(crate) fn new(
        clock: &'a dyn Clock,
        seed: u64,
        base: Duration,
        cap: Duration,
        max_attempts: u32,
    ) -> Self {
        Self {
            clock,
            rng: SplitMix64::new(seed),
            base,
            cap,
            max_attempts,
            conflicts: 0,
        }
    }

    /// Record a lost race. Returns `false` when the attempt budget is spent (the caller gives
    /// up with a retryable error); otherwise sleeps a jittered, exponentially growing delay.
    pub(crate) fn conflict(&mut self) -> bool {
        self.conflicts += 1;
        if self.conflicts >= self.max_attempts {
            return false;
        }
        let exp = self.conflicts.min(16);
        let window = self.base.saturating_mul(1 << exp).min(self.cap);
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let d = Duration::from_micros(self.rng.below(us.saturating_add(1)));
        if !d.is_zero() {
            self.clock.sleep(d);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_sleep_advances() {
        let c = ManualClock::new(1_000);
        c.sleep(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
    }

    #[test]
    fn backoff_is_bounded_and_capped() {
        let c = ManualClock::new(0);
        let mut b = Backoff::new(
            &c,
            7,
            Duration::from_millis(1),
            Duration::from_millis(10),
            5,
        );
        let mut n = 0;
        while b.conflict() {
            n += 1;
        }
        assert_eq!(n, 4);
        assert!(c.now_ms() <= 40);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
