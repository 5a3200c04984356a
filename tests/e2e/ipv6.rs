use crate::harness::{ConfigBuilder, Herald, fixture, send};

#[test]
fn ipv6_loopback_is_received() {
    let mut herald = Herald::start(&ConfigBuilder::new().ipv6().allow(&["::1/128"]).build());
    assert!(herald.udp.is_ipv6());
    let sender = send("::1", herald.udp, &[&fixture("session_start").datagram]);
    let events = herald.wait_for_events(1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sender"], format!("[::1]:{}", sender.port()));
    assert_eq!(events[0]["type"], "session");
    assert_eq!(
        herald.metric(
            "herald_ingest_datagrams_total",
            &[("listener", &herald.udp.to_string())]
        ),
        1.0
    );
    assert_eq!(herald.metric("herald_ingest_rejected_total", &[]), 0.0);
}

#[test]
fn ipv4_senders_are_refused_by_an_ipv6_only_allowlist() {
    // A v4 listener with only ::1 allowed: 127.0.0.1 must not slip through.
    let mut herald = Herald::start(&ConfigBuilder::new().allow(&["::1/128"]).build());
    send(
        "127.0.0.1",
        herald.udp,
        &[&fixture("session_start").datagram],
    );
    herald.wait_for("the datagram refused", |h| {
        h.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]) >= 1.0
    });
    assert_eq!(herald.metric("herald_parse_events_total", &[]), 0.0);
    assert!(herald.events().is_empty());
}
