//! The queue in front of each sink: its buffer (memory or disk), its overflow
//! policy, and what happens to queued events when herald stops.
//!
//! Parse workers (plain threads) push; the sink's driver (a tokio task) pops.
//!
//! * A **memory** buffer is a lock-free ring ([`ArrayQueue`]) of `queue_events`
//!   events holding at most `queue_bytes` ([`ByteBudget`]; an event counts
//!   [`Event::memory_bytes`]); a [`Notify`] wakes the driver once per pushed
//!   batch, not per event, and only once the queue holds what the driver
//!   waits for ([`SinkQueue::wake_when`]: any event when its batch is empty,
//!   else enough to fill the batch), so a driver gathering a batch is not
//!   woken for every batch the workers push.
//! * A **disk** buffer frames each event into the worker's [`Stage`] and
//!   appends the whole batch to the sink's [`DiskLog`] with one write; the
//!   driver reads events back and acknowledges each batch once the sink has
//!   delivered it ([`SinkQueue::ack`]), so a crash loses nothing acknowledged
//!   and re-sends at most the batch in flight. When the disk refuses a write
//!   (full, read-only, failing) the events wait in the memory ring instead, the
//!   failure is logged, counted and shown on `/health`, and the disk is tried
//!   again after a while: herald never stops because of its buffer.
//!
//! A full buffer applies the sink's [`Overflow`] policy, and every event it
//! discards is counted. When a stop's grace period ends ([`SinkQueue::abort`]),
//! [`SinkQueue::keep`] puts what is still queued where the next run or a
//! person can find it: the disk buffer keeps its own, and a memory buffer's
//! events go to the dead-letter file (`reason="shutdown"`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{error, warn};

mod disk;

use disk::Disk;

use crate::budget::ByteBudget;
use crate::buffer::disk::{Append, DiskLog, OpenError};
use crate::buffer::{BufferConfig, record};
use crate::deadletter::{self, DeadLetters, Record};
use crate::event::Event;
use crate::metrics::SinkMetrics;

/// What happens when a sink's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Discard the oldest queued events to make room (keeps the newest data;
    /// a disk buffer discards its oldest segment file).
    #[default]
    DropOldest,
    /// Discard the incoming event.
    DropNewest,
    /// Make the parse workers wait. Loss then moves upstream to the ingest
    /// hand-off (still counted); one slow sink slows every sink.
    Block,
}

/// Where a stop has got to, as a sink's queue sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Events come in.
    Running,
    /// A stop began: retry waits end, but workers may still be pushing.
    Stopping,
    /// No more events will come; the driver delivers what is queued.
    Closing,
    /// The grace period is over: stop delivering and keep what is left.
    Aborted,
}

/// The two steps of a stop: no more input, and the end of the grace period.
/// They come in either order (the grace period can end while the workers are
/// still finishing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StopState {
    stopping: bool,
    closed: bool,
    aborted: bool,
}

/// Where a popped event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The disk buffer (stays there until acknowledged).
    Disk,
    /// The memory ring.
    Memory,
}

/// A worker's staging area for one sink: the events of one batch, framed for
/// the sink's disk buffer and appended with one write by [`SinkQueue::commit`].
/// Unused by memory-buffered sinks.
#[derive(Debug, Default)]
pub struct Stage {
    bytes: Vec<u8>,
    events: Vec<Arc<Event>>,
    /// Each framed record's size, in order.
    sizes: Vec<u32>,
}

impl Stage {
    fn add(&mut self, event: Arc<Event>) {
        let before = self.bytes.len();
        record::frame(&mut self.bytes, |out| event.encode_binary(out));
        self.sizes.push((self.bytes.len() - before) as u32);
        self.events.push(event);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
        self.sizes.clear();
    }
}

/// What [`SinkQueue::keep`] did with the events still queued at a stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kept {
    /// In the disk buffer, for the next start.
    pub disk_buffer: u64,
    /// Written to the dead-letter file (`reason="shutdown"`).
    pub dead_letter: u64,
    /// Lost: no dead-letter file is configured, or it could not take them.
    pub lost: u64,
}

