//! Every metric herald exports: names, labels, descriptions and the handles the
//! hot paths increment.
//!
//! Handles are registered once at start-up and kept in per-stage structs, so the
//! hot path only does an atomic add. No label value ever comes from the wire:
//! labels are fixed words, listener addresses and sink names from config.
//! This module is the source of the README's metrics table.

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};

use crate::event::EventType;
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
/// Events or datagrams dropped inside herald, by stage and reason.
pub const PIPELINE_DROPPED: &str = "herald_pipeline_dropped_total";
/// Events that matched no sink.
pub const ROUTE_UNROUTED: &str = "herald_route_unrouted_total";
/// Events a sink delivered.
pub const SINK_DELIVERED: &str = "herald_sink_events_delivered_total";
/// Events a sink failed to deliver for good (written to the dead-letter file).
pub const SINK_FAILED: &str = "herald_sink_events_failed_total";
/// Delivery attempts that were retried.
pub const SINK_RETRIES: &str = "herald_sink_retries_total";
/// Events waiting in a sink's queue.
pub const SINK_QUEUE_DEPTH: &str = "herald_sink_queue_depth";
/// Capacity of a sink's queue.
pub const SINK_QUEUE_CAPACITY: &str = "herald_sink_queue_capacity";
/// Records written to the dead-letter file, by reason.
pub const DEAD_LETTERS: &str = "herald_dead_letters_total";
/// Records that could not be written to the dead-letter file.
pub const DEAD_LETTERS_LOST: &str = "herald_dead_letters_lost_total";

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
        "Datagrams the kernel dropped because the receive buffer was full (SO_RXQ_OVFL)."
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
        PIPELINE_DROPPED,
        "Datagrams or events dropped inside herald, by stage and reason."
    );
    describe_counter!(ROUTE_UNROUTED, "Events that matched no sink.");
    describe_counter!(SINK_DELIVERED, "Events delivered, per sink.");
    describe_counter!(
        SINK_FAILED,
        "Events a sink gave up on (sent to the dead-letter file)."
    );
    describe_counter!(SINK_RETRIES, "Delivery attempts retried, per sink.");
    describe_gauge!(SINK_QUEUE_DEPTH, "Events waiting in the sink's queue.");
    describe_gauge!(SINK_QUEUE_CAPACITY, "Capacity of the sink's queue.");
    describe_counter!(
        DEAD_LETTERS,
        "Records written to the dead-letter file, by reason."
    );
    describe_counter!(
        DEAD_LETTERS_LOST,
        "Dead-letter records lost (queue full or file not writable)."
    );
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
            queue_capacity: gauge!(SINK_QUEUE_CAPACITY, "sink" => sink),
        }
    }
}
