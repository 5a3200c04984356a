//! A disk buffer: one sink's queue kept as a write-ahead log of segment files
//! under `<data_dir>/buffer/<sink>/`, so that what herald accepted survives a
//! stop, a restart, a crash or a power cut until the sink has delivered it.
//!
//! * Producers (the parse workers) frame records into a buffer of their own and
//!   [`DiskLog::append`] writes a whole batch with one `write` under a lock.
//! * One [`Reader`] (the sink's driver) reads the records back as a stream
//!   through a 64 KiB buffer, never the whole log, and [`Reader::ack`]s what the
//!   sink delivered; a segment is deleted only when every record in it is acked.
//! * A background thread `fdatasync`s the segment being written, the ack file
//!   and the directory at most every `sync_interval`; a clean close syncs too.
//! * On open, the last segment's torn or damaged tail is truncated and the
//!   records lost are counted; damage in the middle of a segment is skipped by
//!   the reader (each record is checksummed and numbered, see [`super::record`]),
//!   which counts exactly the records it could not read. A damaged buffer never
//!   stops herald from starting, and never blocks the sink.
//!
//! This module moves bytes: it does not know what an event is, and it does not
//! decide what to do when the log is full or the disk fails (the sink's queue
//! does, see [`crate::sinks::queue`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

use super::record::{self, Parsed};

/// Suffix of segment files; the name is the first record's number, 20 digits.
const SEGMENT_SUFFIX: &str = ".seg";
/// What a reader reads at once.
const READ_CHUNK: usize = 64 * 1024;
/// Smallest and largest segment file.
const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;
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
    /// The records are in the log.
    Written,
    /// The log holds `max_bytes` already; nothing was written.
    Full,
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
    /// Live segments, oldest first.
    segments: Mutex<VecDeque<u64>>,
    /// The next record number to write: every record below it is whole in a file.
    written: AtomicU64,
    /// Every record below this was delivered (or given up on).
    acked: AtomicU64,
    /// Records below this were dropped to make room (`overflow = "drop_oldest"`).
    skip_to: AtomicU64,
    /// Bytes of live segment files.
    bytes: AtomicU64,
    sync: Mutex<SyncState>,
    wake_sync: Condvar,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Held for the life of the buffer: one process per directory.
    _lock: File,
}

