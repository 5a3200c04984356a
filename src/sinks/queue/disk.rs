//! A sink queue's disk side: the log it appends to, the reader the driver
//! pops from, the just-written events kept in memory so the driver need not
//! read them back, and what happens while the disk refuses writes. The policy
//! (what goes to disk, overflow, stopping) stays in the parent module.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::{Stage, lock};
use crate::buffer::disk::{DiskLog, Placed, Reader};
use crate::event::Event;
use crate::metrics::SinkMetrics;
use crate::throttle::Throttle;

/// An event just written to the disk buffer, kept in memory so the driver
/// need not read it back while it keeps up: its record's number and place.
#[derive(Debug)]
struct Recent {
    seq: u64,
    segment: u64,
    offset: u64,
    size: u32,
    event: Arc<Event>,
}

/// How many just-written events a disk buffer keeps in memory for its driver,
/// and how many bytes of records they may stand for (an event in memory is
/// about the size of its record); when the driver is further behind, it reads
/// them from the disk.
const RECENT_EVENTS: usize = 8192;
const RECENT_BYTES: u64 = 8 * 1024 * 1024;

/// How long to leave a failing disk alone before writing to it again.
const DISK_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct Disk {
    pub(super) log: DiskLog,
    pub(super) reader: Mutex<Reader>,
    /// Events just written, oldest first (see [`Recent`]), and their records' bytes.
    recent: Mutex<(VecDeque<Recent>, u64)>,
    /// Milliseconds after `epoch` until which events go to memory because the
    /// disk refused a write; 0 while the disk is fine.
    pub(super) failed_until: AtomicU64,
    pub(super) epoch: Instant,
    /// The disk's last error, for `/health`.
    pub(super) error: Mutex<Option<String>>,
    pub(super) complaints: Mutex<Throttle>,
}

impl Disk {
    pub(super) fn new(log: DiskLog, reader: Reader) -> Disk {
        Disk {
            log,
            reader: Mutex::new(reader),
            recent: Mutex::new((VecDeque::with_capacity(RECENT_EVENTS), 0)),
            failed_until: AtomicU64::new(0),
            epoch: Instant::now(),
            error: Mutex::new(None),
            complaints: Mutex::new(Throttle::new(Duration::from_secs(60))),
        }
    }

    /// Keeps the events of an append just made, for the driver.
    pub(super) fn remember(&self, placed: Placed, stage: &Stage) {
        let mut guard = lock(&self.recent);
        let (recent, bytes) = &mut *guard;
        let mut offset = placed.offset;
        for (i, (event, &size)) in stage.events.iter().zip(&stage.sizes).enumerate() {
            while recent.len() >= RECENT_EVENTS
                || (*bytes + u64::from(size) > RECENT_BYTES && !recent.is_empty())
            {
                Self::forget_oldest(recent, bytes);
            }
            recent.push_back(Recent {
                seq: placed.first_seq + i as u64,
                segment: placed.segment,
                offset,
                size,
                event: event.clone(),
            });
            *bytes += u64::from(size);
            offset += u64::from(size);
        }
    }

    fn forget_oldest(recent: &mut VecDeque<Recent>, bytes: &mut u64) -> Option<Recent> {
        let oldest = recent.pop_front()?;
        *bytes -= u64::from(oldest.size);
        Some(oldest)
    }

    /// The next event from memory, when the reader stands at a record just
    /// written: the reader passes over it instead of reading and decoding it.
    pub(super) fn take_recent(&self, reader: &mut Reader) -> Option<Arc<Event>> {
        let mut guard = lock(&self.recent);
        let (recent, bytes) = &mut *guard;
        while recent.front().is_some_and(|r| r.seq < reader.next_seq()) {
            Self::forget_oldest(recent, bytes);
        }
        let front = recent.front()?;
        if !reader.pass_over(
            front.seq,
            front.segment,
            front.offset,
            u64::from(front.size),
        ) {
            return None;
        }
        Self::forget_oldest(recent, bytes).map(|r| r.event)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether to write to the disk now (it has not refused a write lately).
    pub(super) fn writable(&self) -> bool {
        let until = self.failed_until.load(Ordering::Relaxed);
        until == 0 || self.now_ms() >= until
    }

    pub(super) fn failed(&self, sink: &str, err: &std::io::Error, metrics: &SinkMetrics) {
        metrics.buffer_write_errors.increment(1);
        *lock(&self.error) = Some(err.to_string());
        let until = self.now_ms() + DISK_RETRY.as_millis() as u64;
        if self.failed_until.swap(until.max(1), Ordering::Relaxed) == 0 {
            error!(sink, %err, retry_s = DISK_RETRY.as_secs(),
                "the disk buffer cannot be written; events wait in memory (lost on a crash) until it can");
        }
    }

    /// Notes a successful write; true when the disk had been failing.
    pub(super) fn recovered(&self, sink: &str) -> bool {
        if self.failed_until.swap(0, Ordering::Relaxed) == 0 {
            return false;
        }
        *lock(&self.error) = None;
        tracing::info!(sink, "the disk buffer can be written again");
        true
    }

    pub(super) fn complain(&self, sink: &str, what: &str, err: &std::io::Error) {
        if let Some(held_back) = lock(&self.complaints).allow(Instant::now()) {
            warn!(sink, %err, held_back, "{what}");
        }
    }
}
