//! A value that a reload replaces while threads keep reading it.
//!
//! [`Swap`] holds the current `Arc<T>` and a generation number. Readers keep
//! a [`Current`]: their own `Arc<T>`, refreshed at a point of their choosing
//! (the parse workers once per batch, the receive threads' allowlist once per
//! datagram checked), so the hot path reads a plain `Arc` and only compares
//! one atomic number per refresh. A replaced value lives on until its last reader
//! has refreshed, which is what lets a reload wait until no thread uses the
//! old routes any more ([`Swap::replace`] returns the old value for that).
//! It does not decide what a reload changes; the pipeline does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The current value and its generation.
#[derive(Debug, Default)]
pub struct Swap<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> Swap<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Swap<T> {
        Swap {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(value)),
        }
    }

    /// Replaces the value (readers see it at their next refresh); returns the
    /// old one.
    pub fn replace(&self, value: T) -> Arc<T> {
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            Arc::new(value),
        );
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes each time the value is replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A reader's copy of a [`Swap`]'s value.
#[derive(Debug)]
pub struct Current<T> {
    shared: Arc<Swap<T>>,
    generation: u64,
    value: Arc<T>,
}

impl<T> Current<T> {
    /// Starts reading `shared`.
    pub fn new(shared: Arc<Swap<T>>) -> Current<T> {
        let generation = shared.generation();
        let value = shared.load();
        Current {
            shared,
            generation,
            value,
        }
    }

    /// Picks up a replaced value; true when there was one.
    pub fn refresh(&mut self) -> bool {
        let generation = self.shared.generation();
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        self.value = self.shared.load();
        true
    }

    /// The value as of the last refresh.
    pub fn get(&self) -> &Arc<T> {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_a_replacement_at_their_next_refresh_and_release_the_old_value() {
        let shared = Arc::new(Swap::new(1));
        let mut reader = Current::new(shared.clone());
        assert!(!reader.refresh());
        let old = shared.replace(2);
        assert_eq!(**reader.get(), 1, "not before a refresh");
        assert_eq!(Arc::strong_count(&old), 2, "the reader still holds it");
        assert!(reader.refresh());
        assert_eq!(**reader.get(), 2);
        assert_eq!(Arc::strong_count(&old), 1, "only the caller holds it now");
    }
}
