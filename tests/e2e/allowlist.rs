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

#[test]
fn a_dual_stack_listener_checks_ipv4_senders_against_ipv4_entries() {
    let port = crate::harness::free_udp_port_v6();
    let listen: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .listen(listen)
            .allow(&["127.0.0.1/32"])
            .build(),
    );
    let datagram = fixture("session_start").datagram;
    let v6 = send(
        "::1",
        format!("[::1]:{port}").parse().unwrap(),
        &[&datagram],
    );
    let v4 = send(
        "127.0.0.1",
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[&datagram],
    );
    herald.wait_for("both datagrams read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= 2.0
    });
    let events = herald.wait_for_events(1);
    assert_eq!(events.len(), 1, "{events:#?}");
    let sender = events[0]["sender"].as_str().unwrap();
    // A dual-stack socket sees ::ffff:127.0.0.1; herald reports the IPv4 form.
    assert_eq!(sender, v4.to_string());
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]),
        1.0
    );
    herald.wait_for("a rejection warning naming ::1", |h| {
        h.stderr()
            .lines()
            .any(|l| l.contains("not in ingest.allow") && l.contains(&v6.to_string()))
    });
}

#[test]
fn an_ipv4_mapped_allow_entry_admits_the_sender_a_dual_stack_socket_reports() {
    let port = crate::harness::free_udp_port_v6();
    let listen: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .listen(listen)
            .allow(&["::ffff:127.0.0.1"])
            .build(),
    );
    send(
        "127.0.0.1",
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[&fixture("session_start").datagram],
    );
    herald.wait_for("the datagram read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= 1.0
    });
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]),
        0.0,
        "stderr:\n{}",
        herald.stderr()
    );
    assert_eq!(herald.wait_for_events(1).len(), 1);
}

#[test]
fn host_names_in_the_allowlist_are_resolved_at_start() {
    let mut herald = Herald::start(&ConfigBuilder::new().allow(&["localhost"]).build());
    let datagram = fixture("task_aborted").datagram;
    let outsider = send("127.0.0.2", herald.udp, &[&datagram]);
    let insider = send("127.0.0.1", herald.udp, &[&datagram]);
    herald.wait_for("both datagrams read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= 2.0
    });
    let events = herald.wait_for_events(1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sender"], insider.to_string());
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]),
        1.0,
        "{outsider} must be refused"
    );
    assert!(herald.metric("herald_allowlist_entries", &[]) >= 1.0);
    assert_eq!(herald.metric("herald_allowlist_unresolved_hosts", &[]), 0.0);
    let (_, health) = herald.http_get("/health");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["allowlist"]["unresolved_hosts"],
        serde_json::json!([])
    );
}
