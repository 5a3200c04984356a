use std::collections::BTreeMap;
use std::net::UdpSocket;

use crate::harness::{ConfigBuilder, Herald, SAMPLES, count_lines, read_json_lines, sample_datagrams};

#[test]
fn accepted_events_all_reach_the_file_on_sigterm() {
    // A long flush interval keeps the last events queued in the sink when
    // SIGTERM arrives, so the drain has something to do.
    let mut herald = Herald::start(&ConfigBuilder::new().flush_interval_ms(1000).build());
    let samples = sample_datagrams();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    const TOTAL: usize = 2000;
    const CHUNK: usize = 100;
    let mut expected_by_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..TOTAL {
        socket.send_to(&samples[i % samples.len()], herald.udp).unwrap();
        *expected_by_tag.entry(SAMPLES[i % SAMPLES.len()].2).or_default() += 1;
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
    assert!(status.success(), "exit {status:?}\nstderr:\n{}", herald.stderr());

    let path = herald.dir().join("events.jsonl");
    assert_eq!(count_lines(&path), TOTAL, "stderr:\n{}", herald.stderr());
    let events = read_json_lines(&path);
    assert_eq!(events.len(), TOTAL);
    let mut by_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        *by_tag.entry(event["tag"].as_str().expect("tag")).or_default() += 1;
    }
    assert_eq!(by_tag, expected_by_tag);
    let stderr = herald.stderr();
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
