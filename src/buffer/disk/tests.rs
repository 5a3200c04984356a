//! The segment log: reading back, acknowledging, restarting, damage, a full
//! log, and what the sync thread deletes and drops from the page cache.

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
