//! The `loki` sink against the in-process stub: what one push request looks
//! like on the wire, retries after a 500, `Retry-After` on a 429, and refused
//! entries going to the dead-letter file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{ConfigBuilder, DEADLINE, Herald, fixture, sample_datagrams, send};
use crate::http_stub::{Request, Stub};

/// `[sinks.logs]` of type `loki` pointing at `stub`, plus `extra` keys.
fn loki_sink(stub: &Stub, extra: &str) -> String {
    format!(
        "[sinks.logs]\ntype = \"loki\"\nurl = \"{}\"\n{extra}\n",
        stub.url()
    )
}

/// Starts herald with the `events` file sink and a `logs` Loki sink.
fn start(stub: &Stub, extra: &str) -> Herald {
    Herald::start(&ConfigBuilder::new().extra(&loki_sink(stub, extra)).build())
}

/// The datagrams of the named fixtures.
fn datagrams(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|name| fixture(name).datagram).collect()
}

fn send_all(herald: &Herald, datagrams: &[Vec<u8>]) {
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &refs);
}

/// The `events.jsonl` lines exactly as written (the file sink writes the same
/// JSON as every other sink).
fn event_lines(herald: &Herald) -> Vec<String> {
    fs::read_to_string(herald.dir().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every `[timestamp, line]` entry of a push body, over all streams.
fn entries(request: &Request) -> Vec<(String, String)> {
    let body = request.body_json();
    let mut out = Vec::new();
    for stream in body["streams"].as_array().expect("streams array") {
        for value in stream["values"].as_array().expect("values array") {
            let pair = value.as_array().expect("entry is an array");
            assert_eq!(pair.len(), 2, "entry {value}");
            out.push((
                pair[0].as_str().expect("timestamp string").to_string(),
                pair[1].as_str().expect("line string").to_string(),
            ));
        }
    }
    out
}

/// The event's `time` in whole milliseconds since the epoch.
fn time_ms(event: &Value) -> i64 {
    let time: jiff::Timestamp = event["time"]
        .as_str()
        .expect("event time")
        .parse()
        .expect("RFC 3339 time");
    time.as_millisecond()
}

fn metric(herald: &Herald, name: &str) -> f64 {
    herald.metric(name, &[("sink", "logs")])
}

#[test]
fn loki_push_carries_auth_tenant_and_streams_grouped_by_label() {
    let stub = Stub::start();
    let mut herald = start(
        &stub,
        "tenant = \"sense-prod\"\nusername = \"herald\"\npassword = \"s3cret:pw\"\n\
         labels = [\"type\", \"source\", \"level\"]\nstatic_labels = { job = \"herald\" }\n\
         batch_max_events = 12\nflush_interval_ms = 10000",
    );
    send_all(&herald, &sample_datagrams());
    let requests = stub.wait_for_requests(1, DEADLINE);
    herald.wait_for_events(12);
    let lines = event_lines(&herald);
    assert_eq!(lines.len(), 12);

    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/loki/api/v1/push");
    assert!(request.query.is_empty(), "{:?}", request.query);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    assert_eq!(request.header("x-scope-orgid"), Some("sense-prod"));
    // base64("herald:s3cret:pw")
    assert_eq!(
        request.header("authorization"),
        Some("Basic aGVyYWxkOnMzY3JldDpwdw==")
    );
    assert!(
        request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("herald/")),
        "{:?}",
        request.headers
    );
    assert_ne!(request.raw_body, request.body, "the body is gzipped");
    // reqwest sends the whole body with a length, never chunked.
    let length = request.raw_body.len().to_string();
    assert_eq!(request.header("content-length"), Some(length.as_str()));
    assert_eq!(request.header("transfer-encoding"), None);

    // Each event once, its line exactly the event's JSON; its timestamp the
    // event's time in ns: milliseconds from `time`, the sequence below them.
    let entries = entries(request);
    assert_eq!(entries.len(), 12, "one entry per event: {entries:#?}");
    let mut sent_lines: Vec<&str> = entries.iter().map(|(_, line)| line.as_str()).collect();
    let mut file_lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    sent_lines.sort_unstable();
    file_lines.sort_unstable();
    assert_eq!(sent_lines, file_lines);
    let mut sequences = BTreeSet::new();
    let mut time_of_line = BTreeMap::new();
    for (ts, line) in &entries {
        assert!(
            !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()),
            "timestamp {ts:?} is not a decimal string"
        );
        let ns: i128 = ts.parse().unwrap();
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            ns.div_euclid(1_000_000),
            i128::from(time_ms(&event)),
            "{ts} vs {event}"
        );
        assert!(
            sequences.insert(ns.rem_euclid(1_000_000)),
            "two entries share sub-millisecond digits: {entries:#?}"
        );
        time_of_line.insert(line.clone(), ts.clone());
    }

    // The whole body: one stream per label set, entries in time order.
    let mut expected_streams: BTreeMap<String, (Value, Vec<(i128, String)>)> = BTreeMap::new();
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap();
        let mut labels = json!({"type": event["type"], "source": event["source"], "job": "herald"});
        if let Some(level) = event.get("level") {
            labels["level"] = level.clone();
        }
        let ts = time_of_line[line].parse::<i128>().unwrap();
        expected_streams
            .entry(labels.to_string())
            .or_insert_with(|| (labels, Vec::new()))
            .1
            .push((ts, line.clone()));
    }
    let expected: Vec<Value> = expected_streams
        .into_values()
        .map(|(labels, mut values)| {
            values.sort();
            let values: Vec<Value> = values
                .into_iter()
                .map(|(ts, line)| json!([ts.to_string(), line]))
                .collect();
            json!({"stream": labels, "values": values})
        })
        .collect();
    let mut body = request.body_json();
    let streams = body["streams"].as_array_mut().expect("streams");
    streams.sort_by_key(|stream| stream["stream"].to_string());
    assert_eq!(body, json!({ "streams": expected }));
    // 12 samples: log/engine/ERROR, log/proxy/WARN, log/repository/WARN,
    // log/scheduler/WARN, qix_perf, session, connection, task ×4 (INFO),
    // engine_reload_failed.
    let labels: Vec<&Value> = body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["stream"])
        .collect();
    assert!(
        labels.contains(&&json!({"type": "session", "source": "proxy", "job": "herald"})),
        "{labels:#?}"
    );

    herald.wait_for("the Loki sink to count 12 delivered", |h| {
        metric(h, "herald_sink_events_delivered_total") == 12.0
    });
    assert_eq!(stub.requests().len(), 1);
}

