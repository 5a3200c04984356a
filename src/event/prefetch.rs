//! Walking a batch of events with the memory each needs asked for ahead.
//!
//! A sink's batch holds events that parse workers built on other cores, so
//! the first read of each one waits for its cache lines to come over, and
//! for an encoder that waiting is most of the work. [`ahead`] asks the CPU for
//! the fields of the event two ahead and for the text of the next one while
//! the current one is encoded, so that the waits overlap with work. It does
//! not encode, and visits every event once, in order: it changes timing
//! only. On CPUs other than x86-64 it is a plain loop.

use std::sync::Arc;

use super::Event;

/// The events of `events` in order; taking each from the iterator first
/// starts loading the next event's text and the one after's fields.
pub fn ahead(events: &[Arc<Event>]) -> impl ExactSizeIterator<Item = &Event> {
    events.iter().enumerate().map(|(i, event)| {
        if let Some(after_next) = events.get(i + 2) {
            fields(after_next);
        }
        // Its fields were asked for one step ago: reading where its text
        // is should not wait.
        if let Some(next) = events.get(i + 1) {
            text(next);
        }
        &**event
    })
}

/// Starts loading the cache lines of `event`'s fields.
fn fields(event: &Event) {
    let start = std::ptr::from_ref(event).cast::<u8>();
    lines(start, std::mem::size_of::<Event>());
}

/// Starts loading the cache lines of `event`'s text.
fn text(event: &Event) {
    lines(event.text.as_ptr(), event.text.len());
}

/// The cache line size of the CPUs herald runs on.
const LINE: usize = 64;

/// Starts loading every cache line of the `len` bytes at `start`.
fn lines(start: *const u8, len: usize) {
    let mut offset = 0;
    while offset < len {
        line(start.wrapping_add(offset));
        offset += LINE;
    }
    // The last line, when `start` is not at a line's start.
    if len > 0 {
        line(start.wrapping_add(len - 1));
    }
}

#[cfg(target_arch = "x86_64")]
fn line(at: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: a prefetch is a hint: it never faults and reads nothing the
    // program sees, whatever the address (and every address asked for here
    // lies within an event or its text).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn line(_at: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_event_once_in_order() {
        let events: Vec<Arc<Event>> = crate::event::test_events()
            .into_iter()
            .map(|(_, event)| Arc::new(event))
            .collect();
        assert!(events.len() > 3);
        let seen: Vec<_> = ahead(&events).map(std::ptr::from_ref).collect();
        let expected: Vec<_> = events.iter().map(|e| std::ptr::from_ref(&**e)).collect();
        assert_eq!(seen, expected);
        assert_eq!(ahead(&events).len(), events.len());
        assert_eq!(ahead(&[]).count(), 0);
    }
}
