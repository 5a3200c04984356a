//! The dead-letter file: what herald could not use, kept for a human to look at.
//!
//! Two kinds of record go there, one JSON object per line:
//! datagrams that did not parse (raw bytes as base64 plus an escaped preview, the
//! sender and the reason) and events a sink gave up on (the event, the sink and its
//! error). Producers hand records to [`DeadLetters::send`], which never blocks; a
//! writer thread appends them to a [`RotatingFile`]. The writer's queue is
//! bounded in records (`queue_records`) and bytes (`queue_bytes`); when no file
//! is configured, or the queue is full, the record is counted as lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use jiff::Timestamp;
use jiff::tz::Offset;
use metrics::{Counter, counter};
use serde::{Deserialize, Serialize};
use tracing::error;

use crate::budget::ByteBudget;
use crate::event::{Event, json_string, write_rfc3339};
use crate::metrics::{DEAD_LETTERS, DEAD_LETTERS_LOST};
use crate::sinks::file::RotatingFile;

/// Settings of the dead-letter file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// File to append records to.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// Records waiting to be written before new ones are counted as lost.
    #[serde(default = "default_queue_records")]
    pub queue_records: usize,
    /// Bytes of records waiting to be written before new ones are counted as
    /// lost (a record of a 64 KB datagram is about 150 KB).
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
}

fn default_max_bytes() -> u64 {
    50 * 1024 * 1024
}

fn default_max_files() -> u32 {
    3
}

fn default_queue_records() -> usize {
    10_000
}

fn default_queue_bytes() -> u64 {
    16 * 1024 * 1024
}

/// One line for the dead-letter file, already encoded.
#[derive(Debug)]
pub struct Record {
    reason: &'static str,
    line: Vec<u8>,
}

impl Record {
    /// A datagram that could not be parsed.
    pub fn datagram(
        received_at: Timestamp,
        sender: SocketAddr,
        reason: &'static str,
        detail: &str,
        payload: &[u8],
    ) -> Record {
        let mut line = Vec::with_capacity(payload.len() * 3 + 200);
        line.extend_from_slice(b"{\"kind\":\"datagram\",\"received_at\":\"");
        write_rfc3339(&mut line, received_at, Offset::UTC, true);
        line.extend_from_slice(b"\",\"sender\":\"");
        line.extend_from_slice(sender.to_string().as_bytes());
        line.extend_from_slice(b"\",\"reason\":");
        json_string(&mut line, reason);
        line.extend_from_slice(b",\"error\":");
        json_string(&mut line, detail);
        line.extend_from_slice(b",\"raw\":");
        json_string(&mut line, &String::from_utf8_lossy(payload));
        line.extend_from_slice(b",\"raw_base64\":\"");
        base64(&mut line, payload);
        line.extend_from_slice(b"\"}\n");
        Record { reason, line }
    }

    /// An event a sink gave up on (`reason` [`SINK_FAILED`]), or one still
    /// queued for a memory-buffered sink when a stop's grace period ended
    /// ([`SHUTDOWN`]). The error is redacted ([`crate::redact`]).
    pub fn event(reason: &'static str, sink: &str, error: &str, event: &Event) -> Record {
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(b"{\"kind\":\"event\",\"failed_at\":\"");
        write_rfc3339(&mut line, Timestamp::now(), Offset::UTC, true);
        line.extend_from_slice(b"\",\"reason\":");
        json_string(&mut line, reason);
        line.extend_from_slice(b",\"sink\":");
        json_string(&mut line, sink);
        line.extend_from_slice(b",\"error\":");
        json_string(&mut line, &crate::redact::text(error));
        line.extend_from_slice(b",\"event\":");
        event.write_json(&mut line);
        line.extend_from_slice(b"}\n");
        Record { reason, line }
    }
}

impl Record {
    /// A line of another dead-letter file, kept as it was (`herald replay`
    /// writes what it could not send).
    pub fn verbatim(line: &[u8]) -> Record {
        let mut line = line.trim_ascii_end().to_vec();
        line.push(b'\n');
        Record {
            reason: "replay",
            line,
        }
    }
}