#[derive(Debug)]
struct Writer {
    /// The segment being written, created on the first append.
    file: Option<Arc<File>>,
    size: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Sealed segments written since the last sync.
    sealed: Vec<Arc<File>>,
    current: Option<Arc<File>>,
    dir_changed: bool,
    ack: Option<Arc<File>>,
    stop: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

impl DiskLog {
    /// Opens (or creates) the buffer in `dir`, recovering what a previous run
    /// left, and starts its sync thread.
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
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(OpenError::Locked(dir.to_path_buf()));
        }
        let mut segments = list_segments(dir).map_err(io_error(dir))?;
        let ack_path = dir.join("ack");
        let mut ack_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&ack_path)
            .map_err(io_error(&ack_path))?;
        let saved = read_ack(&mut ack_file);
        let written_path = dir.join("written");
        let mut written_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&written_path)
            .map_err(io_error(&written_path))?;
        let recorded_written = read_u64_slot(&mut written_file);

        let mut acked = saved.map_or_else(|| segments.front().copied().unwrap_or(0), |a| a.seq);
        // Segments wholly delivered before the last run ended.
        while segments.len() >= 2 && segments[1] <= acked {
            if let Some(first) = segments.pop_front() {
                let path = segment_path(dir, first);
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        // The last segment decides where writing goes on; cut its damaged tail.
        let mut lost = 0;
        let mut next = acked;
        if let Some(&last) = segments.back() {
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
            lost = match recorded_written {
                Some(written) if written > next => written - next,
                _ => u64::from(tail.valid_end < tail.len && end >= acked),
            };
        }
        if segments.is_empty() {
            acked = acked.max(recorded_written.unwrap_or(0));
            next = acked;
        }
        let bytes = segments
            .iter()
            .map(|&first| {
                fs::metadata(segment_path(dir, first))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
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
            skip_to: AtomicU64::new(0),
            bytes: AtomicU64::new(bytes),
            sync: Mutex::new(SyncState {
                ack: Some(ack_file.clone()),
                ..SyncState::default()
            }),
            wake_sync: Condvar::new(),
            sync_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            _lock: lock_file,
        });
        write_u64_slot(&mut written_file, next).map_err(io_error(&written_path))?;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("buffer sync".into())
                .spawn(move || sync_loop(&shared, written_file, sync_interval))
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

    /// Appends `count` records framed with [`record::frame`] in `staged`, and
    /// empties `staged`. With `ignore_limit`, writes even past `max_bytes`
    /// (shutdown, when there is no other place for them).
    ///
    /// # Errors
    ///
    /// When the disk refuses the write (full, read-only, failing): nothing of
    /// `staged` is in the log then, and `staged` is left as it was.
    pub fn append(&self, staged: &mut Vec<u8>, ignore_limit: bool) -> io::Result<Append> {
        if staged.is_empty() {
            return Ok(Append::Written);
        }
        let shared = &*self.shared;
        let len = staged.len() as u64;
        if !ignore_limit && shared.bytes.load(Ordering::Acquire) + len > shared.max_bytes {
            return Ok(Append::Full);
        }
        let mut writer = lock(&shared.writer);
        let first = shared.written.load(Ordering::Acquire);
        if writer.file.is_none() || writer.size + len > shared.segment_bytes && writer.size > 0 {
            self.rotate(&mut writer, first)?;
        }
        let Some(file) = writer.file.clone() else {
            return Err(io::Error::other("no segment open"));
        };
        let count = record::seal(staged, first);
        if let Err(err) = (&*file).write_all(staged) {
            // Leave no half-written record behind; when the segment cannot be
            // repaired, the next append starts a fresh one.
            let size = writer.size;
            if file.set_len(size).is_err() || (&*file).seek(SeekFrom::Start(size)).is_err() {
                writer.file = None;
            }
            return Err(err);
        }
        writer.size += len;
        shared.bytes.fetch_add(len, Ordering::AcqRel);
        shared.written.store(first + count, Ordering::Release);
        drop(writer);
        staged.clear();
        Ok(Append::Written)
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
            if segments.back() != Some(&first_seq) {
                segments.push_back(first_seq);
            }
        }
        let mut sync = lock(&shared.sync);
        if let Some(old) = sync.current.replace(file.clone()) {
            sync.sealed.push(old);
        }
        sync.dir_changed = true;
        drop(sync);
        writer.file = Some(file);
        writer.size = 0;
        Ok(())
    }

    /// Makes room under `overflow = "drop_oldest"`: deletes the oldest segment
    /// (the reader skips to the next one and counts what it lost). False when
    /// only the segment being written is left.
    pub fn drop_oldest(&self) -> bool {
        let shared = &*self.shared;
        let mut segments = lock(&shared.segments);
        if segments.len() < 2 {
            drop(segments);
            // Start a new segment so the next call can free this one.
            let mut writer = lock(&shared.writer);
            if writer.size > 0 {
                let first = shared.written.load(Ordering::Acquire);
                return self.rotate(&mut writer, first).is_ok() && self.drop_oldest();
            }
            return false;
        }
        let (Some(oldest), Some(&next)) = (segments.pop_front(), segments.front()) else {
            return false;
        };
        drop(segments);
        shared.skip_to.fetch_max(next, Ordering::AcqRel);
        remove_segment(shared, oldest);
        true
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
        self.shared.bytes.load(Ordering::Acquire)
    }

    /// The most bytes the log holds before it is full.
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

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(thread) = lock(&self.sync_thread).take() {
            lock(&self.sync).stop = true;
            self.wake_sync.notify_all();
            let _ = thread.join();
        }
    }
}

fn remove_segment(shared: &Shared, first_seq: u64) {
    let path = segment_path(&shared.dir, first_seq);
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    match fs::remove_file(&path) {
        Ok(()) => {
            shared.bytes.fetch_sub(size, Ordering::AcqRel);
            lock(&shared.sync).dir_changed = true;
        }
        Err(err) => warn!(path = %path.display(), %err, "cannot delete a delivered buffer segment"),
    }
}

