use std::collections::BTreeMap;
use std::net::UdpSocket;

use jiff::Timestamp;

use crate::harness::{ConfigBuilder, Herald, fixtures, json_difference, normalise};

#[test]
fn fixtures_arrive_exactly_as_expected() {
    let mut herald = Herald::start(&ConfigBuilder::new().max_datagram_bytes(1024).build());
    let good: Vec<_> = fixtures()
        .into_iter()
        .filter(|f| f.error().is_none())
        .collect();
    assert_eq!(good.len(), 34, "parseable fixtures");

    // One socket per fixture, all open at once, so each sender port names its fixture.
    let sockets: Vec<UdpSocket> = good
        .iter()
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut by_sender = BTreeMap::new();
    for (fixture, socket) in good.iter().zip(&sockets) {
        let sender = socket.local_addr().unwrap().to_string();
        assert_eq!(
            socket.send_to(&fixture.datagram, herald.udp).unwrap(),
            fixture.datagram.len()
        );
        by_sender.insert(sender, fixture);
    }

    let events = herald.wait_for_events(good.len());
    assert_eq!(events.len(), good.len());
    let mut seen = BTreeMap::new();
    for event in &events {
        let sender = event["sender"].as_str().expect("sender is a string");
        let fixture = by_sender
            .get(sender)
            .unwrap_or_else(|| panic!("event from an unknown sender {sender}: {event}"));
        assert!(
            seen.insert(sender.to_string(), ()).is_none(),
            "{}: two events",
            fixture.name
        );
        let received_at = event["received_at"].as_str().expect("received_at");
        assert!(
            received_at.ends_with('Z'),
            "{}: {received_at}",
            fixture.name
        );
        let received: Timestamp = received_at
            .parse()
            .unwrap_or_else(|err| panic!("{}: received_at {received_at}: {err}", fixture.name));
        if event["time_source"] == "received" {
            let time: Timestamp = event["time"]
                .as_str()
                .expect("time")
                .parse()
                .unwrap_or_else(|err| panic!("{}: time: {err}", fixture.name));
            assert_eq!(
                time, received,
                "{}: receive-time events use the receive time",
                fixture.name
            );
        }
        if let Some(diff) = json_difference("", &normalise(event), &fixture.expected) {
            panic!(
                "{}: {diff}\nactual:   {event}\nexpected: {}",
                fixture.name, fixture.expected
            );
        }
    }
    assert_eq!(seen.len(), good.len());
    assert_eq!(herald.metric("herald_parse_errors_total", &[]), 0.0);
    assert_eq!(herald.metric("herald_parse_events_total", &[]), 34.0);
    // Every value kept as text for its shape is counted, by field.
    let malformed: usize = good
        .iter()
        .filter_map(|f| f.expected.get("malformed_fields"))
        .map(|fields| fields.as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(malformed, 10);
    assert_eq!(
        herald.metric("herald_parse_malformed_fields_total", &[]),
        malformed as f64
    );
    assert_eq!(
        herald.metric(
            "herald_parse_malformed_fields_total",
            &[("field", "task_id")]
        ),
        2.0
    );
    let text = herald.metrics_text();
    for line in [
        "# HELP herald_parse_malformed_fields_total ",
        "# TYPE herald_parse_malformed_fields_total counter",
    ] {
        assert!(text.contains(line), "{line}");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e["layout"] == "qix-perf/legacy")
            .count(),
        2
    );
    assert_eq!(
        herald.metric("herald_parse_events_total", &[("type", "task")]),
        events.iter().filter(|e| e["type"] == "task").count() as f64
    );
}
