//! The generic sink driver: one tokio task per sink that batches, delivers,
//! retries, counts and drains. Sinks only implement [`Sink::deliver`].
//!
//! A batch is delivered when it reaches `batch_max_events`, when its oldest event
//! has waited `flush_interval_ms`, or when the queue closes. A failed batch is
//! retried with exponential backoff and jitter (honouring a destination's
//! `retry_after`) until it goes through, or up to `max_retries` when that is set;
//! then, or at once for a permanent error, its events go to the dead-letter file
//! and are counted as failed. Once shutdown has begun (the queue is closed), a
//! batch that fails is not retried again, so a dead sink cannot hold up exit. Meanwhile new
//! events wait in the bounded queue under its overflow policy. The task ends when
//! its queue is closed and empty, after a final flush.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use super::queue::SinkQueue;
use super::{DeliveryConfig, Sink, SinkError};
use crate::deadletter::{DeadLetters, Record};
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

    fn set(&self, state: SinkState, error: Option<&SinkError>) {
        self.state.store(state as u8, Ordering::Relaxed);
        if let Some(error) = error {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(error.message.clone());
        }
    }
}

/// Runs `sink` until its queue is closed and drained.
pub async fn run<S: Sink>(
    mut sink: S,
    status: Arc<SinkStatus>,
    config: DeliveryConfig,
    dead: DeadLetters,
) {
    let queue = status.queue.clone();
    let max = config.batch_max_events.max(1);
    let flush_interval = Duration::from_millis(config.flush_interval_ms);
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(max);
    let mut deadline: Option<Instant> = None;
    let mut dirty = false;
    let mut latency = LatencySampler::new(max);
    loop {
        while batch.len() < max {
            match queue.pop() {
                Some(event) => batch.push(event),
                None => break,
            }
        }
        queue.metrics().queue_depth.set(queue.len() as f64);
        let closed = queue.is_closed();
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        if !batch.is_empty() && (batch.len() >= max || closed || due) {
            deliver(&mut sink, &status, &config, &dead, &batch, &mut latency).await;
            batch.clear();
            deadline = None;
            dirty = true;
            continue;
        }
        if batch.is_empty() {
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
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = queue.notified() => {}
                    () = sleep_until(deadline) => {}
                }
            }
            None => queue.notified().await,
        }
    }
    status.set(SinkState::Stopped, None);
    info!(sink = %status.name, "sink drained and stopped");
}

