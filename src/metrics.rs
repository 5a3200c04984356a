//! Every metric herald exports: names, labels, descriptions and the handles the
//! hot paths increment.
//!
//! Handles are registered once at start-up and kept in per-stage structs, so the
//! hot path only does an atomic add. No label value ever comes from the wire:
//! labels are fixed words, listener addresses and sink names from config.
//! This module is the source of the README's metrics table.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::event::{Event, EventType, Field, Level, Source, TaskOutcome};
use crate::parse::ParseError;

/// Datagrams read from a socket (before the allowlist).
pub const INGEST_DATAGRAMS: &str = "herald_ingest_datagrams_total";
/// Datagrams refused at ingest, by reason.
pub const INGEST_REJECTED: &str = "herald_ingest_rejected_total";
/// Datagrams the kernel dropped because the socket's receive buffer was full.
pub const INGEST_KERNEL_DROPS: &str = "herald_ingest_kernel_drops_total";
/// The socket receive buffer the kernel actually granted.
pub const INGEST_RECEIVE_BUFFER: &str = "herald_ingest_receive_buffer_bytes";
/// Entries (networks and resolved addresses) in the allowlist.
pub const ALLOWLIST_ENTRIES: &str = "herald_allowlist_entries";
/// Host names in the allowlist that did not resolve at the last attempt.
pub const ALLOWLIST_UNRESOLVED: &str = "herald_allowlist_unresolved_hosts";
/// Events parsed, by type.
pub const PARSE_EVENTS: &str = "herald_parse_events_total";
/// Datagrams that could not be parsed, by reason.
pub const PARSE_ERRORS: &str = "herald_parse_errors_total";
/// Values kept as text because they did not have their field's shape (an id
/// that is no GUID, a time that is no timestamp), by field.
pub const PARSE_MALFORMED_FIELDS: &str = "herald_parse_malformed_fields_total";
/// Sense events by type, source, level and host (hosts capped, see
/// `metrics.max_hosts`): what a Grafana panel charts without any database.
pub const EVENTS: &str = "herald_events_total";
/// Task events by outcome and host.
pub const TASK_EVENTS: &str = "herald_task_events_total";
/// Seconds from reading a datagram to its event being delivered, per sink.
pub const EVENT_LATENCY: &str = "herald_event_latency_seconds";
/// Upper bounds (seconds) of [`EVENT_LATENCY`]'s histogram buckets: from half a
/// millisecond (a file sink under light load) to minutes (an alert retried
/// through an outage). A histogram rather than a summary: every sample counts
/// (the exporter's rolling summary keeps only the newest samples of each drain),
/// and Grafana can aggregate it across herald instances with `histogram_quantile`.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// Events or datagrams dropped inside herald, by stage and reason.
pub const PIPELINE_DROPPED: &str = "herald_pipeline_dropped_total";
/// Events that matched no sink.
pub const ROUTE_UNROUTED: &str = "herald_route_unrouted_total";
/// Rows a Sense appender numbered that never became events, by source and host.
pub const SENDER_GAP_EVENTS: &str = "herald_sender_gap_events_total";
/// Times an appender's row counter started again (the Sense service restarted).
pub const SENDER_RESTARTS: &str = "herald_sender_restarts_total";
/// Rows of appender streams beyond the streams followed.
pub const SENDER_GAP_UNTRACKED: &str = "herald_sender_gap_streams_untracked_total";
/// Events a sink delivered.
pub const SINK_DELIVERED: &str = "herald_sink_events_delivered_total";
/// Events a sink failed to deliver for good (written to the dead-letter file).
pub const SINK_FAILED: &str = "herald_sink_events_failed_total";
/// Delivery attempts that were retried.
pub const SINK_RETRIES: &str = "herald_sink_retries_total";
/// Events a stream had already stored when a retried batch sent them again
/// (stored once: JetStream's duplicate window), per sink.
pub const SINK_DUPLICATES: &str = "herald_sink_duplicates_total";
/// Events waiting in a sink's queue.
pub const SINK_QUEUE_DEPTH: &str = "herald_sink_queue_depth";
/// Capacity of a sink's queue.
pub const SINK_QUEUE_CAPACITY: &str = "herald_sink_queue_capacity";
/// Events in the batch a sink is delivering or retrying.
pub const SINK_BATCH_EVENTS: &str = "herald_sink_batch_events";
/// Bytes of the events in a sink's memory queue.
pub const SINK_QUEUE_BYTES: &str = "herald_sink_queue_bytes";
/// The most bytes of events a sink's memory queue may hold.
pub const SINK_QUEUE_MAX_BYTES: &str = "herald_sink_queue_max_bytes";
/// Events waiting in a sink's disk buffer.
pub const BUFFER_EVENTS: &str = "herald_buffer_events";
/// Bytes of a sink's disk buffer on disk.
pub const BUFFER_BYTES: &str = "herald_buffer_bytes";
/// The most bytes a sink's disk buffer may hold.
pub const BUFFER_MAX_BYTES: &str = "herald_buffer_max_bytes";
/// Records of a disk buffer found damaged (torn, truncated, bit-flipped) and skipped.
pub const BUFFER_CORRUPT: &str = "herald_buffer_corrupt_records_total";
/// Writes to a disk buffer the disk refused (events then wait in memory).
pub const BUFFER_WRITE_ERRORS: &str = "herald_buffer_write_errors_total";
/// Events kept at shutdown, by sink and where (`disk_buffer`, `dead_letter`, `lost`).
pub const SHUTDOWN_KEPT: &str = "herald_shutdown_events_total";
/// Records written to the dead-letter file, by reason.
pub const DEAD_LETTERS: &str = "herald_dead_letters_total";
/// Records that could not be written to the dead-letter file.
pub const DEAD_LETTERS_LOST: &str = "herald_dead_letters_lost_total";
/// Config reloads (`SIGHUP`), by result.
pub const CONFIG_RELOADS: &str = "herald_config_reloads_total";

