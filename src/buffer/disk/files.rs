//! The small files beside a disk buffer's segments, and reading a segment
//! through to find where its intact records end.
//!
//! * `ack`: where delivery has got to ([`AckPoint`]), rewritten by the reader
//!   after every delivered batch.
//! * `written`: how far the last run wrote and what it dropped
//!   ([`WrittenMark`]), rewritten by the sync thread.
//!
//! Both carry a CRC-32C: a torn or damaged one reads as absent, which costs a
//! re-sent batch or an uncounted tail, never a refusal to start.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::reader::Chunks;

/// Suffix of segment files; the name is the first record's number, 20 digits.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// The path of the segment whose first record is `first_seq`.
pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Segment files in `dir` by their first record number, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<VecDeque<u64>> {
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

/// Where the reader had got to when it last acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPoint {
    /// The next record to deliver.
    pub seq: u64,
    /// The segment holding it.
    pub segment: u64,
    /// Its offset in that segment.
    pub offset: u64,
}

const ACK_MAGIC: [u8; 4] = *b"HRA1";
const ACK_LEN: usize = 4 + 8 * 3 + 4;

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn crc_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads the `ack` file; `None` when it is empty or damaged.
pub fn read_ack(file: &mut File) -> Option<AckPoint> {
    let mut bytes = [0; ACK_LEN];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut bytes).ok()?;
    (bytes[..4] == ACK_MAGIC && crc32c::crc32c(&bytes[..28]) == crc_at(&bytes, 28)).then(|| {
        AckPoint {
            seq: word(&bytes, 4),
            segment: word(&bytes, 12),
            offset: word(&bytes, 20),
        }
    })
}

/// Rewrites the `ack` file.
pub fn write_ack(mut file: &File, point: AckPoint) -> io::Result<()> {
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

/// What the `written` file records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WrittenMark {
    /// The next record number the run would have written.
    pub written: u64,
    /// Records below this were dropped by `overflow = "drop_oldest"`.
    pub skip_to: u64,
}

const WRITTEN_LEN: usize = 8 * 2 + 4;

/// Reads the `written` file; `None` when it is empty or damaged.
pub fn read_written(file: &mut File) -> Option<WrittenMark> {
    let mut bytes = [0; WRITTEN_LEN];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut bytes).ok()?;
    (crc32c::crc32c(&bytes[..16]) == crc_at(&bytes, 16)).then(|| WrittenMark {
        written: word(&bytes, 0),
        skip_to: word(&bytes, 8),
    })
}

/// Rewrites the `written` file.
pub fn write_written(mut file: &File, mark: WrittenMark) -> io::Result<()> {
    let mut bytes = [0; WRITTEN_LEN];
    bytes[..8].copy_from_slice(&mark.written.to_le_bytes());
    bytes[8..16].copy_from_slice(&mark.skip_to.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&bytes)
}

/// What a segment's records end with.
#[derive(Debug)]
pub struct Tail {
    /// The last intact record's number.
    pub last_seq: Option<u64>,
    /// Where the last intact record ends.
    pub valid_end: u64,
    /// The file's length.
    pub len: u64,
}

/// Reads a segment through, chunk by chunk, to find where its intact records end.
pub fn scan_tail(path: &Path) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut chunks = Chunks::new();
    chunks.limit = len;
    let mut tail = Tail {
        last_seq: None,
        valid_end: 0,
        len,
    };
    while let Some((seq, _, end)) = chunks.next_record(&mut file)? {
        tail.last_seq = Some(seq);
        tail.valid_end = end;
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_files_round_trip_and_damage_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        assert_eq!(read_ack(&mut file), None);
        let point = AckPoint {
            seq: 7,
            segment: 5,
            offset: 99,
        };
        write_ack(&file, point).unwrap();
        assert_eq!(read_ack(&mut file), Some(point));
        let mark = WrittenMark {
            written: 12,
            skip_to: 3,
        };
        write_written(&file, mark).unwrap();
        assert_eq!(read_written(&mut file), Some(mark));
        let mut bytes = fs::read(dir.path().join("f")).unwrap();
        bytes[9] ^= 1;
        fs::write(dir.path().join("f"), &bytes).unwrap();
        let mut file = File::open(dir.path().join("f")).unwrap();
        assert_eq!(read_written(&mut file), None);
    }
}