/// Delivers one batch with retries; gives up to the dead-letter file.
async fn deliver<S: Sink>(
    sink: &mut S,
    status: &SinkStatus,
    config: &DeliveryConfig,
    dead: &DeadLetters,
    batch: &[Arc<Event>],
    latency: &mut LatencySampler,
) {
    let metrics = status.queue.metrics();
    let mut attempt = 0u32;
    loop {
        match sink.deliver(batch).await {
            Ok(()) => {
                // Latency first: whoever sees the delivery counted sees its latency too.
                latency.record(batch, &metrics.latency);
                metrics.delivered.increment(batch.len() as u64);
                if attempt > 0 {
                    info!(sink = %status.name, attempts = attempt + 1, "delivery recovered");
                }
                status.set(SinkState::Ok, None);
                return;
            }
            Err(err)
                if err.retryable
                    && config.max_retries.is_none_or(|max| attempt < max)
                    && !status.queue.is_closed() =>
            {
                let delay = err.retry_after.unwrap_or_else(|| backoff(config, attempt));
                attempt += 1;
                metrics.retries.increment(1);
                status.set(SinkState::Retrying, Some(&err));
                warn!(sink = %status.name, %err, attempt, retry_in_ms = delay.as_millis() as u64,
                    "delivery failed; retrying");
                sleep(delay).await;
            }
            Err(err) if !err.rejected.is_empty() => {
                // Partial failure: the rest of the batch went through.
                let rejected = err.rejected.len().min(batch.len());
                metrics.delivered.increment((batch.len() - rejected) as u64);
                metrics.failed.increment(rejected as u64);
                status.set(SinkState::Ok, Some(&err));
                error!(sink = %status.name, %err, rejected, delivered = batch.len() - rejected,
                    "the destination refused some events; they go to the dead-letter file");
                for (index, reason) in &err.rejected {
                    if let Some(event) = batch.get(*index) {
                        dead.send(Record::event(&status.name, reason, event));
                    }
                }
                return;
            }
            Err(err) => {
                status.set(SinkState::Failing, Some(&err));
                metrics.failed.increment(batch.len() as u64);
                error!(sink = %status.name, %err, events = batch.len(), attempts = attempt + 1,
                    dead_letter = dead.is_enabled(), "giving up on a batch; its events go to the dead-letter file");
                for event in batch {
                    dead.send(Record::event(&status.name, &err.message, event));
                }
                return;
            }
        }
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
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::metrics::SinkMetrics;
    use crate::parse::{ParseConfig, Parser};
    use crate::sinks::queue::Overflow;

    /// Fails the first `failures` deliveries, then records what it gets.
    struct Flaky {
        failures: usize,
        permanent: bool,
        calls: Arc<AtomicUsize>,
        delivered: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Flaky {
        async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return Err(if self.permanent {
                    SinkError::permanent("400 bad request")
                } else {
                    SinkError::retryable("connection refused")
                });
            }
            self.delivered.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn config(max_retries: Option<u32>) -> DeliveryConfig {
        let mut config: DeliveryConfig =
            toml::from_str("batch_max_events = 4\nflush_interval_ms = 10").unwrap();
        config.max_retries = max_retries;
        config.retry_initial_ms = 1;
        config.retry_max_ms = 5;
        config
    }

    fn event() -> Arc<Event> {
        let datagram = b"/qseow-proxy-session/;pro2-win1;Start session;LAB;goran;AppAccess;/hub/;Start session for user 'LAB\\goran'";
        Arc::new(
            Parser::new(&ParseConfig::default())
                .unwrap()
                .parse(
                    datagram,
                    "127.0.0.1:1".parse().unwrap(),
                    jiff::Timestamp::UNIX_EPOCH,
                )
                .unwrap(),
        )
    }

    struct Outcome {
        delivered: Vec<usize>,
        calls: usize,
        state: SinkState,
    }

    /// Runs the driver over `events` events; closes the queue once the sink has
    /// been called `close_after_calls` times, plus a moment for any call that
    /// should not happen.
    async fn drive(
        failures: usize,
        permanent: bool,
        max_retries: Option<u32>,
        events: usize,
        close_after_calls: usize,
    ) -> Outcome {
        let queue = Arc::new(SinkQueue::new(
            100,
            Overflow::DropOldest,
            SinkMetrics::register("test"),
        ));
        let status = Arc::new(SinkStatus::new("test", "flaky", queue.clone()));
        for _ in 0..events {
            queue.push(event());
        }
        queue.wake();
        let calls = Arc::new(AtomicUsize::new(0));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let sink = Flaky {
            failures,
            permanent,
            calls: calls.clone(),
            delivered: delivered.clone(),
        };
        let task = tokio::spawn(run(
            sink,
            status.clone(),
            config(max_retries),
            DeadLetters::disabled(),
        ));
        while calls.load(Ordering::SeqCst) < close_after_calls {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.close();
        task.await.unwrap();
        let delivered = delivered.lock().unwrap().clone();
        Outcome {
            delivered,
            calls: calls.load(Ordering::SeqCst),
            state: status.state(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn delivers_in_batches_and_drains_a_closed_queue() {
        let outcome = drive(0, false, None, 10, 0).await;
        assert_eq!(outcome.delivered, [4, 4, 2]);
        assert_eq!(outcome.calls, 3);
        assert_eq!(outcome.state, SinkState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn retries_a_failed_batch_until_it_goes_through() {
        let outcome = drive(25, false, None, 3, 26).await;
        assert_eq!(outcome.delivered, [3]);
        assert_eq!(outcome.calls, 26);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn gives_up_after_max_retries_when_they_are_limited() {
        let outcome = drive(100, false, Some(2), 3, 3).await;
        assert!(outcome.delivered.is_empty());
        assert_eq!(outcome.calls, 3, "no call after the last retry");
        assert_eq!(outcome.state, SinkState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn stops_retrying_once_shutdown_begins() {
        // The sink never recovers; closing the queue must still end the driver.
        let outcome = drive(usize::MAX, false, None, 3, 5).await;
        assert!(outcome.delivered.is_empty());
        assert!(outcome.calls >= 5);
        assert_eq!(outcome.state, SinkState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn does_not_retry_a_permanent_error() {
        let outcome = drive(1, true, None, 6, 2).await;
        assert_eq!(outcome.delivered, [2]);
        assert_eq!(outcome.calls, 2);
    }

    #[test]
    fn latency_sampling_takes_every_seventeenth_event_across_batches() {
        let mut sampler = LatencySampler::new(1000);
        let mut taken = Vec::new();
        let mut offset = 0;
        for len in [10, 10, 20, 0, 1, 40] {
            taken.extend(sampler.positions(len).map(|i| offset + i));
            offset += len;
        }
        assert_eq!(taken, [0, 17, 34, 51, 68]);
    }

    #[test]
    fn latency_sampling_moves_through_full_batches_instead_of_always_taking_the_oldest() {
        let mut sampler = LatencySampler::new(8);
        let positions: std::collections::BTreeSet<usize> =
            (0..17).flat_map(|_| sampler.positions(8)).collect();
        assert_eq!(
            positions.len(),
            8,
            "every position of the batch: {positions:?}"
        );
    }

    #[test]
    fn latency_sampling_takes_every_event_of_a_sink_that_sends_one_at_a_time() {
        let mut sampler = LatencySampler::new(1);
        let taken: Vec<usize> = (0..3).flat_map(|_| sampler.positions(1)).collect();
        assert_eq!(taken, [0, 0, 0]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut config = config(None);
        config.retry_initial_ms = 100;
        config.retry_max_ms = 1000;
        let ms = |attempt| backoff(&config, attempt).as_millis();
        assert!((75..=125).contains(&ms(0)));
        assert!((150..=250).contains(&ms(1)));
        assert!((750..=1250).contains(&ms(10)));
    }
}