/// Writes the descriptions every exporter shows.
pub fn describe() {
    describe_counter!(
        INGEST_DATAGRAMS,
        "UDP datagrams read from the socket, per listener."
    );
    describe_counter!(
        INGEST_REJECTED,
        "Datagrams refused at ingest, by listener and reason (not_allowed, oversized)."
    );
    describe_counter!(
        INGEST_KERNEL_DROPS,
        "Datagrams the kernel dropped because the receive buffer was full (SO_MEMINFO)."
    );
    describe_gauge!(
        INGEST_RECEIVE_BUFFER,
        "Receive buffer size the kernel granted, per listener."
    );
    describe_gauge!(
        ALLOWLIST_ENTRIES,
        "Networks and resolved addresses in the allowlist."
    );
    describe_gauge!(
        ALLOWLIST_UNRESOLVED,
        "Allowlist host names that did not resolve."
    );
    describe_counter!(PARSE_EVENTS, "Datagrams parsed into events, by event type.");
    describe_counter!(
        PARSE_ERRORS,
        "Datagrams that could not be parsed, by reason."
    );
    describe_counter!(
        PARSE_MALFORMED_FIELDS,
        "Values of parsed events kept as text because they did not have their field's shape, by field."
    );
    describe_counter!(
        PIPELINE_DROPPED,
        "Datagrams or events dropped inside herald, by stage and reason."
    );
    describe_counter!(ROUTE_UNROUTED, "Events that matched no sink.");
    describe_counter!(
        SENDER_GAP_EVENTS,
        "Rows a Sense appender numbered (log_row) that never arrived as events: lost on the network, dropped by the kernel or refused here; by source and host (hosts beyond metrics.max_hosts count as \"other\")."
    );
    describe_counter!(
        SENDER_RESTARTS,
        "Times a Sense appender's row counter started again without wrapping (its service restarted), by source and host."
    );
    describe_counter!(
        SENDER_GAP_UNTRACKED,
        "Rows of appender streams (host and tag) beyond the streams herald follows for loss detection."
    );
    describe_counter!(
        EVENTS,
        "Sense events by type, source, level and host (hosts beyond metrics.max_hosts count as \"other\")."
    );
    describe_counter!(TASK_EVENTS, "Sense task events by outcome and host.");
    describe_histogram!(
        EVENT_LATENCY,
        metrics::Unit::Seconds,
        "Time from reading a datagram to delivering its event, per sink (histogram; one event in 17 is sampled by sinks that batch)."
    );
    describe_counter!(
        crate::sinks::alert::ALERTS_SUPPRESSED,
        "Alerts not sent on purpose, by sink and reason (duplicate, rate_limited)."
    );
    describe_counter!(
        crate::sinks::alert::ALERT_TEMPLATE_ERRORS,
        "Alert templates that failed to render; a plain message was sent instead."
    );
    describe_counter!(
        crate::sinks::alert::email::EMAIL_RECIPIENTS_SUPPRESSED,
        "Emails not sent to a recipient because of per_recipient_rate_limit_s, per sink."
    );
    describe_counter!(SINK_DELIVERED, "Events delivered, per sink.");
    describe_counter!(
        SINK_FAILED,
        "Events a sink gave up on (sent to the dead-letter file)."
    );
    describe_counter!(SINK_RETRIES, "Delivery attempts retried, per sink.");
    describe_counter!(
        SINK_DUPLICATES,
        "Events a NATS stream had already stored when a retried batch sent them again; stored once, per sink."
    );
    describe_gauge!(SINK_QUEUE_DEPTH, "Events waiting in the sink's queue.");
    describe_gauge!(SINK_QUEUE_CAPACITY, "Capacity of the sink's queue.");
    describe_gauge!(
        SINK_BATCH_EVENTS,
        "Events the sink has taken from its queue and is sending or retrying."
    );
    describe_gauge!(
        SINK_QUEUE_BYTES,
        "Bytes of the events in the sink's memory queue."
    );
    describe_gauge!(
        SINK_QUEUE_MAX_BYTES,
        "The most bytes of events the sink's memory queue may hold (queue_bytes)."
    );
    describe_gauge!(BUFFER_EVENTS, "Events waiting in the sink's disk buffer.");
    describe_gauge!(BUFFER_BYTES, "Bytes of the sink's disk buffer on disk.");
    describe_gauge!(
        BUFFER_MAX_BYTES,
        "The most bytes the sink's disk buffer holds (buffer.max_bytes); 0 for a memory buffer."
    );
    describe_counter!(
        BUFFER_CORRUPT,
        "Records of a disk buffer found damaged (torn, truncated, bit-flipped) and skipped."
    );
    describe_counter!(
        BUFFER_WRITE_ERRORS,
        "Writes the disk refused (full, read-only, failing); those events waited in memory instead."
    );
    describe_counter!(
        SHUTDOWN_KEPT,
        "Events still queued when a stop's grace period ended, by sink and where they were kept (disk_buffer, dead_letter, lost)."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Records written to the dead-letter file, by reason."
    );
    describe_counter!(
        DEAD_LETTERS_LOST,
        "Dead-letter records lost (queue full or file not writable)."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads (SIGHUP), by result: applied or failed."
    );
    // Both results show from the start, at 0.
    for result in ["applied", "failed"] {
        counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
}

/// Handles for one listening socket.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Every datagram read.
    pub datagrams: Counter,
    /// Refused: sender not in the allowlist.
    pub not_allowed: Counter,
    /// Refused: longer than `max_datagram_bytes`.
    pub oversized: Counter,
    /// Refused: over `max_datagrams_per_source_per_second`.
    pub rate_limited: Counter,
    /// Dropped: the hand-off queue to the parse workers was full.
    pub queue_full: Counter,
    /// Dropped by the kernel.
    pub kernel_drops: Counter,
    /// Granted receive buffer.
    pub receive_buffer: Gauge,
}

