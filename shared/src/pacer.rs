//! Per-key pacing with governor: waits until a key may send again, at the
//! [`Pace`] chosen for it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::engine::pace::Pace;

/// Keyed rate limiters, one per distinct pace.
#[derive(Default)]
pub struct Pacer {
    limiters: Mutex<HashMap<Pace, Arc<DefaultKeyedRateLimiter<String>>>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").finish_non_exhaustive()
    }
}

impl Pacer {
    /// Waits until `key` may go again at `pace`.
    pub async fn wait(&self, key: &str, pace: Pace) {
        let limiter = self.limiter(pace);
        limiter.until_key_ready(&key.to_owned()).await;
    }

    /// Whether `key` may go now at `pace` (takes the slot if so).
    pub fn try_take(&self, key: &str, pace: Pace) -> bool {
        self.limiter(pace).check_key(&key.to_owned()).is_ok()
    }

    fn limiter(&self, pace: Pace) -> Arc<DefaultKeyedRateLimiter<String>> {
        let mut limiters = self.limiters.lock().expect("pacer lock is never poisoned");
        limiters
            .entry(pace)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(pace.burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(pace.period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(burst);
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Forgets keys that have been idle long enough to be at full burst again.
    pub fn forget_idle(&self) {
        for limiter in self
            .limiters
            .lock()
            .expect("pacer lock is never poisoned")
            .values()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits() {
        let pacer = Pacer::default();
        let pace = Pace {
            period: Duration::from_secs(60),
            burst: 2,
        };
        assert!(pacer.try_take("a", pace));
        assert!(pacer.try_take("a", pace));
        assert!(
            !pacer.try_take("a", pace),
            "third message within the period"
        );
        assert!(pacer.try_take("b", pace), "keys are independent");
    }
}
