//! The webhook sink in its batching modes (`body = "array"` and `"ndjson"`),
//! against the in-process stub: every matching event forwarded, in batches,
//! signed, and a failed batch retried whole. The alert mode (`body = "event"`)
//! is checked with the other alert sinks in `slack.rs`.

use serde_json::Value;

use crate::harness::{ConfigBuilder, DEADLINE, Herald, TASK, execution, send, task_failure};
use crate::http_stub::{Request, Stub};

/// Failed-task datagram `n`: `n` varies the task name. Every one carries the
/// same execution id, which an alert sink would de-duplicate.
fn numbered_failure(n: usize) -> Vec<u8> {
    task_failure(
        &format!("Reload {n}"),
        TASK,
        &execution(1),
        "Max retries reached",
    )
}

fn batching_herald(stub: &Stub, body: &str, extra: &str) -> Herald {
    Herald::start(
        &ConfigBuilder::new()
            .extra(&format!(
                "[sinks.forward]\ntype = \"webhook\"\nurl = \"{}/ingest\"\nbody = \"{body}\"\nhmac_secret = \"s3cret\"\nflush_interval_ms = 100\nretry_initial_ms = 100\n{extra}",
                stub.url()
            ))
            .build(),
    )
}

/// Sends failed-task datagrams 0..`count` and waits until the sink has
/// delivered them all.
fn send_and_wait_for_delivery(herald: &mut Herald, count: usize) {
    let datagrams: Vec<Vec<u8>> = (0..count).map(numbered_failure).collect();
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &refs);
    herald.wait_for("every event delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "forward")]) == count as f64
    });
}

/// The task names in `events`, sorted by their number ("Reload 2" before
/// "Reload 10"): herald's two parse workers may hand events read at
/// different moments to the sink out of the order they were read in.
fn task_names(events: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = events
        .iter()
        .map(|event| event["task_name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort_by_key(|name| {
        name.rsplit(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    names
}

fn assert_signed(request: &Request) {
    let expected = herald::sinks::webhook::signature(b"s3cret", &request.body);
    assert_eq!(
        request.header("x-herald-signature"),
        Some(expected.as_str())
    );
}

#[test]
fn a_batching_webhook_forwards_every_event_as_json_arrays_of_at_most_batch_max_events() {
    let stub = Stub::start();
    stub.set_default(200, &[], "");
    let mut herald = batching_herald(&stub, "array", "batch_max_events = 10");
    send_and_wait_for_delivery(&mut herald, 25);
    let requests = stub.requests();
    let mut events = Vec::new();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/ingest");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_signed(request);
        let batch = request.body_json();
        let batch = batch.as_array().expect("the body is a JSON array");
        assert!(
            (1..=10).contains(&batch.len()),
            "{} events in one request",
            batch.len()
        );
        events.extend(batch.iter().cloned());
    }
    assert!(
        (3..25).contains(&requests.len()),
        "{} requests: batches of at most 10, not one request per event",
        requests.len()
    );
    let expected: Vec<String> = (0..25).map(|n| format!("Reload {n}")).collect();
    // An alert sink would have suppressed all but one: they share an execution id.
    assert_eq!(task_names(&events), expected, "every event, once");
}

#[test]
fn an_ndjson_webhook_sends_one_event_per_line_and_retries_a_failed_batch_whole() {
    let stub = Stub::start();
    stub.push_response(503, &[], "busy");
    stub.set_default(204, &[], "");
    let mut herald = batching_herald(&stub, "ndjson", "");
    send_and_wait_for_delivery(&mut herald, 5);
    let requests = stub.wait_for_requests(2, DEADLINE);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the refused batch is sent again as it was"
    );
    // The refused request is left out: its events are those of the retry.
    let mut events = Vec::new();
    for request in &requests[1..] {
        assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
        assert_signed(request);
        let text = request.body_text();
        assert!(text.ends_with('\n'), "every line ends with a newline");
        events.extend(
            text.lines().map(|line| {
                serde_json::from_str::<Value>(line).expect("each line is one JSON event")
            }),
        );
    }
    let expected: Vec<String> = (0..5).map(|n| format!("Reload {n}")).collect();
    assert_eq!(task_names(&events), expected);
    assert_eq!(
        herald.metric("herald_sink_retries_total", &[("sink", "forward")]),
        1.0
    );
}
