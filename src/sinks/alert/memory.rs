//! What a disk-buffered alert sink remembers across restarts: which task
//! outcomes (outcome, execution id) it delivered, and when. Without it, an
//! alert re-sent from the disk buffer after a crash, or a duplicate that Sense
//! sent just before a restart, would reach Slack a second time.
//!
//! One line per delivery, `<outcome>\t<execution id>\t<unix ms>`, appended as
//! alerts go out (they are few). Opening reads the file line by line, keeps
//! the deliveries still inside the de-duplication window and rewrites the file
//! with only those, so it never grows past a few times [`super::MAX_KEYS`]
//! lines. A line that does not read is skipped: losing the memory of one alert
//! costs at most one duplicate message, never a lost one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::TaskOutcome;

use super::MAX_KEYS;

/// A delivered task outcome: (outcome, execution id).
pub type Delivered = (TaskOutcome, String);

/// The file behind a sink's de-duplication memory.
#[derive(Debug)]
pub struct DeliveryMemory {
    path: PathBuf,
    file: File,
    lines: usize,
}

const OUTCOMES: [TaskOutcome; 4] = [
    TaskOutcome::Failed,
    TaskOutcome::Aborted,
    TaskOutcome::Success,
    TaskOutcome::Distribute,
];

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn line(key: &Delivered, at: SystemTime) -> String {
    format!("{}\t{}\t{}\n", key.0.as_str(), key.1, unix_ms(at))
}

fn parse(line: &str) -> Option<(Delivered, u64)> {
    let mut parts = line.split('\t');
    let outcome = parts.next()?;
    let outcome = OUTCOMES.into_iter().find(|o| o.as_str() == outcome)?;
    let execution = parts.next()?;
    let at = parts.next()?.trim_end().parse().ok()?;
    (parts.next().is_none() && !execution.is_empty())
        .then(|| ((outcome, execution.to_string()), at))
}

impl DeliveryMemory {
    /// Opens (or creates) the memory at `path`; returns it and the deliveries
    /// younger than `window`, with their age.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or written.
    pub fn open(
        path: &Path,
        window: Duration,
    ) -> io::Result<(DeliveryMemory, Vec<(Delivered, Duration)>)> {
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        let mut recent = Vec::new();
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let Some((key, at)) = line.ok().as_deref().and_then(parse) else {
                        continue;
                    };
                    let age = Duration::from_millis(now_ms.saturating_sub(at));
                    if age < window {
                        recent.push((key, age));
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        // Newest last: keep the newest MAX_KEYS.
        recent.sort_by_key(|(_, age)| std::cmp::Reverse(*age));
        if recent.len() > MAX_KEYS {
            recent.drain(..recent.len() - MAX_KEYS);
        }
        let memory = DeliveryMemory::rewrite(
            path,
            recent
                .iter()
                .map(|(key, age)| (key, now.checked_sub(*age).unwrap_or(now))),
        )?;
        Ok((memory, recent))
    }

    /// Replaces the file with `entries`.
    fn rewrite<'a>(
        path: &Path,
        entries: impl Iterator<Item = (&'a Delivered, SystemTime)>,
    ) -> io::Result<DeliveryMemory> {
        let temporary = path.with_extension("new");
        let mut text = String::new();
        let mut lines = 0;
        for (key, at) in entries {
            text.push_str(&line(key, at));
            lines += 1;
        }
        fs::write(&temporary, text)?;
        fs::rename(&temporary, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(DeliveryMemory {
            path: path.to_path_buf(),
            file,
            lines,
        })
    }

    /// Records a delivery. When the file has grown long, it is rewritten with
    /// `current` (the deliveries the sink still remembers) instead.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn record<'a>(
        &mut self,
        key: &Delivered,
        current: impl Iterator<Item = (&'a Delivered, SystemTime)>,
    ) -> io::Result<()> {
        if self.lines >= 4 * MAX_KEYS {
            *self = DeliveryMemory::rewrite(&self.path, current)?;
            return Ok(());
        }
        self.file
            .write_all(line(key, SystemTime::now()).as_bytes())?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(execution: &str) -> Delivered {
        (TaskOutcome::Failed, execution.to_string())
    }

    #[test]
    fn deliveries_are_remembered_across_opens_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivered");
        let window = Duration::from_secs(600);
        let (mut memory, recent) = DeliveryMemory::open(&path, window).unwrap();
        assert!(recent.is_empty());
        memory.record(&key("a"), std::iter::empty()).unwrap();
        memory.record(&key("b"), std::iter::empty()).unwrap();
        drop(memory);
        let (_, recent) = DeliveryMemory::open(&path, window).unwrap();
        let keys: Vec<_> = recent.iter().map(|(k, _)| k.1.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(recent.iter().all(|(_, age)| *age < Duration::from_secs(5)));
    }

    #[test]
    fn old_and_unreadable_lines_are_dropped_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivered");
        let now = unix_ms(SystemTime::now());
        fs::write(
            &path,
            format!(
                "failed\told\t{}\nnonsense\nfailed\tnew\t{now}\nsuccess\t\t{now}\nfailed\tx\ty\n",
                now - 700_000
            ),
        )
        .unwrap();
        let (_, recent) = DeliveryMemory::open(&path, Duration::from_secs(600)).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].0, key("new"));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