#[test]
fn loki_bearer_token_and_plain_bodies() {
    let stub = Stub::start();
    let herald = start(
        &stub,
        "bearer_token = \"t0ken\"\ngzip = false\nbatch_max_events = 1",
    );
    send_all(&herald, &datagrams(&["engine_error"]));
    let requests = stub.wait_for_requests(1, DEADLINE);
    let request = &requests[0];
    assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(request.header("content-encoding"), None);
    assert_eq!(request.header("x-scope-orgid"), None);
    assert_eq!(request.raw_body, request.body);
    let body = request.body_json();
    assert_eq!(
        body["streams"][0]["stream"],
        json!({"type": "log", "source": "engine", "level": "ERROR", "host": "pro2-win1"})
    );
}

#[test]
fn loki_retries_a_500_and_delivers_the_batch_once() {
    let stub = Stub::start();
    stub.push_response(500, &[], "ingester unavailable");
    let mut herald = start(
        &stub,
        "batch_max_events = 1\nretry_initial_ms = 50\nretry_max_ms = 100",
    );
    send_all(&herald, &datagrams(&["engine_error"]));
    let requests = stub.wait_for_requests(2, DEADLINE);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same batch is sent again"
    );
    herald.wait_for("one delivered event", |h| {
        metric(h, "herald_sink_events_delivered_total") == 1.0
    });
    assert!(metric(&herald, "herald_sink_retries_total") >= 1.0);
    assert_eq!(metric(&herald, "herald_sink_events_failed_total"), 0.0);
    assert_eq!(stub.requests().len(), 2);
    assert!(herald.json_lines("dead.jsonl").is_empty());
}

#[test]
fn loki_honours_retry_after_on_a_429() {
    let stub = Stub::start();
    stub.push_response(
        429,
        &[("Retry-After", "1")],
        "Ingestion rate limit exceeded for user fake",
    );
    // Without Retry-After the retry would come after 10-20 ms.
    let mut herald = start(
        &stub,
        "batch_max_events = 1\nretry_initial_ms = 10\nretry_max_ms = 20",
    );
    send_all(&herald, &datagrams(&["proxy_warn"]));
    let requests = stub.wait_for_requests(2, DEADLINE);
    let gap = requests[1].received - requests[0].received;
    assert!(
        gap >= Duration::from_millis(900),
        "the retry came {gap:?} after the 429 with Retry-After: 1"
    );
    herald.wait_for("one delivered event", |h| {
        metric(h, "herald_sink_events_delivered_total") == 1.0
    });
    assert_eq!(metric(&herald, "herald_sink_retries_total"), 1.0);
}

