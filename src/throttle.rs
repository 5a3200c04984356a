//! Log throttling: [`Throttle`] lets one line through per interval and counts
//! what it held back, for conditions that repeat (a full queue, a failing
//! disk). Not thread-safe by design: each thread owns its throttles. Lines
//! about datagrams herald could not use (which a sender controls) go through
//! the one global budget in [`crate::flood`] instead. Counters are never
//! throttled: the caller counts every occurrence.

use std::time::{Duration, Instant};

/// Lets one log line through per interval.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle letting one line through per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back
    /// since the last one; `None` when this one should be skipped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(61)), Some(2));
    }
}
