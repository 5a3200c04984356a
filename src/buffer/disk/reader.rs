//! Reading a disk buffer back: [`Reader`] streams the records of its segments
//! in order, never past what the writers have committed, skips and counts
//! damage, and acknowledges delivered records so their segments can go.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::files::{AckPoint, segment_path, write_ack};
use super::{Shared, lock, remove_segment};
use crate::buffer::record::{self, Parsed};

/// What a reader reads at once.
const READ_CHUNK: usize = 64 * 1024;
/// Failed reads at one place before the reader gives up on the segment.
const READ_ATTEMPTS: u32 = 3;

/// A window over a file that yields its intact records up to `limit`,
/// skipping damage.
#[derive(Debug)]
pub struct Chunks {
    pub(super) buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    offset: u64,
    /// Bytes of the file that may be read (what the writers committed).
    pub limit: u64,
}

impl Chunks {
    /// An empty window at the start of a file.
    pub fn new() -> Chunks {
        Chunks {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            limit: 0,
        }
    }

    /// The file offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.offset + self.start as u64
    }

    /// The next intact record: (seq, payload range in `buf`, file offset after
    /// it); `None` at `limit`. Damaged bytes are skipped.
    pub fn next_record(&mut self, file: &mut File) -> io::Result<Option<(u64, Range<usize>, u64)>> {
        loop {
            let skip = match record::parse(&self.buf[self.start..self.end]) {
                Parsed::Record { seq, payload, size } => {
                    let from = self.start + record::HEADER;
                    let range = from..from + payload.len();
                    self.start += size;
                    return Ok(Some((seq, range, self.position())));
                }
                Parsed::Incomplete => {
                    if self.fill(file)? {
                        continue;
                    }
                    // The committed bytes end inside what looked like a
                    // record: a torn record, or a damaged length. Whole
                    // records may follow.
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

    /// Reads more of the file, never past `limit`; false when there is no more.
    fn fill(&mut self, file: &mut File) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.offset += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        let available = self.limit.saturating_sub(self.offset + self.end as u64);
        if available == 0 {
            return Ok(false);
        }
        // A record longer than the window: grow it to hold the record (a
        // damaged length can ask for at most what is committed, and at most
        // the largest record).
        let wanted = match self.buf.get(4..8) {
            Some(len) if self.end >= 8 && self.buf[..4] == record::MAGIC => {
                record::HEADER + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize
            }
            _ => 0,
        };
        if self.end == self.buf.len() || wanted > self.buf.len() {
            let most = (record::HEADER + record::MAX_PAYLOAD)
                .min(usize::try_from(self.limit - self.offset).unwrap_or(usize::MAX));
            let size = (self.buf.len() * 2).max(wanted).min(most);
            if size <= self.buf.len() {
                return Ok(false);
            }
            self.buf.resize(size, 0);
        }
        let room =
            (self.buf.len() - self.end).min(usize::try_from(available).unwrap_or(usize::MAX));
        file.seek(SeekFrom::Start(self.offset + self.end as u64))?;
        let read = file.read(&mut self.buf[self.end..self.end + room])?;
        self.end += read;
        Ok(read > 0)
    }

    /// Moves the next unread byte to file offset `to`, keeping what the window
    /// holds beyond it.
    fn advance_to(&mut self, to: u64) {
        let end = self.offset + self.end as u64;
        if to >= self.position() && to <= end {
            self.start = (to - self.offset) as usize;
        } else {
            self.reset(to);
        }
    }

    /// Drops the window (after moving to another file or place).
    pub fn reset(&mut self, offset: u64) {
        self.start = 0;
        self.end = 0;
        self.offset = offset;
        if self.buf.len() > READ_CHUNK {
            self.buf.truncate(READ_CHUNK);
            self.buf.shrink_to_fit();
        }
    }
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
    /// Records found damaged (or missing) since the last [`Reader::take_damaged`].
    damaged: u64,
    /// Failed reads in a row at `next_seq`.
    failures: u32,
}

/// What the reader found where it looked for the next segment.
enum Opened {
    /// A segment is open.
    Yes,
    /// There is none (yet).
    Nothing,
    /// The segment is gone; the reader moved past it.
    Skipped,
}

impl Reader {
    pub(super) fn new(
        shared: Arc<Shared>,
        ack_file: Arc<File>,
        acked: u64,
        saved: Option<super::files::AckPoint>,
    ) -> Reader {
        let start = match saved {
            Some(point) if point.seq == acked => point,
            _ => AckPoint {
                seq: acked,
                segment: acked,
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
            failures: 0,
        }
    }

    /// The next record's payload, or `None` when the reader has caught up with
    /// the writers. Damaged or missing records are skipped and counted.
    ///
    /// # Errors
    ///
    /// When a segment cannot be read (the same call is tried again later; after
    /// a few failures at one place the rest of that segment is given up on and
    /// counted as damaged).
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let skip_to = self.shared.skip_to.load(Ordering::Acquire);
            if skip_to > self.next_seq {
                // Dropped by `drop_oldest` (counted there).
                self.move_to(skip_to);
            }
            if self.segment.is_none() {
                match self.open_segment()? {
                    Opened::Yes => {}
                    Opened::Nothing => return Ok(None),
                    Opened::Skipped => continue,
                }
            }
            let Some((first, file)) = self.segment.as_mut() else {
                continue;
            };
            let first = *first;
            // What is committed of this segment, and whether another follows.
            let (limit, following) = {
                let segments = lock(&self.shared.segments);
                let limit = segments
                    .list
                    .iter()
                    .find(|s| s.first == first)
                    .map(|s| s.len);
                let following = segments.list.iter().map(|s| s.first).find(|&f| f > first);
                (limit, following)
            };
            let Some(limit) = limit else {
                // Deleted under us (dropped to make room): go on from the next.
                self.segment = None;
                continue;
            };
            self.chunks.limit = limit;
            match self.chunks.next_record(file) {
                Ok(Some((seq, payload, end))) => {
                    self.failures = 0;
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
                    self.shared.read_to.store(self.next_seq, Ordering::Release);
                    return Ok(Some(&self.chunks.buf[payload]));
                }
                Ok(None) => {
                    self.failures = 0;
                    match following {
                        Some(next) => {
                            // Records between here and the next segment are lost.
                            self.damaged += next.saturating_sub(self.next_seq);
                            self.move_to(next.max(self.next_seq));
                        }
                        None => {
                            // Caught up: an ack now also covers what was skipped.
                            self.position = AckPoint {
                                seq: self.next_seq,
                                segment: first,
                                offset: self.chunks.position(),
                            };
                            return Ok(None);
                        }
                    }
                }
                Err(err) => {
                    self.failures += 1;
                    if self.failures < READ_ATTEMPTS {
                        return Err(err);
                    }
                    // Unreadable (a bad sector): give up on the rest of it.
                    self.failures = 0;
                    let next =
                        following.unwrap_or_else(|| self.shared.written.load(Ordering::Acquire));
                    self.damaged += next.saturating_sub(self.next_seq);
                    self.move_to(next.max(self.next_seq));
                    return Err(err);
                }
            }
        }
    }

    /// The next record number this reader expects.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Passes over record `seq`, of `size` bytes at `offset` in `segment`,
    /// without reading it, when the reader stands exactly there: the caller
    /// has the record's content already (it just wrote it). False, and nothing
    /// changes, otherwise.
    pub fn pass_over(&mut self, seq: u64, segment: u64, offset: u64, size: u64) -> bool {
        if seq != self.next_seq || self.shared.skip_to.load(Ordering::Acquire) > seq {
            return false;
        }
        if self.segment.is_none() && !matches!(self.open_segment(), Ok(Opened::Yes)) {
            return false;
        }
        match &self.segment {
            Some((first, _)) if *first == segment && self.chunks.position() == offset => {}
            _ => return false,
        }
        let end = offset + size;
        self.chunks.advance_to(end);
        self.next_seq = seq + 1;
        self.position = AckPoint {
            seq: self.next_seq,
            segment,
            offset: end,
        };
        self.shared.read_to.store(self.next_seq, Ordering::Release);
        true
    }

    /// Goes on from record `seq`, at the start of the segment beginning there.
    fn move_to(&mut self, seq: u64) {
        self.next_seq = seq;
        self.segment = None;
        self.position = AckPoint {
            seq,
            segment: seq,
            offset: 0,
        };
        self.shared.read_to.store(seq, Ordering::Release);
    }

    /// Opens the segment holding `next_seq`.
    fn open_segment(&mut self) -> io::Result<Opened> {
        let first = {
            let segments = lock(&self.shared.segments);
            let holding = segments
                .list
                .iter()
                .rev()
                .map(|s| s.first)
                .find(|&f| f <= self.next_seq);
            match (holding, segments.list.front()) {
                (Some(first), _) => first,
                (None, Some(oldest)) => {
                    // Records before the oldest segment are gone.
                    self.damaged += oldest.first - self.next_seq;
                    self.next_seq = oldest.first;
                    oldest.first
                }
                (None, None) => return Ok(Opened::Nothing),
            }
        };
        let file = match File::open(segment_path(&self.shared.dir, first)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // Removed from under the buffer: its records are lost.
                let following = lock(&self.shared.segments)
                    .list
                    .iter()
                    .map(|s| s.first)
                    .find(|&f| f > first);
                let next = following.unwrap_or_else(|| self.shared.written.load(Ordering::Acquire));
                self.damaged += next.saturating_sub(self.next_seq);
                self.move_to(next.max(self.next_seq));
                return Ok(if following.is_some() {
                    Opened::Skipped
                } else {
                    Opened::Nothing
                });
            }
            Err(err) => return Err(err),
        };
        let offset = if self.position.segment == first && self.position.seq == self.next_seq {
            self.position.offset
        } else {
            0
        };
        self.chunks.reset(offset);
        self.segment = Some((first, file));
        Ok(Opened::Yes)
    }

    /// Acknowledges every record returned (and skipped) so far: they were
    /// delivered or given up on, so they need not be read again, and segments
    /// holding only acknowledged records are deleted.
    ///
    /// # Errors
    ///
    /// When the ack file cannot be written (the records are read again after
    /// a restart: at-least-once).
    pub fn ack(&mut self) -> io::Result<()> {
        if self.position == self.acked {
            return Ok(());
        }
        write_ack(&self.ack_file, self.position)?;
        self.acked = self.position;
        self.shared
            .acked
            .store(self.position.seq, Ordering::Release);
        let mut delivered = Vec::new();
        {
            let mut segments = lock(&self.shared.segments);
            while segments.list.len() >= 2 && segments.list[1].first <= self.acked.seq {
                if let Some(segment) = segments.list.pop_front() {
                    segments.bytes -= segment.len;
                    delivered.push(segment.first);
                }
            }
            segments.acked_bytes = match segments.list.front() {
                Some(front) if front.first == self.acked.segment => {
                    self.acked.offset.min(front.len)
                }
                _ => 0,
            };
        }
        for first in delivered {
            remove_segment(&self.shared, first);
        }
        Ok(())
    }

    /// Records found damaged or missing since the last call.
    pub fn take_damaged(&mut self) -> u64 {
        std::mem::take(&mut self.damaged)
    }
}
