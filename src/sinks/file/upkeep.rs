//! [`Upkeep`]: the thread beside a [`RotatingFile`](super::RotatingFile) that
//! does the slow parts of keeping a file, off the writer's path.
//!
//! * **Retiring** ([`Retired`]): after a rotation, the file rotated away is
//!   synced and closed, and the oldest file, unlinked while still open, is
//!   closed (which frees its blocks and page cache: tens of milliseconds for
//!   100 MiB). At most [`Upkeep::PENDING`] rotations (one more while no
//!   write-behind is queued) wait; beyond that the writer waits, so open
//!   files stay bounded.
//! * **Write-behind** ([`WriteBehind`], Linux): every [`WRITE_BEHIND_CHUNK`]
//!   bytes, writing the new bytes back to disk is started, and the bytes written
//!   back before them are dropped from the page cache. A file that is only
//!   appended to then keeps about two chunks cached instead of growing the page
//!   cache by everything written (hundreds of MB a second at full rate), which
//!   costs the writer the most where memory is fresh (see
//!   [`crate::pagecache`]). The file rotated away is dropped once it is
//!   synced.
//!
//! It does not decide when to sync for durability (the file sink does, every
//! `sync_interval_ms`), and its failures cost nothing but cache. It works on
//! an open file description of its own (opened through `/proc/self/fd`), so
//! that a write error it waits for is still reported to the writer's own
//! sync; a range whose writing back failed is not dropped.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use crate::pagecache::{forget, forget_all, start_writing, wait_written};

/// How far the writer goes between two write-behind requests, in bytes.
pub(super) const WRITE_BEHIND_CHUNK: u64 = 8 * 1024 * 1024;

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
                Ok(()) => forget_all(file),
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
struct WriteBehind {
    /// The upkeep's own open file description of the file.
    file: Arc<File>,
    start: Range<u64>,
    forget: Range<u64>,
    /// Clears [`Upkeep::behind_busy`] when the request is done with, however
    /// it ends (done, refused by a full channel, or lost with the thread).
    _busy: Busy,
}

#[derive(Debug)]
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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
        let thread = std::thread::Builder::new()
            .name("file upkeep".into())
            .spawn(move || {
                for chore in rx {
                    match chore {
                        Chore::Retire(retired) => retired.close(),
                        Chore::WriteBehind(request) => write_behind(&request),
                    }
                }
            })?;
        Ok(Upkeep {
            tx: Some(tx),
            behind_busy: Arc::new(AtomicBool::new(false)),
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

    /// Asks for `start` to be written back and `forget` dropped, through
    /// `file` (the upkeep's own description of the file), never waiting;
    /// returns whether the request was taken (when not, the writer asks again
    /// later with longer ranges).
    pub(super) fn write_behind(
        &self,
        file: Arc<File>,
        start: Range<u64>,
        forget: Range<u64>,
    ) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if self.behind_busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let request = WriteBehind {
            file,
            start,
            forget,
            _busy: Busy(self.behind_busy.clone()),
        };
        tx.try_send(Chore::WriteBehind(request)).is_ok()
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
    start_writing(&request.file, &request.start);
    // Wait until the older range is on disk (its writing back started with
    // the request before), then drop it: only clean pages can be dropped, and
    // a range that failed to reach the disk stays.
    if !request.forget.is_empty() && wait_written(&request.file, &request.forget) {
        forget(&request.file, &request.forget);
    }
}

/// Opens a description of its own of the file `file` has open, read-only,
/// for write-behind.
#[cfg(target_os = "linux")]
pub(super) fn own_description(file: &File) -> Option<Arc<File>> {
    use std::os::fd::AsRawFd;
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
        .map(Arc::new)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn own_description(_file: &File) -> Option<Arc<File>> {
    None
}
