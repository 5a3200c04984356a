use crate::harness::{ConfigBuilder, Herald, read_json_lines};

#[test]
fn routing_match_sends_only_matching_events() {
    let config = ConfigBuilder::new()
        .extra(
            "[sinks.failed]\ntype = \"file\"\npath = \"failed.jsonl\"\nflush_interval_ms = 50\n\
             match = { types = [\"task\"], outcomes = [\"failed\"] }\n",
        )
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();

    herald.wait_for_events(samples);
    herald.wait_for("the failed sink to deliver its event", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "failed")]) >= 1.0
    });
    assert_eq!(
        herald.metric("herald_sink_events_delivered_total", &[("sink", "events")]),
        samples as f64
    );
    assert_eq!(herald.metric("herald_route_unrouted_total", &[]), 0.0);
    herald.sigterm();
    let status = herald.wait_exit();
    assert!(status.success(), "{status:?}\n{}", herald.stderr());

    assert_eq!(herald.events().len(), samples);
    let failed = read_json_lines(&herald.dir().join("failed.jsonl"));
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["type"], "task");
    assert_eq!(failed[0]["outcome"], "failed");
    assert_eq!(failed[0]["tag"], "/scheduler-reload-failed/");
    assert_eq!(
        failed[0]["execution_id"],
        "14a81bf5-f81c-4047-b1a1-193b0920de28"
    );
}

#[test]
fn a_json_stdout_sink_writes_the_same_events_as_the_file_sink() {
    let config = ConfigBuilder::new()
        .extra("[sinks.console]\ntype = \"stdout\"\nformat = \"json\"\nflush_interval_ms = 50\n")
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();
    let mut events = herald.wait_for_events(samples);
    herald.wait_for(&format!("{samples} JSON lines on stdout"), |h| {
        h.stdout().lines().count() >= samples
    });
    let mut printed: Vec<serde_json::Value> = herald
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let key = |v: &serde_json::Value| v.to_string();
    events.sort_by_key(key);
    printed.sort_by_key(key);
    assert_eq!(printed, events);
}
