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
use crate::event::{Event, decode};
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
    /// The first [`ReplaySummary::REASONS_KEPT`] of them: line number and why.
    pub unsendable_reasons: Vec<(u64, String)>,
    /// Events the sinks gave up on again (in the new dead-letter file).
    pub failed: u64,
    /// The new dead-letter file, when anything was written to it.
    pub out: Option<PathBuf>,
}

impl ReplaySummary {
    /// Unsendable records whose reason is kept for the report.
    pub const REASONS_KEPT: usize = 5;

    /// Counts the record on `line` as unsendable, for `reason`.
    fn unsendable(&mut self, line: u64, reason: String) {
        self.unsendable += 1;
        if self.unsendable_reasons.len() < Self::REASONS_KEPT {
            self.unsendable_reasons.push((line, reason));
        }
    }
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
    let mut line_number = 0u64;
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
        line_number += 1;
        progress(read_bytes);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.records += 1;
        let record: Value = match serde_json::from_slice(&line) {
            Ok(Value::Object(record)) => Value::Object(record),
            _ => {
                summary.unsendable(line_number, "not a JSON object".into());
                dead.send_waiting(Record::verbatim(&line), std::time::Duration::from_secs(5));
                continue;
            }
        };
        if !selected(&record, options) {
            summary.filtered += 1;
            continue;
        }
        let delivered = match record["kind"].as_str() {
            Some("event") => {
                let event = match &record["event"] {
                    event @ Value::Object(_) => serde_json::to_vec(event)
                        .map_err(|err| err.to_string())
                        .and_then(|json| Event::from_json(&json))
                        .map_err(|err| under_event(&err)),
                    _ => Err("event: missing or not an object".into()),
                };
                let sink = options
                    .sink
                    .as_deref()
                    .or_else(|| record["sink"].as_str())
                    .ok_or_else(|| "sink: missing (name one with --sink)".to_string());
                event.and_then(|mut event| {
                    let sink = sink?;
                    event.sequence = sequence;
                    sequence += 1;
                    let taken = hand_to(
                        &mut targets,
                        &mut summary.sent,
                        &Arc::new(event),
                        |target, _| target.name == sink,
                    );
                    if taken == 0 {
                        return Err(format!(
                            "sink: {sink:?} is not a sink of the config (name another with --sink)"
                        ));
                    }
                    Ok(())
                })
            }
            Some("datagram") => datagram_event(&record, &mut parser).and_then(|mut event| {
                event.sequence = sequence;
                sequence += 1;
                if enricher.apply(&mut event) == Verdict::Drop {
                    summary.filtered += 1;
                    return Ok(());
                }
                let taken = hand_to(
                    &mut targets,
                    &mut summary.sent,
                    &Arc::new(event),
                    |target, event| target.matcher.matches(event),
                );
                if taken == 0 {
                    return Err("no sink's match takes the event".into());
                }
                Ok(())
            }),
            _ => Err(format!(
                "kind: {} is neither \"event\" nor \"datagram\"",
                record["kind"]
            )),
        };
        if let Err(reason) = delivered {
            summary.unsendable(line_number, reason);
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
fn datagram_event(record: &Value, parser: &mut Parser) -> Result<Event, String> {
    let bytes = record["raw_base64"]
        .as_str()
        .and_then(deadletter::base64_decode)
        .ok_or("raw_base64: missing or not base64")?;
    let sender = record["sender"]
        .as_str()
        .and_then(|sender| sender.parse().ok())
        .ok_or("sender: missing or not an address and port")?;
    let received_at = record["received_at"]
        .as_str()
        .and_then(|at| at.parse().ok())
        .ok_or("received_at: missing or not an RFC 3339 time")?;
    parser
        .parse(&bytes, sender, received_at)
        .map_err(|err| format!("the datagram still does not parse: {err}"))
}

/// The size of the file to replay, for a progress bar.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Places an error of [`Event::from_json`] under the record's `event` key:
/// `event: …` for the two errors about the whole object, `event.task_id: …`
/// for the rest, which start with the key.
fn under_event(err: &str) -> String {
    if err == decode::TOO_LARGE || err.starts_with(decode::NOT_AN_OBJECT) {
        format!("event: {err}")
    } else {
        format!("event.{err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_events;

    /// A dead-letter record of `event` (JSON text) for `sink`.
    fn event_record(sink: &str, event: &str) -> String {
        format!(
            r#"{{"kind":"event","failed_at":"2026-11-23T08:00:00Z","reason":"sink_failed","sink":"{sink}","error":"down","event":{event}}}"#
        )
    }

    /// A dry run over a dead-letter file of `lines`, with one file sink `out`.
    async fn dry_run(lines: &[String]) -> ReplaySummary {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(
            &format!(
                "[ingest]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n\
                 [sinks.out]\ntype = \"file\"\npath = {:?}\n",
                dir.path().join("out.jsonl")
            ),
            &dir.path().join("herald.toml"),
        )
        .unwrap();
        let file = dir.path().join("dead.jsonl");
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let options = ReplayOptions {
            dead_letter: file,
            sink: None,
            reason: None,
            since: None,
            dry_run: true,
            out: Some(dir.path().join("again.jsonl")),
        };
        replay(&config, &options, |_| {}).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn each_record_that_cannot_be_sent_is_reported_with_its_line_and_why() {
        let (_, event) = &test_events()[1];
        let good = event.to_json();
        let mut bad: serde_json::Value = serde_json::from_str(&good).unwrap();
        bad["sender"] = "somewhere".into();
        let mut garbage = Vec::new();
        deadletter::base64(&mut garbage, b"not a Sense datagram");
        let lines = [
            event_record("out", &good),
            String::new(),
            event_record("out", &bad.to_string()),
            event_record("gone", &good),
            "not json".into(),
            format!(
                r#"{{"kind":"datagram","received_at":"2026-11-23T08:00:00Z","sender":"10.0.0.5:61000","reason":"unknown_tag","raw_base64":"{}"}}"#,
                String::from_utf8(garbage).unwrap()
            ),
            r#"{"kind":"metric"}"#.into(),
            r#"{"kind":"datagram","raw_base64":""}"#.into(),
        ];
        let summary = dry_run(&lines).await;
        assert_eq!(summary.records, 7);
        assert_eq!(summary.sent.get("out"), Some(&1));
        assert_eq!(summary.unsendable, 6);
        let reasons: Vec<(u64, &str)> = summary
            .unsendable_reasons
            .iter()
            .map(|(line, reason)| (*line, reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), ReplaySummary::REASONS_KEPT);
        let expected = [
            (3, "event.sender: "),
            (4, "sink: \"gone\" is not a sink of the config"),
            (5, "not a JSON object"),
            (6, "the datagram still does not parse: "),
            (7, "kind: \"metric\" is neither \"event\" nor \"datagram\""),
        ];
        for ((line, reason), (want_line, start)) in reasons.iter().zip(expected) {
            assert_eq!(*line, want_line, "{reason}");
            assert!(reason.starts_with(start), "line {line}: {reason}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_event_record_without_its_event_says_so() {
        let summary = dry_run(&[
            r#"{"kind":"event","sink":"out","event":null}"#.into(),
            r#"{"kind":"event","sink":"out"}"#.into(),
        ])
        .await;
        let reasons: Vec<&str> = summary
            .unsendable_reasons
            .iter()
            .map(|(_, reason)| reason.as_str())
            .collect();
        assert_eq!(reasons, ["event: missing or not an object"; 2]);
    }

    #[test]
    fn event_errors_read_as_the_key_under_event_or_as_the_whole_event() {
        assert_eq!(
            under_event("raw_fields.task_id: is not a string"),
            "event.raw_fields.task_id: is not a string"
        );
        assert_eq!(
            under_event("the event is larger than 4 GiB"),
            "event: the event is larger than 4 GiB"
        );
        assert_eq!(
            under_event("not a JSON object: EOF while parsing"),
            "event: not a JSON object: EOF while parsing"
        );
        assert_eq!(
            under_event("categories.Error Code: is not a category"),
            "event.categories.Error Code: is not a category"
        );
    }
}