/// Syncs what was written since the last round, every `interval` and once more
/// when stopped.
fn sync_loop(shared: &Shared, mut written_file: File, interval: Duration) {
    let mut last_written = u64::MAX;
    loop {
        let (sealed, current, dir_changed, ack, stop) = {
            let mut sync = lock(&shared.sync);
            if !sync.stop {
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
                sync.ack.clone(),
                sync.stop,
            )
        };
        let mut result = Ok(());
        for file in sealed.iter().chain(current.iter()) {
            result = result.and(file.sync_data());
        }
        if dir_changed {
            result = result.and(sync_dir(&shared.dir));
        }
        let written = shared.written.load(Ordering::Acquire);
        if written != last_written {
            result = result
                .and(write_u64_slot(&mut written_file, written))
                .and(written_file.sync_data());
            last_written = written;
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

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows makes directory entries durable with the file itself.
    Ok(())
}

/// Segment files in `dir`, oldest first.
fn list_segments(dir: &Path) -> io::Result<VecDeque<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts.into())
}

/// What a segment's records end with.
#[derive(Debug)]
struct Tail {
    /// The last intact record's number.
    last_seq: Option<u64>,
    /// Where the last intact record ends.
    valid_end: u64,
    /// The file's length.
    len: u64,
}

/// Reads a segment through, chunk by chunk, to find where its intact records end.
fn scan_tail(path: &Path) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut chunks = Chunks::new();
    let mut tail = Tail {
        last_seq: None,
        valid_end: 0,
        len,
    };
    loop {
        match chunks.next_record(&mut file)? {
            Some((seq, _, end)) => {
                tail.last_seq = Some(seq);
                tail.valid_end = end;
            }
            None => return Ok(tail),
        }
    }
}

/// A window over a file that yields its intact records, skipping damage.
#[derive(Debug)]
struct Chunks {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    offset: u64,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
        }
    }

    /// The next intact record: (seq, payload range in `buf`, file offset after
    /// it); `None` at the end of the file. Damaged bytes are skipped.
    fn next_record(
        &mut self,
        file: &mut File,
    ) -> io::Result<Option<(u64, std::ops::Range<usize>, u64)>> {
        loop {
            let skip = match record::parse(&self.buf[self.start..self.end]) {
                Parsed::Record { seq, payload, size } => {
                    let from = self.start + record::HEADER;
                    let range = from..from + payload.len();
                    self.start += size;
                    return Ok(Some((seq, range, self.offset + self.start as u64)));
                }
                Parsed::Incomplete => {
                    if self.fill(file)? {
                        continue;
                    }
                    // The file ends inside what looked like a record: a torn
                    // record, or a damaged length. Whole records may follow.
                    match record::scan(&self.buf[self.start..self.end], true) {
                        Some(skip) => skip,
                        None => return Ok(None),
                    }
                }
                Parsed::Damaged => match record::scan(&self.buf[self.start..self.end], false) {
                    Some(skip) => skip,
                    None => {
                        // Keep the last bytes: a record's magic may start there.
                        self.start = self
                            .end
                            .saturating_sub(record::MAGIC.len() - 1)
                            .max(self.start + 1);
                        if !self.fill(file)? {
                            return Ok(None);
                        }
                        continue;
                    }
                },
            };
            self.start += skip;
        }
    }

    /// Reads more of the file; false at its end.
    fn fill(&mut self, file: &mut File) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.offset += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        // A record longer than the window: grow it to hold the record.
        let wanted = match self.buf.get(4..8) {
            Some(len) if self.end >= 8 && self.buf[..4] == record::MAGIC => {
                record::HEADER + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize
            }
            _ => 0,
        };
        if self.end == self.buf.len() || wanted > self.buf.len() {
            let size = (self.buf.len() * 2)
                .max(wanted)
                .min(record::HEADER + record::MAX_PAYLOAD);
            if size <= self.buf.len() {
                return Ok(false);
            }
            self.buf.resize(size, 0);
        }
        file.seek(SeekFrom::Start(self.offset + self.end as u64))?;
        let read = file.read(&mut self.buf[self.end..])?;
        self.end += read;
        Ok(read > 0)
    }

    /// Drops the window (after moving to another file or place).
    fn reset(&mut self, offset: u64) {
        self.start = 0;
        self.end = 0;
        self.offset = offset;
        if self.buf.len() > READ_CHUNK {
            self.buf.truncate(READ_CHUNK);
            self.buf.shrink_to_fit();
        }
    }
}

/// Where the reader had got to when it last acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckPoint {
    seq: u64,
    segment: u64,
    offset: u64,
}

const ACK_MAGIC: [u8; 4] = *b"HRA1";
const ACK_LEN: usize = 4 + 8 * 3 + 4;

