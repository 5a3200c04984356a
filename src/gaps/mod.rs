//! Loss detection per sender: how many datagrams a Sense appender sent that
//! never became events here.
//!
//! Sense numbers the events of each appender (`%rownum{9999}`, an event's
//! `log_row`): a counter per appender that runs up to 9999 and starts again.
//! For each (host, tag) pair, the stream of one appender on one node, this
//! module follows that counter and counts the rows that never arrive:
//!
//! - a row that skips ahead opens a gap; a row from a gap that arrives later
//!   (datagrams reordered on the network, or by herald's parallel workers)
//!   closes its place in it. What is still missing [`GRACE`] after the gap
//!   opened counts as lost: `herald_sender_gap_events_total{source,host}`.
//! - after 9999 the counter starts again at 0 or 1 (which one is learned from
//!   seeing a 0).
//! - a low row (below 100) after a pause of [`GRACE`] that no wrap explains
//!   means the Sense service restarted and its counter with it:
//!   `herald_sender_restarts_total`, not a loss. Without the pause it is read
//!   as reordering (also of rows from before the first one seen) or a
//!   duplicate.
//!
//! What counts as lost is what never became an event: lost on the network,
//! dropped by the kernel because herald's receive buffer was full, or refused
//! by herald itself (not on the allowlist, over a rate limit, unparsable;
//! those are counted where they happen too). A run of more than 4,999 lost
//! rows in a row cannot be told from a late row and is not counted.
//!
//! The streams are bounded ([`SenderGaps::new`]'s `max_streams`; more are
//! counted in `herald_sender_gap_streams_untracked_total`), and so are the
//! open gaps of each. This module does not parse; the workers hand it
//! (host, tag, source, row) as they parse.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::{Counter, counter};

use crate::event::{Event, Field, Source};
use crate::metrics::{
    HostLabels, SENDER_GAP_EVENTS, SENDER_GAP_UNTRACKED, SENDER_RESTARTS, host_label,
};

/// How long a missing row may take to arrive before it counts as lost.
pub const GRACE: Duration = Duration::from_secs(5);

/// The highest row number Sense's appenders write (`%rownum{9999}`).
const TOP: u32 = 9999;

/// A row at most this far ahead is the counter moving on; further ahead is a
/// row from before the newest (half the counter's cycle).
const HALF: u32 = 5000;

/// A row this close to the start of the counter, after a pause of [`GRACE`]
/// and a jump longer than [`RESTART_JUMP`], is read as the Sense service
/// having restarted (the first rows of a restart may be lost too).
const RESTART_ROW: u32 = 100;

/// See [`RESTART_ROW`].
const RESTART_JUMP: u32 = 64;

/// Open gaps one stream keeps; beyond that the oldest counts as lost at once.
const MAX_GAPS: usize = 64;

/// One appender's stream of rows as seen now, for `/health` and the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// The Sense host name (cut to the host-label length).
    pub host: String,
    /// The appender's tag, e.g. `/qseow-engine/`.
    pub tag: String,
    /// The Sense service.
    pub source: Source,
    /// Rows received.
    pub received: u64,
    /// Rows counted as lost.
    pub lost: u64,
    /// Rows missing now, not yet counted as lost (within [`GRACE`]).
    pub missing: u64,
    /// Rows that arrived after a later row.
    pub late: u64,
    /// Times the counter started again without a wrap.
    pub restarts: u64,
    /// The newest row number.
    pub last_row: u32,
    /// When the newest row arrived.
    pub last_seen: jiff::Timestamp,
}

impl StreamStatus {
    /// Lost rows as a share of rows sent (received + lost), 0 to 1.
    pub fn loss_ratio(&self) -> f64 {
        let sent = self.received + self.lost;
        if sent == 0 {
            0.0
        } else {
            self.lost as f64 / sent as f64
        }
    }
}

/// Rows missing between two rows seen: positions `from..=to`.
#[derive(Debug, Clone, Copy)]
struct Gap {
    from: i64,
    to: i64,
    opened: Instant,
}

impl Gap {
    fn len(&self) -> u64 {
        (self.to - self.from + 1).unsigned_abs()
    }
}

/// One appender's stream.
#[derive(Debug)]
struct Stream {
    status: StreamStatus,
    /// Whether the counter has been seen at 0 (it then runs 0..=9999).
    zero_based: bool,
    /// The newest row's position: rows counted from the first one seen (0),
    /// so that it keeps growing across wraps.
    newest: i64,
    /// The oldest row's position: below 0 when rows from before the first
    /// one seen arrived later (reordered as the stream began).
    oldest: i64,
    /// When the newest row arrived.
    newest_at: Instant,
    gaps: VecDeque<Gap>,
    lost: Counter,
    restarts: Counter,
}