/// The reason of an event a sink gave up on.
pub const SINK_FAILED: &str = "sink_failed";
/// The reason of an event still queued for a memory-buffered sink when a stop's
/// grace period ended.
pub const SHUTDOWN: &str = "shutdown";

/// Standard base64 with padding.
pub fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// What the writer thread receives.
#[derive(Debug)]
enum Message {
    Record(Record),
    /// Write what came before, then end.
    Finish,
}

/// Reads standard base64 (with or without padding); `None` when it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Where producers send records. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    tx: Option<Sender<Message>>,
    /// The bytes of the records queued for the writer.
    budget: Arc<ByteBudget>,
    lost: Counter,
}

impl DeadLetters {
    /// A handle that only counts (no file configured).
    pub fn disabled() -> DeadLetters {
        let _ = register_reasons();
        DeadLetters {
            tx: None,
            budget: Arc::new(ByteBudget::new(0)),
            lost: counter!(DEAD_LETTERS_LOST),
        }
    }

    /// Queues a record for the file.
    pub fn send(&self, record: Record) {
        let Some(tx) = &self.tx else {
            self.lost.increment(1);
            return;
        };
        let size = record.line.len() as u64;
        if !self.budget.try_take(size) {
            self.lost.increment(1);
            return;
        }
        match tx.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.budget.release(size);
                self.lost.increment(1);
            }
        }
    }

    /// Queues a record, waiting up to `patience` for room (at shutdown, when a
    /// whole queue goes to the file at once); false when it was lost.
    pub fn send_waiting(&self, record: Record, patience: std::time::Duration) -> bool {
        let Some(tx) = &self.tx else {
            self.lost.increment(1);
            return false;
        };
        let size = record.line.len() as u64;
        let deadline = std::time::Instant::now() + patience;
        while !self.budget.try_take(size) {
            if std::time::Instant::now() >= deadline {
                self.lost.increment(1);
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tx.send_timeout(Message::Record(record), left) {
            Ok(()) => true,
            Err(_) => {
                self.budget.release(size);
                self.lost.increment(1);
                false
            }
        }
    }

    /// Tells the writer thread to end once it has written every record queued
    /// before this call (the end of a stop; handles may outlive it).
    pub fn finish(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send_timeout(Message::Finish, std::time::Duration::from_secs(10));
        }
    }

    /// Whether records are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }
}

/// Opens the dead-letter file and starts its writer thread. The thread ends once
/// every [`DeadLetters`] handle is dropped and the queue is written.
///
/// # Errors
///
/// When the file cannot be created.
pub fn start(config: &DeadLetterConfig) -> std::io::Result<(DeadLetters, JoinHandle<()>)> {
    let file = RotatingFile::open(&config.path, config.max_bytes, config.max_files)?;
    let (tx, rx) = crossbeam_channel::bounded(config.queue_records.max(1));
    let budget = Arc::new(ByteBudget::new(config.queue_bytes));
    let writer_budget = budget.clone();
    let handle = std::thread::Builder::new()
        .name("dead letters".into())
        .spawn(move || write_records(file, rx, &writer_budget))?;
    Ok((
        DeadLetters {
            tx: Some(tx),
            budget,
            lost: counter!(DEAD_LETTERS_LOST),
        },
        handle,
    ))
}

/// Every reason a record can have, for registering the counters up front.
const REASONS: [&str; 8] = [
    "empty",
    "empty_fields",
    "unknown_tag",
    "too_few_fields",
    "too_many_fields",
    "bad_guid",
    SINK_FAILED,
    SHUTDOWN,
];

/// The per-reason counters, registered up front so `/metrics` shows them at 0.
fn register_reasons() -> [Counter; REASONS.len()] {
    REASONS.map(|reason| counter!(DEAD_LETTERS, "reason" => reason))
}

/// The writer appends at most about this many bytes of records at once.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