impl IngestMetrics {
    /// Registers the handles for the listener configured as `listener`.
    pub fn register(listener: &str) -> IngestMetrics {
        let listener = listener.to_string();
        let rejected = |reason: &'static str| counter!(INGEST_REJECTED, "listener" => listener.clone(), "reason" => reason);
        IngestMetrics {
            datagrams: counter!(INGEST_DATAGRAMS, "listener" => listener.clone()),
            not_allowed: rejected("not_allowed"),
            oversized: rejected("oversized"),
            rate_limited: rejected("rate_limited"),
            queue_full: counter!(PIPELINE_DROPPED, "stage" => "ingest", "reason" => "queue_full"),
            kernel_drops: counter!(INGEST_KERNEL_DROPS, "listener" => listener.clone()),
            receive_buffer: gauge!(INGEST_RECEIVE_BUFFER, "listener" => listener),
        }
    }
}

/// Handles for the parse/route workers.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    events: [Counter; EventType::ALL.len()],
    errors: [Counter; ParseError::REASONS.len()],
    /// Dropped by a categorisation rule with `action = "drop"`.
    pub rule_drops: Counter,
    /// Matched no sink.
    pub unrouted: Counter,
}

/// One worker's `herald_parse_malformed_fields_total` handles, per field,
/// each registered when first needed (most fields never are).
#[derive(Debug)]
pub struct MalformedFields {
    counters: [Option<Counter>; Field::COUNT],
}