#[test]
fn loki_400_sends_the_refused_batch_to_the_dead_letter_file() {
    let stub = Stub::start();
    let refusal = "entry for stream '{job=\"herald\"}' has timestamp too old: 2024-05-19T10:03:12Z";
    stub.set_default(400, &[("Content-Type", "text/plain")], refusal);
    let mut herald = start(&stub, "batch_max_events = 3\nflush_interval_ms = 10000");
    send_all(
        &herald,
        &datagrams(&["engine_error", "proxy_warn", "session_start"]),
    );
    herald.wait_for("3 dead letters", |h| h.json_lines("dead.jsonl").len() >= 3);
    herald.wait_for("3 failed events", |h| {
        metric(h, "herald_sink_events_failed_total") == 3.0
    });
    assert_eq!(metric(&herald, "herald_sink_events_delivered_total"), 0.0);
    assert_eq!(metric(&herald, "herald_sink_retries_total"), 0.0);

    // The batch, then halves down to single events: 3 → 1 + 2 → 1 + 1.
    let sizes: Vec<usize> = stub.requests().iter().map(|r| entries(r).len()).collect();
    assert_eq!(sizes, [3, 1, 2, 1, 1]);

    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let mut tags: Vec<&str> = dead
        .iter()
        .map(|r| r["event"]["tag"].as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        ["/qseow-engine/", "/qseow-proxy-session/", "/qseow-proxy/"]
    );
    for record in &dead {
        assert_eq!(record["kind"], "event");
        assert_eq!(record["reason"], "sink_failed");
        assert_eq!(record["sink"], "logs");
        let error = record["error"].as_str().unwrap();
        assert!(
            error.contains("HTTP 400") && error.contains("timestamp too old"),
            "{error}"
        );
    }
}

#[test]
fn loki_400_for_one_entry_dead_letters_only_that_event() {
    let stub = Stub::start();
    let marker = "Authentication failed for user";
    stub.respond_when(
        move |r| String::from_utf8_lossy(&r.body).contains(marker),
        400,
        &[],
        "line too long",
    );
    let mut herald = start(&stub, "batch_max_events = 4\nflush_interval_ms = 10000");
    send_all(
        &herald,
        &datagrams(&[
            "engine_error",
            "proxy_warn",
            "session_start",
            "task_reload_failed",
        ]),
    );
    herald.wait_for("1 failed and 3 delivered", |h| {
        metric(h, "herald_sink_events_failed_total") == 1.0
            && metric(h, "herald_sink_events_delivered_total") == 3.0
    });
    herald.wait_for("1 dead letter", |h| !h.json_lines("dead.jsonl").is_empty());
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["sink"], "logs");
    assert_eq!(dead[0]["event"]["tag"], "/qseow-proxy/");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("line too long"),
        "{}",
        dead[0]
    );

    // What Loki accepted: every other event exactly once.
    let mut accepted: Vec<String> = stub
        .requests()
        .iter()
        .filter(|r| !String::from_utf8_lossy(&r.body).contains(marker))
        .flat_map(|r| entries(r).into_iter().map(|(_, line)| line))
        .collect();
    accepted.sort();
    let mut expected: Vec<String> = event_lines(&herald)
        .into_iter()
        .filter(|line| !line.contains(marker))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 3);
    assert_eq!(accepted, expected);
}

#[test]
fn loki_config_errors_stop_herald_at_start_up() {
    let stub = Stub::start();
    let config = ConfigBuilder::new()
        .extra(&loki_sink(
            &stub,
            "static_labels = { \"sense-env\" = \"prod\" }",
        ))
        .build();
    let mut herald = Herald::launch(&config);
    let status = herald.wait_exit();
    assert!(!status.success());
    let stderr = herald.stderr();
    assert!(stderr.contains("sinks.logs.static_labels"), "{stderr}");
    assert!(stderr.contains("not a valid Loki label name"), "{stderr}");
    assert!(stub.requests().is_empty());
}
