//! Forged senders cannot flood the log or crowd out a legitimate sender.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{ConfigBuilder, Herald, fixture, poll_until};

/// Example lines the flood log lets through per second (herald's budget).
const LINES_PER_SECOND: u64 = 10;

/// Sends `count` copies of `datagram` from `socket` at `rate` a second.
fn paced(socket: &UdpSocket, to: SocketAddr, datagram: &[u8], count: u64, rate: u64) {
    let start = Instant::now();
    for i in 0..count {
        // Keep to the schedule in steps of a millisecond.
        if i % (rate / 1000).max(1) == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let _ = socket.send_to(datagram, to);
    }
}

/// 2,000 sockets on forged loopback addresses 127.0.x.y, none of them allowed.
fn forged_sources() -> Vec<UdpSocket> {
    (0..2000u32)
        .map(|i| {
            let ip = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
            UdpSocket::bind((ip.as_str(), 0)).unwrap_or_else(|err| panic!("bind {ip}: {err}"))
        })
        .collect()
}

/// Waits until herald has read everything sent (the count stops moving).
fn settle(herald: &mut Herald) {
    let mut last = -1.0;
    poll_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = herald.metric("herald_ingest_datagrams_total", &[])
            + herald.metric("herald_ingest_kernel_drops_total", &[]);
        let still = now == last;
        last = now;
        still
    });
}

fn refusal_lines(herald: &Herald) -> usize {
    herald
        .stderr()
        .lines()
        .filter(|l| l.contains("not in ingest.allow"))
        .count()
}

#[test]
fn two_thousand_forged_senders_get_a_bounded_log_and_cost_a_legitimate_sender_nothing() {
    let _alone = crate::one_at_a_time();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .allow(&["127.0.0.1/32"])
            .without_dead_letter()
            .extra("[sinks.sink]\ntype = \"null\"\n")
            .build(),
    );
    let to = herald.udp;
    let legit = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let datagram = |host: &str| {
        String::from_utf8(fixture("engine_error").datagram)
            .expect("UTF-8 fixture")
            .replace(";pro2-win1;", &format!(";{host};"))
            .into_bytes()
    };
    const SENT: u64 = 60_000;
    const RATE: u64 = 20_000;

    // The legitimate sender alone: what it loses on this machine anyway.
    paced(&legit, to, &datagram("alone"), SENT, RATE);
    settle(&mut herald);
    let events = |h: &Herald, host: &str| h.metric("herald_events_total", &[("host", host)]);
    herald.wait_for("the sender's events counted", |h| {
        events(h, "alone") + h.metric("herald_ingest_kernel_drops_total", &[]) >= SENT as f64
    });
    let lost_alone = SENT as f64 - events(&herald, "alone");

    // The same beside 2,000 forged senders sending as fast as they can.
    let sockets = forged_sources();
    let stop = Arc::new(AtomicBool::new(false));
    let forged = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, forged) = (stop.clone(), forged.clone());
        std::thread::spawn(move || {
            let junk = b"/qseow-engine/;forged";
            while !stop.load(Ordering::Relaxed) {
                for socket in &sockets {
                    if socket.send_to(junk, to).is_ok() {
                        forged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let flood_start = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let kernel_before = herald.metric("herald_ingest_kernel_drops_total", &[]);
    paced(&legit, to, &datagram("flooded"), SENT, RATE);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    let flood_seconds = flood_start.elapsed().as_secs_f64();
    settle(&mut herald);
    let kernel_during = herald.metric("herald_ingest_kernel_drops_total", &[]) - kernel_before;
    herald.wait_for("the sender's events counted", |h| {
        events(h, "flooded") + h.metric("herald_ingest_kernel_drops_total", &[]) - kernel_before
            >= SENT as f64
    });
    let lost_flooded = SENT as f64 - events(&herald, "flooded");

    let refused = herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]);
    let lines = refusal_lines(&herald);
    println!(
        "forged datagrams sent {} in {flood_seconds:.1} s, refused {refused}; refusal lines {lines}; \
         legitimate sender lost {lost_alone} alone, {lost_flooded} beside the flood (kernel drops meanwhile {kernel_during})",
        forged.load(Ordering::Relaxed)
    );
    assert!(
        refused > 100_000.0,
        "the flood was too small to mean anything: {refused}"
    );
    // Every refusal is counted ...
    assert!(refused <= forged.load(Ordering::Relaxed) as f64);
    // ... but the log gets at most the budget's lines (plus the first second's).
    let budget = LINES_PER_SECOND as f64 * (flood_seconds.ceil() + 1.0);
    assert!(
        lines >= 1 && lines as f64 <= budget,
        "{lines} refusal lines in {flood_seconds:.1} s (budget {budget})"
    );
    // The legitimate sender loses nothing it would not lose alone (a few
    // datagrams of slack for what else the machine is doing).
    assert!(
        lost_flooded <= lost_alone + SENT as f64 * 0.001,
        "lost {lost_flooded} beside the flood, {lost_alone} alone"
    );
}
