//! A disk buffer: one sink's queue kept as a write-ahead log of segment files
//! under `<data_dir>/buffer/<sink>/`, so that what herald accepted survives a
//! stop, a restart, a crash or a power cut until the sink has delivered it.
//!
//! * Producers (the parse workers) frame records into a buffer of their own and
//!   [`DiskLog::append`] writes a whole batch with one `write` under a lock,
//!   then publishes how far each segment is committed. A failed write is cut
//!   off and the next append starts a fresh segment, so nothing half-written
//!   is ever read.
//! * One [`Reader`] (the sink's driver) reads the records back as a stream
//!   through a 64 KiB window, never past what is committed and never the
//!   whole log, and [`Reader::ack`]s what the sink delivered; a segment is
//!   deleted only when every record in it is acknowledged.
//! * `max_bytes` bounds the bytes waiting to be delivered: a full log refuses
//!   appends ([`Append::Full`]) until the reader catches up, or
//!   [`DiskLog::drop_oldest`] deletes the oldest segment. A batch always fits
//!   into an empty log.
//! * A background thread `fdatasync`s the segment being written, the ack file
//!   and the directory every `sync_interval` (and after deleting a segment); a
//!   clean close syncs too.
//!   It also deletes the segments the reader acknowledged or `drop_oldest`
//!   gave up (unlinking a 128 MiB segment takes tens of milliseconds, which
//!   on the sink's task held up delivery), and drops from the page cache
//!   what it synced and the reader acknowledged: nothing reads that again,
//!   and a segment would otherwise grow the cache by everything written (see
//!   [`crate::pagecache`]).
//! * On open, the last segment's torn or damaged tail is truncated and the
//!   records lost are counted; damage in the middle of a segment is skipped by
//!   the reader (each record is checksummed and numbered, see
//!   [`super::record`]), which counts exactly the records it could not read.
//!   A damaged buffer never stops herald from starting, and never blocks the
//!   sink.
//!
//! This module moves bytes: it does not know what an event is, and it does not
//! decide what to do when the log is full or the disk fails (the sink's queue
//! does, see [`crate::sinks::queue`]).

mod files;
mod reader;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

use super::record;
use crate::pagecache;
use files::{
    WrittenMark, list_segments, read_ack, read_written, scan_tail, segment_path, write_written,
};
pub use reader::Reader;

/// Smallest and largest segment file.
const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
const MAX_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;

/// Why a disk buffer cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory.
    #[error(
        "{} is in use by another herald process; give each herald its own data_dir",
        .0.display()
    )]
    Locked(PathBuf),
    /// The directory or a file in it cannot be used.
    #[error("cannot use the buffer directory {}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What opening found in an existing buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be delivered.
    pub records: u64,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Records lost to a torn or damaged tail (counted, then truncated).
    pub lost: u64,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// The records are in the log, here.
    Written(Placed),
    /// The log holds `max_bytes` waiting to be delivered; nothing was written.
    Full,
}

/// Where an append put its records: the first record's number, and the
/// segment and offset where they begin (one after another, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The first record's number.
    pub first_seq: u64,
    /// The segment they are in.
    pub segment: u64,
    /// The offset of the first record in it.
    pub offset: u64,
}

/// The writing side of a disk buffer, shared by every producer.
#[derive(Debug, Clone)]
pub struct DiskLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// The live segments and their committed lengths. Locked after `writer`
    /// when both are needed.
    segments: Mutex<Segments>,
    /// The next record number to write: every record below it is committed.
    written: AtomicU64,
    /// Every record below this was delivered (or given up on).
    acked: AtomicU64,
    /// Records below this were dropped to make room (`overflow = "drop_oldest"`).
    skip_to: AtomicU64,
    /// The next record the reader will return: records below were read.
    read_to: AtomicU64,
    sync: Mutex<SyncState>,
    wake_sync: Condvar,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Held for the life of the buffer: one process per directory.
    _lock: File,
}

/// A live segment: its first record and how many of its bytes are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    first: u64,
    len: u64,
}

#[derive(Debug, Default)]
struct Segments {
    /// Oldest first.
    list: VecDeque<Segment>,
    /// Committed bytes of every live segment.
    bytes: u64,
    /// Bytes of the first segment before the acknowledged point.
    acked_bytes: u64,
}

impl Segments {
    /// Bytes waiting to be delivered.
    fn unacked(&self) -> u64 {
        self.bytes.saturating_sub(self.acked_bytes)
    }
}

