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
    let samples = sample_datagrams();
    let datagrams: Vec<&[u8]> = samples.iter().map(Vec::as_slice).collect();
    crate::harness::send("127.0.0.1", herald.udp, &datagrams);
    herald.wait_for("12 datagrams parsed", |h| {
        h.metric("herald_parse_events_total", &[]) >= 12.0
    });
    // With a 5 s flush interval the events are still queued in the sink.
    herald.signal(libc::SIGINT);
    let status = herald.wait_exit();
    assert!(
        status.success(),
        "exit {status:?}\nstderr:\n{}",
        herald.stderr()
    );
    assert_eq!(herald.events().len(), 12, "stderr:\n{}", herald.stderr());
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
