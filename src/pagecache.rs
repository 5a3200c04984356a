//! Writing ranges of a file back to disk and dropping them from the page
//! cache, for files that are only appended to (the file sink, the dead-letter
//! file, a disk buffer's segments): each page a file adds to the cache costs
//! its writer the most where memory is fresh, and on a virtual machine that
//! hands freed memory back to its host appending to fresh pages cost 2.4-2.7 ns
//! a byte against 0.6-0.7 ns for pages a file just dropped (`BENCHMARKS.md`).
//!
//! Linux only (`sync_file_range`, `posix_fadvise`); elsewhere every call does
//! nothing and [`SUPPORTED`] is false. Nothing here changes what a file holds
//! or decides when to sync it for durability: only clean pages are dropped,
//! and a range whose writing back failed keeps its pages (and its error, for
//! the writer's own sync to report). On 32-bit systems without 64-bit file
//! offsets, nothing past 2 GiB is dropped.

use std::fs::File;
use std::ops::Range;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

/// Whether this system can write back and drop ranges of a file.
pub const SUPPORTED: bool = cfg!(target_os = "linux");

/// Ranges to drop should end on a multiple of this (any page size up to it):
/// dropping skips the pages a range only partly covers, so a range ending
/// mid-page would leave that page cached for good.
pub const ALIGN: u64 = 64 * 1024;

/// `offset` rounded down to [`ALIGN`].
pub fn align_down(offset: u64) -> u64 {
    offset & !(ALIGN - 1)
}

/// A range as the offset and length the system calls take (`None` when the
/// range is empty or does not fit them: an empty length would mean "to the
/// end of the file").
#[cfg(target_os = "linux")]
fn offset_len<T: TryFrom<u64>>(range: &Range<u64>) -> Option<(T, T)> {
    if range.is_empty() {
        return None;
    }
    Some((
        T::try_from(range.start).ok()?,
        T::try_from(range.end - range.start).ok()?,
    ))
}

/// Starts writing `range` back, without waiting.
#[cfg(target_os = "linux")]
pub fn start_writing(file: &File, range: &Range<u64>) {
    sync_range(file, range, libc::SYNC_FILE_RANGE_WRITE);
}

/// Waits until `range` is written back; false when that failed.
#[cfg(target_os = "linux")]
pub fn wait_written(file: &File, range: &Range<u64>) -> bool {
    sync_range(
        file,
        range,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

/// `sync_file_range`; false when it failed (the pages stay dirty or keep
/// their error, for the writer's own sync to report).
#[cfg(target_os = "linux")]
fn sync_range(file: &File, range: &Range<u64>, flags: libc::c_uint) -> bool {
    let Some((offset, len)) = offset_len(range) else {
        return false;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // the call reads no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) == 0 }
}

/// Drops `range` from the page cache; pages not yet written back stay.
#[cfg(target_os = "linux")]
pub fn forget(file: &File, range: &Range<u64>) {
    if let Some((offset, len)) = offset_len(range) {
        fadvise_dontneed(file, offset, len);
    }
}

/// Drops the whole file from the page cache; pages not yet written back stay.
#[cfg(target_os = "linux")]
pub fn forget_all(file: &File) {
    // A length of 0 is "to the end of the file".
    fadvise_dontneed(file, 0, 0);
}

#[cfg(target_os = "linux")]
fn fadvise_dontneed(file: &File, offset: libc::off_t, len: libc::off_t) {
    // SAFETY: as in `sync_range`; the advice changes no data.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

/// Does nothing here.
#[cfg(not(target_os = "linux"))]
pub fn start_writing(_file: &File, _range: &Range<u64>) {}

/// Cannot wait here: false.
#[cfg(not(target_os = "linux"))]
pub fn wait_written(_file: &File, _range: &Range<u64>) -> bool {
    false
}

/// Does nothing here.
#[cfg(not(target_os = "linux"))]
pub fn forget(_file: &File, _range: &Range<u64>) {}

/// Does nothing here.
#[cfg(not(target_os = "linux"))]
pub fn forget_all(_file: &File) {}

/// Bytes of `path` in the page cache (of the pages in `within`, all when
/// `None`), or `None` where the test cannot tell (a file system that
/// keeps everything in memory).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn cached_bytes(
    path: &std::path::Path,
    within: Option<std::ops::Range<u64>>,
) -> Option<u64> {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: `statfs` fills the zeroed struct; the mapping is read by
    // `mincore` only (never dereferenced) and unmapped before returning.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        assert_eq!(libc::fstatfs(file.as_raw_fd(), &mut fs), 0);
        if fs.f_type == libc::TMPFS_MAGIC {
            return None;
        }
        if len == 0 {
            return Some(0);
        }
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut resident = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
        libc::munmap(map, len);
        let pages = within.map_or(0..resident.len(), |range| {
            range.start as usize / page..(range.end as usize).div_ceil(page)
        });
        Some(resident[pages].iter().filter(|&&r| r & 1 == 1).count() as u64 * page as u64)
    }
}
