//! The status page at `/`: what an admin on call wants to see at a glance,
//! live, in a browser (a phone will do), with nothing fetched from elsewhere.
//!
//! - [`StatusBoard`] keeps 15 minutes of history: every [`INTERVAL`] it reads
//!   herald's own counters (the `/metrics` text, so the page and Prometheus
//!   never disagree) and keeps their sums by event type, source, level and
//!   host, drops by stage and reason, and deliveries per sink. Only those
//!   sums are kept, so its memory does not grow with the label sets.
//! - [`document`] is the page's data: the history as events a second, drops,
//!   every sink's state and counts, every Sense host with its last event and
//!   loss estimate, the listeners and the effective config (secrets redacted).
//!   `GET /status.json` answers it once; `GET /status/stream` sends it again
//!   every [`INTERVAL`] as Server-Sent Events.
//! - The page itself (HTML, CSS and script, embedded in the binary) renders
//!   that, and shows recent events from the same stream `herald tap` reads.
//!
//! The HTTP side (routes, the token, headers) is in [`crate::http`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::http;
use crate::pipeline::Health;

mod prometheus;

/// How often the history takes a sample, and the stream sends the page's data.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Samples kept: 15 minutes, and the one before them.
const SAMPLES: usize = 15 * 60 / 5 + 1;

/// Status streams open at once; more are refused (HTTP 503).
pub const MAX_STREAMS: usize = 16;

/// The page.
pub const PAGE_HTML: &str = include_str!("page.html");
/// Its script.
pub const PAGE_JS: &str = include_str!("page.js");
/// Its style.
pub const PAGE_CSS: &str = include_str!("page.css");

/// One sample: when, and the sums of herald's counters then.
#[derive(Debug, Clone)]
struct Sample {
    at: Timestamp,
    sums: BTreeMap<String, f64>,
}

/// Fifteen minutes of herald's counters.
#[derive(Debug, Default)]
pub struct StatusBoard {
    samples: Mutex<VecDeque<Sample>>,
    /// When each host's event count last moved (bounded like host labels).
    host_seen: Mutex<BTreeMap<String, Timestamp>>,
    streams: AtomicUsize,
}

/// A status stream while it runs; dropping it frees its place.
#[derive(Debug)]
pub struct StreamSlot<'a>(&'a StatusBoard);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    /// Takes a sample of `metrics` (the `/metrics` text) at `at`.
    pub fn sample(&self, metrics: &str, at: Timestamp) {
        let sums = prometheus::sums(metrics);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = samples.back() {
            let mut seen = self
                .host_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, value) in &sums {
                if let Some(host) = key.strip_prefix("host/")
                    && last.sums.get(key).is_none_or(|before| value > before)
                {
                    seen.insert(host.to_string(), at);
                }
            }
        }
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample { at, sums });
    }

    /// Opens a status stream; `None` when [`MAX_STREAMS`] are open.
    pub fn open_stream(&self) -> Option<StreamSlot<'_>> {
        let open = self.streams.fetch_add(1, Ordering::Relaxed);
        if open >= MAX_STREAMS {
            self.streams.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(StreamSlot(self))
    }
}

/// Takes a sample of `render()` every [`INTERVAL`], forever.
pub async fn keep_history(board: std::sync::Arc<StatusBoard>, render: impl Fn() -> String) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        board.sample(&render(), Timestamp::now());
    }
}

/// The page's data (see the module's documentation); `metrics` is the
/// `/metrics` text now, for totals that do not wait for the next sample.
pub fn document(board: &StatusBoard, health: &Health, metrics: &str) -> Value {
    let now = prometheus::sums(metrics);
    let samples: Vec<Sample> = board
        .samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let sum = |prefix: &str, sums: &BTreeMap<String, f64>| -> f64 {
        sums.iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(_, value)| value)
            .sum()
    };
    // Events a second between consecutive samples, per key under `prefix`.
    let series = |prefix: &str| -> Value {
        let mut names: Vec<&str> = Vec::new();
        for sample in &samples {
            for key in sample.sums.keys() {
                if let Some(name) = key.strip_prefix(prefix)
                    && !names.contains(&name)
                {
                    names.push(name);
                }
            }
        }
        let mut out = serde_json::Map::new();
        for name in names {
            let key = format!("{prefix}{name}");
            let points: Vec<Value> = samples
                .windows(2)
                .map(|pair| {
                    let seconds = pair[1]
                        .at
                        .duration_since(pair[0].at)
                        .as_secs_f64()
                        .max(0.001);
                    let before = pair[0].sums.get(&key).copied().unwrap_or(0.0);
                    let after = pair[1].sums.get(&key).copied().unwrap_or(0.0);
                    json!(round((after - before).max(0.0) / seconds))
                })
                .collect();
            out.insert(name.to_string(), Value::Array(points));
        }
        Value::Object(out)
    };
    let oldest = samples.first().map(|sample| &sample.sums);
    let in_window = |key: &str| -> f64 {
        let before = oldest
            .and_then(|sums| sums.get(key))
            .copied()
            .unwrap_or(0.0);
        (now.get(key).copied().unwrap_or(0.0) - before).max(0.0)
    };
    let drops: Vec<Value> = now
        .iter()
        .filter_map(|(key, total)| {
            let (stage, reason) = key.strip_prefix("drop/")?.split_once('/')?;
            Some(json!({
                "stage": stage,
                "reason": reason,
                "total": total,
                "last_15m": in_window(key),
            }))
        })
        .collect();
    let sinks: Vec<Value> = health
        .sinks()
        .iter()
        .map(|sink| {
            let count = |what: &str| {
                now.get(&format!("sink/{}/{what}", sink.name))
                    .copied()
                    .unwrap_or(0.0)
            };
            let mut value = http::sink_json(sink);
            value["name"] = json!(sink.name);
            value["delivered"] = json!(count("delivered"));
            value["retries"] = json!(count("retries"));
            value["failed"] = json!(count("failed"));
            value["last_error_at"] = json!(sink.last_error_at().map(|t| t.to_string()));
            value["last_success"] = json!(sink.last_success().map(|t| t.to_string()));
            value
        })
        .collect();
    let (status, _) = health.overall();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "status": status,
        "generated_at": Timestamp::now().to_string(),
        "uptime_seconds": health.started.elapsed().as_secs(),
        "interval_seconds": INTERVAL.as_secs(),
        "totals": {
            "datagrams": sum("datagrams", &now),
            "events": sum("type/", &now),
            "dropped": sum("drop/", &now),
            "delivered": sinks.iter().filter_map(|s| s["delivered"].as_f64()).sum::<f64>(),
        },
        "rates": {
            "times": samples.iter().skip(1).map(|s| s.at.to_string()).collect::<Vec<_>>(),
            "by_type": series("type/"),
            "by_source": series("source/"),
            "by_level": series("level/"),
        },
        "drops": drops,
        "sinks": sinks,
        "hosts": hosts(board, health, &now, &in_window),
        "listeners": http::listeners_json(health),
        "allowlist": http::allowlist_json(health),
        "taps_open": health.taps.len(),
        "config": crate::redact::string(
            health.config_toml.lock().unwrap_or_else(PoisonError::into_inner).clone()
        ),
    })
}