fn write_records(mut file: RotatingFile, rx: Receiver<Message>, budget: &ByteBudget) {
    let lost = counter!(DEAD_LETTERS_LOST);
    let written = register_reasons();
    let count = |reason: &str| {
        REASONS
            .iter()
            .position(|&r| r == reason)
            .map(|i| &written[i])
    };
    let mut buffer = Vec::new();
    let mut reasons = Vec::new();
    let mut finished = false;
    let mut pending: Option<Message> = None;
    while !finished && let Some(first) = pending.take().or_else(|| rx.recv().ok()) {
        buffer.clear();
        reasons.clear();
        for message in std::iter::once(first).chain(rx.try_iter().take(1000)) {
            if buffer.len() >= WRITE_CHUNK_BYTES {
                // Keep the rest queued (and counted in the budget) for the
                // next write.
                pending = Some(message);
                break;
            }
            match message {
                Message::Record(record) => {
                    buffer.extend_from_slice(&record.line);
                    reasons.push(record.reason);
                }
                Message::Finish => {
                    finished = true;
                    break;
                }
            }
        }
        if buffer.is_empty() {
            continue;
        }
        // The records are out of the queue: their bytes are the writer's now.
        budget.release(buffer.len() as u64);
        match file.append(&buffer) {
            Ok(()) => {
                for counter in reasons.iter().filter_map(|reason| count(reason)) {
                    counter.increment(1);
                }
            }
            Err(err) => {
                lost.increment(reasons.len() as u64);
                error!(%err, "cannot write the dead-letter file (dead_letter.path)");
            }
        }
    }
    let _ = file.sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parse_error_reason_has_a_dead_letter_counter() {
        for reason in crate::parse::ParseError::REASONS {
            assert!(REASONS.contains(&reason), "{reason}");
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        let encode = |bytes: &[u8]| {
            let mut out = Vec::new();
            base64(&mut out, bytes);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"\xff\xfe\x00"), "//4A");
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00\x01"] {
            assert_eq!(base64_decode(&encode(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(base64_decode("Zg"), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Z!=="), None);
    }

    #[test]
    fn datagram_records_are_one_valid_json_line() {
        let record = Record::datagram(
            Timestamp::UNIX_EPOCH,
            "127.0.0.1:5000".parse().unwrap(),
            "unknown_tag",
            "unknown tag",
            b"/junk/;\xff\"\n",
        );
        assert_eq!(record.line.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&record.line).unwrap();
        assert_eq!(value["reason"], "unknown_tag");
        assert_eq!(value["raw_base64"], "L2p1bmsvO/8iCg==");
        assert_eq!(value["sender"], "127.0.0.1:5000");
    }

    #[test]
    fn queued_records_are_bounded_in_bytes() {
        let (tx, rx) = crossbeam_channel::bounded(1000);
        let dead = DeadLetters {
            tx: Some(tx),
            budget: Arc::new(ByteBudget::new(200_000)),
            lost: counter!(DEAD_LETTERS_LOST),
        };
        let garbage = vec![0x01u8; 65_507];
        for _ in 0..10 {
            dead.send(Record::datagram(
                Timestamp::UNIX_EPOCH,
                "127.0.0.1:5000".parse().unwrap(),
                "unknown_tag",
                "unknown tag",
                &garbage,
            ));
        }
        let queued: Vec<_> = rx.try_iter().collect();
        assert!(!queued.is_empty() && queued.len() < 10, "{}", queued.len());
        assert!(dead.budget.used() <= 200_000 + 500_000);
    }

    #[test]
    fn records_reach_the_file_and_the_thread_ends_with_its_handles() {
        let dir = tempfile::tempdir().unwrap();
        let config = DeadLetterConfig {
            path: dir.path().join("dead.jsonl"),
            max_bytes: default_max_bytes(),
            max_files: 1,
            queue_records: 10,
            queue_bytes: default_queue_bytes(),
        };
        let (dead, writer) = start(&config).unwrap();
        dead.send(Record::datagram(
            Timestamp::UNIX_EPOCH,
            "127.0.0.1:5000".parse().unwrap(),
            "empty",
            "empty datagram",
            b"",
        ));
        drop(dead);
        writer.join().unwrap();
        let text = std::fs::read_to_string(&config.path).unwrap();
        assert!(text.contains("\"reason\":\"empty\""));
    }
}
