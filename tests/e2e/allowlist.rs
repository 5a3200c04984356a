use crate::harness::{ConfigBuilder, Herald, fixture, send};

#[test]
fn refuses_datagrams_from_senders_outside_the_allowlist() {
    let mut herald = Herald::start(&ConfigBuilder::new().allow(&["127.0.0.1/32"]).build());
    let datagram = fixture("engine_error").datagram;
    let outsider = send("127.0.0.2", herald.udp, &[&datagram]);
    let insider = send("127.0.0.1", herald.udp, &[&datagram]);

    herald.wait_for("both datagrams read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= 2.0
    });
    herald.wait_for("the allowed datagram delivered", |h| !h.events().is_empty());
    herald.wait_for("a rejection warning naming 127.0.0.2", |h| {
        h.stderr()
            .lines()
            .any(|l| l.contains("not in ingest.allow") && l.contains(&outsider.to_string()))
    });

    let events = herald.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["sender"], insider.to_string());
    assert_eq!(events[0]["tag"], "/qseow-engine/");
    assert_eq!(herald.metric("herald_ingest_datagrams_total", &[]), 2.0);
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]),
        1.0
    );
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "oversized")]),
        0.0
    );
    assert_eq!(herald.metric("herald_parse_events_total", &[]), 1.0);
    assert_eq!(herald.metric("herald_allowlist_entries", &[]), 1.0);
    let warning = herald
        .stderr()
        .lines()
        .find(|l| l.contains("not in ingest.allow"))
        .unwrap()
        .to_string();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("127.0.0.2"), "{warning}");
}
