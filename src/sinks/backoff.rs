//! Exponential backoff with jitter, for everything in the sinks that waits
//! before trying a destination again: the driver's retries of a failed batch
//! and the MQTT sink's reconnection attempts.
//!
//! It only computes delays, in whole milliseconds: it does not sleep, count
//! attempts, honour a destination's `Retry-After`, or decide whether to try
//! again; its callers do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most doublings: beyond this the cap has long been reached.
const MAX_DOUBLINGS: u32 = 20;

/// Delays that start at `initial`, double with each attempt up to `max`, and
/// vary by ±25 % so that many sinks do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, never more than `max` before jitter.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// `initial · 2^attempt`, capped at `max`, without jitter (`attempt` 0 is
    /// the first wait).
    pub fn base(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(MAX_DOUBLINGS))
            .min(self.max)
    }

    /// The wait before trying again after `attempt` failures (0: the first
    /// wait): [`base`](Self::base) times a factor between 0.75 and 1.25.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let jitter = (u64::from(nanos) % 501) as f64 / 1000.0 + 0.75; // 0.75 ..= 1.25
        Duration::from_millis((self.base(attempt).as_millis() as f64 * jitter) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_initial_one_up_to_the_cap_with_a_quarter_of_jitter() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ms = |attempt| backoff.base(attempt).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [100, 200, 400, 800, 1000]
        );
        assert_eq!(ms(u32::MAX), 1000);
        for attempt in [0, 1, 2, 10, u32::MAX] {
            let base = backoff.base(attempt).as_millis();
            for _ in 0..20 {
                let delay = backoff.delay(attempt).as_millis();
                assert!(
                    (base * 3 / 4..=base * 5 / 4).contains(&delay),
                    "{attempt}: {delay} ms"
                );
            }
        }
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let backoff = Backoff::new(Duration::from_millis(u64::MAX), Duration::MAX);
        assert!(backoff.delay(30) >= Duration::from_millis(u64::MAX / 4 * 3));
    }
}