#[derive(Debug)]
struct Writer {
    /// The segment being written; `None` before the first append and after a
    /// failed one (the next append starts a fresh segment).
    file: Option<Arc<File>>,
    size: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Sealed segments written since the last sync, by first record.
    sealed: Vec<(u64, Arc<File>)>,
    /// The segment being written, by first record.
    current: Option<(u64, Arc<File>)>,
    dir_changed: bool,
    /// Segments (by first record) no longer in the live list, to delete.
    doomed: Vec<u64>,
    ack: Option<Arc<File>>,
    stop: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

impl DiskLog {
    /// Opens (or creates) the buffer in `dir`, recovering what a previous run
    /// left, and starts its sync thread. Call [`DiskLog::close`] when done.
    ///
    /// # Errors
    ///
    /// [`OpenError`] when the directory cannot be created or read, or another
    /// process uses it. Damaged contents are not an error (see [`Recovered`]).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        sync_interval: Duration,
    ) -> Result<(DiskLog, Reader, Recovered), OpenError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("lock");
        let lock_file = open_rw(&lock_path).map_err(io_error(&lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(OpenError::Locked(dir.to_path_buf()));
        }
        let mut firsts = list_segments(dir).map_err(io_error(dir))?;
        let ack_path = dir.join("ack");
        let mut ack_file = open_rw(&ack_path).map_err(io_error(&ack_path))?;
        let saved = read_ack(&mut ack_file);
        let written_path = dir.join("written");
        let mut written_file = open_rw(&written_path).map_err(io_error(&written_path))?;
        let mark = read_written(&mut written_file);

        // Delivered up to the ack point, and nothing below what was dropped
        // to make room is wanted any more.
        let mut acked = saved
            .map_or_else(|| firsts.front().copied().unwrap_or(0), |a| a.seq)
            .max(mark.map_or(0, |m| m.skip_to));
        // Segments wholly delivered before the last run ended.
        while firsts.len() >= 2 && firsts[1] <= acked {
            if let Some(first) = firsts.pop_front() {
                let path = segment_path(dir, first);
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        // The last segment decides where writing goes on; cut its damaged tail.
        let mut lost = 0;
        let next;
        if let Some(&last) = firsts.back() {
            let path = segment_path(dir, last);
            let tail = scan_tail(&path).map_err(io_error(&path))?;
            if tail.valid_end < tail.len {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(tail.valid_end).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
            }
            let end = tail.last_seq.map_or(last, |seq| seq + 1);
            next = end.max(acked);
            // Records the last run wrote that are not there any more; without
            // a record of how many were written, a damaged tail is one record.
            lost = match mark {
                Some(mark) if mark.written > next => mark.written - next,
                _ => u64::from(tail.valid_end < tail.len && end >= acked),
            };
        } else {
            acked = acked.max(mark.map_or(0, |m| m.written));
            next = acked;
        }
        let mut segments = Segments::default();
        for first in firsts {
            let len = fs::metadata(segment_path(dir, first)).map_or(0, |m| m.len());
            segments.list.push_back(Segment { first, len });
            segments.bytes += len;
        }
        segments.acked_bytes = match (saved, segments.list.front()) {
            (Some(point), Some(front)) if point.seq == acked && point.segment == front.first => {
                point.offset.min(front.len)
            }
            _ => 0,
        };
        let bytes = segments.bytes;
        // Everything below `acked` is done with: the floor is kept until the
        // reader acknowledges past it.
        write_written(
            &written_file,
            WrittenMark {
                written: next,
                skip_to: acked,
            },
        )
        .map_err(io_error(&written_path))?;
        let ack_file = Arc::new(ack_file);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            writer: Mutex::new(Writer {
                file: None,
                size: 0,
            }),
            segments: Mutex::new(segments),
            written: AtomicU64::new(next),
            acked: AtomicU64::new(acked),
            skip_to: AtomicU64::new(acked),
            read_to: AtomicU64::new(acked),
            sync: Mutex::new(SyncState {
                ack: Some(ack_file.clone()),
                ..SyncState::default()
            }),
            wake_sync: Condvar::new(),
            sync_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            _lock: lock_file,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("buffer sync".into())
                .spawn(move || sync_loop(&shared, &written_file, sync_interval))
                .map_err(io_error(dir))?
        };
        *lock(&shared.sync_thread) = Some(thread);
        let reader = Reader::new(shared.clone(), ack_file, acked, saved);
        let recovered = Recovered {
            records: next - acked,
            bytes,
            lost,
        };
        Ok((DiskLog { shared }, reader, recovered))
    }

    /// Appends the records framed with [`record::frame`] in `staged`, and
    /// empties `staged`. With `ignore_limit`, writes even past `max_bytes`
    /// (at a stop, when there is no other place for them).
    ///
    /// # Errors
    ///
    /// When the disk refuses the write (full, read-only, failing): nothing of
    /// `staged` is in the log then, and `staged` is left as it was.
    pub fn append(&self, staged: &mut Vec<u8>, ignore_limit: bool) -> io::Result<Append> {
        if staged.is_empty() {
            let first_seq = self.shared.written.load(Ordering::Acquire);
            return Ok(Append::Written(Placed {
                first_seq,
                segment: first_seq,
                offset: 0,
            }));
        }
        let shared = &*self.shared;
        let len = staged.len() as u64;
        let mut writer = lock(&shared.writer);
        let unacked = lock(&shared.segments).unacked();
        if !ignore_limit && unacked > 0 && unacked + len > shared.max_bytes {
            return Ok(Append::Full);
        }
        let first = shared.written.load(Ordering::Acquire);
        if writer.file.is_none() || writer.size > 0 && writer.size + len > shared.segment_bytes {
            self.rotate(&mut writer, first)?;
        }
        let Some(file) = writer.file.clone() else {
            return Err(io::Error::other("no segment open"));
        };
        let count = record::seal(staged, first);
        let placed = Placed {
            first_seq: first,
            segment: lock(&shared.segments)
                .list
                .back()
                .map_or(first, |s| s.first),
            offset: writer.size,
        };
        if let Err(err) = (&*file).write_all(staged) {
            // Leave no half-written record behind if the file lets us; either
            // way the next append starts a fresh segment, and readers never
            // read past the committed length.
            let size = writer.size;
            let _ = file.set_len(size);
            let _ = (&*file).seek(SeekFrom::Start(size));
            writer.file = None;
            return Err(err);
        }
        writer.size += len;
        {
            let mut segments = lock(&shared.segments);
            if let Some(segment) = segments.list.back_mut() {
                segment.len = writer.size;
            }
            segments.bytes += len;
            shared.written.store(first + count, Ordering::Release);
        }
        drop(writer);
        staged.clear();
        Ok(Append::Written(placed))
    }

    fn rotate(&self, writer: &mut Writer, first_seq: u64) -> io::Result<()> {
        let shared = &*self.shared;
        let path = segment_path(&shared.dir, first_seq);
        let file = Arc::new(
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?,
        );
        {
            let mut segments = lock(&shared.segments);
            match segments.list.back_mut() {
                // A fresh segment after a failed write that wrote nothing.
                Some(last) if last.first == first_seq => last.len = 0,
                _ => segments.list.push_back(Segment {
                    first: first_seq,
                    len: 0,
                }),
            }
        }
        let mut sync = lock(&shared.sync);
        if let Some(old) = sync.current.replace((first_seq, file.clone())) {
            sync.sealed.push(old);
        }
        sync.dir_changed = true;
        drop(sync);
        writer.file = Some(file);
        writer.size = 0;
        Ok(())
    }

    /// Makes room under `overflow = "drop_oldest"`: deletes the oldest segment
    /// (the reader goes on from the next one). Returns how many undelivered
    /// records were dropped, or `None` when nothing could be freed.
    pub fn drop_oldest(&self) -> Option<u64> {
        let shared = &*self.shared;
        let mut writer = lock(&shared.writer);
        if lock(&shared.segments).list.len() < 2 {
            // Only the segment being written: start a new one so it can go.
            let first = shared.written.load(Ordering::Acquire);
            if writer.size == 0 || self.rotate(&mut writer, first).is_err() {
                return None;
            }
        }
        let (dropped, oldest) = {
            let mut segments = lock(&shared.segments);
            let (Some(oldest), Some(next)) = (
                segments.list.front().copied(),
                segments.list.get(1).copied(),
            ) else {
                return None;
            };
            // The reader skips everything below `next` from now on; what it had
            // not yet read of the oldest segment is what this drops.
            shared.skip_to.fetch_max(next.first, Ordering::AcqRel);
            segments.list.pop_front();
            segments.bytes -= oldest.len;
            segments.acked_bytes = 0;
            let read = shared
                .read_to
                .load(Ordering::Acquire)
                .max(shared.acked.load(Ordering::Acquire));
            (
                next.first.saturating_sub(read.max(oldest.first)),
                oldest.first,
            )
        };
        drop(writer);
        remove_segment(shared, oldest);
        Some(dropped)
    }

    /// Records waiting to be delivered.
    pub fn records(&self) -> u64 {
        let shared = &*self.shared;
        let floor = shared
            .acked
            .load(Ordering::Acquire)
            .max(shared.skip_to.load(Ordering::Acquire));
        shared.written.load(Ordering::Acquire).saturating_sub(floor)
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.segments).bytes
    }

