//! The `file` sink: events as JSON lines, with size-based rotation
//! ([`RotatingFile`], also what the dead-letter file is written with).
//!
//! Writes happen on the sink's task with `block_in_place`, which suits short local
//! writes; each batch is one `write` call, so a crash of herald loses nothing it
//! wrote. Syncing to disk (against power loss or an OS crash) happens at most
//! every `sync_interval_ms` and runs beside the sink, never in its way; a clean
//! stop always syncs.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Sink, SinkError};
use crate::event::{Event, prefetch};

mod rotating;
mod upkeep;

pub use rotating::RotatingFile;

/// Settings of a `file` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append JSON lines to; its directory is created if missing.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes; 0 never rotates.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`events.jsonl.1` ... `.N`).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// Sync the file to disk (`fdatasync`) at most this often, in milliseconds,
    /// when the queue runs dry; 0 leaves it to the OS, which writes dirty pages
    /// back within about 30 s (as rsyslog's file output does by default). A
    /// clean stop syncs either way, and a file that rotates away is synced
    /// once as it is closed, off the delivery path.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_max_files() -> u32 {
    5
}

fn default_sync_interval_ms() -> u64 {
    1000
}

/// The `file` sink.
#[derive(Debug)]
pub struct FileSink {
    file: RotatingFile,
    buffer: Vec<u8>,
    /// `sync_interval_ms`; `None`: only the final sync.
    sync_interval: Option<Duration>,
    last_sync: Instant,
    unsynced: bool,
    /// The sync running in the background, if any.
    syncing: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl FileSink {
    /// Opens the file.
    ///
    /// # Errors
    ///
    /// When the file cannot be created.
    pub fn new(config: &FileConfig) -> io::Result<FileSink> {
        Ok(FileSink {
            file: RotatingFile::open(&config.path, config.max_bytes, config.max_files)?,
            buffer: Vec::with_capacity(64 * 1024),
            sync_interval: (config.sync_interval_ms > 0)
                .then(|| Duration::from_millis(config.sync_interval_ms)),
            last_sync: Instant::now(),
            unsynced: false,
            syncing: None,
        })
    }

    /// The outcome of the background sync, once it has finished.
    async fn finished_sync(&mut self) -> Option<io::Result<()>> {
        if !self.syncing.as_ref()?.is_finished() {
            return None;
        }
        let outcome = self.syncing.take()?.await;
        Some(outcome.unwrap_or_else(|err| Err(io::Error::other(err))))
    }
}

impl Sink for FileSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        self.buffer.clear();
        for event in prefetch::ahead(batch) {
            event.write_json(&mut self.buffer);
            self.buffer.push(b'\n');
        }
        self.unsynced = true;
        let (file, buffer) = (&mut self.file, &self.buffer);
        tokio::task::block_in_place(|| file.append(buffer)).map_err(SinkError::io)
    }

    /// Starts a background sync when one is due. Syncing a second of heavy
    /// traffic can take hundreds of milliseconds; on the sink's own task it
    /// stalled delivery long enough (about 200 ms at 500k events/s) to overflow
    /// the queue, so the sync runs on a blocking thread with its own handle while
    /// the sink goes on writing.
    async fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(Err(err)) = self.finished_sync().await {
            self.unsynced = true;
            return Err(SinkError::io(err));
        }
        let Some(interval) = self.sync_interval else {
            return Ok(());
        };
        if !self.unsynced || self.syncing.is_some() || self.last_sync.elapsed() < interval {
            return Ok(());
        }
        let Some(handle) = self.file.handle() else {
            return Ok(());
        };
        let file = handle.map_err(SinkError::io)?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // A sync still running in the background may predate the last writes.
        if (self.unsynced || self.syncing.is_some())
            && let Err(err) = self.file.sync()
        {
            tracing::warn!(path = %self.file.path().display(), %err, "final sync of the event file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    fn sink(dir: &Path, sync_interval_ms: u64) -> FileSink {
        let config: FileConfig = toml::from_str(&format!(
            "path = {:?}\nsync_interval_ms = {sync_interval_ms}",
            dir.join("events.jsonl")
        ))
        .unwrap();
        FileSink::new(&config).unwrap()
    }

    #[test]
    fn a_file_sink_syncs_once_a_second_by_default() {
        let config: FileConfig = toml::from_str("path = \"events.jsonl\"").unwrap();
        assert_eq!(config.sync_interval_ms, 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_file_sink_syncs_in_the_background_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut never = sink(dir.path(), 0);
        never
            .deliver(&[Arc::new(crate::send::sample_event("engine"))])
            .await
            .unwrap();
        never.flush().await.unwrap();
        assert!(never.syncing.is_none(), "no sync unless configured");

        let other = tempfile::tempdir().unwrap();
        let mut sink = sink(other.path(), 1);
        let event = Arc::new(crate::send::sample_event("engine"));
        sink.deliver(std::slice::from_ref(&event)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        sink.flush().await.unwrap();
        assert!(sink.syncing.is_some(), "a sync is due and started");
        assert!(!sink.unsynced);
        // Nothing new written: no second sync, and the first one is collected.
        while sink.syncing.as_ref().is_some_and(|s| !s.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        sink.flush().await.unwrap();
        assert!(sink.syncing.is_none());
        let written = fs::read_to_string(other.path().join("events.jsonl")).unwrap();
        assert_eq!(written.lines().count(), 1);
    }
}
