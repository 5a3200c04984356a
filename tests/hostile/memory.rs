//! Memory stays within the worst case the README states, whatever arrives.
//!
//! Each test floods one path and compares herald's peak resident memory with
//! the README's worst case for the config it runs (default budgets
//! throughout; see "Memory" in the README):
//!
//! ```text
//! program + listeners × (3 × recv_batch × max_datagram_bytes + 24 MiB)
//!         + pipeline.queue_bytes + workers × 8 MiB
//!         + sinks × (queue_bytes + 24 MiB) + disk-buffered sinks × 8 MiB
//!         + dead_letter.queue_bytes + 1 MiB
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::harness::{ConfigBuilder, Herald, fixture, free_tcp_port, poll_until};

const MIB: u64 = 1024 * 1024;

/// The README's "program" term: the binary, its threads and runtime, and the
/// allocator's own overhead, at most.
const PROGRAM: u64 = 64 * MIB;

/// The README's worst case for `listeners` listeners and `sinks` memory-
/// buffered sinks, with two workers, a dead-letter file and every budget at
/// its default.
fn worst_case(listeners: u64, sinks: u64) -> u64 {
    let per_listener = 3 * 64 * 65_507 + 24 * MIB;
    PROGRAM
        + listeners * per_listener
        + 64 * MIB
        + 2 * 8 * MIB
        + sinks * (128 * MIB + 24 * MIB)
        + 16 * MIB
        + MIB
}

fn engine_datagram(host: &str, message: &str) -> Vec<u8> {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| String::from_utf8(fixture("engine_error").datagram).expect("UTF-8 fixture"))
        .replace(";pro2-win1;", &format!(";{host};"))
        .replace("could not be opened: file not found", message)
        .into_bytes()
}

/// Sends `per_ms` datagrams a millisecond, so that herald reads them all.
fn paced(to: SocketAddr, per_ms: usize, datagrams: impl Iterator<Item = Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let start = std::time::Instant::now();
    for (i, datagram) in datagrams.enumerate() {
        if i % per_ms == 0 {
            let due = start + Duration::from_millis((i / per_ms) as u64);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let _ = socket.send_to(&datagram, to);
    }
}

/// Waits until herald has read everything sent (the count stops moving) and
/// its workers have handled all they read.
fn settle(herald: &mut Herald) {
    let mut last = -1.0;
    poll_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let read = herald.metric("herald_ingest_datagrams_total", &[]);
        let handled = herald.metric("herald_parse_events_total", &[])
            + herald.metric("herald_parse_errors_total", &[])
            + herald.metric("herald_pipeline_dropped_total", &[("stage", "ingest")])
            + herald.metric("herald_ingest_rejected_total", &[]);
        let still = read == last && handled >= read;
        last = read;
        still
    });
}

fn report(what: &str, herald: &Herald, bound: u64) -> u64 {
    let peak = herald.peak_rss_bytes();
    println!(
        "{what}: peak RSS {} MiB, bound {} MiB",
        peak / MIB,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "{what}: peak RSS {} MiB over the worst case {} MiB",
        peak / MIB,
        bound / MIB
    );
    peak
}

