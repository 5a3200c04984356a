use super::*;

/// One stream, fed rows one at a time.
struct Feed {
    gaps: SenderGaps,
    start: Instant,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            gaps: SenderGaps::new(Arc::new(HostLabels::new(10)), 100),
            start: Instant::now(),
        }
    }

    fn rows_at(&self, host: &str, tag: &str, rows: &[u32], seconds: u64) {
        let mut batch = Rows::default();
        for &row in rows {
            batch.keys.push_str(host);
            batch.keys.push('\u{1f}');
            batch.keys.push_str(tag);
            batch.rows.push((batch.keys.len(), Source::Engine, row));
        }
        self.gaps.record(
            &mut batch,
            self.start + Duration::from_secs(seconds),
            jiff::Timestamp::UNIX_EPOCH,
        );
    }

    fn rows(&self, rows: &[u32]) {
        self.rows_at("node1", "/qseow-engine/", rows, 0);
    }

    /// The only stream's status once every gap is due.
    fn settled(&self) -> StreamStatus {
        self.gaps
            .close_due(self.start + GRACE + Duration::from_secs(60));
        let mut all = self.gaps.snapshot();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }
}

#[test]
fn a_complete_sequence_loses_nothing() {
    let feed = Feed::new();
    feed.rows(&(1..=500).collect::<Vec<_>>());
    let status = feed.settled();
    assert_eq!((status.received, status.lost, status.late), (500, 0, 0));
    assert_eq!(status.last_row, 500);
}

#[test]
fn skipped_rows_count_as_lost_only_after_the_grace_period() {
    let feed = Feed::new();
    feed.rows(&[1, 2, 3, 7, 8, 20]);
    let now = feed.gaps.snapshot();
    assert_eq!((now[0].missing, now[0].lost), (3 + 11, 0));
    let status = feed.settled();
    assert_eq!((status.missing, status.lost), (0, 14));
    assert!((status.loss_ratio() - 14.0 / 20.0).abs() < 1e-9);
}

#[test]
fn reordered_rows_fill_their_gap() {
    let feed = Feed::new();
    // Two workers' batches arriving out of order, and a swap within one.
    feed.rows(&[1, 2, 3, 4, 9, 10, 12, 11]);
    feed.rows(&[5, 6, 8, 7, 13]);
    let status = feed.settled();
    assert_eq!((status.received, status.lost, status.late), (13, 0, 5));
    assert_eq!(status.last_row, 13);
}

#[test]
fn a_late_row_after_its_grace_period_changes_nothing_counted() {
    let feed = Feed::new();
    feed.rows(&[1, 3]);
    feed.rows_at("node1", "/qseow-engine/", &[4], 10);
    assert_eq!(feed.gaps.snapshot()[0].lost, 1);
    feed.rows_at("node1", "/qseow-engine/", &[2], 11);
    let status = feed.settled();
    assert_eq!((status.lost, status.late, status.restarts), (1, 0, 0));
}

#[test]
fn a_restart_early_in_the_count_is_told_by_the_pause() {
    let feed = Feed::new();
    feed.rows(&[1, 2, 3, 4, 5, 6]);
    // The service restarts: its first rows come again, after a pause.
    feed.rows_at("node1", "/qseow-engine/", &[1, 2, 3, 4, 5, 6, 7, 8], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.last_row), (0, 1, 8));
}

#[test]
fn the_counter_wraps_after_9999_to_1_or_to_0() {
    // 1-based: 9999 is followed by 1.
    let feed = Feed::new();
    feed.rows(&[9997, 9998, 9999, 1, 2, 4]);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (1, 0));
    assert_eq!(status.last_row, 4);
    // 0-based: 9999 is followed by 0.
    let feed = Feed::new();
    feed.rows(&[9998, 9999, 0, 1, 3]);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (1, 0));
    // Rows lost across the wrap.
    let feed = Feed::new();
    feed.rows(&[9990, 5, 6]);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (9 + 4, 0));
    // A late row from before the wrap.
    let feed = Feed::new();
    feed.rows(&[9998, 1, 2, 9999, 3]);
    let status = feed.settled();
    assert_eq!((status.lost, status.late), (0, 1));
}

#[test]
fn a_restarted_service_is_a_restart_not_a_loss() {
    let feed = Feed::new();
    feed.rows(&[4000, 4001, 4002]);
    feed.rows_at("node1", "/qseow-engine/", &[1, 2, 3], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.last_row), (0, 1, 3));
    // Rows lost just after the restart do count.
    let feed = Feed::new();
    feed.rows(&[4000, 4001]);
    feed.rows_at("node1", "/qseow-engine/", &[3, 4], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (2, 1));
    // A gap still open when the service restarts stays lost.
    let feed = Feed::new();
    feed.rows(&[100, 103]);
    feed.rows_at("node1", "/qseow-engine/", &[1], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (2, 1));
    // A wrap whose first rows were lost is not a restart.
    let feed = Feed::new();
    feed.rows(&[9995, 9996, 2, 3]);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (4, 0));
}

#[test]
fn without_a_pause_low_rows_are_reordering_not_restarts() {
    // A duplicate of an early row, well after it.
    let feed = Feed::new();
    let mut rows: Vec<u32> = (1..=100).collect();
    rows.extend([3, 101]);
    feed.rows(&rows);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.last_row), (0, 0, 101));
    // Two workers' batches around the wrap, the later one first.
    let feed = Feed::new();
    feed.rows(&(9500..9600).collect::<Vec<_>>());
    feed.rows(&(1..=400).collect::<Vec<_>>());
    feed.rows(&(9600..=9999).collect::<Vec<_>>());
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.late), (0, 0, 400));
    assert_eq!(status.last_row, 400);
}

