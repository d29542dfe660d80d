//! Retry backoff: exponential, capped, with jitter.
//!
//! The function is pure: the caller supplies the random fraction (for example
//! `rand::random::<f64>()`), so the policy is testable without a RNG.

use std::time::Duration;

/// Backoff policy for retrying failed work (jobs, provider calls).
///
/// The delay before retry number `attempt` (1 = the first retry) is drawn from
/// `[ceiling / 2, ceiling]` where `ceiling = min(max, base * 2^(attempt - 1))`
/// ("equal jitter"): it grows exponentially, never exceeds `max`, never drops to
/// zero, and spreads simultaneous failures apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 10 s, 20 s, 40 s, ... capped at one hour.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The upper bound of the delay before retry `attempt` (1-based; 0 is treated as 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        let factor = u32::try_from(factor).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The delay before retry `attempt`, given `random` in `[0, 1]` (values
    /// outside are clamped; NaN counts as 0).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let r = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = ceiling - half;
        half + spread.mul_f64(r).min(spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_delay_doubles_until_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(4), Duration::from_secs(8));
        assert_eq!(b.ceiling(5), Duration::from_secs(10));
        assert_eq!(b.ceiling(1000), Duration::from_secs(10));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_ceiling_and_max(
            base_ms in 1u64..100_000,
            max_ms in 1u64..10_000_000,
            attempt in 0u32..200,
            random in proptest::num::f64::ANY,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let d = b.delay(attempt, random);
            let ceiling = b.ceiling(attempt);
            prop_assert!(d <= ceiling);
            prop_assert!(d <= b.max);
            prop_assert!(d >= ceiling / 2);
            prop_assert!(d > Duration::ZERO);
        }

        #[test]
        fn the_ceiling_never_shrinks_as_attempts_grow(
            base_ms in 1u64..100_000,
            max_ms in 1u64..10_000_000,
            attempt in 0u32..200,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            prop_assert!(b.ceiling(attempt + 1) >= b.ceiling(attempt));
        }
    }
}
