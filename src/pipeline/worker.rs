//! The parse/route step: turns a batch of accepted datagrams into events and
//! pushes each to the queues of the sinks whose `match` takes it.
//!
//! A [`Worker`] holds one worker thread's state (its parser, counters, the
//! routes it last saw and what it staged for each sink); [`run`] feeds it from
//! the ingest hand-off. It does not receive, deliver or retry: ingest comes
//! before it and the sink drivers after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::budget::ByteBudget;
use crate::deadletter::{DeadLetters, Record};
use crate::flood::{FloodLog, Tally, Unused};
use crate::gaps::{Rows, SenderGaps};
use crate::ingest::Batch;
use crate::metrics::{EventCounters, HostLabels, MalformedFields, WorkerMetrics};
use crate::parse::Parser;
use crate::route::{Enricher, Matcher, Verdict};
use crate::sinks::queue::{SinkQueue, Stage};
use crate::swap::{Current, Swap};
use crate::tap::{TapReader, Taps};

/// One sink as the workers see it.
pub(super) struct Route {
    pub(super) sink: String,
    pub(super) matcher: Matcher,
    pub(super) queue: Arc<SinkQueue>,
}

/// What the workers route by; a reload replaces it as a whole.
pub(super) struct Routing {
    pub(super) routes: Vec<Route>,
    pub(super) enricher: Enricher,
}

/// What every worker shares.
pub(super) struct WorkerShared {
    pub(super) routing: Arc<Swap<Routing>>,
    pub(super) dead: DeadLetters,
    pub(super) metrics: WorkerMetrics,
    pub(super) hosts: Arc<HostLabels>,
    /// The ingest hand-off's byte budget: a worker gives a batch's bytes back
    /// once it is done with the batch.
    pub(super) handoff: Arc<ByteBudget>,
    /// Loss detection per sender.
    pub(super) senders: Arc<SenderGaps>,
    /// Taps on the event stream.
    pub(super) taps: Arc<Taps>,
    /// The next event sequence number not yet handed out.
    pub(super) sequence: AtomicU64,
}

/// Appender streams followed per host (see [`SenderGaps`]).
pub(super) const STREAMS_PER_HOST: usize = 8;

/// How often an idle worker looks for routes a reload replaced.
const IDLE_REFRESH: Duration = Duration::from_millis(200);

