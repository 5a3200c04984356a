//! Two herald processes on one UDP port (`ingest.reuse_port`): the kernel
//! spreads senders over them, each datagram is handled by exactly one, and
//! every datagram of one sender socket (one Sense service) goes to the same
//! instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ConfigBuilder, Herald, fixture, poll_until, send};

/// Sender sockets, as the services of many Sense nodes.
const SENDERS: usize = 64;
/// Datagrams each sends.
const EACH: usize = 50;

#[test]
fn two_instances_on_one_port_handle_every_datagram_exactly_once() {
    let first = ConfigBuilder::new().ingest_key("reuse_port = true");
    let second = ConfigBuilder::new()
        .listen(first.listen)
        .ingest_key("reuse_port = true");
    let a = Herald::start(&first.build());
    let b = Herald::start(&second.build());
    assert_eq!(a.udp, b.udp, "both listen on one port");

    let sample = String::from_utf8(fixture("engine_error").datagram).expect("utf-8 sample");
    let fields: Vec<&str> = sample.split(';').collect();
    let mut sent_from = BTreeMap::new();
    for sender in 0..SENDERS {
        let datagrams: Vec<Vec<u8>> = (0..EACH)
            .map(|n| {
                let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_string()).collect();
                fields[1] = (n + 1).to_string();
                fields[8] = format!("sender {sender} datagram {n}");
                fields.join(";").into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        let from = send("127.0.0.1", a.udp, &refs);
        sent_from.insert(from.to_string(), sender);
    }
    let total = SENDERS * EACH;
    assert!(
        poll_until(Duration::from_secs(30), || a.events().len()
            + b.events().len()
            >= total),
        "handled {} + {} of {total}",
        a.events().len(),
        b.events().len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (events_a, events_b) = (a.events(), b.events());
    assert_eq!(
        events_a.len() + events_b.len(),
        total,
        "nothing handled twice"
    );
    let messages = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| e["message"].as_str().expect("message").to_string())
            .collect()
    };
    let (in_a, in_b) = (messages(&events_a), messages(&events_b));
    assert!(in_a.is_disjoint(&in_b), "a datagram handled by both");
    assert_eq!(in_a.len() + in_b.len(), total, "every datagram handled");
    // The kernel spread the senders, and kept each sender on one instance.
    let senders = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| e["sender"].as_str().expect("sender").to_string())
            .collect()
    };
    let (senders_a, senders_b) = (senders(&events_a), senders(&events_b));
    assert!(
        !senders_a.is_empty() && !senders_b.is_empty(),
        "{} senders to one instance, {} to the other",
        senders_a.len(),
        senders_b.len()
    );
    assert!(
        senders_a.is_disjoint(&senders_b),
        "a sender split over both"
    );
    assert_eq!(senders_a.len() + senders_b.len(), sent_from.len());
    for (instance, events) in [(&a, &events_a), (&b, &events_b)] {
        assert_eq!(
            instance.metric("herald_ingest_datagrams_total", &[]),
            events.len() as f64
        );
    }
    eprintln!(
        "{} senders ({} datagrams) to one instance, {} ({}) to the other",
        senders_a.len(),
        events_a.len(),
        senders_b.len(),
        events_b.len()
    );
}

#[test]
fn without_reuse_port_a_second_instance_cannot_take_the_port() {
    let first = ConfigBuilder::new().ingest_key("reuse_port = true");
    let _a = Herald::start(&first.build());
    let second = ConfigBuilder::new().listen(first.listen);
    let mut b = Herald::launch(&second.build());
    let status = b.wait_exit();
    assert!(!status.success());
    let stderr = b.stderr();
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}