    /// The most bytes waiting to be delivered before the log is full.
    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    /// Syncs everything and stops the sync thread. The log can still be read
    /// and written afterwards, but nothing syncs it any more.
    pub fn close(&self) {
        let shared = &*self.shared;
        if shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&shared.sync).stop = true;
        shared.wake_sync.notify_all();
        if let Some(thread) = lock(&shared.sync_thread).take() {
            let _ = thread.join();
        }
    }
}

/// Has a segment file that left the live list deleted by the sync thread
/// (or right away when that has stopped). Nothing reads a segment by name once it
/// left the list, and one left behind by a crash is deleted at the next open.
fn remove_segment(shared: &Shared, first_seq: u64) {
    let mut sync = lock(&shared.sync);
    if sync.stop {
        drop(sync);
        delete_segment(shared, first_seq);
        return;
    }
    sync.doomed.push(first_seq);
    drop(sync);
    shared.wake_sync.notify_one();
}

/// Deletes a segment file; true when it is gone.
fn delete_segment(shared: &Shared, first_seq: u64) -> bool {
    let path = segment_path(&shared.dir, first_seq);
    match fs::remove_file(&path) {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => {
            warn!(path = %path.display(), %err, "cannot delete a delivered buffer segment");
            false
        }
    }
}