impl Stream {
    fn new(status: StreamStatus, metric_host: &str, now: Instant) -> Stream {
        let source = status.source.as_str();
        Stream {
            zero_based: status.last_row == 0,
            newest: 0,
            oldest: 0,
            newest_at: now,
            gaps: VecDeque::new(),
            lost: counter!(SENDER_GAP_EVENTS, "source" => source, "host" => metric_host.to_string()),
            restarts: counter!(SENDER_RESTARTS, "source" => source, "host" => metric_host.to_string()),
            status,
        }
    }

    /// The counter's first value.
    fn base(&self) -> u32 {
        u32::from(!self.zero_based)
    }

    /// Steps forward from row `a` to row `b`, wrapping after 9999.
    fn forward(&self, a: u32, b: u32) -> u32 {
        if b >= a {
            b - a
        } else {
            (TOP - a) + (b - self.base()) + 1
        }
    }

    /// Takes one row.
    fn see(&mut self, row: u32, now: Instant, at: jiff::Timestamp) {
        // What has been missing for GRACE is lost, whatever this row is.
        self.close_due(now);
        if row == 0 {
            self.zero_based = true;
        }
        let base = self.base();
        let ahead = self.forward(self.status.last_row, row);
        self.status.received += 1;
        if ahead == 0 {
            // The newest row again: a duplicate (the network, or a resend).
            return;
        }
        // A restart takes the service a while: a low row after a pause.
        let low = row - base < RESTART_ROW;
        let paused = now.saturating_duration_since(self.newest_at) >= GRACE;
        if ahead < HALF && !(low && paused && ahead > RESTART_JUMP) {
            self.status.last_seen = at;
            self.advance(ahead, row, now);
            return;
        }
        if ahead >= HALF {
            // A row from before the newest: it fills its place in a gap, or
            // is a duplicate of one already seen.
            let behind = i64::from(TOP - base + 1 - ahead);
            let position = self.newest - behind;
            if position >= self.oldest {
                if self.fill(position) {
                    self.status.late += 1;
                    self.status.missing -= 1;
                    return;
                }
                // A duplicate, unless the count started again after a pause.
                if !(low && paused) {
                    return;
                }
            } else if !paused {
                // From before the first row seen: reordered as the stream began.
                self.extend_back(position, now);
                self.status.late += 1;
                return;
            } else if !low {
                return;
            }
        }
        // The counter started again: what was missing before stays missing,
        // and the rows of the new count before this one are missing too.
        self.status.restarts += 1;
        self.restarts.increment(1);
        self.close_all();
        self.status.last_seen = at;
        self.advance(row - base + 1, row, now);
    }

    /// Moves the newest row `ahead` steps on, to `row`; the steps between are
    /// a new gap.
    fn advance(&mut self, ahead: u32, row: u32, now: Instant) {
        if ahead > 1 {
            if self.gaps.len() == MAX_GAPS {
                self.close_oldest();
            }
            let gap = Gap {
                from: self.newest + 1,
                to: self.newest + i64::from(ahead) - 1,
                opened: now,
            };
            self.status.missing += gap.len();
            self.gaps.push_back(gap);
        }
        self.newest += i64::from(ahead);
        self.newest_at = now;
        self.status.last_row = row;
    }

    /// Makes `position`, before the oldest row, the oldest; the rows between
    /// are a new gap.
    fn extend_back(&mut self, position: i64, now: Instant) {
        if position < self.oldest - 1 {
            if self.gaps.len() == MAX_GAPS {
                self.close_oldest();
            }
            let gap = Gap {
                from: position + 1,
                to: self.oldest - 1,
                opened: now,
            };
            self.status.missing += gap.len();
            self.gaps.push_back(gap);
        }
        self.oldest = position;
    }

    /// Marks `position` as arrived; false when it was not missing.
    fn fill(&mut self, position: i64) -> bool {
        let Some(index) = self
            .gaps
            .iter()
            .position(|gap| gap.from <= position && position <= gap.to)
        else {
            return false;
        };
        let gap = self.gaps[index];
        match (gap.from == position, gap.to == position) {
            (true, true) => {
                self.gaps.remove(index);
            }
            (true, false) => self.gaps[index].from += 1,
            (false, true) => self.gaps[index].to -= 1,
            (false, false) => {
                // Split in two; keep the number of gaps bounded.
                self.gaps[index].to = position - 1;
                self.gaps.insert(
                    index + 1,
                    Gap {
                        from: position + 1,
                        ..gap
                    },
                );
                if self.gaps.len() > MAX_GAPS {
                    self.close_oldest();
                }
            }
        }
        true
    }

    fn close_oldest(&mut self) {
        if let Some(gap) = self.gaps.pop_front() {
            self.count_lost(gap.len());
        }
    }

    fn close_all(&mut self) {
        while !self.gaps.is_empty() {
            self.close_oldest();
        }
    }

    /// Counts as lost what has been missing for [`GRACE`].
    fn close_due(&mut self, now: Instant) {
        while self
            .gaps
            .front()
            .is_some_and(|gap| now.saturating_duration_since(gap.opened) >= GRACE)
        {
            self.close_oldest();
        }
    }

