//! Logging datagrams herald could not use, within one global budget.
//!
//! Anyone who can reach the UDP port decides how many datagrams are refused
//! or unparsable, and UDP source addresses can be forged, so these are never
//! logged per datagram: a thread notes what it saw in a [`Tally`] (no lock, no
//! atomic) while it works through a batch, and hands the tally to the one
//! [`FloodLog`] once per batch. The flood log lets at most
//! [`LINES_PER_SECOND`] example lines through per second, for the whole
//! process however many senders there are, and once a minute writes one
//! summary with the counts by kind, the lines it held back and the senders
//! seen most (an approximate top list of bounded size). Every datagram is
//! still counted exactly in the metrics by the caller; this module only
//! decides what reaches the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// Example lines let through per second, over every kind and thread.
pub const LINES_PER_SECOND: u32 = 10;

/// How often the summary is written (when anything happened).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Senders the summary's top list follows.
const TOP_SOURCES: usize = 64;

/// Distinct senders one batch's tally keeps apart (the rest count only in totals).
const BATCH_SOURCES: usize = 16;

/// Senders the summary names.
const SUMMARY_SOURCES: usize = 5;

/// Why a datagram was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unused {
    /// The sender is not in `ingest.allow`.
    NotAllowed,
    /// Longer than `ingest.max_datagram_bytes`.
    Oversized,
    /// Over `ingest.max_datagrams_per_source_per_second`.
    RateLimited,
    /// Not a Sense event.
    Unparsable,
}

impl Unused {
    const ALL: [Unused; 4] = [
        Unused::NotAllowed,
        Unused::Oversized,
        Unused::RateLimited,
        Unused::Unparsable,
    ];

    /// The metric-label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Unused::NotAllowed => "not_allowed",
            Unused::Oversized => "oversized",
            Unused::RateLimited => "rate_limited",
            Unused::Unparsable => "unparsable",
        }
    }
}

/// One datagram a log line shows as the example of its kind.
#[derive(Debug, Clone)]
struct Example {
    sender: SocketAddr,
    detail: String,
}

/// What one thread saw in one batch: filled per datagram without locks, then
/// handed to [`FloodLog::report`].
#[derive(Debug, Default)]
pub struct Tally {
    counts: [u64; 4],
    examples: [Option<Example>; 4],
    sources: Vec<(IpAddr, u64)>,
}

impl Tally {
    /// Notes one unused datagram. `detail` (a parse error and a preview, say)
    /// is built only for the first datagram of its kind in the batch.
    pub fn note(&mut self, kind: Unused, sender: SocketAddr, detail: impl FnOnce() -> String) {
        let index = kind as usize;
        self.counts[index] += 1;
        if self.examples[index].is_none() {
            self.examples[index] = Some(Example {
                sender,
                detail: detail(),
            });
        }
        let ip = sender.ip();
        if let Some(entry) = self.sources.iter_mut().find(|(known, _)| *known == ip) {
            entry.1 += 1;
        } else if self.sources.len() < BATCH_SOURCES {
            self.sources.push((ip, 1));
        }
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }

    fn clear(&mut self) {
        self.counts = [0; 4];
        self.examples = Default::default();
        self.sources.clear();
    }
}

/// The senders seen most, approximately: a fixed number of counters; a new
/// sender takes the place of the smallest and inherits its count (the
/// "space-saving" method), so a heavy sender is never missed and memory
/// stays fixed however many addresses are forged.
#[derive(Debug, Default)]
struct TopSources {
    entries: Vec<(IpAddr, u64)>,
}

impl TopSources {
    fn add(&mut self, ip: IpAddr, count: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|(known, _)| *known == ip) {
            entry.1 += count;
        } else if self.entries.len() < TOP_SOURCES {
            self.entries.push((ip, count));
        } else if let Some(smallest) = self.entries.iter_mut().min_by_key(|(_, n)| *n) {
            *smallest = (ip, smallest.1 + count);
        }
    }

    fn take_top(&mut self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        entries.truncate(n);
        entries
    }
}

