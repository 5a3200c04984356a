//! Tapping a running herald: a live, filtered sample of the events it routes,
//! for `herald tap` and the status page, served as Server-Sent Events on
//! `GET /tap`.
//!
//! The workers offer each event (after categorisation, before routing) to
//! every tap. A tap takes what its `match` table accepts, up to its `limit`
//! a second and as much as its small queue holds; everything else it would
//! have taken is counted as not shown, never queued and never waited for, so
//! tapping a busy herald costs it a `match` per tap and nothing more. With
//! no tap open, the workers only check that the list is empty.
//!
//! [`query`] reads a tap's request (`/tap?type=task&outcome=failed&limit=50`);
//! [`client`] is the `herald tap` command. The HTTP side (headers, the
//! stream's writing and its end) is in [`crate::http`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_queue::ArrayQueue;

use crate::event::Event;
use crate::route::{MatchConfig, Matcher};
use crate::swap::{Current, Swap};

pub mod client;
pub mod query;

/// Taps open at once; more are refused (HTTP 503).
pub const MAX_TAPS: usize = 8;

/// Events a second a tap shows unless it asks otherwise.
pub const DEFAULT_LIMIT: u32 = 100;

/// Most events a second a tap may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// How often a tap's stream takes its queued events: ten times a second (its
/// allowance of events is renewed every [`TICKS_PER_SECOND`] ticks).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Ticks in a second.
const TICKS_PER_SECOND: u64 = 10;

/// Every tap open now; the workers read it once a batch.
#[derive(Debug, Default)]
pub struct Taps {
    open: Arc<Swap<Vec<Arc<Tap>>>>,
    /// Serialises opening and closing.
    changing: Mutex<()>,
}

/// One open tap.
#[derive(Debug)]
pub struct Tap {
    matcher: Matcher,
    limit: u32,
    /// Events it may still take this second.
    allowance: AtomicU64,
    /// Ticks taken, to renew the allowance once a second.
    ticks: AtomicU64,
    queue: ArrayQueue<Arc<Event>>,
    shown: AtomicU64,
    not_shown: AtomicU64,
}

impl Tap {
    /// Offers `event`: taken if it matches and the tap has room.
    pub fn offer(&self, event: &Arc<Event>) {
        if !self.matcher.matches(event) {
            return;
        }
        let allowed = self
            .allowance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if allowed && self.queue.push(event.clone()).is_ok() {
            self.shown.fetch_add(1, Ordering::Relaxed);
        } else {
            self.not_shown.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the queued events, and renews the allowance once a second;
    /// called by the tap's stream once a [`TICK`].
    pub fn take(&self, into: &mut Vec<Arc<Event>>) {
        while let Some(event) = self.queue.pop() {
            into.push(event);
        }
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if ticks.is_multiple_of(TICKS_PER_SECOND) {
            self.allowance
                .store(u64::from(self.limit), Ordering::Relaxed);
        }
    }

    /// Events taken so far, and events that matched beyond the limit.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shown.load(Ordering::Relaxed),
            self.not_shown.load(Ordering::Relaxed),
        )
    }
}

/// A tap while its stream runs: closing it (dropping this) removes it.
#[derive(Debug)]
pub struct OpenTap {
    taps: Arc<Taps>,
    tap: Arc<Tap>,
}

impl std::ops::Deref for OpenTap {
    type Target = Tap;

    fn deref(&self) -> &Tap {
        &self.tap
    }
}

impl Drop for OpenTap {
    fn drop(&mut self) {
        let _changing = self
            .taps
            .changing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rest: Vec<Arc<Tap>> = self
            .taps
            .open
            .load()
            .iter()
            .filter(|tap| !Arc::ptr_eq(tap, &self.tap))
            .cloned()
            .collect();
        self.taps.open.replace(rest);
    }
}

impl Taps {
    /// No tap open.
    pub fn new() -> Arc<Taps> {
        Arc::new(Taps::default())
    }

    /// Opens a tap for the events `filter` matches, showing at most `limit`
    /// a second (1 to [`MAX_LIMIT`]); `None` when [`MAX_TAPS`] are open.
    pub fn open(self: &Arc<Taps>, filter: &MatchConfig, limit: u32) -> Option<OpenTap> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let tap = Arc::new(Tap {
            matcher: Matcher::new(filter),
            limit,
            allowance: AtomicU64::new(u64::from(limit)),
            ticks: AtomicU64::new(0),
            // A second's allowance may come at once.
            queue: ArrayQueue::new(limit as usize),
            shown: AtomicU64::new(0),
            not_shown: AtomicU64::new(0),
        });
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut open = self.open.load().as_ref().clone();
        if open.len() >= MAX_TAPS {
            return None;
        }
        open.push(tap.clone());
        self.open.replace(open);
        Some(OpenTap {
            taps: self.clone(),
            tap,
        })
    }

    /// Taps open now.
    pub fn len(&self) -> usize {
        self.open.load().len()
    }

    /// Whether no tap is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A worker's view of the open taps, refreshed once a batch.
    pub fn reader(&self) -> TapReader {
        TapReader {
            current: Current::new(self.open.clone()),
        }
    }
}

/// What a worker holds: the taps open as of its last batch.
#[derive(Debug)]
pub struct TapReader {
    current: Current<Vec<Arc<Tap>>>,
}

impl TapReader {
    /// Picks up taps opened or closed since the last call.
    pub fn refresh(&mut self) {
        self.current.refresh();
    }

    /// Offers `event` to every open tap.
    #[inline]
    pub fn offer(&self, event: &Arc<Event>) {
        for tap in self.current.get().iter() {
            tap.offer(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Arc<Event> {
        Arc::new(crate::send::sample_event("engine"))
    }

    #[test]
    fn a_tap_shows_at_most_its_limit_a_second_and_counts_the_rest() {
        let taps = Taps::new();
        let tap = taps.open(&MatchConfig::default(), 3).unwrap();
        let reader = taps.reader();
        let mut shown = Vec::new();
        // Ten ticks (a second) with 5 events each: 3 shown, 47 counted.
        for _ in 0..10 {
            for _ in 0..5 {
                reader.offer(&event());
            }
            tap.take(&mut shown);
        }
        assert_eq!(shown.len(), 3);
        assert_eq!(tap.counts(), (3, 47));
        // The next second brings a new allowance.
        reader.offer(&event());
        tap.take(&mut shown);
        assert_eq!(shown.len(), 4);
    }

    #[test]
    fn taps_are_bounded_and_a_closed_tap_is_gone() {
        let taps = Taps::new();
        let open: Vec<_> = (0..MAX_TAPS)
            .map(|_| taps.open(&MatchConfig::default(), 10).unwrap())
            .collect();
        assert!(taps.open(&MatchConfig::default(), 10).is_none());
        let mut reader = taps.reader();
        drop(open);
        assert!(taps.is_empty());
        reader.refresh();
        // Offering to no tap is fine.
        reader.offer(&event());
    }
}
