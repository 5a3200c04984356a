//! The generic sink driver: one tokio task per sink that batches, delivers,
//! retries, counts and drains. Sinks only implement [`Sink::deliver`].
//!
//! A batch is delivered when it reaches `batch_max_events`, when its oldest event
//! has waited `flush_interval_ms`, or when the queue closes. A failed batch is
//! retried with exponential backoff and jitter (honouring a destination's
//! `Retry-After`, capped at `retry_after_max_ms`) until it goes through, or up to
//! `max_retries` when that is set; then, or at once for a permanent error, its
//! events go to the dead-letter file and are counted as failed. Meanwhile new
//! events wait in the sink's buffer under its overflow policy. Only a batch that
//! was delivered or given up on is acknowledged to the buffer, so a disk buffer
//! re-sends at most the batch in flight after a crash.
//!
//! At a stop the queue closes: a retry wait ends at once, and the driver keeps
//! delivering what is queued until the queue is empty or the grace period ends
//! ([`Phase::Aborted`], which also cuts a delivery in flight short). Then what
//! is left is kept ([`SinkQueue::keep`]: in the disk buffer, or in the
//! dead-letter file as `reason="shutdown"`), and the task ends with a
//! [`Stopped`] report saying so.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use super::queue::{Kept, Origin, Phase, SinkQueue};
use super::{DeliveryConfig, Sink, SinkError};
use crate::deadletter::{DeadLetters, Record, SINK_FAILED};
use crate::event::Event;

/// What `/health` says about a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SinkState {
    /// Delivering normally (or idle).
    Ok = 0,
    /// The last delivery failed and is being retried.
    Retrying = 1,
    /// The last batch was given up on.
    Failing = 2,
    /// Drained and stopped.
    Stopped = 3,
}

impl SinkState {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Ok => "ok",
            SinkState::Retrying => "retrying",
            SinkState::Failing => "failing",
            SinkState::Stopped => "stopped",
        }
    }
}

/// A sink's live status, shared with the HTTP endpoint.
#[derive(Debug)]
pub struct SinkStatus {
    /// The sink's name in config.
    pub name: String,
    /// Its `type`.
    pub type_name: &'static str,
    /// Its queue.
    pub queue: Arc<SinkQueue>,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// When the last delivery succeeded, and when the last error came (Unix
    /// milliseconds; 0: never).
    last_success_ms: AtomicI64,
    last_error_ms: AtomicI64,
}