#[derive(Debug)]
struct State {
    /// The second (since `started`) the line budget is counted in, and the
    /// lines let through in it.
    second: u64,
    lines: u32,
    /// Since the last summary.
    counts: [u64; 4],
    held_back: u64,
    top: TopSources,
    summarised: Instant,
}

/// The process-wide budget for lines about unused datagrams.
#[derive(Debug)]
pub struct FloodLog {
    lines_per_second: u32,
    summary_every: Duration,
    started: Instant,
    state: Mutex<State>,
}

/// A line to write once the lock is released.
enum Line {
    Example {
        kind: Unused,
        listener: String,
        in_batch: u64,
        example: Example,
    },
    Summary {
        counts: [u64; 4],
        held_back: u64,
        top: Vec<(IpAddr, u64)>,
        seconds: u64,
    },
}

impl FloodLog {
    /// A flood log letting `lines_per_second` example lines through and
    /// summarising every `summary_every`.
    pub fn new(lines_per_second: u32, summary_every: Duration) -> FloodLog {
        let now = Instant::now();
        FloodLog {
            lines_per_second,
            summary_every,
            started: now,
            state: Mutex::new(State {
                second: 0,
                lines: 0,
                counts: [0; 4],
                held_back: 0,
                top: TopSources::default(),
                summarised: now,
            }),
        }
    }

