//! Loss detection per sender: rows an appender numbered that never arrived
//! are counted per host and source, in `/metrics` and `/health`.

use serde_json::Value;

use crate::harness::{ConfigBuilder, Herald, fixture, poll_until, send};

/// The engine sample with its row number and host replaced.
fn engine_row(host: &str, row: u32) -> Vec<u8> {
    let sample = String::from_utf8(fixture("engine_error").datagram).expect("utf-8 sample");
    let mut fields: Vec<String> = sample.split(';').map(str::to_string).collect();
    fields[1] = row.to_string();
    fields[5] = host.to_string();
    fields.join(";").into_bytes()
}

#[test]
fn rows_that_never_arrive_are_counted_per_host_and_source() {
    let mut herald = Herald::start(&ConfigBuilder::new().build());
    // node1: rows 1 to 100 without 10, 11 and 50, and 61 before 60.
    let mut rows: Vec<u32> = (1..=100).filter(|r| ![10, 11, 50].contains(r)).collect();
    let at = rows.iter().position(|&r| r == 60).expect("row 60");
    rows.swap(at, at + 1);
    // node2: rows up to 4000, then its service restarts (which takes a
    // while) and the count starts again.
    let datagrams: Vec<Vec<u8>> = rows
        .iter()
        .map(|&row| engine_row("node1", row))
        .chain(
            [3998, 3999, 4000]
                .iter()
                .map(|&row| engine_row("node2", row)),
        )
        .collect();
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    let sent = std::time::Instant::now();
    for chunk in refs.chunks(20) {
        send("127.0.0.1", herald.udp, chunk);
    }
    herald.wait_for_events(datagrams.len());
    // Missing rows count as lost once they have had 5 s to arrive.
    let lost = |herald: &Herald| {
        herald.metric(
            "herald_sender_gap_events_total",
            &[("source", "engine"), ("host", "node1")],
        )
    };
    assert!(
        poll_until(std::time::Duration::from_secs(20), || lost(&herald) == 3.0),
        "lost: {}\n{}",
        lost(&herald),
        herald.metrics_text()
    );
    std::thread::sleep(std::time::Duration::from_secs(6).saturating_sub(sent.elapsed()));
    let restarted: Vec<Vec<u8>> = [1, 2, 3]
        .iter()
        .map(|&row| engine_row("node2", row))
        .collect();
    let refs: Vec<&[u8]> = restarted.iter().map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &refs);
    herald.wait_for_events(datagrams.len() + restarted.len());
    assert_eq!(
        herald.metric(
            "herald_sender_restarts_total",
            &[("source", "engine"), ("host", "node2")]
        ),
        1.0
    );
    assert_eq!(
        herald.metric(
            "herald_sender_gap_events_total",
            &[("source", "engine"), ("host", "node2")]
        ),
        0.0
    );

    let (status, body) = herald.http_get("/health");
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("/health is JSON");
    let senders = health["senders"].as_array().expect("senders");
    assert_eq!(senders.len(), 2, "{health:#}");
    let node1 = &senders[0];
    assert_eq!(node1["host"], "node1");
    assert_eq!(node1["tag"], "/qseow-engine/");
    assert_eq!(node1["source"], "engine");
    assert_eq!(node1["received"], 97);
    assert_eq!(node1["lost"], 3);
    assert_eq!(node1["missing_now"], 0);
    // 61 before 60 makes one late row at least; two workers may also record
    // a later batch first, whose earlier rows then arrive late as well.
    let late = node1["late"].as_u64().expect("late");
    assert!((1..=97).contains(&late), "{node1:#}");
    assert_eq!(node1["last_row"], 100);
    assert!((node1["loss_ratio"].as_f64().unwrap() - 0.03).abs() < 1e-9);
    let node2 = &senders[1];
    assert_eq!(
        (node2["host"].as_str(), node2["restarts"].as_u64()),
        (Some("node2"), Some(1))
    );
    assert_eq!(node2["last_row"], 3);
}