fn read_ack(file: &mut File) -> Option<AckPoint> {
    let mut bytes = [0; ACK_LEN];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut bytes).ok()?;
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    (bytes[..4] == ACK_MAGIC && crc32c::crc32c(&bytes[..28]) == crc).then(|| AckPoint {
        seq: word(4),
        segment: word(12),
        offset: word(20),
    })
}

fn write_ack(file: &mut &File, point: AckPoint) -> io::Result<()> {
    let mut bytes = [0; ACK_LEN];
    bytes[..4].copy_from_slice(&ACK_MAGIC);
    bytes[4..12].copy_from_slice(&point.seq.to_le_bytes());
    bytes[12..20].copy_from_slice(&point.segment.to_le_bytes());
    bytes[20..28].copy_from_slice(&point.offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&bytes)
}

/// A checksummed number in a small file of its own.
fn read_u64_slot(file: &mut File) -> Option<u64> {
    let mut bytes = [0; 12];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut bytes).ok()?;
    let mut value = [0; 8];
    value.copy_from_slice(&bytes[..8]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    (crc32c::crc32c(&value) == crc).then(|| u64::from_le_bytes(value))
}

fn write_u64_slot(file: &mut File, value: u64) -> io::Result<()> {
    let mut bytes = [0; 12];
    bytes[..8].copy_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&bytes)
}

/// The reading side of a disk buffer: one per buffer, owned by the sink's driver.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    ack_file: Arc<File>,
    /// The segment being read and its file.
    segment: Option<(u64, File)>,
    chunks: Chunks,
    /// The next record number expected.
    next_seq: u64,
    /// Where the reader is: the point an ack now would record.
    position: AckPoint,
    acked: AckPoint,
    /// Records found damaged (or missing) since the last [`Reader::take_lost`].
    damaged: u64,
    /// Records skipped because `drop_oldest` deleted them.
    dropped: u64,
    /// Payload of the record last returned.
    last: std::ops::Range<usize>,
}

impl Reader {
    fn new(
        shared: Arc<Shared>,
        ack_file: Arc<File>,
        acked: u64,
        saved: Option<AckPoint>,
    ) -> Reader {
        let start = match saved {
            Some(point) if point.seq == acked => point,
            _ => AckPoint {
                seq: acked,
                segment: 0,
                offset: 0,
            },
        };
        Reader {
            shared,
            ack_file,
            segment: None,
            chunks: Chunks::new(),
            next_seq: acked,
            position: start,
            acked: start,
            damaged: 0,
            dropped: 0,
            last: 0..0,
        }
    }