impl Default for MalformedFields {
    fn default() -> Self {
        MalformedFields {
            counters: [const { None }; Field::COUNT],
        }
    }
}

impl MalformedFields {
    /// Counts the fields of `event` whose values were kept as text because
    /// they did not have the field's shape.
    pub fn count(&mut self, event: &Event) {
        for field in event.malformed_fields() {
            self.counters[field as usize]
                .get_or_insert_with(|| counter!(PARSE_MALFORMED_FIELDS, "field" => field.name()))
                .increment(1);
        }
    }
}

impl WorkerMetrics {
    /// Registers the handles.
    pub fn register() -> WorkerMetrics {
        WorkerMetrics {
            events: EventType::ALL.map(|t| counter!(PARSE_EVENTS, "type" => t.as_str())),
            errors: ParseError::REASONS.map(|reason| counter!(PARSE_ERRORS, "reason" => reason)),
            rule_drops: counter!(PIPELINE_DROPPED, "stage" => "route", "reason" => "rule"),
            unrouted: counter!(ROUTE_UNROUTED),
        }
    }

    /// Counts one parsed event.
    pub fn event(&self, event_type: EventType) {
        self.events[event_type as usize].increment(1);
    }

    /// Counts one parse failure.
    pub fn error(&self, error: &ParseError) {
        if let Some(index) = ParseError::REASONS
            .iter()
            .position(|&r| r == error.reason())
        {
            self.errors[index].increment(1);
        }
    }
}

/// Handles for one sink.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// Delivered events.
    pub delivered: Counter,
    /// Events given up on.
    pub failed: Counter,
    /// Retried attempts.
    pub retries: Counter,
    /// Dropped because the queue was full (per the overflow policy).
    pub queue_full: Counter,
    /// Queue depth.
    pub queue_depth: Gauge,
    /// Queue capacity.
    pub queue_capacity: Gauge,
    /// Events in the batch being delivered or retried.
    pub batch_events: Gauge,
    /// Bytes of the events in the memory queue.
    pub queue_bytes: Gauge,
    /// The memory queue's byte budget.
    pub queue_max_bytes: Gauge,
    /// Receive-to-delivery latency (sampled, see the sink driver).
    pub latency: Histogram,
    /// Events in the disk buffer.
    pub buffer_events: Gauge,
    /// Bytes of the disk buffer.
    pub buffer_bytes: Gauge,
    /// The disk buffer's limit.
    pub buffer_max_bytes: Gauge,
    /// Damaged disk-buffer records skipped.
    pub buffer_corrupt: Counter,
    /// Disk-buffer writes the disk refused.
    pub buffer_write_errors: Counter,
    /// Events kept at shutdown in the disk buffer.
    pub kept_on_disk: Counter,
    /// Events written to the dead-letter file at shutdown.
    pub kept_dead_letter: Counter,
    /// Events lost at shutdown (no dead-letter file, or it failed).
    pub lost_at_shutdown: Counter,
}