/// Every Sense host: its events, when the last came, and what its
/// appenders lost on the way.
fn hosts(
    board: &StatusBoard,
    health: &Health,
    now: &BTreeMap<String, f64>,
    in_window: &dyn Fn(&str) -> f64,
) -> Vec<Value> {
    let seen = board
        .host_seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let streams = health.senders.snapshot();
    let mut names: Vec<&str> = now
        .keys()
        .filter_map(|key| key.strip_prefix("host/"))
        .chain(streams.iter().map(|stream| stream.host.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|host| {
            let own: Vec<_> = streams.iter().filter(|s| s.host == host).collect();
            let received: u64 = own.iter().map(|s| s.received).sum();
            let lost: u64 = own.iter().map(|s| s.lost).sum();
            let last_row_seen = own.iter().map(|s| s.last_seen).max();
            let last_seen = last_row_seen.into_iter().chain(seen.get(host).copied()).max();
            let key = format!("host/{host}");
            json!({
                "host": host,
                "events": now.get(&key).copied().unwrap_or(0.0),
                "events_last_15m": in_window(&key),
                "last_seen": last_seen.map(|t| t.to_string()),
                "rows_received": received,
                "lost": lost,
                "loss_ratio": if received + lost == 0 { 0.0 } else { lost as f64 / (received + lost) as f64 },
                "restarts": own.iter().map(|s| s.restarts).sum::<u64>(),
                "appenders": own.iter().map(|s| json!({
                    "tag": s.tag,
                    "received": s.received,
                    "lost": s.lost,
                    "late": s.late,
                    "restarts": s.restarts,
                    "last_row": s.last_row,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Two decimals are plenty for a chart.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(log: u32, errors: u32, kernel: u32) -> String {
        format!(
            "# TYPE herald_events_total counter\n\
             herald_events_total{{type=\"log\",source=\"engine\",level=\"INFO\",host=\"node1\"}} {log}\n\
             herald_events_total{{type=\"log\",source=\"engine\",level=\"ERROR\",host=\"node2\"}} {errors}\n\
             herald_ingest_kernel_drops_total{{listener=\"0.0.0.0:9996\"}} {kernel}\n"
        )
    }

    #[test]
    fn the_history_gives_events_a_second_and_when_hosts_were_last_seen() {
        let board = StatusBoard::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        board.sample(&metrics(0, 0, 0), t0);
        board.sample(&metrics(50, 5, 0), t0 + Duration::from_secs(5));
        board.sample(&metrics(100, 5, 3), t0 + Duration::from_secs(10));
        let samples = board.samples.lock().unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2].sums["level/INFO"], 100.0);
        assert_eq!(samples[2].sums["drop/ingest/kernel_receive_buffer"], 3.0);
        drop(samples);
        let seen = board.host_seen.lock().unwrap();
        assert_eq!(seen["node1"], t0 + Duration::from_secs(10));
        assert_eq!(seen["node2"], t0 + Duration::from_secs(5));
    }

    #[test]
    fn the_history_keeps_fifteen_minutes() {
        let board = StatusBoard::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        for i in 0..400 {
            board.sample(
                &metrics(i, 0, 0),
                t0 + Duration::from_secs(5 * u64::from(i)),
            );
        }
        assert_eq!(board.samples.lock().unwrap().len(), SAMPLES);
    }

    #[test]
    fn status_streams_are_bounded() {
        let board = StatusBoard::new();
        let open: Vec<_> = (0..MAX_STREAMS)
            .map(|_| board.open_stream().unwrap())
            .collect();
        assert!(board.open_stream().is_none());
        drop(open);
        assert!(board.open_stream().is_some());
    }
}