    fn count_lost(&mut self, rows: u64) {
        self.status.missing -= rows;
        self.status.lost += rows;
        self.lost.increment(rows);
    }
}

/// A stream silent this long gives its place to a new one when all places
/// are taken (a node gone, or names a sender made up).
const EVICT_IDLE: Duration = Duration::from_secs(600);

/// The streams, and when a full map last looked for one to evict.
#[derive(Debug, Default)]
struct Streams {
    map: HashMap<String, Stream>,
    evict_tried: Option<Instant>,
    /// When every stream's due gaps were last counted.
    swept: Option<Instant>,
}

impl Streams {
    /// Makes room for a new stream if one has been silent for [`EVICT_IDLE`]
    /// (looking at most once a second); its open gaps count as lost.
    fn evict_idle(&mut self, now: Instant) -> bool {
        if self
            .evict_tried
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return false;
        }
        self.evict_tried = Some(now);
        let Some(key) = self
            .map
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.newest_at) >= EVICT_IDLE)
            .min_by_key(|(_, s)| s.newest_at)
            .map(|(key, _)| key.clone())
        else {
            return false;
        };
        if let Some(mut stream) = self.map.remove(&key) {
            stream.close_all();
        }
        true
    }
}

/// The row counters of every stream, shared by the workers.
#[derive(Debug)]
pub struct SenderGaps {
    streams: Mutex<Streams>,
    hosts: Arc<HostLabels>,
    max_streams: usize,
    untracked: Counter,
}

/// One worker's rows of one batch, handed to [`SenderGaps::record`] at once so
/// that the lock is taken once a batch. Reused: it allocates only to grow.
#[derive(Debug, Default)]
pub struct Rows {
    /// The streams' keys, one after the other.
    keys: String,
    /// Per row: where its key ends in `keys`, its source and number.
    rows: Vec<(usize, Source, u32)>,
}

impl Rows {
    /// Notes `event`'s row, if it has one.
    pub fn note(&mut self, event: &Event) {
        let (Some(host), Some(row)) = (event.host(), event.get(Field::LogRow)) else {
            return;
        };
        let Some(row) = row.parse::<u32>().ok().filter(|&row| row <= TOP) else {
            return;
        };
        self.keys.push_str(host_label(host));
        self.keys.push('\u{1f}');
        self.keys.push_str(event.tag());
        self.rows.push((self.keys.len(), event.source, row));
    }

    /// Whether no row is noted.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl SenderGaps {
    /// Follows at most `max_streams` streams; host labels on the metrics come
    /// from `hosts` (the same cap as `herald_events_total`).
    pub fn new(hosts: Arc<HostLabels>, max_streams: usize) -> SenderGaps {
        SenderGaps {
            streams: Mutex::new(Streams::default()),
            hosts,
            max_streams,
            untracked: counter!(SENDER_GAP_UNTRACKED),
        }
    }

    /// Takes the rows of one batch, received at `at` (`now` on the monotonic
    /// clock), and counts what has been missing for [`GRACE`]; empties `rows`.
    pub fn record(&self, rows: &mut Rows, now: Instant, at: jiff::Timestamp) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let mut start = 0;
        for &(end, source, row) in &rows.rows {
            let key = &rows.keys[start..end];
            start = end;
            if let Some(stream) = streams.map.get_mut(key) {
                stream.see(row, now, at);
                continue;
            }
            if streams.map.len() >= self.max_streams && !streams.evict_idle(now) {
                self.untracked.increment(1);
                continue;
            }
            let (host, tag) = key.split_once('\u{1f}').unwrap_or((key, ""));
            let metric_host = if self.hosts.admit(host) {
                host
            } else {
                "other"
            };
            let status = StreamStatus {
                host: host.to_string(),
                tag: tag.to_string(),
                source,
                received: 1,
                lost: 0,
                missing: 0,
                late: 0,
                restarts: 0,
                last_row: row,
                last_seen: at,
            };
            streams
                .map
                .insert(key.to_string(), Stream::new(status, metric_host, now));
        }
        // Every stream's due gaps, once a second: quiet streams' losses are
        // counted while others keep the workers busy.
        if streams
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
        {
            streams.swept = Some(now);
            for stream in streams.map.values_mut() {
                stream.close_due(now);
            }
        }
        rows.keys.clear();
        rows.rows.clear();
    }

    /// Counts what has been missing for [`GRACE`] (called when idle too, so
    /// that a stream that went quiet still has its losses counted).
    pub fn close_due(&self, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in streams.map.values_mut() {
            stream.close_due(now);
        }
    }

    /// Every stream now, by host and tag.
    pub fn snapshot(&self) -> Vec<StreamStatus> {
        self.close_due(Instant::now());
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<StreamStatus> = streams.map.values().map(|s| s.status.clone()).collect();
        drop(streams);
        out.sort_by(|a, b| (&a.host, &a.tag).cmp(&(&b.host, &b.tag)));
        out
    }
}

#[cfg(test)]
mod tests;
