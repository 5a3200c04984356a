//! Byte budgets for the queues that hold what the network sent.
//!
//! A queue bounded only in items is not bounded in memory when one item can be
//! a 64 KB datagram, so every such queue (ingest → workers, each sink's memory
//! buffer, the dead-letter writer's queue) also takes its items' bytes from a
//! [`ByteBudget`] and gives them back when the item leaves. The queue decides
//! what a refused item means (drop it, drop older ones, wait); this module only
//! keeps the count. It is lock-free: producers and consumers on any thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// A number of bytes that items in a queue may hold at once.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicU64,
    max: u64,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> ByteBudget {
        ByteBudget {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// Takes `bytes` if they fit; false (taking nothing) when they do not. An
    /// item larger than the whole budget fits only into an empty queue, so
    /// such an item still gets through, one at a time.
    pub fn try_take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(bytes) <= self.max).then(|| used + bytes)
            })
            .is_ok()
    }

    /// Takes `bytes` whether or not they fit (for items that must not be
    /// refused, such as events a disk buffer hands back to memory).
    pub fn take(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back `bytes` taken earlier.
    pub fn release(&self, bytes: u64) {
        // Saturating, so a bookkeeping slip can never wrap to "full forever".
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_fits_and_gives_back() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41));
        assert!(budget.try_take(40));
        assert_eq!(budget.used(), 100);
        budget.release(60);
        assert!(budget.try_take(50));
        assert!(!budget.try_take(11));
        assert!(budget.try_take(10));
    }

    #[test]
    fn an_item_larger_than_the_budget_fits_only_alone() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_take(500));
        assert!(!budget.try_take(1));
        budget.release(500);
        assert!(budget.try_take(1));
        assert!(!budget.try_take(500));
    }

    #[test]
    fn never_wraps_below_zero() {
        let budget = ByteBudget::new(10);
        budget.release(5);
        assert_eq!(budget.used(), 0);
    }
}
