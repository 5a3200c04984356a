//! `herald replay`: sends what a dead-letter file kept once the cause is fixed
//! (a field-type conflict in InfluxDB, a wrong webhook URL, a parser that did
//! not know a format, a stop that outlasted its grace period).
//!
//! The file is read line by line (never whole). An `event` record goes back to
//! the sink that gave up on it (or to `--sink`); a `datagram` record is parsed
//! again with today's parser and goes to every sink whose `match` it meets (or
//! to `--sink` when that matches). Sinks are built from the config as `herald
//! run` builds them, but with memory buffers only (a running herald may own
//! the disk buffers), `overflow = "block"` (nothing is dropped for speed), and
//! at most `max_retries` retries (5 when unset), so a destination that is still
//! down ends the replay instead of holding it forever.
//!
//! Whatever still fails is written to a new dead-letter file, never to the one
//! being read. The file read is left as it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::buffer::BufferConfig;
use crate::config::Config;
use crate::deadletter::{self, DeadLetterConfig, DeadLetters, Record};
use crate::event::Event;
use crate::parse::Parser;
use crate::route::{Enricher, Matcher, Verdict};
use crate::sinks::driver::SinkStatus;
use crate::sinks::queue::{Overflow, Stage};
use crate::sinks::{self, SinkConfig};