impl SinkStatus {
    /// A fresh status for a sink.
    pub fn new(name: &str, type_name: &'static str, queue: Arc<SinkQueue>) -> SinkStatus {
        SinkStatus {
            name: name.to_string(),
            type_name,
            queue,
            state: AtomicU8::new(SinkState::Ok as u8),
            last_error: Mutex::new(None),
            last_success_ms: AtomicI64::new(0),
            last_error_ms: AtomicI64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> SinkState {
        match self.state.load(Ordering::Relaxed) {
            0 => SinkState::Ok,
            1 => SinkState::Retrying,
            2 => SinkState::Failing,
            _ => SinkState::Stopped,
        }
    }

    /// The most recent delivery error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the last delivery succeeded.
    pub fn last_success(&self) -> Option<jiff::Timestamp> {
        at(self.last_success_ms.load(Ordering::Relaxed))
    }

    /// When the last delivery error came.
    pub fn last_error_at(&self) -> Option<jiff::Timestamp> {
        at(self.last_error_ms.load(Ordering::Relaxed))
    }

    fn set(&self, state: SinkState, error: Option<&SinkError>) {
        self.state.store(state as u8, Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_millisecond();
        match (state, error) {
            (SinkState::Ok, None) => self.last_success_ms.store(now, Ordering::Relaxed),
            (_, Some(_)) => self.last_error_ms.store(now, Ordering::Relaxed),
            _ => {}
        }
        if let Some(error) = error {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(error.message.clone());
        }
    }
}

/// A time stored as Unix milliseconds, 0 for none.
fn at(ms: i64) -> Option<jiff::Timestamp> {
    (ms != 0).then(|| jiff::Timestamp::from_millisecond(ms).ok())?
}

/// How a sink's driver ended: what it left and where that is kept.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The sink's name.
    pub sink: String,
    /// Its buffer's type (`memory`, `disk`).
    pub buffer: &'static str,
    /// The events still queued when it stopped, and where they went.
    pub kept: Kept,
}

/// The most bytes of events (as [`Event::memory_bytes`] counts them) one batch
/// takes from the queue: a batch is delivered when it reaches this or
/// `batch_max_events`, so a batch of long events cannot hold much memory
/// outside the queue's own budget.
pub const BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A batch a driver that gives way hands to its successor on the same queue.
#[derive(Debug, Default)]
pub struct Handover {
    /// The events it had taken from the queue and not delivered.
    pub batch: Vec<Arc<Event>>,
    /// Where each came from.
    pub origins: Vec<Origin>,
}

/// How a driver is told to give way to a successor (a reload changed its
/// sink), and how the batch in its hands gets there: nothing popped is lost
/// or delivered twice.
#[derive(Debug)]
pub struct Control {
    /// Becomes true when the driver should stop at its next pause.
    pub retire: watch::Receiver<bool>,
    /// Where it sends what it has in hand when it gives way.
    pub handover: oneshot::Sender<Handover>,
    /// Its predecessor's batch, if it took over from one: it waits for that
    /// before taking anything from the queue.
    pub from: Option<oneshot::Receiver<Handover>>,
}

/// The other end of a driver's [`Control`]: the pipeline keeps it.
#[derive(Debug)]
pub struct Succession {
    /// Send `true` to make the driver give way.
    pub retire: watch::Sender<bool>,
    /// What the driver hands over when it does.
    pub handover: oneshot::Receiver<Handover>,
}

impl Control {
    /// A control for a driver that starts from `from` (or fresh).
    pub fn new(from: Option<oneshot::Receiver<Handover>>) -> (Control, Succession) {
        let (retire_tx, retire) = watch::channel(false);
        let (handover, handover_rx) = oneshot::channel();
        (
            Control {
                retire,
                handover,
                from,
            },
            Succession {
                retire: retire_tx,
                handover: handover_rx,
            },
        )
    }
}

/// Resolves once `retire` says so; never when its sender is gone.
async fn retired(retire: &mut watch::Receiver<bool>) {
    if retire.wait_for(|retire| *retire).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `sink` until its queue is closed and drained, or until the stop's
/// grace period ends ([`SinkQueue::abort`]); then keeps what is left (see
/// [`SinkQueue::keep`]) and says where.
pub async fn run<S: Sink>(
    mut sink: S,
    status: Arc<SinkStatus>,
    config: DeliveryConfig,
    dead: DeadLetters,
    control: Control,
) -> Stopped {
    let Control {
        mut retire,
        handover,
        from,
    } = control;
    let queue = status.queue.clone();
    let max = config.batch_max_events.max(1);
    let flush_interval = Duration::from_millis(config.flush_interval_ms);
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(max);
    let mut origins: Vec<Origin> = Vec::with_capacity(max);
    let mut deadline: Option<Instant> = None;
    if let Some(from) = from {
        // The predecessor delivers what it is sending now, then hands over.
        let took_over = tokio::select! {
            taken = from => {
                if let Ok(taken) = taken {
                    batch = taken.batch;
                    origins = taken.origins;
                }
                true
            }
            () = retired(&mut retire) => false,
        };
        if !took_over {
            // Told to give way before taking over (the reload that started
            // it failed): the queue is still its predecessor's; leave it be.
            return Stopped {
                sink: status.name.clone(),
                buffer: queue.buffer_status().type_name,
                kept: Kept::default(),
            };
        }
        if !batch.is_empty() {
            deadline = Some(Instant::now());
        }
    }
    let mut batch_bytes: usize = batch.iter().map(|event| event.memory_bytes()).sum();
    let mut dirty = false;
    let mut latency = LatencySampler::new(max);
    while queue.phase() < Phase::Aborted {
        if *retire.borrow() {
            return give_way(&mut sink, &status, dirty, handover, batch, origins).await;
        }
        while batch.len() < max && batch_bytes < BATCH_MAX_BYTES {
            match queue.pop() {
                Some((event, origin)) => {
                    batch_bytes += event.memory_bytes();
                    batch.push(event);
                    origins.push(origin);
                }
                None => break,
            }
        }
        queue.set_in_flight(batch.len());
        queue.update_gauges();
        let closed = queue.is_closed();
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        let full = batch.len() >= max || batch_bytes >= BATCH_MAX_BYTES;
        if !batch.is_empty() && (full || closed || due) {
            match deliver(
                &mut sink,
                &status,
                &config,
                &dead,
                &batch,
                &mut latency,
                &mut retire,
            )
            .await
            {
                Delivered::Retired => continue,
                Delivered::Done => {
                    queue.ack();
                    batch.clear();
                    origins.clear();
                    batch_bytes = 0;
                    deadline = None;
                    dirty = true;
                    continue;
                }
                Delivered::Aborted => break,
            }
        }
        if batch.is_empty() {
            // Nothing in flight: records the buffer skipped (damaged) since
            // the last delivery need not be read again either.
            queue.ack();
            if dirty && queue.is_empty() {
                if let Err(err) = sink.flush().await {
                    warn!(sink = %status.name, %err, "flush failed");
                }
                dirty = false;
            }
            if closed && queue.is_empty() {
                break;
            }
        } else if deadline.is_none() {
            deadline = Some(Instant::now() + flush_interval);
        }
        // Woken for the first event of a batch, then only once the queue
        // holds enough to fill it (or at the deadline).
        let (room, room_bytes) = if batch.is_empty() {
            (1, 1)
        } else {
            (
                max.saturating_sub(batch.len()),
                BATCH_MAX_BYTES.saturating_sub(batch_bytes),
            )
        };
        if queue.wake_when(room, room_bytes as u64) {
            continue;
        }
        tokio::select! {
            () = queue.notified() => {}
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            () = queue.reached(Phase::Aborted) => {}
            () = retired(&mut retire) => {}
        }
    }
    if dirty && let Err(err) = sink.flush().await {
        warn!(sink = %status.name, %err, "flush failed");
    }
    // Workers may still be finishing (they keep what they push from now on
    // themselves); once they are done, the queue holds all it ever will.
    queue.inputs_closed().await;
    let in_flight = batch.into_iter().zip(origins).collect();
    let kept = blocking(|| queue.keep(in_flight));
    status.set(SinkState::Stopped, None);
    let buffer = queue.buffer_status().type_name;
    if kept == Kept::default() {
        info!(sink = %status.name, "sink drained and stopped");
    } else {
        warn!(sink = %status.name, buffer, kept_in_disk_buffer = kept.disk_buffer,
            kept_in_dead_letter_file = kept.dead_letter, lost = kept.lost,
            "the stop's grace period ended before the sink delivered everything");
    }
    Stopped {
        sink: status.name.clone(),
        buffer,
        kept,
    }
}

/// Ends a driver that gives way to a successor: flushes what it wrote and
/// hands over the batch it holds (the queue stays as it is).
async fn give_way<S: Sink>(
    sink: &mut S,
    status: &SinkStatus,
    dirty: bool,
    handover: oneshot::Sender<Handover>,
    batch: Vec<Arc<Event>>,
    origins: Vec<Origin>,
) -> Stopped {
    if dirty && let Err(err) = sink.flush().await {
        warn!(sink = %status.name, %err, "flush failed");
    }
    let events = batch.len();
    // Without a successor (it could not start), the batch goes back through
    // the normal stop: nobody is left to deliver it, so keep it.
    if let Err(Handover { batch, origins }) = handover.send(Handover { batch, origins }) {
        let in_flight = batch.into_iter().zip(origins).collect();
        let kept = blocking(|| status.queue.keep(in_flight));
        return Stopped {
            sink: status.name.clone(),
            buffer: status.queue.buffer_status().type_name,
            kept,
        };
    }
    info!(sink = %status.name, handed_over = events, "sink settings changed; the new settings take over from here");
    Stopped {
        sink: status.name.clone(),
        buffer: status.queue.buffer_status().type_name,
        kept: Kept::default(),
    }
}

/// How delivering a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    /// Delivered, or given up on (dead-lettered): the batch is done with.
    Done,
    /// The stop's grace period ended first: the batch is still to deliver.
    Aborted,
    /// A reload replaced the sink while it waited to retry: the batch goes
    /// to the successor.
    Retired,
}

/// Delivers one batch with retries; gives up to the dead-letter file.
async fn deliver<S: Sink>(
    sink: &mut S,
    status: &SinkStatus,
    config: &DeliveryConfig,
    dead: &DeadLetters,
    batch: &[Arc<Event>],
    latency: &mut LatencySampler,
    retire: &mut watch::Receiver<bool>,
) -> Delivered {
    let queue = &status.queue;
    let metrics = queue.metrics();
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            biased;
            () = queue.reached(Phase::Aborted) => return Delivered::Aborted,
            result = sink.deliver(batch) => result,
        };
        match result {
            Ok(()) => {
                // Latency first: whoever sees the delivery counted sees its latency too.
                latency.record(batch, &metrics.latency);
                metrics.delivered.increment(batch.len() as u64);
                if attempt > 0 {
                    info!(sink = %status.name, attempts = attempt + 1, "delivery recovered");
                }
                status.set(SinkState::Ok, None);
                return Delivered::Done;
            }
            Err(err) if err.retryable && config.max_retries.is_none_or(|max| attempt < max) => {
                // A destination's Retry-After, within reason: never sooner than
                // the first retry delay (a 0 would spin), never later than the cap.
                let floor = Duration::from_millis(config.retry_initial_ms);
                let cap = Duration::from_millis(config.retry_after_max_ms).max(floor);
                let delay = err
                    .retry_after
                    .map_or_else(|| backoff(config, attempt), |wait| wait.clamp(floor, cap));
                attempt += 1;
                metrics.retries.increment(1);
                status.set(SinkState::Retrying, Some(&err));
                warn!(sink = %status.name, %err, attempt, retry_in_ms = delay.as_millis() as u64,
                    "delivery failed; retrying");
                // A stop wakes the wait at once: one more try before the
                // grace period runs out, not a sleep through it.
                let stopping = queue.phase() >= Phase::Stopping;
                tokio::select! {
                    () = sleep(delay) => {}
                    () = queue.reached(Phase::Stopping), if !stopping => {}
                    () = queue.reached(Phase::Aborted) => return Delivered::Aborted,
                    () = retired(retire) => return Delivered::Retired,
                }
            }
            Err(err) if !err.rejected.is_empty() => {
                // Partial failure: the rest of the batch went through.
                let rejected = err.rejected.len().min(batch.len());
                metrics.delivered.increment((batch.len() - rejected) as u64);
                metrics.failed.increment(rejected as u64);
                status.set(SinkState::Ok, Some(&err));
                error!(sink = %status.name, %err, rejected, delivered = batch.len() - rejected,
                    "the destination refused some events; they go to the dead-letter file");
                let records = err.rejected.iter().filter_map(|(index, reason)| {
                    let event = batch.get(*index)?;
                    Some(Record::event(SINK_FAILED, &status.name, reason, event))
                });
                give_up(dead, records);
                return Delivered::Done;
            }
            Err(err) => {
                status.set(SinkState::Failing, Some(&err));
                metrics.failed.increment(batch.len() as u64);
                error!(sink = %status.name, %err, events = batch.len(), attempts = attempt + 1,
                    dead_letter = dead.is_enabled(), "giving up on a batch; its events go to the dead-letter file");
                for event in batch {
                    dead.send(Record::event(
                        SINK_FAILED,
                        &status.name,
                        &err.message,
                        event,
                    ));
                }
                return Delivered::Done;
            }
        }
    }
}

