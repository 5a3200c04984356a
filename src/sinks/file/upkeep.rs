//! [`Upkeep`]: the thread beside a [`RotatingFile`](super::RotatingFile) that
//! does the slow parts of keeping a file, off the writer's path.
//!
//! * **Retiring** ([`Retired`]): after a rotation, the file rotated away is
//!   synced and closed, and the oldest file, unlinked while still open, is
//!   closed (which frees its blocks and page cache: tens of milliseconds for
//!   100 MiB). At most [`Upkeep::PENDING`] rotations wait; beyond that the
//!   writer waits, so open files stay bounded.
//! * **Write-behind** ([`WriteBehind`], Linux): every [`WRITE_BEHIND_CHUNK`]
//!   bytes, writing the new bytes back to disk is started, and the bytes written
//!   back before them are dropped from the page cache. A file that is only
//!   appended to then keeps about two chunks cached instead of growing the page
//!   cache by everything written (hundreds of MB a second at full rate). Each
//!   new page of cache costs the writer the most where memory is fresh: on a
//!   virtual machine that hands freed memory back to its host, appending to
//!   fresh pages cost 2.4-2.7 ns a byte against 0.6-0.7 ns for pages the file
//!   just dropped (`BENCHMARKS.md`). The file rotated away is dropped once it is
//!   synced.
//!
//! It does not decide when to sync for durability (the file sink does, every
//! `sync_interval_ms`), and its failures cost nothing but cache: a page that
//! cannot be written back stays cached, and the error shows where the writer
//! writes or syncs.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// How far the writer goes between two write-behind requests, in bytes.
pub(super) const WRITE_BEHIND_CHUNK: u64 = 8 * 1024 * 1024;

/// Whether this system can write back and drop ranges of a file.
pub(super) const WRITE_BEHIND: bool = cfg!(target_os = "linux");

/// What one rotation hands to the [`Upkeep`] thread.
#[derive(Debug)]
pub(super) struct Retired {
    /// The file rotated away, now `<path>.1`; synced, dropped from the page
    /// cache, then closed.
    pub(super) rotated: Option<File>,
    /// The oldest file, unlinked while open; closing it frees it.
    pub(super) removed: Option<File>,
    /// The rotated file's path, for log lines.
    pub(super) path: PathBuf,
}

impl Retired {
    /// Syncs the rotated file, drops it from the page cache, then closes both.
    pub(super) fn close(self) {
        let Retired {
            rotated,
            removed,
            path,
        } = self;
        if let Some(file) = &rotated {
            match file.sync_data() {
                Ok(()) => forget(file, 0..0),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "syncing the rotated file failed");
                }
            }
        }
        drop(rotated);
        // The last handle on an unlinked file: this frees it.
        drop(removed);
    }
}

/// One write-behind request: start writing `start` back, and drop `forget`
/// (whose writing back started with the request before) from the page cache.
#[derive(Debug)]
pub(super) struct WriteBehind {
    pub(super) file: File,
    pub(super) start: Range<u64>,
    pub(super) forget: Range<u64>,
}

#[derive(Debug)]
enum Chore {
    Retire(Retired),
    WriteBehind(WriteBehind),
}

/// The thread; started by the file on its first rotation or write-behind,
/// joined when the file is dropped.
#[derive(Debug)]
pub(super) struct Upkeep {
    tx: Option<SyncSender<Chore>>,
    /// A write-behind request is queued or running: at most one is, so that
    /// rotations never wait behind write-behind.
    behind_busy: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upkeep {
    /// Rotations that may wait for the thread before the writer waits too.
    const PENDING: usize = 4;

    pub(super) fn start() -> std::io::Result<Upkeep> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chore>(Self::PENDING + 1);
        let behind_busy = Arc::new(AtomicBool::new(false));
        let busy = behind_busy.clone();
        let thread = std::thread::Builder::new()
            .name("file upkeep".into())
            .spawn(move || {
                for chore in rx {
                    match chore {
                        Chore::Retire(retired) => retired.close(),
                        Chore::WriteBehind(request) => {
                            write_behind(&request);
                            drop(request);
                            busy.store(false, Ordering::Release);
                        }
                    }
                }
            })?;
        Ok(Upkeep {
            tx: Some(tx),
            behind_busy,
            thread: Some(thread),
        })
    }

    /// Hands `retired` over; waits only while [`Upkeep::PENDING`] rotations
    /// are still being closed. Closes it here if the thread is gone.
    pub(super) fn retire(&self, retired: Retired) {
        let Some(tx) = &self.tx else {
            return retired.close();
        };
        if let Err(std::sync::mpsc::SendError(Chore::Retire(retired))) =
            tx.send(Chore::Retire(retired))
        {
            retired.close();
        }
    }

    /// Whether a write-behind request would be taken now (none is pending).
    pub(super) fn behind_idle(&self) -> bool {
        !self.behind_busy.load(Ordering::Acquire)
    }

    /// Hands a write-behind request over, never waiting; returns whether it
    /// was taken (when not, the writer asks again later with a longer range).
    pub(super) fn write_behind(&self, request: WriteBehind) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if self.behind_busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        match tx.try_send(Chore::WriteBehind(request)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.behind_busy.store(false, Ordering::Release);
                false
            }
        }
    }
}

impl Drop for Upkeep {
    /// Waits until every rotated file is synced and closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_behind(request: &WriteBehind) {
    start_writing(&request.file, request.start.clone());
    if !request.forget.is_empty() {
        // Wait until the range is on disk (its writing back started with the
        // request before), then drop it: only clean pages can be dropped.
        wait_written(&request.file, request.forget.clone());
        forget(&request.file, request.forget.clone());
    }
}

#[cfg(target_os = "linux")]
fn start_writing(file: &File, range: Range<u64>) {
    sync_range(file, range, libc::SYNC_FILE_RANGE_WRITE);
}

#[cfg(target_os = "linux")]
fn wait_written(file: &File, range: Range<u64>) {
    sync_range(
        file,
        range,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    );
}

/// `sync_file_range`; a failure leaves the pages dirty, for the writer's own
/// sync to report.
#[cfg(target_os = "linux")]
fn sync_range(file: &File, range: Range<u64>, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(range.start),
        libc::off64_t::try_from(range.end.saturating_sub(range.start)),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}

/// Drops `range` (`0..0`: the whole file) from the page cache; pages not yet
/// written back stay.
#[cfg(target_os = "linux")]
fn forget(file: &File, range: Range<u64>) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(range.start),
        libc::off_t::try_from(range.end.saturating_sub(range.start)),
    ) else {
        return;
    };
    // SAFETY: as in `sync_range`; the advice changes no data.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writing(_file: &File, _range: Range<u64>) {}

#[cfg(not(target_os = "linux"))]
fn wait_written(_file: &File, _range: Range<u64>) {}

#[cfg(not(target_os = "linux"))]
fn forget(_file: &File, _range: Range<u64>) {}