/// A parse worker thread: runs until every ingest thread is gone and the
/// channel is empty.
pub(super) fn run(rx: &Receiver<Batch>, mut worker: Worker) {
    loop {
        // Between batches (and when idle) pick up routes a reload replaced,
        // so the old ones are released once every worker has moved on.
        match rx.recv_timeout(IDLE_REFRESH) {
            Ok(batch) => {
                worker.handle(&batch);
                worker.shared.handoff.release(batch.bytes);
            }
            Err(RecvTimeoutError::Timeout) => worker.idle(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// One thread's parse/route state.
pub(super) struct Worker {
    parser: Parser,
    shared: Arc<WorkerShared>,
    unusable: Tally,
    event_counters: EventCounters,
    malformed: MalformedFields,
    routing: Current<Routing>,
    /// Per route: whether this batch pushed to it, and its staged events.
    /// They follow the routes: a reload may add, remove and reorder them.
    touched: Vec<bool>,
    stages: Vec<Stage>,
    rows: Rows,
    taps: TapReader,
}

impl Worker {
    pub(super) fn new(parser: Parser, shared: Arc<WorkerShared>) -> Self {
        let routing = Current::new(shared.routing.clone());
        let (touched, stages) = per_route(routing.get());
        Worker {
            parser,
            unusable: Tally::default(),
            event_counters: EventCounters::new(shared.hosts.clone()),
            malformed: MalformedFields::default(),
            routing,
            touched,
            stages,
            rows: Rows::default(),
            taps: shared.taps.reader(),
            shared,
        }
    }

    /// Picks up routes a reload replaced.
    fn refresh(&mut self) {
        if self.routing.refresh() {
            (self.touched, self.stages) = per_route(self.routing.get());
        }
    }

    /// What a worker does when no batch came for a while: picks up a reload's
    /// routes and counts the losses of senders that went quiet.
    fn idle(&mut self) {
        self.refresh();
        self.shared.senders.close_due(Instant::now());
    }

    /// Parses, categorises and routes every datagram of `batch`; what does
    /// not parse is counted, logged within the flood budget and dead-lettered.
    fn handle(&mut self, batch: &Batch) {
        self.refresh();
        self.taps.refresh();
        let Worker {
            parser,
            shared,
            unusable,
            event_counters,
            malformed,
            routing,
            touched,
            stages,
            rows,
            taps,
        } = self;
        let current = routing.get();
        debug_assert_eq!(current.routes.len(), stages.len());
        // One block of sequence numbers per batch: unique across threads
        // without touching a shared counter per event.
        let mut sequence = shared
            .sequence
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for datagram in batch.datagrams() {
            match parser.parse_shared(datagram.bytes, datagram.peer, batch.received_at) {
                Ok(mut event) => {
                    // Built in place and not shared yet: changed without a copy.
                    let unshared = Arc::make_mut(&mut event);
                    shared.metrics.event(unshared.event_type);
                    malformed.count(unshared);
                    unshared.sequence = sequence;
                    sequence += 1;
                    event_counters.count(unshared);
                    rows.note(unshared);
                    if current.enricher.apply(unshared) == Verdict::Drop {
                        shared.metrics.rule_drops.increment(1);
                        continue;
                    }
                    taps.offer(&event);
                    let mut routed = false;
                    for ((route, touched), stage) in current
                        .routes
                        .iter()
                        .zip(touched.iter_mut())
                        .zip(stages.iter_mut())
                    {
                        if route.matcher.matches(&event) {
                            route.queue.push(&event, stage);
                            *touched = true;
                            routed = true;
                        }
                    }
                    if !routed {
                        shared.metrics.unrouted.increment(1);
                    }
                }
                Err(err) => {
                    shared.metrics.error(&err);
                    unusable.note(Unused::Unparsable, datagram.peer, || {
                        format!(
                            "{}: {err}; starts {:?}",
                            err.reason(),
                            preview(datagram.bytes)
                        )
                    });
                    shared.dead.send(Record::datagram(
                        batch.received_at,
                        datagram.peer,
                        err.reason(),
                        &err.to_string(),
                        datagram.bytes,
                    ));
                }
            }
        }
        for ((route, touched), stage) in current
            .routes
            .iter()
            .zip(touched.iter_mut())
            .zip(stages.iter_mut())
        {
            if std::mem::take(touched) {
                route.queue.commit(stage);
            }
        }
        if !rows.is_empty() {
            shared
                .senders
                .record(rows, Instant::now(), batch.received_at);
        }
        if !unusable.is_empty() {
            FloodLog::global().report("parse", unusable, Instant::now());
        }
    }
}

/// A worker's state for each route of `routing`: not yet pushed to, nothing
/// staged.
fn per_route(routing: &Routing) -> (Vec<bool>, Vec<Stage>) {
    let routes = routing.routes.len();
    (
        vec![false; routes],
        (0..routes).map(|_| Stage::default()).collect(),
    )
}

/// The first 80 bytes of a datagram, escaped so it is safe in a log line.
fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    let mut text: String = String::from_utf8_lossy(cut).escape_debug().collect();
    if bytes.len() > cut.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_escapes_and_cuts() {
        assert_eq!(preview(b"a\nb\"\xff"), "a\\nb\\\"\u{fffd}");
        assert!(preview(&[b'x'; 200]).ends_with('…'));
        assert_eq!(preview(&[b'x'; 200]).chars().count(), 81);
    }
}
