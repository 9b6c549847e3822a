//! Retry timing: exponential backoff with jitter, honouring a server's
//! Retry-After up to a cap. The caller supplies the randomness.

use std::time::Duration;

/// How failed jobs are spaced out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// Longest delay between two attempts, Retry-After included.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The pause after failed attempt `attempt` (1 = the first): `base ×
    /// 2^(attempt-1)` capped at `max`, of which a random half is kept
    /// ("equal jitter", `jitter` in `0.0..=1.0`), so workers that failed
    /// together do not retry together. A `retry_after` the server asked for
    /// is waited at least, up to `max`.
    pub fn delay(&self, attempt: usize, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        let full = self.base.saturating_mul(1 << exponent).min(self.max);
        let jittered = full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
        match retry_after {
            Some(asked) => jittered.max(asked).min(self.max),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_per_attempt_within_the_jitter_band() {
        assert_eq!(B.delay(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(B.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(B.delay(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(B.delay(3, None, 0.0), Duration::from_secs(2));
        assert_eq!(B.delay(3, None, 0.5), Duration::from_secs(3));
    }

    #[test]
    fn is_capped_and_never_overflows() {
        assert_eq!(B.delay(7, None, 1.0), Duration::from_secs(60));
        assert_eq!(B.delay(usize::MAX, None, 1.0), Duration::from_secs(60));
        assert_eq!(B.delay(0, None, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        assert_eq!(
            B.delay(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            B.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(60)
        );
        // A shorter Retry-After does not shorten the backoff.
        assert_eq!(
            B.delay(3, Some(Duration::from_millis(1)), 1.0),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(B.delay(2, None, 7.0), Duration::from_secs(2));
        assert_eq!(B.delay(2, None, -1.0), Duration::from_secs(1));
    }
}