/// What to replay and where.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The dead-letter file to read.
    pub dead_letter: PathBuf,
    /// Send only to this sink.
    pub sink: Option<String>,
    /// Only records with this `reason` (e.g. `sink_failed`, `shutdown`, `unknown_tag`).
    pub reason: Option<String>,
    /// Only records that failed (events) or arrived (datagrams) at or after this time.
    pub since: Option<Timestamp>,
    /// Read, parse and route, but send nothing.
    pub dry_run: bool,
    /// Where what still fails goes; default: next to the file read, named
    /// `<file>.replay-<time>.jsonl`.
    pub out: Option<PathBuf>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Lines read.
    pub records: u64,
    /// Records the filters left out.
    pub filtered: u64,
    /// Events handed to each sink.
    pub sent: BTreeMap<String, u64>,
    /// Records that could not be sent anywhere (not JSON, a sink that no
    /// longer exists, a datagram that still does not parse, no matching sink),
    /// written to the new dead-letter file as they were.
    pub unsendable: u64,
    /// Events the sinks gave up on again (in the new dead-letter file).
    pub failed: u64,
    /// The new dead-letter file, when anything was written to it.
    pub out: Option<PathBuf>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The dead-letter file cannot be read.
    #[error("cannot read the dead-letter file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--sink` names no configured sink.
    #[error("--sink {name}: no such sink in the config; it has {known}")]
    NoSuchSink {
        /// The name given.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The new dead-letter file cannot be created.
    #[error("cannot create {}", .path.display())]
    Out {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A sink cannot be started.
    #[error(transparent)]
    Sink(#[from] sinks::StartError),
    /// The parser cannot be built from the config.
    #[error("parse: {0}")]
    Parse(String),
}

/// One sink as the replay feeds it.
struct Target {
    name: String,
    matcher: Matcher,
    status: Option<Arc<SinkStatus>>,
    stage: Stage,
}

/// Replays `options.dead_letter` through the sinks of `config`. `progress` is
/// called with the bytes read so far (of `total_bytes`). Must run inside a
/// multi-threaded tokio runtime.
///
/// # Errors
///
/// [`ReplayError`] when the file cannot be read, `--sink` names no sink, or a
/// sink cannot be started. Records that cannot be sent are not errors: they
/// go to the new dead-letter file.
pub async fn replay(
    config: &Config,
    options: &ReplayOptions,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let path = &options.dead_letter;
    let file = File::open(path).map_err(|source| ReplayError::Read {
        path: path.clone(),
        source,
    })?;
    if let Some(name) = &options.sink
        && !config.sinks.contains_key(name)
    {
        return Err(ReplayError::NoSuchSink {
            name: name.clone(),
            known: config.sinks.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let out_path = options.out.clone().unwrap_or_else(|| {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".replay-{stamp}.jsonl"));
        path.with_file_name(name)
    });
    let (dead, writer) = if options.dry_run {
        (DeadLetters::disabled(), None)
    } else {
        let (dead, writer) = deadletter::start(&DeadLetterConfig {
            path: out_path.clone(),
            max_bytes: 0,
            max_files: 1,
            queue_records: 10_000,
            queue_bytes: 16 * 1024 * 1024,
        })
        .map_err(|source| ReplayError::Out {
            path: out_path.clone(),
            source,
        })?;
        (dead, Some(writer))
    };

    // The sinks, as `herald run` builds them but kept in memory and patient.
    let chosen: BTreeMap<String, SinkConfig> = config
        .sinks
        .iter()
        .filter(|(name, _)| options.sink.as_ref().is_none_or(|only| only == *name))
        .map(|(name, sink)| {
            let mut sink = sink.clone();
            sink.delivery.buffer = BufferConfig::default();
            sink.delivery.overflow = Overflow::Block;
            sink.delivery.max_retries = Some(sink.delivery.max_retries.unwrap_or(5));
            (name.clone(), sink)
        })
        .collect();
    let mut tasks = JoinSet::new();
    let statuses = if options.dry_run {
        Vec::new()
    } else {
        sinks::spawn_all(&chosen, &config.data_dir, &dead, &mut tasks)?
            .into_iter()
            .map(|driver| driver.status)
            .collect()
    };
    let mut targets: Vec<Target> = chosen
        .iter()
        .enumerate()
        .map(|(i, (name, sink))| Target {
            name: name.clone(),
            matcher: Matcher::new(&sink.delivery.match_),
            status: statuses.get(i).cloned(),
            stage: Stage::default(),
        })
        .collect();

    let mut parser =
        Parser::new(&config.parse).map_err(|err| ReplayError::Parse(err.to_string()))?;
    // Validated with the config.
    let enricher = Enricher::new(&config.tags, &config.categorise).unwrap_or_default();
    let mut summary = ReplaySummary::default();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut read_bytes = 0u64;
    let mut sequence = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| ReplayError::Read {
                path: path.clone(),
                source,
            })?;
        if read == 0 {
            break;
        }
        read_bytes += read as u64;
        progress(read_bytes);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.records += 1;
        let record: Value = match serde_json::from_slice(&line) {
            Ok(Value::Object(record)) => Value::Object(record),
            _ => {
                summary.unsendable += 1;
                dead.send_waiting(Record::verbatim(&line), std::time::Duration::from_secs(5));
                continue;
            }
        };
        if !selected(&record, options) {
            summary.filtered += 1;
            continue;
        }
        let delivered_to = match record["kind"].as_str() {
            Some("event") => {
                let event = serde_json::to_vec(&record["event"])
                    .ok()
                    .and_then(|json| Event::from_json(&json).ok());
                let sink = options.sink.as_deref().or_else(|| record["sink"].as_str());
                match (event, sink) {
                    (Some(mut event), Some(sink)) => {
                        event.sequence = sequence;
                        sequence += 1;
                        hand_to(
                            &mut targets,
                            &mut summary.sent,
                            &Arc::new(event),
                            |target, _| target.name == sink,
                        )
                    }
                    _ => 0,
                }
            }
            Some("datagram") => {
                let parsed = datagram_event(&record, &mut parser);
                match parsed {
                    Some(mut event) => {
                        event.sequence = sequence;
                        sequence += 1;
                        if enricher.apply(&mut event) == Verdict::Drop {
                            summary.filtered += 1;
                            continue;
                        }
                        hand_to(
                            &mut targets,
                            &mut summary.sent,
                            &Arc::new(event),
                            |target, event| target.matcher.matches(event),
                        )
                    }
                    None => 0,
                }
            }
            _ => 0,
        };
        if delivered_to == 0 {
            summary.unsendable += 1;
            dead.send_waiting(Record::verbatim(&line), std::time::Duration::from_secs(5));
        }
    }
    for target in &mut targets {
        if let Some(status) = &target.status {
            status.queue.commit(&mut target.stage);
            status.queue.close();
        }
    }
    while tasks.join_next().await.is_some() {}
    dead.finish();
    drop(dead);
    if let Some(writer) = writer {
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
    let written = File::open(&out_path)
        .map(|file| BufReader::new(file).split(b'\n').count() as u64)
        .unwrap_or(0);
    summary.failed = written.saturating_sub(summary.unsendable);
    if written > 0 {
        summary.out = Some(out_path);
    } else if !options.dry_run {
        let _ = std::fs::remove_file(&out_path);
    }
    Ok(summary)
}

/// Hands `event` to every target `wanted` picks; returns how many took it.
fn hand_to(
    targets: &mut [Target],
    sent: &mut BTreeMap<String, u64>,
    event: &Arc<Event>,
    wanted: impl Fn(&Target, &Event) -> bool,
) -> usize {
    let mut taken = 0;
    for target in targets.iter_mut() {
        if !wanted(target, event) {
            continue;
        }
        if let Some(status) = &target.status {
            status.queue.push(event, &mut target.stage);
            status.queue.commit(&mut target.stage);
        }
        *sent.entry(target.name.clone()).or_default() += 1;
        taken += 1;
    }
    taken
}

/// Whether the filters let `record` through.
fn selected(record: &Value, options: &ReplayOptions) -> bool {
    if let Some(reason) = &options.reason
        && record["reason"].as_str() != Some(reason.as_str())
    {
        return false;
    }
    if let Some(since) = options.since {
        let at = record["failed_at"]
            .as_str()
            .or_else(|| record["received_at"].as_str())
            .and_then(|text| text.parse::<Timestamp>().ok());
        if at.is_none_or(|at| at < since) {
            return false;
        }
    }
    true
}

/// A `datagram` record parsed again with today's parser.
fn datagram_event(record: &Value, parser: &mut Parser) -> Option<Event> {
    let bytes = deadletter::base64_decode(record["raw_base64"].as_str()?)?;
    let sender = record["sender"].as_str()?.parse().ok()?;
    let received_at = record["received_at"].as_str()?.parse().ok()?;
    parser.parse(&bytes, sender, received_at).ok()
}

/// The size of the file to replay, for a progress bar.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