    /// The next record's payload, or `None` when the reader has caught up with
    /// the writers. Damaged records are skipped and counted.
    ///
    /// # Errors
    ///
    /// When a segment cannot be read (then the same call may be tried again).
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let skip_to = self.shared.skip_to.load(Ordering::Acquire);
            if skip_to > self.next_seq {
                self.dropped += skip_to - self.next_seq;
                self.next_seq = skip_to;
                self.segment = None;
            }
            if self.next_seq >= self.shared.written.load(Ordering::Acquire) {
                return Ok(None);
            }
            if self.segment.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            let Some((first, file)) = self.segment.as_mut() else {
                continue;
            };
            let first = *first;
            match self.chunks.next_record(file)? {
                Some((seq, payload, end)) => {
                    if seq < self.next_seq {
                        continue; // before the resume point
                    }
                    self.damaged += seq - self.next_seq;
                    self.next_seq = seq + 1;
                    self.position = AckPoint {
                        seq: self.next_seq,
                        segment: first,
                        offset: end,
                    };
                    self.last = payload;
                    return Ok(Some(&self.chunks.buf[self.last.clone()]));
                }
                None => {
                    // The end of this segment: on to the next one; records
                    // between are lost to damage.
                    let following = lock(&self.shared.segments)
                        .iter()
                        .copied()
                        .find(|&f| f > first);
                    match following {
                        Some(next_first) => {
                            self.damaged += next_first.saturating_sub(self.next_seq);
                            self.next_seq = self.next_seq.max(next_first);
                            self.segment = None;
                        }
                        None => {
                            // The segment being written ends short of what was
                            // written: damaged under us. Count it and go on.
                            let written = self.shared.written.load(Ordering::Acquire);
                            self.damaged += written.saturating_sub(self.next_seq);
                            self.next_seq = written;
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Opens the segment holding `next_seq`; false when there is none.
    fn open_segment(&mut self) -> io::Result<bool> {
        let first = {
            let segments = lock(&self.shared.segments);
            let holding = segments.iter().copied().rev().find(|&f| f <= self.next_seq);
            match (holding, segments.front()) {
                (Some(first), _) => first,
                (None, Some(&oldest)) => {
                    // Records before the oldest segment are gone.
                    self.damaged += oldest - self.next_seq;
                    self.next_seq = oldest;
                    oldest
                }
                (None, None) => return Ok(false),
            }
        };
        let file = File::open(segment_path(&self.shared.dir, first))?;
        let offset = if self.position.segment == first && self.position.seq == self.next_seq {
            self.position.offset
        } else {
            0
        };
        self.chunks.reset(offset);
        self.segment = Some((first, file));
        Ok(true)
    }

    /// Acknowledges every record returned so far: they were delivered (or
    /// given up on), so they need not be read again, and segments holding only
    /// acknowledged records are deleted.
    ///
    /// # Errors
    ///
    /// When the ack file cannot be written (the records are read again after
    /// a restart: at-least-once).
    pub fn ack(&mut self) -> io::Result<()> {
        if self.position.seq <= self.acked.seq {
            return Ok(());
        }
        write_ack(&mut &*self.ack_file, self.position)?;
        self.acked = self.position;
        self.shared
            .acked
            .store(self.position.seq, Ordering::Release);
        loop {
            let delivered = {
                let mut segments = lock(&self.shared.segments);
                match (segments.front(), segments.get(1)) {
                    (Some(_), Some(&second)) if second <= self.acked.seq => segments.pop_front(),
                    _ => None,
                }
            };
            match delivered {
                Some(first) => remove_segment(&self.shared, first),
                None => return Ok(()),
            }
        }
    }

    /// Records found damaged or missing since the last call.
    pub fn take_damaged(&mut self) -> u64 {
        std::mem::take(&mut self.damaged)
    }

    /// Records deleted by `drop_oldest` since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(payloads: impl IntoIterator<Item = String>) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            record::frame(&mut out, |out| out.extend_from_slice(payload.as_bytes()));
        }
        out
    }

    fn write(log: &DiskLog, from: usize, to: usize) {
        let mut staged = stage((from..to).map(|i| format!("record {i}")));
        assert_eq!(log.append(&mut staged, false).unwrap(), Append::Written);
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
    fn a_second_process_cannot_open_the_same_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), 1 << 20);
        let err = DiskLog::open(dir.path(), 1 << 20, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, OpenError::Locked(_)), "{err}");
    }

    #[test]
    fn acked_segments_are_deleted_and_the_bytes_counted_down() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB segments (an eighth of 8 MiB): 3 appends of ~600 KiB make 3 segments.
        let (log, mut reader, _) = open(dir.path(), 8 << 20);
        let big = "x".repeat(600 * 1024);
        for _ in 0..3 {
            let mut staged = stage([big.clone()]);
            log.append(&mut staged, false).unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap().len(), 3);
        let total = log.bytes();
        assert!(total > 1_800_000, "{total}");
        reader.next_record().unwrap().unwrap();
        reader.next_record().unwrap().unwrap();
        reader.ack().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        assert!(log.bytes() < total / 2, "{}", log.bytes());
        assert_eq!(log.records(), 1);
    }

    #[test]
    fn a_full_log_refuses_until_space_is_freed_or_the_limit_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut reader, _) = open(dir.path(), 200);
        write(&log, 0, 5); // 5 × 28 bytes
        let mut staged = stage(names(5, 10));
        assert_eq!(log.append(&mut staged, false).unwrap(), Append::Full);
        assert!(!staged.is_empty(), "a refused batch is left to the caller");
        assert_eq!(log.append(&mut staged, true).unwrap(), Append::Written);
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
        assert!(log.drop_oldest());
        assert_eq!(
            reader.next_record().unwrap().map(<[u8]>::len),
            Some(700 * 1024)
        );
        assert_eq!(reader.take_dropped(), 2);
        assert!(reader.next_record().unwrap().is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _reader, _) = open(dir.path(), 1 << 30);
            write(&log, 0, 10);
            log.close();
        }
        let segment = segment_path(dir.path(), 0);
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
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _reader, _) = open(dir.path(), 1 << 30);
            write(&log, 0, 10);
            log.close();
        }
        let segment = segment_path(dir.path(), 0);
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
