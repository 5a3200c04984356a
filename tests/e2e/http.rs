use serde_json::Value;

use crate::harness::{ConfigBuilder, Herald, fixture, metric_names, sample_datagrams, send};

/// Every name declared in src/metrics.rs.
const METRICS: [&str; 28] = [
    "herald_ingest_datagrams_total",
    "herald_ingest_rejected_total",
    "herald_ingest_kernel_drops_total",
    "herald_ingest_receive_buffer_bytes",
    "herald_allowlist_entries",
    "herald_allowlist_unresolved_hosts",
    "herald_parse_events_total",
    "herald_parse_errors_total",
    "herald_pipeline_dropped_total",
    "herald_route_unrouted_total",
    "herald_events_total",
    "herald_task_events_total",
    "herald_event_latency_seconds",
    "herald_sink_events_delivered_total",
    "herald_sink_events_failed_total",
    "herald_sink_retries_total",
    "herald_sink_queue_depth",
    "herald_sink_queue_capacity",
    "herald_sink_queue_bytes",
    "herald_sink_queue_max_bytes",
    "herald_buffer_events",
    "herald_buffer_bytes",
    "herald_buffer_max_bytes",
    "herald_buffer_corrupt_records_total",
    "herald_buffer_write_errors_total",
    "herald_shutdown_events_total",
    "herald_dead_letters_total",
    "herald_dead_letters_lost_total",
];

#[test]
fn the_metric_list_here_matches_the_names_declared_in_src_metrics_rs() {
    let source = std::fs::read_to_string(crate::harness::repo_root().join("src/metrics.rs"))
        .expect("src/metrics.rs");
    let mut declared: Vec<&str> = source
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \""))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    declared.sort_unstable();
    let mut listed = METRICS.to_vec();
    listed.sort_unstable();
    assert_eq!(listed, declared, "update METRICS in tests/e2e/http.rs");
}

fn started_with_a_few_events() -> Herald {
    started_with_a_few_events_from(ConfigBuilder::new())
}

fn started_with_a_few_events_from(config: ConfigBuilder) -> Herald {
    let mut herald = Herald::start(&config.build());
    // Three log events and a failed task: per-host event counters appear with
    // the first event of their kind.
    let samples = sample_datagrams();
    let task_failed = fixture("task_reload_failed").datagram;
    let mut datagrams: Vec<&[u8]> = samples.iter().take(3).map(Vec::as_slice).collect();
    datagrams.push(&task_failed);
    send("127.0.0.1", herald.udp, &datagrams);
    herald.wait_for_events(4);
    herald
}

