//! Retry decisions: whether a failed job is given up, how long it waits
//! before its next attempt (exponential backoff with jitter, honouring a
//! server's Retry-After up to a cap; the caller supplies the randomness),
//! and what an HTTP status says about a write.

use std::time::Duration;

use crate::job::JobFailure;

/// Attempts a job that only waits for other jobs ([`JobFailure::Deferred`])
/// may make before it is given up; below apalis-redis' own hard limit (25),
/// past which it would drop the job without us knowing.
pub const MAX_DEFERRED_ATTEMPTS: usize = 20;

/// Whether a failed job is given up now: a permanent failure, or another
/// on its last attempt — except while the process is stopping (a job handed
/// back on shutdown is never dead-lettered). A deferred job gets
/// [`MAX_DEFERRED_ATTEMPTS`].
pub fn gives_up(failure: &JobFailure, attempt: usize, max_attempts: usize, stopping: bool) -> bool {
    let limit = match failure {
        JobFailure::Permanent(_) => return true,
        JobFailure::Deferred(_) => MAX_DEFERRED_ATTEMPTS.max(max_attempts),
        JobFailure::Retryable { .. } => max_attempts,
    };
    attempt >= limit && !stopping
}

/// What an HTTP answer to a write says it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// 2xx: the write was made.
    Succeeded,
    /// A 4xx other than 408 and 429: refused for good; not retried.
    Refused,
    /// 429: turned away before it was handled; sent again later.
    NotMade,
    /// 408, 5xx and the like: it may or may not have been made; found out
    /// before it is sent again.
    Unknown,
}

impl WriteStatus {
    /// The class of `status`.
    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => Self::Succeeded,
            429 => Self::NotMade,
            408 => Self::Unknown,
            400..=499 => Self::Refused,
            _ => Self::Unknown,
        }
    }
}

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
    fn a_job_is_given_up_on_its_last_attempt_unless_the_process_stops() {
        let retryable = JobFailure::retryable(anyhow::anyhow!("down"), "x");
        assert!(!gives_up(&retryable, 2, 3, false));
        assert!(gives_up(&retryable, 3, 3, false));
        assert!(!gives_up(&retryable, 3, 3, true));
        let permanent = JobFailure::permanent(anyhow::anyhow!("bad"), "x");
        assert!(gives_up(&permanent, 1, 3, false));
        assert!(gives_up(&permanent, 1, 3, true));
        let deferred = JobFailure::deferred(anyhow::anyhow!("busy"), "x");
        assert!(!gives_up(&deferred, 3, 3, false));
        assert!(!gives_up(&deferred, MAX_DEFERRED_ATTEMPTS - 1, 3, false));
        assert!(gives_up(&deferred, MAX_DEFERRED_ATTEMPTS, 3, false));
        assert!(gives_up(&deferred, 30, 30, false));
    }

    #[test]
    fn write_statuses_are_classed() {
        assert_eq!(WriteStatus::of(201), WriteStatus::Succeeded);
        assert_eq!(WriteStatus::of(422), WriteStatus::Refused);
        assert_eq!(WriteStatus::of(404), WriteStatus::Refused);
        assert_eq!(WriteStatus::of(429), WriteStatus::NotMade);
        for status in [408, 500, 503, 302, 100] {
            assert_eq!(WriteStatus::of(status), WriteStatus::Unknown, "{status}");
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(B.delay(2, None, 7.0), Duration::from_secs(2));
        assert_eq!(B.delay(2, None, -1.0), Duration::from_secs(1));
    }
}
