//! Events per second delivered into a real InfluxDB 1.x: herald's batched,
//! gzipped writes versus one HTTP write per event (what today's tools do), in the
//! same run against the same server.
//!
//! Run with `cargo bench --bench influxdb` (needs `influxd` from Debian's
//! `influxdb` package; the bench starts its own on a free loopback port).
//! Every run counts the stored points afterwards, so a figure is only printed
//! for events that really arrived.

use std::sync::Arc;
use std::time::Instant;

use herald::event::Event;
use herald::parse::{ParseConfig, Parser};
use herald::sinks::Sink;
use herald::sinks::influxdb::{InfluxdbConfig, InfluxdbSink};

#[path = "../tests/support/influxd.rs"]
mod influxd;
#[path = "../tests/support/ports.rs"]
mod ports;
use influxd::Influxd;

/// `count` distinct engine events (each its own millisecond).
fn events(count: usize) -> Vec<Arc<Event>> {
    let mut parser = Parser::new(&ParseConfig::default()).expect("default config");
    let sender = "10.0.0.5:61000".parse().expect("address");
    (0..count)
        .map(|n| {
            let (ms, second, minute) = (n % 1000, (n / 1000) % 60, n / 60_000);
            let datagram = format!(
                "/qseow-engine/;{};20240519T12{minute:02}{second:02}.{ms:03}+0200;2024-05-19 12:{minute:02}:{second:02},{ms:03};WARN;pro2-win1;System.Engine.Engine;LAB\\qlikservice;Document {n} could not be opened: file not found;3b6c1f7e-2f1d-4a55-9d2e-4b1f0b3a9c11;LAB;goran;2024-05-19T12:03:12.113+02:00;6f1e7a5a-0c77-4d52-8a3e-5d1f7c9e2b10;14.173.3;2024-05-18T06:01:44.000+02:00;Warning;a1b2c3d4-0000-4000-8000-1234567890ab;e7af59a0-c243-480d-9571-08727551a66f",
                n % 9999 + 1
            );
            let mut event = parser
                .parse(datagram.as_bytes(), sender, jiff::Timestamp::now())
                .expect("valid datagram");
            event.sequence = n as u64;
            Arc::new(event)
        })
        .collect()
}

/// Delivers `events` in batches of `batch` into database `db`; returns events/s.
async fn run(influxd: &Influxd, db: &str, events: &[Arc<Event>], batch: usize) -> f64 {
    influxd.create_database(db);
    let config: InfluxdbConfig =
        toml::from_str(&format!("url = \"{}\"\ndatabase = \"{db}\"", influxd.url()))
            .expect("config");
    let mut sink = InfluxdbSink::new(&config).expect("sink");
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        sink.deliver(chunk).await.expect("delivered");
    }
    let elapsed = start.elapsed();
    let stored = influxd.count(db, "log");
    assert_eq!(stored, events.len(), "every event stored");
    events.len() as f64 / elapsed.as_secs_f64()
}

fn main() {
    let Some(influxd) = Influxd::start() else {
        eprintln!("influxd is not installed: apt-get install influxdb");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let batched_events = events(50_000);
    let single_events = events(2_000);
    let (batched, single) = runtime.block_on(async {
        // Warm up the server (first writes create shards).
        run(&influxd, "warmup", &events(1_000), 500).await;
        let batched = run(&influxd, "batched", &batched_events, 5_000).await;
        let single = run(&influxd, "single", &single_events, 1).await;
        (batched, single)
    });
    println!("| mode | events | events/s |");
    println!("|---|---|---|");
    println!(
        "| herald: batches of 5000, gzip | {} | {batched:.0} |",
        batched_events.len()
    );
    println!(
        "| one write per event | {} | {single:.0} |",
        single_events.len()
    );
    println!("batched / single = {:.1}x", batched / single);
}
