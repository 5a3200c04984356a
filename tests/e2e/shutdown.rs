use std::collections::BTreeMap;
use std::net::UdpSocket;

use crate::harness::{
    ConfigBuilder, Herald, SAMPLES, count_lines, read_json_lines, sample_datagrams,
};

#[test]
fn accepted_events_all_reach_the_file_on_sigterm() {
    // Batches of 300 and a flush interval longer than the test: 1800 events go
    // out as full batches and the last 200 can only reach the file through the
    // drain that SIGTERM starts.
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .flush_interval_ms(600_000)
            .events_sink_key("batch_max_events = 300")
            .build(),
    );
    let samples = sample_datagrams();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    const TOTAL: usize = 2000;
    const CHUNK: usize = 100;
    let mut expected_by_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..TOTAL {
        socket
            .send_to(&samples[i % samples.len()], herald.udp)
            .unwrap();
        *expected_by_tag
            .entry(SAMPLES[i % SAMPLES.len()].2)
            .or_default() += 1;
        // Pace: let herald read each chunk before sending the next, so the
        // kernel never has to drop anything.
        if (i + 1) % CHUNK == 0 {
            let sent = (i + 1) as f64;
            herald.wait_for(&format!("{sent} datagrams read"), |h| {
                h.metric("herald_ingest_datagrams_total", &[]) >= sent
            });
        }
    }
    herald.wait_for("all 2000 datagrams read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= TOTAL as f64
    });
    herald.sigterm();
    let status = herald.wait_exit();
    assert!(
        status.success(),
        "exit {status:?}\nstderr:\n{}",
        herald.stderr()
    );

    let path = herald.dir().join("events.jsonl");
    assert_eq!(count_lines(&path), TOTAL, "stderr:\n{}", herald.stderr());
    let events = read_json_lines(&path);
    assert_eq!(events.len(), TOTAL);
    let mut by_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        *by_tag
            .entry(event["tag"].as_str().expect("tag"))
            .or_default() += 1;
    }
    assert_eq!(by_tag, expected_by_tag);
    let stderr = herald.stderr();
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn sigint_drains_and_exits_cleanly_like_sigterm() {
    let mut herald = Herald::start(&ConfigBuilder::new().flush_interval_ms(5000).build());
    let samples = herald.send_samples();
    herald.wait_for(&format!("{samples} datagrams parsed"), |h| {
        h.metric("herald_parse_events_total", &[]) >= samples as f64
    });
    // With a 5 s flush interval the events are still queued in the sink.
    herald.signal(libc::SIGINT);
    let status = herald.wait_exit();
    assert!(
        status.success(),
        "exit {status:?}\nstderr:\n{}",
        herald.stderr()
    );
    assert_eq!(
        herald.events().len(),
        samples,
        "stderr:\n{}",
        herald.stderr()
    );
}

#[test]
fn a_busy_udp_port_stops_start_up_and_names_the_address() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut herald = Herald::launch(&ConfigBuilder::new().listen(addr).build());
    let status = herald.wait_exit();
    assert!(!status.success(), "herald ran on a busy port");
    let stderr = herald.stderr();
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (ingest.listen)")),
        "{stderr}"
    );
    assert!(!herald.dir().join("events.jsonl").exists() || herald.events().is_empty());
}

#[test]
fn sighup_with_an_unchanged_config_reloads_and_loses_nothing() {
    let mut herald = Herald::start(&ConfigBuilder::new().build());
    let samples = herald.send_samples();
    herald.wait_for_events(samples);
    herald.signal(libc::SIGHUP);
    herald.wait_for("the reload logged", |h| {
        h.stderr()
            .lines()
            .any(|l| l.contains("config reloaded") && l.contains("nothing changed"))
    });
    assert!(!herald.has_exited(), "SIGHUP ended herald");
    herald.send_samples();
    herald.wait_for_events(2 * samples);
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
}

#[test]
fn overflow_block_with_a_dead_sink_cannot_hold_up_a_stop() {
    // A webhook that never answers 2xx, a tiny queue that blocks the workers:
    // the stop still ends within the grace period and keeps every event.
    let stub = crate::http_stub::Stub::start();
    stub.set_default(503, &[], "down");
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&format!(
                "[pipeline]\nshutdown_grace_ms = 1500\n\n\
                 [sinks.hook]\ntype = \"webhook\"\nurl = \"{}/in\"\nbody = \"ndjson\"\n\
                 queue_events = 10\noverflow = \"block\"\nbatch_max_events = 5\nflush_interval_ms = 10\n\
                 retry_initial_ms = 50\nretry_max_ms = 100\n",
                stub.url()
            ))
            .build(),
    );
    let samples = sample_datagrams();
    let refs: Vec<&[u8]> = samples.iter().cycle().take(60).map(Vec::as_slice).collect();
    crate::harness::send("127.0.0.1", herald.udp, &refs);
    herald.wait_for("the webhook being retried", |h| {
        h.metric("herald_sink_retries_total", &[("sink", "hook")]) >= 2.0
    });
    let asked = std::time::Instant::now();
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(6),
        "the stop took {:?}",
        asked.elapsed()
    );
    // Nothing reached the hook, so all 60 are kept for it; the `events` file
    // sink wrote what the blocked workers gave it before the grace period
    // ended, and the rest is kept for it too.
    let dead = herald.json_lines("dead.jsonl");
    let kept_for = |sink: &str| {
        dead.iter()
            .filter(|r| r["reason"] == "shutdown" && r["sink"] == sink)
            .count()
    };
    assert_eq!(kept_for("hook"), 60, "{}", herald.stderr());
    assert_eq!(
        herald.events().len() + kept_for("events"),
        60,
        "{}",
        herald.stderr()
    );
}
