//! The bounded queue in front of each sink, with its overflow policy.
//!
//! Parse workers (plain threads) push; the sink's driver (a tokio task) pops. The
//! queue is a lock-free ring ([`ArrayQueue`]); a [`Notify`] wakes the driver once
//! per pushed batch, not per event. Every event the policy discards is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::event::Event;
use crate::metrics::SinkMetrics;

/// What happens when a sink's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Discard the oldest queued event to make room (keeps the newest data).
    #[default]
    DropOldest,
    /// Discard the incoming event.
    DropNewest,
    /// Make the parse workers wait. Loss then moves upstream to the ingest
    /// hand-off (still counted); one slow sink slows every sink.
    Block,
}

/// A sink's queue.
#[derive(Debug)]
pub struct SinkQueue {
    ring: ArrayQueue<Arc<Event>>,
    overflow: Overflow,
    notify: Notify,
    closed: AtomicBool,
    metrics: SinkMetrics,
}

impl SinkQueue {
    /// A queue of `capacity` events.
    pub fn new(capacity: usize, overflow: Overflow, metrics: SinkMetrics) -> SinkQueue {
        metrics.queue_capacity.set(capacity as f64);
        SinkQueue {
            ring: ArrayQueue::new(capacity.max(1)),
            overflow,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        }
    }

    /// Adds an event under the overflow policy. Call [`SinkQueue::wake`] after a
    /// batch of pushes.
    pub fn push(&self, event: Arc<Event>) {
        match self.overflow {
            Overflow::DropOldest => {
                if self.ring.force_push(event).is_some() {
                    self.metrics.queue_full.increment(1);
                }
            }
            Overflow::DropNewest => {
                if self.ring.push(event).is_err() {
                    self.metrics.queue_full.increment(1);
                }
            }
            Overflow::Block => {
                let mut event = event;
                let mut wait = Duration::from_micros(50);
                loop {
                    match self.ring.push(event) {
                        Ok(()) => break,
                        Err(back) if self.closed.load(Ordering::Acquire) => {
                            drop(back);
                            self.metrics.queue_full.increment(1);
                            break;
                        }
                        Err(back) => {
                            event = back;
                            self.notify.notify_one();
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_millis(10));
                        }
                    }
                }
            }
        }
    }

    /// Wakes the driver.
    pub fn wake(&self) {
        self.metrics.queue_depth.set(self.ring.len() as f64);
        self.notify.notify_one();
    }

    /// Takes the oldest event.
    pub fn pop(&self) -> Option<Arc<Event>> {
        self.ring.pop()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Says no more events will come; the driver drains and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether [`SinkQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits for a wake-up.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The sink's metric handles.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }
}
