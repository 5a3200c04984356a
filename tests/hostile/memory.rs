//! Memory stays within the worst case the README states, whatever arrives.
//!
//! Each test floods one path and compares herald's peak resident memory with
//! the README's formula for the config it runs (default budgets throughout):
//!
//! ```text
//! program + listeners × recv_batch × max_datagram_bytes + pipeline.queue_bytes
//!         + sinks × (queue_bytes + 3 × 8 MiB) + dead_letter.queue_bytes + 1 MiB
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::harness::{ConfigBuilder, Herald, fixture, free_tcp_port, poll_until};

const MIB: u64 = 1024 * 1024;

/// The README's "program" term: the binary, its threads and runtime, and the
/// allocator's own overhead, at most.
const PROGRAM: u64 = 64 * MIB;

/// The README's worst case for `listeners` listeners and `sinks` sinks with
/// every budget at its default.
fn worst_case(listeners: u64, sinks: u64) -> u64 {
    PROGRAM + listeners * 64 * 65_507 + 64 * MIB + sinks * (128 * MIB + 3 * 8 * MIB) + 17 * MIB
}

fn engine_datagram(host: &str, message: &str) -> Vec<u8> {
    String::from_utf8(fixture("engine_error").datagram)
        .expect("UTF-8 fixture")
        .replace(";pro2-win1;", &format!(";{host};"))
        .replace("could not be opened: file not found", message)
        .into_bytes()
}

/// Sends as fast as the socket takes them (a full kernel buffer drops some).
fn blast(to: SocketAddr, datagrams: impl Iterator<Item = Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for datagram in datagrams {
        let _ = socket.send_to(&datagram, to);
    }
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

/// Waits until herald has read everything sent (the count stops moving).
fn settle(herald: &mut Herald) {
    let mut last = -1.0;
    poll_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = herald.metric("herald_ingest_datagrams_total", &[]);
        let still = now == last;
        last = now;
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
    let round = |from: u64| {
        let prefix = prefix.clone();
        blast(
            to,
            (from..from + 150_000).map(move |i| {
                // Half share a 64-character prefix, half are long and distinct.
                let host = if i % 2 == 0 {
                    format!("{prefix}{i}")
                } else {
                    format!("{}{i}", "x".repeat(200 + (i % 50) as usize))
                };
                engine_datagram(&host, "m")
            }),
        );
    };
    round(0);
    settle(&mut herald);
    let first = report("150,000 made-up hosts", &herald, worst_case(1, 2));
    round(150_000);
    settle(&mut herald);
    let second = report("300,000 made-up hosts", &herald, worst_case(1, 2));
    // Nothing is kept per made-up name: a second round costs nothing more.
    assert!(
        second <= first + 16 * MIB,
        "peak grew from {} to {} MiB",
        first / MIB,
        second / MIB
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
    // 10,000 events of 60 KB (600 MB; about 170 MB once their text is cut to
    // 16 KiB) while InfluxDB is unreachable.
    let message = "y".repeat(60_000);
    paced(
        herald.udp,
        5,
        (0..10_000).map(|i| engine_datagram(&format!("node{}", i % 4), &message)),
    );
    settle(&mut herald);
    let read = herald.metric("herald_ingest_datagrams_total", &[]);
    let dropped = herald.metric("herald_pipeline_dropped_total", &[("sink", "grafana")]);
    let queued = herald.metric("herald_sink_queue_bytes", &[("sink", "grafana")]);
    println!(
        "read {read}, queued {} MiB, dropped by the full queue {dropped}",
        queued as u64 / MIB
    );
    assert!(read >= 9_000.0, "herald read only {read} of 10,000");
    assert!(dropped > 0.0, "the queue never filled: {queued} bytes");
    assert!(queued <= 128.0 * MIB as f64, "{queued} bytes queued");
    report(
        "10,000 events of 60 KB, InfluxDB down",
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
    report(
        "40,000 garbage datagrams of 64 KB",
        &herald,
        worst_case(1, 2),
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
