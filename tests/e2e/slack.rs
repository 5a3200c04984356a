//! Slack alerts against an in-process server that answers like Slack's incoming
//! webhooks: `200 ok`, `429` with `Retry-After`, `400 invalid_payload`, `500`.
//! Teams and webhook sinks share the gate and are checked here too.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ConfigBuilder, DEADLINE, Herald, TASK, execution, send, task_failure};
use crate::http_stub::Stub;

fn slack_herald(stub: &Stub, extra: &str) -> Herald {
    Herald::start(
        &ConfigBuilder::new()
            .extra(&format!(
                "[sinks.oncall]\ntype = \"slack\"\nwebhook_url = \"{}/services/T000/B000/XXXX\"\nmatch = {{ types = [\"task\"], outcomes = [\"failed\", \"aborted\"] }}\nretry_initial_ms = 100\n{extra}",
                stub.url()
            ))
            .build(),
    )
}

/// All text in a Slack message (header, sections).
fn message_text(body: &Value) -> String {
    body["blocks"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"]["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn one_failed_task_makes_exactly_one_slack_message_within_a_second() {
    let stub = Stub::start();
    stub.set_default(200, &[("content-type", "text/plain")], "ok");
    let mut herald = slack_herald(&stub, "");
    let sent_at = Instant::now();
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(1),
            "Max retries reached",
        )],
    );
    let requests = stub.wait_for_requests(1, DEADLINE);
    assert!(
        requests[0].received.duration_since(sent_at) < Duration::from_secs(1),
        "took {:?}",
        requests[0].received.duration_since(sent_at)
    );
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/services/T000/B000/XXXX");
    let body = requests[0].body_json();
    let text = message_text(&body);
    assert!(text.contains("Reload of Sales"), "{text}");
    assert!(text.contains("Max retries reached"), "{text}");
    assert!(text.contains(&execution(1)), "{text}");
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "oncall")]) == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stub.requests().len(), 1, "exactly one message");
}

#[test]
fn the_same_datagram_twice_makes_one_message() {
    let stub = Stub::start();
    stub.set_default(200, &[], "ok");
    let mut herald = slack_herald(&stub, "");
    let datagram = task_failure(
        "Reload of Sales",
        TASK,
        &execution(2),
        "Max retries reached",
    );
    send("127.0.0.1", herald.udp, &[&datagram, &datagram]);
    herald.wait_for("both handled", |h| {
        h.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "oncall"), ("reason", "duplicate")],
        ) == 1.0
    });
    assert_eq!(stub.requests().len(), 1);
}

#[test]
fn a_429_is_honoured_and_the_message_still_arrives() {
    let stub = Stub::start();
    stub.push_response(429, &[("retry-after", "2")], "rate_limited");
    stub.set_default(200, &[], "ok");
    let mut herald = slack_herald(&stub, "");
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(3),
            "Max retries reached",
        )],
    );
    let requests = stub.wait_for_requests(2, DEADLINE);
    let gap = requests[1].received.duration_since(requests[0].received);
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, Slack asked for 2 s"
    );
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same message, not lost"
    );
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "oncall")]) == 1.0
    });
    assert_eq!(
        herald.metric("herald_sink_retries_total", &[("sink", "oncall")]),
        1.0
    );
}

#[test]
fn a_storm_for_one_task_makes_one_message_per_window_and_counts_the_rest() {
    let stub = Stub::start();
    stub.set_default(200, &[], "ok");
    let mut herald = slack_herald(&stub, "");
    let storm: Vec<Vec<u8>> = (0..50)
        .map(|n| {
            task_failure(
                "Reload of Sales",
                TASK,
                &execution(100 + n),
                "Max retries reached",
            )
        })
        .collect();
    let refs: Vec<&[u8]> = storm.iter().map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &refs);
    herald.wait_for("all 50 handled", |h| {
        h.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "oncall"), ("reason", "rate_limited")],
        ) == 49.0
    });
    assert_eq!(stub.requests().len(), 1);
    // Another task is not limited by the first one's window.
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of HR",
            "11111111-2222-4333-8444-555555555555",
            &execution(999),
            "Max retries reached",
        )],
    );
    stub.wait_for_requests(2, DEADLINE);
}

#[test]
fn a_failed_send_does_not_use_up_the_rate_limit_slot() {
    let stub = Stub::start();
    stub.push_response(500, &[], "internal_error");
    stub.set_default(200, &[], "ok");
    let mut herald = slack_herald(&stub, "");
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(7),
            "Max retries reached",
        )],
    );
    let requests = stub.wait_for_requests(2, DEADLINE);
    assert_eq!(requests[0].body, requests[1].body);
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "oncall")]) == 1.0
    });
    assert_eq!(
        herald.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "oncall"), ("reason", "rate_limited")]
        ),
        0.0
    );
}

