//! Butler's per-recipient limit: at most one message per (task id, recipient)
//! per window, a slot taken only by a message the server accepted. It only
//! keeps the slots; the notifier decides who is held back and counts it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::super::{MAX_KEYS, SlotHasher};

/// At most one message per (key, recipient) per window; a slot is taken only
/// by an accepted message. Holds at most [`MAX_KEYS`] slots, each keyed by the
/// key's hash and the recipient (from config).
#[derive(Debug)]
pub(super) struct RecipientLimiter {
    window: Duration,
    pub(super) slots: HashMap<(u64, String), Instant>,
    hasher: SlotHasher,
}

impl RecipientLimiter {
    pub(super) fn new(window: Duration) -> RecipientLimiter {
        RecipientLimiter {
            window,
            slots: HashMap::new(),
            hasher: SlotHasher::default(),
        }
    }

    pub(super) fn limited(&self, key: &str, recipient: &str, now: Instant) -> bool {
        !self.window.is_zero()
            && self
                .slots
                .get(&(self.hasher.slot(key), recipient.to_string()))
                .is_some_and(|at| now.duration_since(*at) < self.window)
    }

    pub(super) fn record(&mut self, key: &str, recipient: &str, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        if self.slots.len() >= MAX_KEYS {
            let window = self.window;
            self.slots.retain(|_, at| now.duration_since(*at) < window);
        }
        if self.slots.len() < MAX_KEYS {
            self.slots
                .insert((self.hasher.slot(key), recipient.to_string()), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipient_limiter_takes_slots_per_key_and_recipient() {
        let mut limiter = RecipientLimiter::new(Duration::from_secs(300));
        let now = Instant::now();
        assert!(!limiter.limited("t1", "a@x", now));
        limiter.record("t1", "a@x", now);
        assert!(limiter.limited("t1", "a@x", now + Duration::from_secs(299)));
        assert!(!limiter.limited("t1", "b@x", now));
        assert!(!limiter.limited("t2", "a@x", now));
        assert!(!limiter.limited("t1", "a@x", now + Duration::from_secs(300)));
        for i in 0..MAX_KEYS + 10 {
            limiter.record(&format!("k{i}"), "a@x", now);
        }
        assert!(limiter.slots.len() <= MAX_KEYS);
        let off = RecipientLimiter::new(Duration::ZERO);
        assert!(!off.limited("t1", "a@x", now));
    }
}