/// Writes the records of events a sink gave up on to the dead-letter file,
/// waiting for room: the batch is acknowledged (a disk buffer deletes it) right
/// after, so a full dead-letter queue must not drop them silently.
fn give_up(dead: &DeadLetters, records: impl Iterator<Item = Record>) {
    blocking(|| {
        for record in records {
            dead.send_waiting(record, Duration::from_secs(5));
        }
    });
}

/// Runs `work`, which may block on the disk or a full channel, without
/// holding up the other tasks of a multi-threaded runtime.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Picks which delivered events have their latency recorded.
///
/// Recording a sample costs more than everything else the driver does per
/// event (the histogram appends to a shared lock-free bucket), so sinks that
/// batch record one event in [`LatencySampler::EVERY`]: enough for stable
/// quantiles at any rate where the cost matters. Sinks that deliver one event
/// at a time (alerts) record every event. The stride runs on across batches
/// and is prime, so it shares no factor with usual batch sizes and the sampled
/// position moves through the batch instead of always taking its oldest event
/// (which waited longest).
#[derive(Debug)]
struct LatencySampler {
    every: usize,
    /// Events to skip before the next sample.
    skip: usize,
}

impl LatencySampler {
    /// One event in this many is recorded by a batching sink.
    const EVERY: usize = 17;

