//! [`RotatingFile`]: an append-only file that rotates by size, for the `file`
//! sink and the dead-letter file.
//!
//! When the file would grow past `max_bytes`, it is renamed to `<path>.1`
//! (older ones move to `.2` ... up to `max_files`, the oldest removed) and a new
//! file is started. Each append is one `write` call, so a crash of herald loses
//! nothing it wrote. It does not sync on its own (its users decide when).
//!
//! A rotation does only renames and an open in the writer's way. What is slow
//! about it (syncing and closing the file rotated away, closing the oldest
//! file, unlinked while still open, which frees its blocks), and writing back
//! and dropping from the page cache what lies behind the writer, happen on a
//! thread of its own ([`Upkeep`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::upkeep::{Retired, Upkeep, WRITE_BEHIND_CHUNK, own_description};
use crate::pagecache;

/// An append-only file that rotates by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: Option<File>,
    size: u64,
    /// Writing back to disk was asked for up to here (see [`Upkeep`]).
    behind_started: u64,
    /// Dropping from the page cache was asked for up to here.
    behind_forgotten: u64,
    /// The upkeep thread's own open description of the current file.
    behind_file: Option<Arc<File>>,
    /// The thread that retires rotated files and writes behind; started when
    /// first needed.
    upkeep: Option<Upkeep>,
    /// Starting [`RotatingFile::upkeep`] failed once: it is not tried again,
    /// and rotated files are closed in line.
    upkeep_failed: bool,
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
            behind_started: 0,
            behind_forgotten: 0,
            behind_file: None,
            upkeep: None,
            upkeep_failed: false,
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
        self.behind_started = self.size;
        self.behind_forgotten = self.size;
        self.behind_file = None;
        self.file = Some(file);
        Ok(())
    }

    /// The upkeep thread, started on first use.
    fn upkeep(&mut self) -> Option<&Upkeep> {
        if self.upkeep.is_none() && !self.upkeep_failed {
            match Upkeep::start() {
                Ok(upkeep) => self.upkeep = Some(upkeep),
                Err(err) => {
                    self.upkeep_failed = true;
                    tracing::warn!(path = %self.path.display(), %err, "cannot start the thread that closes rotated files and writes back behind the writer; closing them in line, and leaving writing back to the system");
                }
            }
        }
        self.upkeep.as_ref()
    }

    /// Asks the upkeep thread to write back what was written since the last
    /// request and to drop what it wrote back before, once a chunk has been
    /// written and no request is pending.
    fn write_behind(&mut self) {
        let end = pagecache::align_down(self.size);
        if !pagecache::SUPPORTED || end < self.behind_started + WRITE_BEHIND_CHUNK {
            return;
        }
        if !self.upkeep().is_some_and(Upkeep::behind_idle) {
            return;
        }
        if self.behind_file.is_none() {
            self.behind_file = self.file.as_ref().and_then(own_description);
        }
        let (Some(upkeep), Some(file)) = (&self.upkeep, &self.behind_file) else {
            return;
        };
        let (start, forget) = (
            self.behind_started..end,
            self.behind_forgotten..self.behind_started,
        );
        if upkeep.write_behind(file.clone(), start, forget) {
            (self.behind_forgotten, self.behind_started) = (self.behind_started, end);
        }
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
                self.write_behind();
                Ok(())
            }
            Err(err) => {
                // Reopen next time: the file may have been removed or the disk remounted.
                self.file = None;
                Err(err)
            }
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// A second handle on the open file, for syncing it from another thread
    /// (and for nothing else: a write through it would bypass rotation and
    /// write-behind). It stays on the file it was taken from, which after a
    /// rotation is the file rotated away. `None` while no file is open (after
    /// a failed write, until the next [`RotatingFile::append`] reopens it).
    pub fn handle(&self) -> Option<io::Result<File>> {
        self.file.as_ref().map(File::try_clone)
    }

    /// Renames the files along, opens a new one, and leaves syncing and
    /// closing the old ones to the [`Upkeep`] thread (or does it here when it
    /// cannot be started). Whatever step fails, the file rotated away is still
    /// synced and closed.
    fn rotate(&mut self) -> io::Result<()> {
        self.upkeep();
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
        match &self.upkeep {
            Some(upkeep) => upkeep.retire(retired),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            assert!(file.upkeep.is_some(), "rotation started the closing thread");
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

    #[cfg(target_os = "linux")]
    #[test]
    fn what_lies_behind_the_writer_leaves_the_page_cache_and_stays_in_the_file() {
        use crate::pagecache::cached_bytes;
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // Lines of 777 bytes: chunk boundaries fall mid-page unless the file
        // rounds them.
        let line = format!("{}\n", "e".repeat(776));
        let chunk = line.repeat(1350);
        let mut file = RotatingFile::open(&path, 0, 0).unwrap();
        for _ in 0..48 {
            file.append(chunk.as_bytes()).unwrap();
            // Each chunk gets its request (a busy thread would make the
            // writer skip one and ask for a longer range later).
            while file.upkeep.as_ref().is_some_and(|u| !u.behind_idle()) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let forgotten = file.behind_forgotten;
        assert!(
            forgotten >= 32 * MIB,
            "dropping asked for up to {forgotten}"
        );
        drop(file);
        let Some(cached) = cached_bytes(&path, None) else {
            println!("skipped: the temporary directory keeps files in memory");
            return;
        };
        // Without write-behind all 48 MiB stay cached; with it, nothing
        // before the last range it was asked to drop, not even the page at
        // a range's end.
        assert_eq!(cached_bytes(&path, Some(0..forgotten)), Some(0));
        assert!(cached <= 17 * MIB, "{} MiB still cached", cached / MIB);
        let written = fs::read(&path).unwrap();
        assert_eq!(written.len(), 48 * chunk.len());
        assert!(written.chunks(777).all(|l| l == line.as_bytes()));

        // A file rotated away leaves the cache once it is synced.
        let rotating = dir.path().join("rotating.jsonl");
        let mut file = RotatingFile::open(&rotating, 4 * MIB, 2).unwrap();
        let kib = format!("{}\n", "r".repeat(1023));
        for _ in 0..3 {
            file.append(kib.repeat(4096).as_bytes()).unwrap();
        }
        drop(file);
        for n in [1, 2] {
            let rotated = dir.path().join(format!("rotating.jsonl.{n}"));
            assert_eq!(fs::metadata(&rotated).unwrap().len(), 4 * MIB);
            assert_eq!(cached_bytes(&rotated, None), Some(0), "rotating.jsonl.{n}");
        }
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