    /// The one the pipeline uses.
    pub fn global() -> &'static FloodLog {
        static GLOBAL: OnceLock<FloodLog> = OnceLock::new();
        GLOBAL.get_or_init(|| FloodLog::new(LINES_PER_SECOND, SUMMARY_EVERY))
    }

    /// Takes in a batch's tally (and clears it): logs an example line per
    /// kind while the budget lasts, and the summary when one is due.
    /// `listener` names where the batch came from.
    pub fn report(&self, listener: &str, tally: &mut Tally, now: Instant) {
        if tally.is_empty() {
            self.tick(now);
            return;
        }
        let mut lines = Vec::new();
        {
            let mut state = self.lock();
            let second = now.saturating_duration_since(self.started).as_secs();
            if second != state.second {
                state.second = second;
                state.lines = 0;
            }
            for kind in Unused::ALL {
                let index = kind as usize;
                let count = tally.counts[index];
                state.counts[index] += count;
                let Some(example) = tally.examples[index].take() else {
                    continue;
                };
                if state.lines < self.lines_per_second {
                    state.lines += 1;
                    lines.push(Line::Example {
                        kind,
                        listener: listener.to_string(),
                        in_batch: count,
                        example,
                    });
                } else {
                    state.held_back += 1;
                }
            }
            for &(ip, count) in &tally.sources {
                state.top.add(ip, count);
            }
            lines.extend(self.summary_if_due(&mut state, now));
        }
        tally.clear();
        for line in lines {
            write(line);
        }
    }

    /// Writes the summary if one is due; for threads that are idle.
    pub fn tick(&self, now: Instant) {
        let line = self.summary_if_due(&mut self.lock(), now);
        if let Some(line) = line {
            write(line);
        }
    }

    fn summary_if_due(&self, state: &mut State, now: Instant) -> Option<Line> {
        let elapsed = now.saturating_duration_since(state.summarised);
        if elapsed < self.summary_every {
            return None;
        }
        state.summarised = now;
        let counts = std::mem::take(&mut state.counts);
        let held_back = std::mem::take(&mut state.held_back);
        let top = state.top.take_top(SUMMARY_SOURCES);
        (counts.iter().any(|&n| n > 0)).then_some(Line::Summary {
            counts,
            held_back,
            top,
            seconds: elapsed.as_secs(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn write(line: Line) {
    match line {
        Line::Example {
            kind,
            listener,
            in_batch,
            example: Example { sender, detail },
        } => match kind {
            Unused::NotAllowed => warn!(listener, %sender, in_batch,
                "refused datagrams from a sender not in ingest.allow"),
            Unused::Oversized => warn!(listener, %sender, in_batch,
                "dropped datagrams over ingest.max_datagram_bytes"),
            Unused::RateLimited => warn!(listener, %sender, in_batch,
                "dropped datagrams over ingest.max_datagrams_per_source_per_second"),
            Unused::Unparsable => warn!(%sender, in_batch, %detail,
                "dropping datagrams that are not Sense events (kept in the dead-letter file when one is configured)"),
        },
        Line::Summary {
            counts,
            held_back,
            top,
            seconds,
        } => {
            let counts: Vec<String> = Unused::ALL
                .iter()
                .map(|kind| format!("{}={}", kind.as_str(), counts[*kind as usize]))
                .collect();
            let top: Vec<String> = top.iter().map(|(ip, n)| format!("{ip}={n}")).collect();
            warn!(
                seconds,
                unused = %counts.join(" "),
                lines_held_back = held_back,
                top_senders = %top.join(" "),
                "datagrams herald could not use in the last minute (example lines are limited to {LINES_PER_SECOND} a second; counts are in herald_ingest_rejected_total and herald_parse_errors_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(i: u32) -> SocketAddr {
        SocketAddr::new(
            IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000u32 + i)),
            5000,
        )
    }

    #[test]
    fn a_tally_keeps_one_example_per_kind_and_bounded_senders() {
        let mut tally = Tally::default();
        let mut built = 0;
        for i in 0..1000 {
            tally.note(Unused::NotAllowed, sender(i), || {
                built += 1;
                String::new()
            });
        }
        assert_eq!(built, 1);
        assert_eq!(tally.counts[Unused::NotAllowed as usize], 1000);
        assert_eq!(tally.sources.len(), BATCH_SOURCES);
    }

    #[test]
    fn the_line_budget_is_global_and_per_second() {
        let log = FloodLog::new(3, Duration::from_secs(3600));
        let start = log.started;
        for i in 0..10 {
            let mut tally = Tally::default();
            tally.note(Unused::NotAllowed, sender(i), String::new);
            log.report("l", &mut tally, start);
            assert!(tally.is_empty());
        }
        {
            let state = log.lock();
            assert_eq!(state.lines, 3);
            assert_eq!(state.held_back, 7);
            assert_eq!(state.counts[Unused::NotAllowed as usize], 10);
        }
        let mut tally = Tally::default();
        tally.note(Unused::Oversized, sender(1), String::new);
        log.report("l", &mut tally, start + Duration::from_secs(1));
        assert_eq!(log.lock().lines, 1, "a new second, a new budget");
    }

    #[test]
    fn the_summary_resets_the_counts_and_names_the_heaviest_sender() {
        let log = FloodLog::new(10, Duration::from_secs(60));
        let start = log.started;
        let mut tally = Tally::default();
        for i in 0..5000u32 {
            // One heavy sender among thousands of forged ones.
            let from = if i % 2 == 0 { sender(1) } else { sender(i) };
            tally.note(Unused::NotAllowed, from, String::new);
            if i % 10 == 9 {
                log.report("l", &mut tally, start);
            }
        }
        {
            let state = log.lock();
            assert!(state.top.entries.len() <= TOP_SOURCES);
            assert_eq!(
                state
                    .top
                    .entries
                    .iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|e| e.0),
                Some(sender(1).ip())
            );
        }
        let Some(Line::Summary { counts, top, .. }) =
            log.summary_if_due(&mut log.lock(), start + Duration::from_secs(61))
        else {
            panic!("a summary is due");
        };
        assert_eq!(counts[Unused::NotAllowed as usize], 5000);
        assert_eq!(top[0].0, sender(1).ip());
        assert!(top[0].1 >= 2500);
        let state = log.lock();
        assert_eq!(state.counts, [0; 4]);
        assert!(state.top.entries.is_empty());
    }

    #[test]
    fn no_summary_when_nothing_happened() {
        let log = FloodLog::new(10, Duration::from_secs(60));
        let later = log.started + Duration::from_secs(120);
        assert!(log.summary_if_due(&mut log.lock(), later).is_none());
    }
}