#[test]
fn an_invalid_payload_answer_goes_to_the_dead_letter_file_not_retried_forever() {
    let stub = Stub::start();
    stub.set_default(400, &[], "invalid_payload");
    let mut herald = slack_herald(&stub, "");
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(8),
            "Max retries reached",
        )],
    );
    herald.wait_for("failed", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "oncall")]) == 1.0
    });
    assert_eq!(stub.requests().len(), 1, "a 400 is not retried");
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["sink"], "oncall");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("invalid_payload"),
        "{}",
        dead[0]
    );
    assert!(
        !herald.stderr().contains("XXXX"),
        "the webhook URL is a secret and must not be logged"
    );
}

#[test]
fn adversarial_texts_arrive_as_valid_json_intact_or_visibly_cut() {
    let stub = Stub::start();
    stub.set_default(200, &[], "ok");
    let mut herald = slack_herald(
        &stub,
        "dedupe_window_s = 0\nrate_limit_window_s = 0\npace_per_second = 0\n",
    );
    let long = "x".repeat(4000);
    let cases = [
        ("C:\\ProgramData\\Qlik\\Sense\\Log", "path"),
        ("Said \"hello\" to O'Brien", "quotes"),
        ("Emoji 😀🚀 and ünïcödé", "emoji"),
        (long.as_str(), "long"),
        // herald removes control characters (EVENTS.md), so CRLF joins the lines.
        ("line one\r\nline two", "crlf"),
    ];
    for (n, (text, _)) in cases.iter().enumerate() {
        send(
            "127.0.0.1",
            herald.udp,
            &[&task_failure(
                &format!("Task {n} {text}"),
                &format!("{:08x}-1680-44ef-8dc2-e2bfb180af87", n),
                &execution(200 + n),
                text,
            )],
        );
    }
    let requests = stub.wait_for_requests(cases.len(), Duration::from_secs(20));
    // herald's two parse workers may hand alerts read at different moments to
    // the sink out of order: each case is found by its task's number.
    for (n, (text, what)) in cases.iter().enumerate() {
        let task = format!("Task {n} ");
        let found: Vec<_> = requests
            .iter()
            .map(|request| request.body_json())
            .filter(|body| message_text(body).contains(&task))
            .collect();
        assert_eq!(found.len(), 1, "{what}: one alert for {task:?}");
        let body = &found[0];
        let all = message_text(body);
        if *what == "long" {
            assert!(all.contains("… [cut]"), "long text is cut visibly");
            for block in body["blocks"].as_array().unwrap() {
                assert!(
                    block["text"]["text"]
                        .as_str()
                        .map_or(0, |t| t.chars().count())
                        <= 3000
                );
            }
        } else if *what == "crlf" {
            assert!(all.contains("line oneline two"), "{what}: {all}");
        } else {
            assert!(all.contains(text), "{what}: {all}");
        }
    }
    herald.wait_for("all delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "oncall")]) == cases.len() as f64
    });
}

#[test]
fn teams_and_webhook_sinks_get_the_same_alert_once() {
    let teams = Stub::start();
    teams.set_default(202, &[], "");
    let hook = Stub::start();
    hook.set_default(204, &[], "");
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&format!(
                "[sinks.teams]\ntype = \"teams\"\nwebhook_url = \"{}/workflows/abc\"\nmatch = {{ types = [\"task\"] }}\n\n\
                 [sinks.hook]\ntype = \"webhook\"\nurl = \"{}/hook\"\nmethod = \"PUT\"\nhmac_secret = \"s3cret\"\nheaders = {{ \"X-Api-Key\" = \"k1\" }}\nmatch = {{ types = [\"task\"] }}\n",
                teams.url(),
                hook.url()
            ))
            .build(),
    );
    let datagram = task_failure(
        "Reload of Sales",
        TASK,
        &execution(9),
        "Max retries reached",
    );
    send("127.0.0.1", herald.udp, &[&datagram, &datagram]);
    let card = teams.wait_for_requests(1, DEADLINE)[0].body_json();
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(card.to_string().contains("Reload of Sales"));
    let request = &hook.wait_for_requests(1, DEADLINE)[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.header("x-api-key"), Some("k1"));
    let body = request.body_json();
    assert_eq!(body["task_name"], "Reload of Sales");
    assert_eq!(body["outcome"], "failed");
    let expected = herald::sinks::webhook::signature(b"s3cret", &request.body);
    assert_eq!(
        request.header("x-herald-signature"),
        Some(expected.as_str())
    );
    herald.wait_for("duplicates suppressed", |h| {
        h.metric("herald_alerts_suppressed_total", &[("reason", "duplicate")]) == 2.0
    });
    assert_eq!(teams.requests().len(), 1);
    assert_eq!(hook.requests().len(), 1);
}