    fn new(batch_max_events: usize) -> LatencySampler {
        LatencySampler {
            every: if batch_max_events <= 1 {
                1
            } else {
                Self::EVERY
            },
            skip: 0,
        }
    }

    /// Positions in a batch of `len` events to sample, carrying the stride on.
    fn positions(&mut self, len: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
        let first = self.skip;
        let taken = len.saturating_sub(first).div_ceil(self.every);
        // The next sample is `every` after the last one taken here.
        self.skip = (first + taken * self.every).saturating_sub(len);
        (first.min(len)..len).step_by(self.every)
    }

    /// Records the receive-to-now latency of the sampled events of `batch`.
    fn record(&mut self, batch: &[Arc<Event>], histogram: &metrics::Histogram) {
        let now = jiff::Timestamp::now().as_nanosecond();
        for index in self.positions(batch.len()) {
            let nanos = now - batch[index].received_at.as_nanosecond();
            histogram.record(nanos.max(0) as f64 / 1e9);
        }
    }
}

/// `retry_initial_ms · 2^attempt`, capped at `retry_max_ms`, with ±25 % jitter so
/// many sinks do not retry in lockstep.
fn backoff(config: &DeliveryConfig, attempt: u32) -> Duration {
    super::backoff::Backoff::new(
        Duration::from_millis(config.retry_initial_ms),
        Duration::from_millis(config.retry_max_ms),
    )
    .delay(attempt)
}

#[cfg(test)]
mod tests;