impl std::ops::AddAssign for Kept {
    fn add_assign(&mut self, other: Kept) {
        self.disk_buffer += other.disk_buffer;
        self.dead_letter += other.dead_letter;
        self.lost += other.lost;
    }
}

/// How much a sink's memory buffer holds: events, and bytes of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Events (`queue_events`).
    pub events: usize,
    /// Bytes, as [`Event::memory_bytes`] counts them (`queue_bytes`).
    pub bytes: u64,
}

/// A sink's queue.
#[derive(Debug)]
pub struct SinkQueue {
    name: String,
    ring: ArrayQueue<Arc<Event>>,
    /// The bytes of the events in `ring`.
    budget: ByteBudget,
    overflow: Overflow,
    notify: Notify,
    /// What the driver waits for (see [`SinkQueue::wake_when`]): events
    /// queued, and bytes in the memory ring.
    wake_at_events: AtomicUsize,
    wake_at_bytes: AtomicU64,
    /// Events in the batch the driver is delivering or retrying (set by it).
    in_flight: AtomicUsize,
    stop: watch::Sender<StopState>,
    /// Whether [`SinkQueue::keep`] ran.
    kept_all: AtomicBool,
    /// What was kept outside the driver's own [`SinkQueue::keep`] (events
    /// pushed after the grace period ended, or that a `block` push gave up on).
    kept: Mutex<Kept>,
    metrics: SinkMetrics,
    buffer: &'static str,
    disk: Option<Disk>,
    /// Why the disk buffer could not be opened, when it could not.
    disk_unavailable: Option<String>,
    dead: DeadLetters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error with its causes, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl SinkQueue {
    /// A memory-buffered queue of `capacity`.
    pub fn new(
        name: &str,
        capacity: Capacity,
        overflow: Overflow,
        metrics: SinkMetrics,
        dead: DeadLetters,
    ) -> SinkQueue {
        metrics.queue_capacity.set(capacity.events as f64);
        metrics.queue_max_bytes.set(capacity.bytes as f64);
        metrics.buffer_max_bytes.set(0.0);
        SinkQueue {
            name: name.to_string(),
            ring: ArrayQueue::new(capacity.events.max(1)),
            budget: ByteBudget::new(capacity.bytes),
            overflow,
            notify: Notify::new(),
            wake_at_events: AtomicUsize::new(1),
            wake_at_bytes: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            stop: watch::Sender::new(StopState::default()),
            kept_all: AtomicBool::new(false),
            kept: Mutex::new(Kept::default()),
            metrics,
            buffer: "memory",
            disk: None,
            disk_unavailable: None,
            dead,
        }
    }

    /// A queue with the buffer `config` asks for; a disk buffer lives in
    /// `dir`. `capacity` is the memory ring (for a disk buffer: where events
    /// wait while the disk refuses writes).
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another process uses `dir`. Any other problem
    /// with the disk is logged, counted and shown on `/health`, and the queue
    /// keeps its events in memory for this run.
    pub fn open(
        name: &str,
        capacity: Capacity,
        overflow: Overflow,
        buffer: &BufferConfig,
        dir: &Path,
        metrics: SinkMetrics,
        dead: DeadLetters,
    ) -> Result<SinkQueue, OpenError> {
        let mut queue = SinkQueue::new(name, capacity, overflow, metrics, dead);
        let BufferConfig::Disk(config) = buffer else {
            return Ok(queue);
        };
        queue.buffer = "disk";
        let sync = Duration::from_millis(config.sync_interval_ms);
        let (log, reader, recovered) = match DiskLog::open(dir, config.max_bytes, sync) {
            Ok(opened) => opened,
            Err(err @ OpenError::Locked(_)) => return Err(err),
            Err(err) => {
                let problem = chain(&err);
                error!(sink = %name, err = %problem,
                    "cannot open the disk buffer; this run keeps the sink's events in memory, where a crash loses them");
                queue.metrics.buffer_write_errors.increment(1);
                queue.disk_unavailable = Some(problem);
                return Ok(queue);
            }
        };
        if recovered.records > 0 {
            tracing::info!(sink = %name, events = recovered.records, bytes = recovered.bytes,
                dir = %dir.display(), "resuming from the disk buffer before new events");
        }
        if recovered.lost > 0 {
            warn!(sink = %name, lost = recovered.lost, dir = %dir.display(),
                "the disk buffer's last segment had a damaged tail (a crash or power cut while writing); it was cut off and its events counted as lost");
            queue.metrics.buffer_corrupt.increment(recovered.lost);
        }
        queue.metrics.buffer_max_bytes.set(log.max_bytes() as f64);
        queue.disk = Some(Disk::new(log, reader));
        queue.update_gauges();
        Ok(queue)
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds an event under the overflow policy. Call [`SinkQueue::commit`]
    /// with the same `stage` after a batch of pushes.
    pub fn push(&self, event: &Arc<Event>, stage: &mut Stage) {
        match &self.disk {
            Some(disk) if disk.writable() => stage.add(event.clone()),
            _ => self.push_memory(event.clone()),
        }
    }

    /// Writes what `stage` holds to the disk buffer (if any) and wakes the driver.
    pub fn commit(&self, stage: &mut Stage) {
        if let Some(disk) = &self.disk
            && !stage.events.is_empty()
        {
            self.append(disk, stage);
        }
        self.wake();
    }

    fn append(&self, disk: &Disk, stage: &mut Stage) {
        let mut wait = Duration::from_micros(50);
        loop {
            // After the grace period the buffer takes what is left even when
            // full: there is nowhere else to keep it.
            let aborted = self.phase() == Phase::Aborted;
            match disk.log.append(&mut stage.bytes, aborted) {
                Ok(Append::Written(placed)) => {
                    disk.remember(placed, stage);
                    stage.clear();
                    if disk.recovered(&self.name) {
                        self.move_fallback_to_disk(disk);
                    }
                    return;
                }
                Ok(Append::Full) => match self.overflow {
                    Overflow::DropOldest => match disk.log.drop_oldest() {
                        Some(dropped) => self.metrics.queue_full.increment(dropped),
                        None => break,
                    },
                    Overflow::DropNewest => break,
                    Overflow::Block => {
                        self.wait_for_room(&mut wait);
                    }
                },
                Err(err) => {
                    disk.failed(&self.name, &err, &self.metrics);
                    for event in stage.events.drain(..) {
                        self.push_memory(event);
                    }
                    stage.clear();
                    return;
                }
            }
        }
        self.metrics.queue_full.increment(stage.events.len() as u64);
        stage.events.clear();
        stage.bytes.clear();
    }

    /// After the disk recovered: the events that waited in memory meanwhile go
    /// to the disk too, so a crash cannot lose them now.
    fn move_fallback_to_disk(&self, disk: &Disk) {
        let mut stage = Stage::default();
        while let Some(event) = self.ring_pop() {
            stage.add(event);
        }
        if stage.events.is_empty() {
            return;
        }
        if let Err(err) = disk.log.append(&mut stage.bytes, true) {
            disk.failed(&self.name, &err, &self.metrics);
            for event in stage.events {
                self.push_memory(event);
            }
        }
    }

    fn push_memory(&self, event: Arc<Event>) {
        if self.phase() == Phase::Aborted {
            // The driver has stopped taking events: keep it where it is safe.
            self.keep_events(std::iter::once(event));
            return;
        }
        let size = event.memory_bytes() as u64;
        match self.overflow {
            Overflow::DropOldest => {
                // Make room in bytes by dropping the oldest; if the ring is
                // empty meanwhile (the driver took them), the event fits.
                while !self.budget.try_take(size) {
                    if self.ring_pop().is_some() {
                        self.metrics.queue_full.increment(1);
                    } else {
                        self.budget.take(size);
                        break;
                    }
                }
                if let Some(oldest) = self.ring.force_push(event) {
                    self.budget.release(oldest.memory_bytes() as u64);
                    self.metrics.queue_full.increment(1);
                }
            }
            Overflow::DropNewest => {
                if !self.budget.try_take(size) {
                    self.metrics.queue_full.increment(1);
                } else if self.ring.push(event).is_err() {
                    self.budget.release(size);
                    self.metrics.queue_full.increment(1);
                }
            }
            Overflow::Block => {
                let mut event = event;
                let mut wait = Duration::from_micros(50);
                loop {
                    if self.phase() == Phase::Aborted {
                        // The grace period is over and the sink is not
                        // taking events: keep this one where it is safe.
                        self.keep_events(std::iter::once(event));
                        break;
                    }
                    if self.budget.try_take(size) {
                        match self.ring.push(event) {
                            Ok(()) => break,
                            Err(back) => {
                                self.budget.release(size);
                                event = back;
                            }
                        }
                    }
                    self.wait_for_room(&mut wait);
                }
            }
        }
    }

    /// Takes the oldest event of the memory ring, giving its bytes back.
    fn ring_pop(&self) -> Option<Arc<Event>> {
        let event = self.ring.pop()?;
        self.budget.release(event.memory_bytes() as u64);
        Some(event)
    }

    /// Under `overflow = "block"`: wakes the driver and sleeps `wait`, which
    /// doubles each time up to 10 ms.
    fn wait_for_room(&self, wait: &mut Duration) {
        self.notify.notify_one();
        std::thread::sleep(*wait);
        *wait = (*wait * 2).min(Duration::from_millis(10));
    }

    /// Wakes the driver if the queue now holds what it waits for (a disk
    /// buffer's driver is always woken).
    pub fn wake(&self) {
        self.update_gauges();
        // Pairs with the fence in `wake_when`: either the driver sees what
        // was pushed before this, or this sees what it waits for.
        fence(Ordering::SeqCst);
        if self.disk.is_some() || self.holds_what_driver_waits_for() {
            self.notify.notify_one();
        }
    }

    fn holds_what_driver_waits_for(&self) -> bool {
        // A push takes its bytes before its event enters the ring: bytes
        // alone, with nothing in the ring to take yet, would have the driver
        // go round without waiting.
        !self.ring.is_empty()
            && (self.len() >= self.wake_at_events.load(Ordering::Relaxed)
                || self.budget.used() >= self.wake_at_bytes.load(Ordering::Relaxed))
    }

    /// Says when the driver, about to wait, wants waking: once `events` are
    /// queued or the memory ring holds `bytes`, but never later than when the
    /// ring is half full (in events or bytes), so that the overflow policy
    /// discards nothing while the driver gathers a batch unless one commit
    /// brings more than half the ring. Returns true when the queue already
    /// holds that much, so the driver should not wait. [`SinkQueue::close`],
    /// [`SinkQueue::abort`] and a push that finds the queue full under `block`
    /// wake it regardless; with a disk buffer every push does.
    pub fn wake_when(&self, events: usize, bytes: u64) -> bool {
        let events = events.clamp(1, (self.ring.capacity() / 2).max(1));
        let bytes = bytes.clamp(1, (self.budget.max() / 2).max(1));
        self.wake_at_events.store(events, Ordering::Relaxed);
        self.wake_at_bytes.store(bytes, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // A disk buffer's count includes what the driver holds unacknowledged.
        self.disk.is_none() && self.holds_what_driver_waits_for()
    }

    /// Takes the oldest event: from the disk buffer first, then memory.
    pub fn pop(&self) -> Option<(Arc<Event>, Origin)> {
        if let Some(disk) = &self.disk
            && let Some(event) = self.pop_disk(disk)
        {
            return Some((event, Origin::Disk));
        }
        self.ring_pop().map(|event| (event, Origin::Memory))
    }

    fn pop_disk(&self, disk: &Disk) -> Option<Arc<Event>> {
        let mut reader = lock(&disk.reader);
        if let Some(event) = disk.take_recent(&mut reader) {
            return Some(event);
        }
        loop {
            let decoded = match reader.next_record() {
                Ok(Some(payload)) => Some(Event::decode_binary(payload)),
                Ok(None) => None,
                Err(err) => {
                    disk.complain(
                        &self.name,
                        "cannot read the disk buffer; trying again",
                        &err,
                    );
                    None
                }
            };
            let damaged = reader.take_damaged();
            if damaged > 0 {
                self.metrics.buffer_corrupt.increment(damaged);
                warn!(sink = %self.name, records = damaged,
                    "skipped damaged records in the disk buffer (counted in herald_buffer_corrupt_records_total)");
            }
            match decoded {
                Some(Ok(event)) => return Some(Arc::new(event)),
                Some(Err(err)) => {
                    self.metrics.buffer_corrupt.increment(1);
                    warn!(sink = %self.name, %err, "skipped a disk buffer record that is not an event");
                }
                None => return None,
            }
        }
    }

    /// Says every event popped so far was delivered or given up on: a disk
    /// buffer need not keep them any more.
    pub fn ack(&self) {
        if let Some(disk) = &self.disk
            && let Err(err) = lock(&disk.reader).ack()
        {
            disk.complain(&self.name, "cannot record delivery in the disk buffer; those events may be sent again after a restart", &err);
        }
    }

    /// Events waiting (memory and disk).
    pub fn len(&self) -> usize {
        let on_disk = self.disk.as_ref().map_or(0, |disk| disk.log.records());
        self.ring.len() + on_disk as usize
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events the driver has taken and not yet delivered: its batch, being
    /// delivered or retried. With a disk buffer they are also still among
    /// [`SinkQueue::len`]'s, as their records stay until delivered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The driver says how many events its batch holds.
    pub fn set_in_flight(&self, events: usize) {
        self.in_flight.store(events, Ordering::Relaxed);
        self.metrics.batch_events.set(events as f64);
    }

    /// The memory ring's capacity.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Sets the depth gauges.
    pub fn update_gauges(&self) {
        self.metrics.queue_depth.set(self.len() as f64);
        self.metrics.queue_bytes.set(self.budget.used() as f64);
        if let Some(disk) = &self.disk {
            self.metrics.buffer_events.set(disk.log.records() as f64);
            self.metrics.buffer_bytes.set(disk.log.bytes() as f64);
        }
    }

    /// The buffer as `/health` shows it.
    pub fn buffer_status(&self) -> BufferStatus {
        match &self.disk {
            Some(disk) => BufferStatus {
                type_name: self.buffer,
                events: disk.log.records(),
                bytes: disk.log.bytes(),
                max_bytes: disk.log.max_bytes(),
                error: lock(&disk.error)
                    .as_ref()
                    .map(|err| format!("the disk refuses writes ({err}); events wait in memory")),
            },
            None => BufferStatus {
                type_name: self.buffer,
                events: self.ring.len() as u64,
                bytes: 0,
                max_bytes: 0,
                error: self.disk_unavailable.as_ref().map(|err| {
                    format!("cannot use the disk buffer ({err}); events wait in memory")
                }),
            },
        }
    }

    /// Says a stop began: a driver waiting to retry tries again at once.
    pub fn begin_stop(&self) {
        self.stop
            .send_if_modified(|stop| !std::mem::replace(&mut stop.stopping, true));
    }

    /// Says no more events will come; the driver delivers what is queued.
    pub fn close(&self) {
        self.stop
            .send_if_modified(|stop| !std::mem::replace(&mut stop.closed, true));
        self.notify.notify_one();
    }

    /// Says the grace period is over: the driver stops delivering, and events
    /// pushed from now on are kept at once (in the disk buffer, or the
    /// dead-letter file) instead of queued.
    pub fn abort(&self) {
        self.stop
            .send_if_modified(|stop| !std::mem::replace(&mut stop.aborted, true));
        self.notify.notify_one();
    }

    /// Where a stop has got to.
    pub fn phase(&self) -> Phase {
        let stop = *self.stop.borrow();
        if stop.aborted {
            Phase::Aborted
        } else if stop.closed {
            Phase::Closing
        } else if stop.stopping {
            Phase::Stopping
        } else {
            Phase::Running
        }
    }

    /// Whether [`SinkQueue::close`] (or [`SinkQueue::abort`]) was called.
    pub fn is_closed(&self) -> bool {
        self.phase() >= Phase::Closing
    }

    /// Waits until the stop reaches `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.stop.subscribe();
        let _ = rx
            .wait_for(|stop| match phase {
                Phase::Running => true,
                Phase::Stopping => stop.stopping || stop.closed || stop.aborted,
                Phase::Closing => stop.closed || stop.aborted,
                Phase::Aborted => stop.aborted,
            })
            .await;
    }

    /// Waits until no more events can come ([`SinkQueue::close`]): then what
    /// the queue holds is all it will ever hold.
    pub async fn inputs_closed(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| stop.closed).await;
    }

    /// Waits for a wake-up.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The sink's metric handles.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    /// At the end of a stop: keeps `in_flight` (a batch the driver did not
    /// deliver, with where each event came from) and everything still queued.
    /// A disk buffer keeps its own events (unacknowledged, so they are read
    /// again at the next start) and takes the memory ones too if the disk lets
    /// it; the rest goes to the dead-letter file.
    pub fn keep(&self, in_flight: Vec<(Arc<Event>, Origin)>) -> Kept {
        if self.kept_all.swap(true, Ordering::AcqRel) {
            return Kept::default();
        }
        let mut kept = Kept::default();
        let mut memory: Vec<Arc<Event>> = Vec::new();
        for (event, origin) in in_flight {
            match origin {
                Origin::Disk => kept.disk_buffer += 1,
                Origin::Memory => memory.push(event),
            }
        }
        while let Some(event) = self.ring_pop() {
            memory.push(event);
        }
        if let Some(disk) = &self.disk {
            // Unacknowledged, so read again at the next start: the batch in
            // flight and everything after it.
            kept.disk_buffer = disk.log.records();
            if !memory.is_empty() {
                let mut stage = Stage::default();
                for event in &memory {
                    stage.add(event.clone());
                }
                match disk.log.append(&mut stage.bytes, true) {
                    Ok(_) => {
                        kept.disk_buffer += memory.len() as u64;
                        memory.clear();
                    }
                    Err(err) => disk.failed(&self.name, &err, &self.metrics),
                }
            }
            disk.log.close();
        }
        self.keep_events(memory);
        kept += *lock(&self.kept);
        self.metrics.kept_on_disk.increment(kept.disk_buffer);
        self.update_gauges();
        kept
    }

    /// Writes events to the dead-letter file as `reason="shutdown"`, and
    /// counts how many went there and how many were lost.
    fn keep_events(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let (mut written, mut lost) = (0, 0);
        // However many there are, the dead-letter file gets a few seconds
        // without progress before the rest counts as lost.
        for event in events {
            let record = Record::event(
                deadletter::SHUTDOWN,
                &self.name,
                "still queued when the stop's grace period ended",
                &event,
            );
            let patience = if lost == 0 {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            };
            if self.dead.send_waiting(record, patience) {
                written += 1;
            } else {
                lost += 1;
            }
        }
        self.metrics.kept_dead_letter.increment(written);
        self.metrics.lost_at_shutdown.increment(lost);
        let mut kept = lock(&self.kept);
        kept.dead_letter += written;
        kept.lost += lost;
    }
}

/// A sink's buffer as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferStatus {
    /// `memory` or `disk`.
    pub type_name: &'static str,
    /// Events waiting.
    pub events: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// The disk buffer's limit (0 for memory).
    pub max_bytes: u64,
    /// Why the disk buffer is not in use right now, if it is not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests;