impl SinkMetrics {
    /// Registers the handles for the sink named `sink` in config.
    pub fn register(sink: &str) -> SinkMetrics {
        let sink = sink.to_string();
        SinkMetrics {
            delivered: counter!(SINK_DELIVERED, "sink" => sink.clone()),
            failed: counter!(SINK_FAILED, "sink" => sink.clone()),
            retries: counter!(SINK_RETRIES, "sink" => sink.clone()),
            queue_full: counter!(
                PIPELINE_DROPPED,
                "stage" => "sink",
                "reason" => "queue_full",
                "sink" => sink.clone()
            ),
            queue_depth: gauge!(SINK_QUEUE_DEPTH, "sink" => sink.clone()),
            queue_capacity: gauge!(SINK_QUEUE_CAPACITY, "sink" => sink.clone()),
            batch_events: gauge!(SINK_BATCH_EVENTS, "sink" => sink.clone()),
            queue_bytes: gauge!(SINK_QUEUE_BYTES, "sink" => sink.clone()),
            queue_max_bytes: gauge!(SINK_QUEUE_MAX_BYTES, "sink" => sink.clone()),
            latency: histogram!(EVENT_LATENCY, "sink" => sink.clone()),
            buffer_events: gauge!(BUFFER_EVENTS, "sink" => sink.clone()),
            buffer_bytes: gauge!(BUFFER_BYTES, "sink" => sink.clone()),
            buffer_max_bytes: gauge!(BUFFER_MAX_BYTES, "sink" => sink.clone()),
            buffer_corrupt: counter!(BUFFER_CORRUPT, "sink" => sink.clone()),
            buffer_write_errors: counter!(BUFFER_WRITE_ERRORS, "sink" => sink.clone()),
            kept_on_disk: counter!(SHUTDOWN_KEPT, "sink" => sink.clone(), "kept" => "disk_buffer"),
            kept_dead_letter: counter!(SHUTDOWN_KEPT, "sink" => sink.clone(), "kept" => "dead_letter"),
            lost_at_shutdown: counter!(SHUTDOWN_KEPT, "sink" => sink, "kept" => "lost"),
        }
    }
}

/// Which Sense host names may be metric labels: the first `max` seen, then
/// `"other"`. Shared by the workers; consulted only when a worker meets a host
/// it has not cached, so the lock is off the hot path.
#[derive(Debug)]
pub struct HostLabels {
    admitted: Mutex<HashSet<String>>,
    max: usize,
}

/// Longest host label kept; longer names are cut (they are not real host names).
const MAX_HOST_LABEL: usize = 64;

impl HostLabels {
    /// Admits at most `max` distinct host names.
    pub fn new(max: usize) -> HostLabels {
        HostLabels {
            admitted: Mutex::new(HashSet::new()),
            max,
        }
    }

    /// Admits `label` (a host name already cut by [`host_label`]) if it is
    /// known or there is room; false when it counts as `"other"`.
    pub(crate) fn admit(&self, label: &str) -> bool {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if admitted.contains(label) {
            return true;
        }
        if admitted.len() < self.max {
            admitted.insert(label.to_string());
            return true;
        }
        false
    }
}

/// A host name cut to [`MAX_HOST_LABEL`] characters: the label, and the key
/// every per-host map uses, so names that differ only beyond the cut share one
/// entry (no memory grows with the names a sender makes up).
pub(crate) fn host_label(host: &str) -> &str {
    // No more bytes than the cap: no more characters either.
    if host.len() <= MAX_HOST_LABEL {
        return host;
    }
    match host.char_indices().nth(MAX_HOST_LABEL) {
        Some((end, _)) => &host[..end],
        None => host,
    }
}

const LEVELS: usize = 6;
const SOURCES: usize = 4;

/// One host's counters, created on first use.
#[derive(Debug)]
struct HostCounters {
    label: String,
    events: Vec<Option<Counter>>,
    tasks: [Option<Counter>; 4],
}

impl HostCounters {
    fn new(label: String) -> HostCounters {
        HostCounters {
            label,
            events: vec![None; EventType::ALL.len() * SOURCES * LEVELS],
            tasks: [None, None, None, None],
        }
    }

    fn count(&mut self, event: &Event) {
        let level = event.level.map_or(0, |l| l as usize + 1);
        let index = (event.event_type as usize * SOURCES + event.source as usize) * LEVELS + level;
        let label = &self.label;
        self.events[index]
            .get_or_insert_with(|| {
                counter!(
                    EVENTS,
                    "type" => event.event_type.as_str(),
                    "source" => event.source.as_str(),
                    "level" => event.level.map_or("none", Level::as_str),
                    "host" => label.clone()
                )
            })
            .increment(1);
        if let Some(outcome) = event.outcome {
            self.tasks[outcome as usize]
                .get_or_insert_with(|| {
                    counter!(TASK_EVENTS, "outcome" => outcome.as_str(), "host" => label.clone())
                })
                .increment(1);
        }
    }
}

/// A worker's `herald_events_total` and `herald_task_events_total` handles,
/// cached per host so counting an event is a map lookup and an atomic add;
/// the host of the event before is tried first, without the map (events
/// come in runs from one host).
#[derive(Debug)]
pub struct EventCounters {
    hosts: Arc<HostLabels>,
    /// Where each admitted host's counters are in `counters`.
    by_host: HashMap<String, usize>,
    counters: Vec<HostCounters>,
    /// The index in `counters` of the host counted last (none at first).
    last: usize,
    other: HostCounters,
    unknown: HostCounters,
}

