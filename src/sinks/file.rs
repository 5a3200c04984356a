//! The `file` sink: events as JSON lines, with size-based rotation.
//!
//! [`RotatingFile`] is also what the dead-letter file is written with. When the
//! file would grow past `max_bytes`, it is renamed to `<path>.1` (older ones move
//! to `.2` ... up to `max_files`, the oldest removed) and a new file is started.
//! Writes happen on the sink's task with `block_in_place`, which suits short local
//! writes; each batch is one `write` call, so a crash of herald loses nothing it
//! wrote. Syncing to disk (against power loss or an OS crash) happens at most
//! every `sync_interval_ms` and runs beside the sink, never in its way; a clean
//! stop always syncs.
//!
//! A rotation does only renames and an open in the writer's way. What is slow
//! about it happens on a thread of its own (see [`Retirer`]): the file rotated
//! away is synced and closed there, and the oldest file, unlinked while still
//! open, is closed there too, so that freeing its blocks and its page cache
//! (tens of milliseconds for 100 MiB) never holds up a write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Sink, SinkError};
use crate::event::Event;

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

/// An append-only file that rotates by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: Option<File>,
    size: u64,
    /// Where rotated-away files go to be synced and closed; started at the
    /// first rotation.
    retirer: Option<Retirer>,
}

/// The thread that syncs and closes the files a rotation left behind, off the
/// writer's path: the file just rotated away (its last writes reach the disk
/// before it is closed) and the oldest file, already unlinked (closing it is
/// what frees its blocks). At most [`Retirer::PENDING`] rotations wait for it;
/// beyond that the writer waits, so open files stay bounded.
#[derive(Debug)]
struct Retirer {
    tx: Option<std::sync::mpsc::SyncSender<Retired>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What one rotation hands to the [`Retirer`].
#[derive(Debug)]
struct Retired {
    /// The file rotated away, now `<path>.1`; synced, then closed.
    rotated: Option<File>,
    /// The oldest file, unlinked while open; closing it frees it.
    removed: Option<File>,
    /// The rotated file's path, for log lines.
    path: PathBuf,
}

impl Retired {
    /// Syncs the rotated file, then closes both.
    fn close(self) {
        let Retired {
            rotated,
            removed,
            path,
        } = self;
        if let Some(file) = &rotated
            && let Err(err) = file.sync_data()
        {
            tracing::warn!(path = %path.display(), %err, "syncing the rotated file failed");
        }
        drop(rotated);
        // The last handle on an unlinked file: this frees it.
        drop(removed);
    }
}

impl Retirer {
    /// Rotations that may wait for the thread before the writer waits too.
    const PENDING: usize = 4;

    fn start() -> io::Result<Retirer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Retired>(Self::PENDING);
        let thread = std::thread::Builder::new()
            .name("file rotation".into())
            .spawn(move || {
                for retired in rx {
                    retired.close();
                }
            })?;
        Ok(Retirer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `retired` over; waits only while [`Retirer::PENDING`] rotations
    /// are still being closed. Closes it here if the thread is gone.
    fn retire(&self, retired: Retired) {
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(retired)) = tx.send(retired) {
                    retired.close();
                }
            }
            None => retired.close(),
        }
    }
}

impl Drop for Retirer {
    /// Waits until every rotated file is synced and closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RotatingFile {
    /// Opens (creating directories as needed) `path` for appending.
    ///
    /// # Errors
    ///
    /// When the directory or file cannot be created.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<RotatingFile> {
        let mut file = RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            file: None,
            size: 0,
            retirer: None,
        };
        file.reopen()?;
        Ok(file)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends `bytes` (whole lines). Lines that would take the file past
    /// `max_bytes` go to the next file: the file rotates between lines, so it
    /// never passes `max_bytes` except by a single line longer than that,
    /// which gets a file of its own.
    ///
    /// # Errors
    ///
    /// When writing or rotating fails; the next call tries to reopen the file.
    /// Lines before the failure may have been written.
    pub fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let take = match self.room() {
                Some(room) if bytes.len() as u64 > room => {
                    // `room` is below `bytes.len()`, so it fits in usize.
                    match memchr::memrchr(b'\n', &bytes[..room as usize]) {
                        Some(end) => end + 1,
                        None if self.size > 0 => {
                            self.rotate()?;
                            continue;
                        }
                        None => memchr::memchr(b'\n', bytes).map_or(bytes.len(), |end| end + 1),
                    }
                }
                _ => bytes.len(),
            };
            self.write(&bytes[..take])?;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Bytes that still fit before the file must rotate; `None`: no limit.
    fn room(&self) -> Option<u64> {
        (self.max_bytes > 0).then(|| self.max_bytes.saturating_sub(self.size))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Reopen next time: the file may have been removed or the disk remounted.
                self.file = None;
                Err(err)
            }
        }
    }

    /// Flushes to disk.
    ///
    /// # Errors
    ///
    /// When the sync fails.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    /// A second handle on the open file, for syncing it from another thread.
    fn handle(&self) -> Option<io::Result<File>> {
        self.file.as_ref().map(File::try_clone)
    }

    /// Renames the files along, opens a new one, and leaves syncing and
    /// closing the old ones to the [`Retirer`] (or does it here when its
    /// thread cannot be started). Whatever step fails, the file rotated away
    /// is still synced and closed.
    fn rotate(&mut self) -> io::Result<()> {
        if self.retirer.is_none() {
            match Retirer::start() {
                Ok(retirer) => self.retirer = Some(retirer),
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), %err, "cannot start the thread that closes rotated files; closing them in line");
                }
            }
        }
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let mut retired = Retired {
            rotated: self.file.take(),
            removed: None,
            path: if self.max_files == 0 {
                self.path.clone()
            } else {
                numbered(1)
            },
        };
        let moved = if self.max_files == 0 {
            // No copies kept: the live file itself is the one removed.
            let removed = fs::remove_file(&self.path).or_else(ignore_missing);
            retired.removed = retired.rotated.take();
            removed
        } else {
            unlink_open(&numbered(self.max_files)).and_then(|removed| {
                retired.removed = removed;
                for n in (1..self.max_files).rev() {
                    fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
                }
                fs::rename(&self.path, numbered(1)).or_else(ignore_missing)
            })
        };
        match &self.retirer {
            Some(retirer) => retirer.retire(retired),
            None => retired.close(),
        }
        moved?;
        self.reopen()
    }
}

