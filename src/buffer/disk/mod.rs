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
mod tests {
    use super::*;
    use files::list_segments;

    fn stage(payloads: impl IntoIterator<Item = String>) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            record::frame(&mut out, |out| out.extend_from_slice(payload.as_bytes()));
        }
        out
    }

    fn write(log: &DiskLog, from: usize, to: usize) {
        let mut staged = stage((from..to).map(|i| format!("record {i}")));
        assert!(matches!(
            log.append(&mut staged, false).unwrap(),
            Append::Written(_)
        ));
        assert!(staged.is_empty());
    }

    fn read_all(reader: &mut Reader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(payload) = reader.next_record().unwrap() {
            out.push(String::from_utf8(payload.to_vec()).unwrap());
        }
        out
    }

    fn names(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("record {i}")).collect()
    }

    /// A log of 1 MiB segments (an eighth of 8 MiB) with three records of
    /// 600 KiB, one in each.
    fn three_segments(dir: &Path) -> (DiskLog, Reader) {
        let (log, reader, _) = open(dir, 8 << 20);
        let big = "x".repeat(600 * 1024);
        for _ in 0..3 {
            let mut staged = stage([big.clone()]);
            log.append(&mut staged, false).unwrap();
        }
        (log, reader)
    }

    /// Waits up to 10 s for `done` (what the sync thread does happens soon,
    /// not at once); fails the test saying `what` did not happen.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A closed buffer holding records 0 to 9 in one segment.
    fn ten_records() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _reader, _) = open(dir.path(), 1 << 30);
        write(&log, 0, 10);
        log.close();
        let segment = segment_path(dir.path(), 0);
        (dir, segment)
    }

    fn open(dir: &Path, max_bytes: u64) -> (DiskLog, Reader, Recovered) {
        DiskLog::open(dir, max_bytes, Duration::from_millis(10)).unwrap()
    }

    #[test]
    fn records_read_back_in_order_and_survive_a_restart_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, mut reader, recovered) = open(dir.path(), 1 << 30);
            assert_eq!(recovered, Recovered::default());
            write(&log, 0, 10);
            write(&log, 10, 20);
            assert_eq!(log.records(), 20);
            for _ in 0..5 {
                reader.next_record().unwrap().unwrap();
            }
            reader.ack().unwrap();
            assert_eq!(log.records(), 15);
            // Read but not acknowledged: read again after the restart.
            assert_eq!(read_all(&mut reader), names(5, 20));
            log.close();
        }
        let (log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.records, 15);
        assert_eq!(recovered.lost, 0);
        assert_eq!(read_all(&mut reader), names(5, 20));
        write(&log, 20, 22);
        assert_eq!(read_all(&mut reader), names(20, 22));
    }

    #[test]
    fn a_reader_passes_over_records_it_was_handed_and_acknowledges_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, mut reader, _) = open(dir.path(), 1 << 30);
            let mut staged = stage(names(0, 3));
            let sizes: Vec<u64> = names(0, 3)
                .iter()
                .map(|n| (record::HEADER + n.len()) as u64)
                .collect();
            let Append::Written(placed) = log.append(&mut staged, false).unwrap() else {
                panic!("not written");
            };
            assert_eq!(placed.first_seq, 0);
            // The first two as if from memory, the third read from disk.
            assert!(reader.pass_over(0, placed.segment, placed.offset, sizes[0]));
            assert!(
                !reader.pass_over(2, placed.segment, placed.offset + sizes[0], sizes[2]),
                "not where the reader stands"
            );
            assert!(reader.pass_over(1, placed.segment, placed.offset + sizes[0], sizes[1]));
            assert_eq!(read_all(&mut reader), names(2, 3));
            reader.ack().unwrap();
            write(&log, 3, 5);
            reader.pass_over(
                3,
                placed.segment,
                placed.offset + sizes.iter().sum::<u64>(),
                sizes[0],
            );
            reader.ack().unwrap();
            log.close();
        }
        let (_log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.records, 1);
        assert_eq!(read_all(&mut reader), names(4, 5));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), 1 << 20);
        let err = DiskLog::open(dir.path(), 1 << 20, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, OpenError::Locked(_)), "{err}");
    }

    #[test]
    fn acked_segments_are_deleted_and_the_bytes_counted_down() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader) = three_segments(dir.path());
        assert_eq!(list_segments(dir.path()).unwrap().len(), 3);
        let total = log.bytes();
        assert!(total > 1_800_000, "{total}");
        reader.next_record().unwrap().unwrap();
        reader.next_record().unwrap().unwrap();
        reader.ack().unwrap();
        // Counted down at once; the files go on the sync thread.
        assert!(log.bytes() < total / 2, "{}", log.bytes());
        assert_eq!(log.records(), 1);
        wait_for("delivered segments are still there", || {
            list_segments(dir.path()).unwrap().len() == 1
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn what_the_reader_acknowledged_leaves_the_page_cache_once_synced() {
        use crate::pagecache::cached_bytes;
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        // Segments of 8 MiB (an eighth of 64 MiB): 24 MiB make three.
        let (log, mut reader, _) = open(dir.path(), 64 * MIB);
        let record = "r".repeat(777);
        for _ in 0..24 {
            let mut staged = stage(std::iter::repeat_n(record.clone(), 1350));
            log.append(&mut staged, false).unwrap();
        }
        // Synced while nothing was acknowledged yet.
        std::thread::sleep(Duration::from_millis(200));
        let first_segment = segment_path(dir.path(), 0);
        let Some(before) = cached_bytes(&first_segment, None) else {
            println!("skipped: the temporary directory keeps files in memory");
            return;
        };
        assert!(before >= 6 * MIB, "only {} MiB cached", before / MIB);
        // The reader a segment and a half behind the writer: acknowledging
        // the first half of the records deletes the first segment and drops
        // what is acknowledged of the second, sealed before, not the rest.
        for _ in 0..12 * 1350 {
            reader.next_record().unwrap().unwrap();
        }
        reader.ack().unwrap();
        let (oldest, acked) = {
            let segments = lock(&log.shared.segments);
            (segments.list[0].first, segments.acked_bytes)
        };
        assert_ne!(oldest, 0, "the first segment is still live");
        assert!(
            acked > 2 * MIB,
            "acknowledged only {acked} bytes of the second"
        );
        let second = segment_path(dir.path(), oldest);
        wait_for("acknowledged records are still cached", || {
            cached_bytes(&second, Some(0..pagecache::align_down(acked))) == Some(0)
        });
        let unread = cached_bytes(&second, Some(acked..fs::metadata(&second).unwrap().len()));
        assert!(unread.unwrap() >= MIB, "unread records left the cache");
        // Dropped from the cache, still in the files.
        assert_eq!(read_all(&mut reader).len(), 12 * 1350);
        log.close();
        drop((log, reader));
        let (_log, mut again, _) = open(dir.path(), 64 * MIB);
        assert_eq!(read_all(&mut again).len(), 12 * 1350);
    }

    #[test]
    fn segments_given_up_after_the_sync_thread_stopped_are_deleted_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader) = three_segments(dir.path());
        log.close();
        reader.next_record().unwrap().unwrap();
        reader.next_record().unwrap().unwrap();
        reader.ack().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_full_log_refuses_until_space_is_freed_or_the_limit_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 200);
        write(&log, 0, 5); // 5 × 28 bytes
        let mut staged = stage(names(5, 10));
        assert_eq!(log.append(&mut staged, false).unwrap(), Append::Full);
        assert!(!staged.is_empty(), "a refused batch is left to the caller");
        assert!(matches!(
            log.append(&mut staged, true).unwrap(),
            Append::Written(_)
        ));
        assert_eq!(read_all(&mut reader), names(0, 10));
    }

    #[test]
    fn drop_oldest_deletes_a_segment_and_the_reader_counts_what_it_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 8 << 20);
        let big = "y".repeat(700 * 1024);
        let mut staged = stage([big.clone(), big.clone()]);
        log.append(&mut staged, false).unwrap();
        let mut staged = stage([big]);
        log.append(&mut staged, false).unwrap();
        assert_eq!(log.drop_oldest(), Some(2));
        // The sync thread deletes the file.
        wait_for("the dropped segment is still there", || {
            list_segments(dir.path()).unwrap().len() == 1
        });
        assert_eq!(
            reader.next_record().unwrap().map(<[u8]>::len),
            Some(700 * 1024)
        );
        assert_eq!(reader.take_damaged(), 0, "a drop is not damage");
        assert!(reader.next_record().unwrap().is_none());
        reader.ack().unwrap();
        assert_eq!(log.records(), 0);
        log.close();
        drop((log, reader));
        // The drop is remembered: a restart neither delivers nor miscounts it.
        let (_log, mut reader, recovered) = open(dir.path(), 8 << 20);
        assert_eq!(
            recovered,
            Recovered {
                records: 0,
                bytes: recovered.bytes,
                lost: 0
            }
        );
        assert!(read_all(&mut reader).is_empty());
        assert_eq!(reader.take_damaged(), 0);
    }

    #[test]
    fn a_small_buffer_frees_its_space_as_records_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 64 * 1024);
        for round in 0..200 {
            let mut staged =
                stage((0..20).map(|i| format!("round {round} record {i} {}", "x".repeat(100))));
            let appended = log.append(&mut staged, false).unwrap();
            assert!(matches!(appended, Append::Written(_)), "round {round}");
            assert_eq!(read_all(&mut reader).len(), 20);
            reader.ack().unwrap();
        }
        assert!(log.bytes() <= 64 * 1024, "{} bytes on disk", log.bytes());
        assert_eq!(log.records(), 0);
    }

    #[test]
    fn a_batch_larger_than_the_buffer_still_goes_into_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 64 * 1024);
        let big = "z".repeat(100 * 1024);
        let mut staged = stage([big.clone()]);
        assert!(matches!(
            log.append(&mut staged, false).unwrap(),
            Append::Written(_)
        ));
        let mut staged = stage([big]);
        assert_eq!(log.append(&mut staged, false).unwrap(), Append::Full);
        assert_eq!(read_all(&mut reader).len(), 1);
        reader.ack().unwrap();
        assert!(matches!(
            log.append(&mut staged, false).unwrap(),
            Append::Written(_)
        ));
    }

    #[test]
    fn a_damaged_last_record_is_cut_off_on_open_and_counted_once() {
        let (dir, segment) = ten_records();
        let mut bytes = fs::read(&segment).unwrap();
        let record = bytes.len() / 10;
        bytes[record * 9 + 25] ^= 0x10; // the last record's payload
        fs::write(&segment, &bytes).unwrap();
        let (log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.lost, 1);
        assert_eq!(read_all(&mut reader), names(0, 9));
        assert_eq!(reader.take_damaged(), 0);
        reader.ack().unwrap();
        assert_eq!(log.records(), 0, "nothing is left waiting");
        log.close();
        drop((log, reader));
        let (_log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(
            (recovered.records, recovered.lost),
            (0, 0),
            "not counted twice"
        );
        assert!(read_all(&mut reader).is_empty());
        assert_eq!(reader.take_damaged(), 0);
    }

    #[test]
    fn the_reader_never_reads_past_what_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 1 << 30);
        write(&log, 0, 3);
        // Bytes a failed write left behind, past the committed end.
        let segment = segment_path(dir.path(), 0);
        let mut garbage = stage(names(100, 102));
        record::seal(&mut garbage, 3);
        fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        assert_eq!(read_all(&mut reader), names(0, 3));
        assert_eq!(reader.take_damaged(), 0);
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted_on_open() {
        let (dir, segment) = ten_records();
        let len = fs::metadata(&segment).unwrap().len();
        // Cut inside the eighth record: records 7, 8 and 9 are lost.
        let record = len / 10;
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(record * 7 + 5)
            .unwrap();
        let (log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.lost, 3);
        assert_eq!(recovered.records, 7);
        assert_eq!(fs::metadata(&segment).unwrap().len(), record * 7);
        assert_eq!(read_all(&mut reader), names(0, 7));
        write(&log, 10, 11);
        assert_eq!(read_all(&mut reader), names(10, 11));
    }

    #[test]
    fn a_flipped_bit_costs_exactly_its_record() {
        let (dir, segment) = ten_records();
        let mut bytes = fs::read(&segment).unwrap();
        let record = bytes.len() / 10;
        for (i, at) in [(3, 6), (6, 25)] {
            // A length byte of record 3, a payload byte of record 6.
            bytes[record * i + at] ^= 0x10;
        }
        fs::write(&segment, &bytes).unwrap();
        let (_log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.lost, 0);
        let mut expected = names(0, 10);
        expected.remove(6);
        expected.remove(3);
        assert_eq!(read_all(&mut reader), expected);
        assert_eq!(reader.take_damaged(), 2);
    }

    #[test]
    fn garbage_files_and_a_damaged_ack_file_do_not_stop_it_opening() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ack"), b"nonsense").unwrap();
        fs::write(segment_path(dir.path(), 0), b"HRB1 not a record at all").unwrap();
        fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        let (log, mut reader, recovered) = open(dir.path(), 1 << 30);
        assert_eq!(recovered.records, 0);
        assert!(read_all(&mut reader).is_empty());
        write(&log, 0, 2);
        assert_eq!(read_all(&mut reader), names(0, 2));
    }
}