impl EventCounters {
    /// Counters for one worker, sharing the host cap.
    pub fn new(hosts: Arc<HostLabels>) -> EventCounters {
        EventCounters {
            hosts,
            by_host: HashMap::new(),
            counters: Vec::new(),
            last: usize::MAX,
            other: HostCounters::new("other".into()),
            unknown: HostCounters::new("unknown".into()),
        }
    }

    /// Counts `event`.
    pub fn count(&mut self, event: &Event) {
        let Some(host) = event.host() else {
            self.unknown.count(event);
            return;
        };
        let label = host_label(host);
        if let Some(counters) = self.counters.get_mut(self.last)
            && counters.label == label
        {
            counters.count(event);
            return;
        }
        if let Some(&index) = self.by_host.get(label) {
            self.last = index;
            self.counters[index].count(event);
            return;
        }
        // Only admitted labels get an entry: at most `metrics.max_hosts`.
        if self.hosts.admit(label) {
            self.last = self.counters.len();
            self.by_host.insert(label.to_string(), self.last);
            self.counters.push(HostCounters::new(label.to_string()));
            self.counters[self.last].count(event);
        } else {
            self.other.count(event);
        }
    }
}

// The index arithmetic above relies on these orders.
const _: () = {
    assert!(Source::Scheduler as usize == SOURCES - 1);
    assert!(Level::Fatal as usize + 1 == LEVELS - 1);
    assert!(TaskOutcome::Distribute as usize == 3);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine error fixture's event, sent by `host`.
    fn event_from(parser: &mut crate::parse::Parser, host: &str) -> Event {
        let fixture = include_str!("../fixtures/datagrams/engine_error.txt").trim_end();
        let datagram = fixture.replace(";pro2-win1;", &format!(";{host};"));
        parser
            .parse(
                datagram.as_bytes(),
                "127.0.0.1:1".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap()
    }

    #[test]
    fn events_are_counted_per_host_when_hosts_alternate_and_beyond_the_cap() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut parser = crate::parse::Parser::new(&crate::parse::ParseConfig::default()).unwrap();
        metrics::with_local_recorder(&recorder, || {
            let mut counters = EventCounters::new(Arc::new(HostLabels::new(2)));
            // Runs, switches back and forth, and a third host over the cap.
            for host in ["a", "a", "b", "a", "b", "b", "c", "a", "c", "b"] {
                counters.count(&event_from(&mut parser, host));
            }
        });
        let text = handle.render();
        let count = |host: &str| -> f64 {
            text.lines()
                .filter(|line| {
                    line.starts_with("herald_events_total{")
                        && line.contains(&format!("host=\"{host}\""))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!(
            [count("a"), count("b"), count("other"), count("c")],
            [4.0, 4.0, 2.0, 0.0],
            "{text}"
        );
    }

    #[test]
    fn host_labels_admit_the_first_hosts_then_say_other() {
        let hosts = HostLabels::new(2);
        assert!(hosts.admit("a"));
        assert!(hosts.admit("b"));
        assert!(!hosts.admit("c"));
        assert!(hosts.admit("a"));
    }

    #[test]
    fn overlong_host_names_are_cut_on_a_character_boundary() {
        assert_eq!(host_label(&"x".repeat(200)).len(), MAX_HOST_LABEL);
        let wide = "é".repeat(100);
        assert_eq!(host_label(&wide).chars().count(), MAX_HOST_LABEL);
        assert_eq!(host_label("short"), "short");
    }

    #[test]
    fn names_differing_beyond_the_cut_share_one_entry() {
        let mut counters = EventCounters::new(Arc::new(HostLabels::new(50)));
        let mut parser = crate::parse::Parser::new(&crate::parse::ParseConfig::default()).unwrap();
        let prefix = "h".repeat(MAX_HOST_LABEL);
        for i in 0..500 {
            counters.count(&event_from(&mut parser, &format!("{prefix}{i}")));
        }
        assert_eq!(counters.by_host.len(), 1);
        assert_eq!(counters.counters.len(), 1);
        assert_eq!(
            counters.by_host.keys().next().map(String::len),
            Some(MAX_HOST_LABEL)
        );
    }
}