#[test]
fn a_restart_whose_first_rows_were_lost_is_still_a_restart() {
    // Far from the wrap, after a pause: rows 1 to 39 of the new count lost.
    let feed = Feed::new();
    feed.rows(&(8900..=9000).collect::<Vec<_>>());
    feed.rows_at("node1", "/qseow-engine/", &[40, 41, 42], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.last_row), (39, 1, 42));
    // Behind the stream's first row, after a pause.
    let feed = Feed::new();
    feed.rows(&(3900..=4000).collect::<Vec<_>>());
    feed.rows_at("node1", "/qseow-engine/", &[40, 41], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (39, 1));
    // A network outage: rows far on, not near the start, are lost ones.
    let feed = Feed::new();
    feed.rows(&(1..=100).collect::<Vec<_>>());
    feed.rows_at("node1", "/qseow-engine/", &[300, 301], 30);
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts), (199, 0));
}

#[test]
fn rows_from_before_the_first_one_seen_are_late_not_a_restart() {
    // Two workers' batches as the stream begins, the later one first,
    // with rows 10 and 11 lost.
    let feed = Feed::new();
    feed.rows(&(41..=60).collect::<Vec<_>>());
    feed.rows(
        &(1..=40)
            .filter(|r| ![10, 11].contains(r))
            .collect::<Vec<_>>(),
    );
    let status = feed.settled();
    assert_eq!((status.lost, status.restarts, status.last_row), (2, 0, 60));
    assert_eq!(status.late, 38);
}

#[test]
fn a_silent_stream_gives_its_place_to_a_new_one() {
    let gaps = SenderGaps::new(Arc::new(HostLabels::new(10)), 1);
    let start = Instant::now();
    let row = |host: &str, seconds: u64| {
        let mut rows = Rows::default();
        rows.keys.push_str(host);
        rows.keys.push('\u{1f}');
        rows.keys.push_str("/qseow-engine/");
        rows.rows.push((rows.keys.len(), Source::Engine, 1));
        gaps.record(
            &mut rows,
            start + Duration::from_secs(seconds),
            jiff::Timestamp::UNIX_EPOCH,
        );
    };
    row("old", 0);
    row("new", 60);
    assert_eq!(gaps.snapshot()[0].host, "old", "not silent long enough");
    row("new", 601);
    let all = gaps.snapshot();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].host, "new");
}

#[test]
fn duplicates_are_neither_lost_nor_late() {
    let feed = Feed::new();
    feed.rows(&[1, 2, 2, 3, 1]);
    let status = feed.settled();
    assert_eq!((status.received, status.lost, status.late), (5, 0, 0));
}

#[test]
fn streams_are_per_host_and_tag_and_bounded() {
    let gaps = SenderGaps::new(Arc::new(HostLabels::new(1)), 3);
    let mut rows = Rows::default();
    for (host, tag) in [
        ("node1", "/qseow-engine/"),
        ("node1", "/qseow-qix-perf/"),
        ("node2", "/qseow-engine/"),
        ("node3", "/qseow-engine/"),
    ] {
        rows.keys.push_str(host);
        rows.keys.push('\u{1f}');
        rows.keys.push_str(tag);
        rows.rows.push((rows.keys.len(), Source::Engine, 7));
    }
    gaps.record(&mut rows, Instant::now(), jiff::Timestamp::UNIX_EPOCH);
    let all = gaps.snapshot();
    let names: Vec<_> = all
        .iter()
        .map(|s| (s.host.as_str(), s.tag.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("node1", "/qseow-engine/"),
            ("node1", "/qseow-qix-perf/"),
            ("node2", "/qseow-engine/"),
        ]
    );
    assert!(rows.is_empty());
}

#[test]
fn open_gaps_per_stream_are_bounded() {
    let feed = Feed::new();
    let rows: Vec<u32> = (0..200).map(|i| 1 + i * 3).collect();
    feed.rows(&rows);
    let streams = feed.gaps.streams.lock().unwrap();
    let stream = streams.map.values().next().unwrap();
    assert_eq!(stream.gaps.len(), MAX_GAPS);
    assert_eq!(stream.status.lost + stream.status.missing, 2 * 199);
}

/// Arbitrary losses and local reorderings of a long wrapping sequence:
/// what is counted lost is exactly what was never sent on.
#[test]
fn random_losses_and_reorderings_are_counted_exactly() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    for round in 0..20 {
        let feed = Feed::new();
        let start = 1 + random(9999) as u32;
        let mut sent = Vec::new();
        let mut dropped = 0;
        let total = 30_000;
        for i in 0..total {
            let row = (start - 1 + i) % 9999 + 1;
            // Never the first or last row: what is lost is then always
            // between two rows that arrived.
            if i > 0 && i < total - 1 && random(100) < 3 {
                dropped += 1;
            } else {
                sent.push(row);
            }
        }
        // Swap neighbours now and then.
        for i in 1..sent.len() {
            if random(100) < 5 {
                sent.swap(i - 1, i);
            }
        }
        for chunk in sent.chunks(97) {
            feed.rows(chunk);
        }
        let status = feed.settled();
        assert_eq!(status.lost, dropped, "round {round}, start {start}");
        assert_eq!(status.restarts, 0, "round {round}");
    }
}