#[test]
fn made_up_host_names_do_not_grow_memory() {
    let _alone = crate::one_at_a_time();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .without_dead_letter()
            .extra("[sinks.sink]\ntype = \"null\"\n")
            .build(),
    );
    let prefix = "h".repeat(64);
    let to = herald.udp;
    // Rounds of 50,000 names never seen before: half share a 64-character
    // prefix, half are long and distinct. Paced, so that the queues stay
    // short and what is measured is what herald keeps per name.
    let round = |round: u64| {
        let prefix = prefix.clone();
        paced(
            to,
            10,
            (round * 50_000..(round + 1) * 50_000).map(move |i| {
                let host = if i % 2 == 0 {
                    format!("{prefix}{i}")
                } else {
                    format!("{}{i}", "x".repeat(200 + (i % 50) as usize))
                };
                engine_datagram(&host, "m")
            }),
        );
    };
    let mut resident = Vec::new();
    for n in 0..4 {
        round(n);
        settle(&mut herald);
        resident.push(herald.rss_bytes());
    }
    println!(
        "resident after each round of 50,000 new host names: {:?} MiB",
        resident.iter().map(|r| r / MIB).collect::<Vec<_>>()
    );
    report("200,000 made-up hosts", &herald, worst_case(1, 2));
    // Nothing is kept per made-up name: once the first rounds have sized the
    // queues and the allocator, further rounds cost nothing more (keeping the
    // names, as herald once did, cost about 3.6 KB each: 360 MiB over the
    // last two rounds).
    assert!(
        resident[3] <= resident[1] + 16 * MIB,
        "resident memory grew from {} to {} MiB",
        resident[1] / MIB,
        resident[3] / MIB
    );
    let labels = herald
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("herald_events_total{"))
        .filter_map(|l| {
            l.split("host=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect::<std::collections::BTreeSet<_>>();
    assert!(labels.len() <= 50 + 1, "{} host labels", labels.len());
    assert!(labels.iter().all(|l| l.chars().count() <= 64));
}

#[test]
fn long_events_while_a_sink_is_down_stay_within_its_queue_budget() {
    let _alone = crate::one_at_a_time();
    let closed = free_tcp_port();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&format!(
                "[sinks.grafana]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:{closed}\"\n\
                 api = \"v1\"\ndatabase = \"herald\"\n"
            ))
            .build(),
    );
    // Events of 60 KB (about 17 KB each once their text is cut to 16 KiB)
    // while InfluxDB is unreachable, until the sink's queue is full and
    // drops the oldest: at least 600 MB sent, at 2,000 a second so that the
    // workers keep up and the events reach the queue.
    let message = "y".repeat(60_000);
    let dropped = |h: &Herald| h.metric("herald_pipeline_dropped_total", &[("sink", "grafana")]);
    let mut sent = 0;
    while sent < 30_000 && (sent < 10_000 || dropped(&herald) == 0.0) {
        paced(
            herald.udp,
            2,
            (sent..sent + 2_000).map(|i| engine_datagram(&format!("node{}", i % 4), &message)),
        );
        sent += 2_000;
    }
    settle(&mut herald);
    let queued = herald.metric("herald_sink_queue_bytes", &[("sink", "grafana")]);
    println!(
        "sent {sent}, queued {} MiB, dropped by the full queue {}",
        queued as u64 / MIB,
        dropped(&herald)
    );
    assert!(
        dropped(&herald) > 0.0,
        "the queue never filled: {queued} bytes"
    );
    assert!(queued <= 128.0 * MIB as f64, "{queued} bytes queued");
    report(
        "events of 60 KB until the queue was full, InfluxDB down",
        &herald,
        worst_case(1, 2),
    );
}

#[test]
fn garbage_at_full_speed_stays_within_the_hand_off_and_dead_letter_budgets() {
    let _alone = crate::one_at_a_time();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .without_dead_letter()
            .extra(
                "[dead_letter]\npath = \"dead.jsonl\"\nmax_bytes = 10000000\nmax_files = 2\n\n\
                 [sinks.sink]\ntype = \"null\"\n",
            )
            .build(),
    );
    // 8,000 datagrams of 65,507 bytes a second for 5 s that are not Sense
    // events (2.6 GB).
    let mut rng = crate::harness::Rng::new(7);
    let garbage: Vec<Vec<u8>> = (0..16).map(|_| rng.bytes(65_507)).collect();
    paced(herald.udp, 8, (0..40_000).map(|i| garbage[i % 16].clone()));
    settle(&mut herald);
    println!(
        "read {}, dropped at the hand-off {}, kernel drops {}",
        herald.metric("herald_ingest_datagrams_total", &[]),
        herald.metric("herald_pipeline_dropped_total", &[("stage", "ingest")]),
        herald.metric("herald_ingest_kernel_drops_total", &[]),
    );
    // Garbage never reaches a sink, so the sinks' term of the worst case is
    // not used. (Batches that shared one buffer kept the batches dropped at
    // the hand-off allocated beside them: 186-495 MiB over many runs.)
    report(
        "40,000 garbage datagrams of 64 KB",
        &herald,
        worst_case(1, 0),
    );
    // The dead-letter files keep to max_bytes, within one record.
    let mut files = 0;
    for entry in std::fs::read_dir(herald.dir()).expect("dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("dead.jsonl") {
            files += 1;
            let size = entry.metadata().expect("metadata").len();
            assert!(size <= 10_000_000 + 400_000, "{name}: {size} bytes");
        }
    }
    assert!((1..=3).contains(&files), "{files} dead-letter files");
    let lost = herald.metric("herald_dead_letters_lost_total", &[]);
    let kept = herald.metric("herald_dead_letters_total", &[]);
    println!("dead letters: {kept} written, {lost} not kept (queue full)");
}
