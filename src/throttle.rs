//! Log throttling, so a flood of bad datagrams cannot flood the log.
//!
//! [`Throttle`] lets one line through per interval and counts what it held back;
//! [`KeyedThrottle`] does the same per key (e.g. per sender address) with a bounded
//! number of keys. Counters are not throttled: every event is still counted by the
//! caller. Not thread-safe by design: each thread owns its throttles.

use std::collections::HashMap;
use std::hash::Hash;
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

/// One [`Throttle`] per key, remembering at most `capacity` keys.
#[derive(Debug)]
pub struct KeyedThrottle<K> {
    interval: Duration,
    capacity: usize,
    keys: HashMap<K, Throttle>,
}

impl<K: Hash + Eq> KeyedThrottle<K> {
    /// A keyed throttle; when more than `capacity` keys are seen within one
    /// interval, the oldest are forgotten (they may log once more).
    pub fn new(interval: Duration, capacity: usize) -> KeyedThrottle<K> {
        KeyedThrottle {
            interval,
            capacity: capacity.max(1),
            keys: HashMap::new(),
        }
    }

    /// Like [`Throttle::allow`], for `key`.
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if self.keys.len() >= self.capacity && !self.keys.contains_key(&key) {
            let interval = self.interval;
            self.keys.retain(|_, t| {
                t.last
                    .is_some_and(|last| now.duration_since(last) < interval)
            });
            if self.keys.len() >= self.capacity {
                self.keys.clear();
            }
        }
        self.keys
            .entry(key)
            .or_insert_with(|| Throttle::new(self.interval))
            .allow(now)
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

    #[test]
    fn keys_are_throttled_independently() {
        let mut throttle = KeyedThrottle::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        assert_eq!(throttle.allow("a", now), Some(0));
        assert_eq!(throttle.allow("b", now), Some(0));
        assert_eq!(throttle.allow("a", now), None);
    }

    #[test]
    fn key_memory_stays_bounded() {
        let mut throttle = KeyedThrottle::new(Duration::from_secs(60), 4);
        let now = Instant::now();
        for key in 0..100 {
            throttle.allow(key, now);
        }
        assert!(throttle.keys.len() <= 4);
    }
}