#[test]
fn metrics_endpoint_exposes_every_counter() {
    let herald = started_with_a_few_events();
    let text = herald.metrics_text();
    assert_every_metric_is_listed(&text);
    for name in METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} has no TYPE line"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line"
        );
    }
    let listener = herald.udp.to_string();
    let at = |name: &str, labels: &[(&str, &str)]| herald.metric(name, labels);
    assert_eq!(
        at("herald_ingest_datagrams_total", &[("listener", &listener)]),
        4.0
    );
    assert_eq!(at("herald_parse_events_total", &[("type", "log")]), 3.0);
    assert_eq!(at("herald_parse_events_total", &[("type", "task")]), 1.0);
    assert_eq!(at("herald_parse_events_total", &[]), 4.0);
    assert_eq!(
        at("herald_sink_events_delivered_total", &[("sink", "events")]),
        4.0
    );
    assert_eq!(
        at(
            "herald_events_total",
            &[
                ("type", "log"),
                ("source", "engine"),
                ("level", "ERROR"),
                ("host", "pro2-win1")
            ]
        ),
        1.0
    );
    assert_eq!(at("herald_events_total", &[]), 4.0);
    assert_eq!(
        at(
            "herald_task_events_total",
            &[("outcome", "failed"), ("host", "pro2-win1")]
        ),
        1.0
    );
    assert_eq!(
        at("herald_sink_queue_capacity", &[("sink", "events")]),
        100_000.0
    );
    assert_eq!(at("herald_ingest_kernel_drops_total", &[]), 0.0);
    assert_eq!(at("herald_pipeline_dropped_total", &[]), 0.0);
    assert_eq!(at("herald_route_unrouted_total", &[]), 0.0);
    assert_eq!(at("herald_sink_events_failed_total", &[]), 0.0);
    assert_eq!(at("herald_sink_retries_total", &[]), 0.0);
    assert_eq!(at("herald_allowlist_entries", &[]), 1.0);
    assert_eq!(at("herald_allowlist_unresolved_hosts", &[]), 0.0);
    assert_eq!(at("herald_dead_letters_total", &[]), 0.0);
    assert_eq!(at("herald_dead_letters_lost_total", &[]), 0.0);
    for reason in [
        "empty",
        "unknown_tag",
        "too_few_fields",
        "too_many_fields",
        "bad_guid",
    ] {
        assert_eq!(
            at("herald_parse_errors_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
        assert_eq!(
            at("herald_dead_letters_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }
    for reason in ["not_allowed", "oversized"] {
        assert_eq!(
            at("herald_ingest_rejected_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }
    assert!(
        at(
            "herald_ingest_receive_buffer_bytes",
            &[("listener", &listener)]
        ) > 0.0
    );
}

#[test]
fn metrics_endpoint_exposes_every_counter_without_a_dead_letter_file() {
    let herald = started_with_a_few_events_from(ConfigBuilder::new().without_dead_letter());
    let text = herald.metrics_text();
    assert_every_metric_is_listed(&text);
    assert_eq!(herald.metric("herald_dead_letters_total", &[]), 0.0);
    assert_eq!(herald.metric("herald_dead_letters_lost_total", &[]), 0.0);
}

#[test]
fn health_reports_ok_and_the_sinks_and_other_requests_are_refused() {
    let herald = started_with_a_few_events();
    let (status, body) = herald.http_get("/health");
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("/health is JSON");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["sinks"]["events"]["type"], "file", "{health}");
    assert_eq!(health["sinks"]["events"]["state"], "ok", "{health}");
    assert_eq!(
        health["sinks"]["events"]["queue_capacity"], 100_000,
        "{health}"
    );
    assert_eq!(health["sinks"].as_object().unwrap().len(), 1, "{health}");
    assert_eq!(
        health["listeners"][0]["bound"],
        herald.udp.to_string(),
        "{health}"
    );
    assert_eq!(health["allowlist"]["entries"], 1, "{health}");

    let (status, body) = herald.http_get("/nope");
    assert_eq!(status, 404, "{body}");
    let (status, body) = herald.http_request("POST", "/metrics");
    assert_eq!(status, 405, "{body}");
    let (status, body) = herald.http_request("DELETE", "/health");
    assert_eq!(status, 405, "{body}");
    let (status, _) = herald.http_get("/metrics?x=1");
    assert_eq!(status, 200);
}

#[test]
fn latency_is_a_histogram_holding_every_sampled_event() {
    let mut herald = Herald::start(&ConfigBuilder::new().build());
    let samples = sample_datagrams();
    let datagrams: Vec<&[u8]> = samples.iter().cycle().take(40).map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &datagrams);
    herald.wait_for_events(40);
    herald.wait_for("delivery counted", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "events")]) == 40.0
    });
    let text = herald.metrics_text();
    assert!(
        text.contains("# TYPE herald_event_latency_seconds histogram"),
        "{text}"
    );
    // One event in 17 is sampled: events 0, 17 and 34 of the 40.
    let bucket = |le: &str| {
        herald.metric(
            "herald_event_latency_seconds_bucket",
            &[("sink", "events"), ("le", le)],
        )
    };
    assert_eq!(bucket("+Inf"), 3.0);
    assert_eq!(bucket("300"), 3.0, "all within the largest finite bucket");
    assert_eq!(
        herald.metric("herald_event_latency_seconds_count", &[("sink", "events")]),
        3.0
    );
}

/// Fails naming every declared metric that `/metrics` does not list (a
/// histogram is listed by its `_count` sample).
fn assert_every_metric_is_listed(text: &str) {
    let names = metric_names(text);
    let missing: Vec<&str> = METRICS
        .iter()
        .copied()
        .filter(|m| !names.iter().any(|n| n == m || *n == format!("{m}_count")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from /metrics: {missing:?}\n{text}"
    );
}

#[test]
fn a_token_guards_health_and_if_asked_metrics() {
    use crate::harness::{http_request_with, poll_until};
    let token = "0123456789abcdef0123";
    let config = ConfigBuilder::new().build().replacen(
        "[http]\n",
        &format!("[http]\ntoken = \"{token}\"\nmetrics_public = false\n"),
        1,
    );
    let herald = Herald::launch(&config);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let get = |path: &str, headers: &str| {
        http_request_with(herald.http, "GET", path, headers).unwrap_or((0, String::new()))
    };
    assert!(
        poll_until(std::time::Duration::from_secs(30), || get(
            "/health", &bearer
        )
        .0 == 200),
        "{}",
        herald.stderr()
    );
    assert_eq!(get("/health", "").0, 401);
    assert_eq!(
        get("/health", "Authorization: Bearer 0123456789abcdef0124\r\n").0,
        401
    );
    assert_eq!(get("/health", "Authorization: Basic x\r\n").0, 401);
    assert_eq!(get("/metrics", "").0, 401);
    let (status, body) = get("/metrics", &format!("authorization: bearer {token}\r\n"));
    assert_eq!(status, 200);
    assert!(body.contains("herald_ingest_datagrams_total"));
    let (_, refused) = get("/health", "");
    assert!(!refused.contains(token));
}