/// Unlinks `path` and returns it still open (`None` if there was none):
/// unlinking an open file only drops its name, and the blocks are freed when
/// the returned handle is closed.
fn unlink_open(path: &Path) -> io::Result<Option<File>> {
    let file = match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        // Only a regular file is opened (opening a FIFO would block); anything
        // else, or one that cannot be read, is removed the plain way.
        Ok(meta) if meta.file_type().is_file() => File::open(path).ok(),
        _ => None,
    };
    fs::remove_file(path).or_else(ignore_missing)?;
    Ok(file)
}

fn ignore_missing(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(err)
    }
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
        for event in batch {
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
            tracing::warn!(path = %self.file.path.display(), %err, "final sync of the event file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let mut file = RotatingFile::open(&path, 10, 2).unwrap();
        for line in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            file.append(line.as_bytes()).unwrap();
        }
        let read = |name: &str| fs::read_to_string(dir.path().join("sub").join(name)).unwrap();
        assert_eq!(read("events.jsonl"), "dddddd\n");
        assert_eq!(read("events.jsonl.1"), "cccccc\n");
        assert_eq!(read("events.jsonl.2"), "bbbbbb\n");
        assert!(!dir.path().join("sub/events.jsonl.3").exists());
    }

    #[test]
    fn one_large_write_rotates_between_lines_and_stays_within_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let mut file = RotatingFile::open(&path, 100, 50).unwrap();
        let lines: Vec<String> = (0..40)
            .map(|i| format!("line {i:02} {}\n", "x".repeat(i % 17)))
            .collect();
        // A line longer than max_bytes on its own, in the middle.
        let long = format!("{}\n", "L".repeat(250));
        let mut batch = lines[..20].concat();
        batch.push_str(&long);
        batch.push_str(&lines[20..].concat());
        file.append(batch.as_bytes()).unwrap();
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        // Oldest first: the highest number is the oldest, the live file newest.
        files.sort_by_key(|p| {
            std::cmp::Reverse(
                p.extension()
                    .and_then(|e| e.to_str())
                    .and_then(|e| e.parse::<u32>().ok())
                    .unwrap_or(0),
            )
        });
        let mut seen = String::new();
        for path in &files {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
            if text != long {
                assert!(
                    text.len() <= 100,
                    "{}: {} bytes",
                    path.display(),
                    text.len()
                );
            }
            seen.push_str(&text);
        }
        assert_eq!(seen, batch, "every line exactly once, in order");
    }

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

    /// Open handles of this process on files under `dir`, as `/proc` names them
    /// (`... (deleted)` once unlinked).
    fn open_under(dir: &Path) -> Vec<String> {
        let prefix = dir.display().to_string();
        fs::read_dir("/proc/self/fd")
            .map(|fds| {
                fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
                    .map(|target| target.display().to_string())
                    .filter(|target| target.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn rotated_and_removed_files_are_all_closed_by_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        for max_files in [0, 2] {
            let mut file = RotatingFile::open(&path, 64, max_files).unwrap();
            for n in 0..200 {
                file.append(format!("line {n:04} {}\n", "x".repeat(40)).as_bytes())
                    .unwrap();
            }
            assert!(
                file.retirer.is_some(),
                "rotation started the closing thread"
            );
            drop(file);
            // Dropping waits for the thread: no handle is left, on a kept file
            // or on a removed one.
            assert_eq!(
                open_under(dir.path()),
                Vec::<String>::new(),
                "max_files {max_files}"
            );
        }
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]);
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        fs::write(&path, "old\n").unwrap();
        let mut file = RotatingFile::open(&path, 0, 0).unwrap();
        file.append(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }
}