/// Syncs what was written since the last round, every `interval` and once more
/// when stopped.
fn sync_loop(shared: &Shared, written_file: &File, interval: Duration) {
    let mut last = WrittenMark::default();
    // The live segments synced so far, for dropping what the reader
    // acknowledged from the page cache.
    let mut synced: Vec<Synced> = Vec::new();
    loop {
        let (sealed, current, mut dir_changed, doomed, ack, stop) = {
            let mut sync = lock(&shared.sync);
            if !sync.stop && sync.doomed.is_empty() {
                sync = shared
                    .wake_sync
                    .wait_timeout(sync, interval)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            (
                std::mem::take(&mut sync.sealed),
                sync.current.clone(),
                std::mem::take(&mut sync.dir_changed),
                std::mem::take(&mut sync.doomed),
                sync.ack.clone(),
                sync.stop,
            )
        };
        for first in doomed {
            dir_changed |= delete_segment(shared, first);
        }
        // What each segment held before its sync: on disk once that succeeds.
        let committed: Vec<(u64, u64, &Arc<File>)> = {
            let segments = lock(&shared.segments);
            sealed
                .iter()
                .chain(current.iter())
                .filter_map(|(first, file)| {
                    let segment = segments.list.iter().find(|s| s.first == *first)?;
                    Some((*first, segment.len, file))
                })
                .collect()
        };
        let mut result = Ok(());
        for (_, file) in sealed.iter().chain(current.iter()) {
            result = result.and(file.sync_data());
        }
        if result.is_ok() {
            for (first, len, file) in committed {
                match synced.iter_mut().find(|s| s.first == first) {
                    Some(known) => known.len = len,
                    None => synced.push(Synced {
                        first,
                        file: file.clone(),
                        len,
                        dropped: 0,
                    }),
                }
            }
        }
        drop_delivered(shared, &mut synced);
        if dir_changed {
            result = result.and(sync_dir(&shared.dir));
        }
        let mark = WrittenMark {
            written: shared.written.load(Ordering::Acquire),
            skip_to: shared.skip_to.load(Ordering::Acquire),
        };
        if mark != last {
            result = result
                .and(write_written(written_file, mark))
                .and(written_file.sync_data());
            last = mark;
        }
        if let Some(ack) = ack {
            result = result.and(ack.sync_data());
        }
        if let Err(err) = result {
            warn!(dir = %shared.dir.display(), %err, "cannot sync the disk buffer; a power cut could lose what it holds");
        }
        if stop {
            return;
        }
    }
}

/// A live segment as the sync thread knows it.
struct Synced {
    first: u64,
    file: Arc<File>,
    /// Bytes on disk (synced).
    len: u64,
    /// Bytes dropped from the page cache.
    dropped: u64,
}

/// Drops from the page cache what the reader acknowledged of the synced
/// segments: only the oldest live segment holds any (older ones are deleted),
/// up to the acknowledged point, and the reader never reads it again (after a
/// restart it starts there too). Forgets segments that left the live list.
fn drop_delivered(shared: &Shared, synced: &mut Vec<Synced>) {
    let (oldest, acked_bytes) = {
        let segments = lock(&shared.segments);
        (segments.list.front().map(|s| s.first), segments.acked_bytes)
    };
    synced.retain(|s| oldest.is_some_and(|oldest| s.first >= oldest));
    if !pagecache::SUPPORTED {
        return;
    }
    for segment in synced.iter_mut().filter(|s| Some(s.first) == oldest) {
        let to = pagecache::align_down(segment.len.min(acked_bytes));
        if to > segment.dropped {
            pagecache::forget(&segment.file, &(segment.dropped..to));
            segment.dropped = to;
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows makes directory entries durable with the file itself.
    Ok(())
}

#[cfg(test)]
mod tests;
