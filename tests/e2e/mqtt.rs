//! The MQTT sink against a real mosquitto (Debian's `mosquitto` package), started
//! here on loopback ports with a generated CA, a password file and a listener
//! that requires client certificates. A subscriber in the test (rumqttc, over
//! TLS) sees exactly what the broker delivers.
//!
//! Without mosquitto these tests say so and pass, except under CI (`CI` set).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

#[path = "../support/mosquitto.rs"]
pub(crate) mod mosquitto;
use mosquitto::{Mosquitto, PASSWORD, Subscriber, USERNAME};

use crate::harness::{ConfigBuilder, Herald, fixture, run_herald, send};

/// How long the subscriber waits for what herald publishes.
const DELIVERY: Duration = Duration::from_secs(20);

/// A `[sinks.<name>]` table for the broker's TLS listener with the test user.
fn tls_sink(broker: &Mosquitto, name: &str, extra: &str) -> String {
    format!(
        "[sinks.{name}]\ntype = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\n\
         tls_ca_file = \"{}\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n\
         rate_limit_window_s = 0\ndedupe_window_s = 0\nretry_initial_ms = 100\nretry_max_ms = 1000\n{extra}\n",
        broker.tls_port,
        broker.ca.cert.display()
    )
}

/// The events herald wrote to its file sink, by tag (every sample's tag differs).
fn events_by_tag(events: &[Value]) -> BTreeMap<String, Value> {
    events
        .iter()
        .map(|e| (e["tag"].as_str().expect("tag").to_string(), e.clone()))
        .collect()
}

#[test]
fn butler_and_butler_sos_presets_publish_the_event_json_on_their_topics() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut subscriber = Subscriber::connect(&broker, "#");
    let config = ConfigBuilder::new()
        .extra(&tls_sink(
            &broker,
            "butler",
            "preset = \"butler\"\nmatch = { types = [\"task\"] }",
        ))
        // No match table: the preset has no topic for task events, so they are
        // left out (and nothing else is published for them).
        .extra(&tls_sink(&broker, "sos", "preset = \"butler-sos\""))
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();
    let events = events_by_tag(&herald.wait_for_events(samples));

    // Topic → the tag of the event it carries, as JSON unless noted.
    let expected: [(&str, &str); 22] = [
        ("qliksense/task_failure", "/scheduler-reload-failed/"),
        ("qliksense/task_failure_full", "/scheduler-reload-failed/"),
        ("qliksense/task_aborted", "/scheduler-task-aborted/"),
        ("qliksense/task_aborted_full", "/scheduler-task-aborted/"),
        ("qliksense/task_success", "/scheduler-task-success//"),
        ("qliksense/task_success_full", "/scheduler-task-success//"),
        ("qliksense/task_distribute", "/scheduler-distribute/"),
        ("qliksense/task_distribute_full", "/scheduler-distribute/"),
        ("qliksense/logevent", "/qseow-engine/"),
        ("qliksense/logevent/system/engine/engine", "/qseow-engine/"),
        ("qliksense/logevent", "/qseow-proxy/"),
        (
            "qliksense/logevent/audit/proxy/proxy/sessionestablishment/authentication",
            "/qseow-proxy/",
        ),
        ("qliksense/logevent", "/qseow-repository/"),
        (
            "qliksense/logevent/system/repository/repository/core/security/securityrulesengine",
            "/qseow-repository/",
        ),
        ("qliksense/logevent", "/qseow-scheduler/"),
        (
            "qliksense/logevent/system/scheduler/scheduler/slave/tasks/reloadtask",
            "/qseow-scheduler/",
        ),
        ("qliksense/logevent", "/qseow-qix-perf/"),
        (
            "qliksense/logevent/qixperformance/engine/engine",
            "/qseow-qix-perf/",
        ),
        ("qliksense/userevent", "/qseow-proxy-session/"),
        ("qliksense/userevent/session/start", "/qseow-proxy-session/"),
        ("qliksense/userevent", "/qseow-proxy-connection/"),
        (
            "qliksense/userevent/connection/open",
            "/qseow-proxy-connection/",
        ),
    ];
    let messages = subscriber.messages(expected.len(), DELIVERY);

    let mut got: Vec<(String, String)> = Vec::new();
    for message in &messages {
        assert!(
            !message.retain,
            "{}: retain is off by default",
            message.topic
        );
        let task_name_topic =
            !message.topic.ends_with("_full") && message.topic.starts_with("qliksense/task_");
        if task_name_topic {
            // Butler's basic topics carry the task name only.
            let (_, tag) = expected
                .iter()
                .find(|(topic, _)| *topic == message.topic)
                .expect("an expected topic");
            assert_eq!(
                message.text(),
                events[*tag]["task_name"].as_str().expect("task_name"),
                "{}",
                message.topic
            );
            got.push((message.topic.clone(), (*tag).to_string()));
            continue;
        }
        let json: Value = serde_json::from_slice(&message.payload).unwrap_or_else(|err| {
            panic!("{}: not JSON ({err}): {}", message.topic, message.text())
        });
        let tag = json["tag"].as_str().expect("tag").to_string();
        // Exactly the event JSON the file sink wrote (EVENTS.md), byte for byte
        // in meaning: same fields, same values, received_at and sender included.
        assert_eq!(json, events[&tag], "{}", message.topic);
        got.push((message.topic.clone(), tag));
    }
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(topic, tag)| ((*topic).to_string(), (*tag).to_string()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_template_topic_with_retain_is_delivered_after_a_broker_outage() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let config = ConfigBuilder::new()
        .extra(&tls_sink(
            &broker,
            "bus",
            "topic = \"sense/{{ type }}/{{ outcome }}/{{ host }}\"\nretain = true\nqos = 2\n\
             max_retries = 100\nmatch = { types = [\"task\"] }",
        ))
        .build();
    let mut herald = Herald::start(&config);
    broker.stop();
    send(
        "127.0.0.1",
        herald.udp,
        &[&fixture("task_reload_failed").datagram],
    );
    let events = herald.wait_for_events(1);
    // The connection task says why it cannot deliver.
    let refused = format!(
        "cannot reach MQTT broker at 127.0.0.1:{}: connection refused",
        broker.tls_port
    );
    herald.wait_for(&refused, |h| h.stderr().contains(&refused));
    broker.run();
    herald.wait_for("the event delivered after the outage", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "bus")]) == 1.0
    });
    // Retained, so a subscriber that comes after the publish still gets it.
    let mut subscriber = Subscriber::connect(&broker, "sense/#");
    let messages = subscriber.messages(1, DELIVERY);
    assert_eq!(messages[0].topic, "sense/task/failed/pro2-win1");
    assert!(messages[0].retain, "published with retain");
    let json: Value = serde_json::from_slice(&messages[0].payload).expect("JSON");
    assert_eq!(json, events[0]);
}

/// Writes a herald config with one mqtt sink and runs `herald check --connect`;
/// returns (success, stderr).
fn check_connect(dir: &Path, sink: &str) -> (bool, String) {
    let path = dir.join(format!(
        "herald-{}.toml",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, ConfigBuilder::new().extra(sink).build()).expect("write config");
    let output = run_herald(&[
        "check",
        "--config",
        path.to_str().expect("path"),
        "--connect",
    ]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn sink_table(broker: &Mosquitto, port: u16, keys: &str) -> String {
    format!("[sinks.bus]\ntype = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {port}\n{keys}\n",)
        .replace("$CA", &broker.ca.cert.display().to_string())
}

#[test]
fn check_connect_accepts_the_right_password_and_explains_a_wrong_one() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let good = sink_table(
        &broker,
        broker.tls_port,
        &format!(
            "tls = true\ntls_ca_file = \"$CA\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\""
        ),
    );
    let (ok, stderr) = check_connect(dir.path(), &good);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sinks.bus: ok: MQTT broker at 127.0.0.1:{} accepted the connection (TLS, user \"herald\")",
            broker.tls_port
        )),
        "{stderr}"
    );

    let wrong = sink_table(
        &broker,
        broker.tls_port,
        &format!(
            "tls = true\ntls_ca_file = \"$CA\"\nusername = \"{USERNAME}\"\npassword = \"not-the-password\""
        ),
    );
    let (ok, stderr) = check_connect(dir.path(), &wrong);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sinks.bus: MQTT broker at 127.0.0.1:{} refused the credentials (",
            broker.tls_port
        )) && stderr.contains("not authorised) for user \"herald\""),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // Plain TCP works too, and says it is not encrypted.
    let plain = sink_table(
        &broker,
        broker.plain_port,
        &format!("username = \"{USERNAME}\"\npassword = \"{PASSWORD}\""),
    );
    let (ok, stderr) = check_connect(dir.path(), &plain);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("(plain TCP, no TLS, user \"herald\")"),
        "{stderr}"
    );

    // No credentials at all.
    let anonymous = sink_table(&broker, broker.plain_port, "");
    let (ok, stderr) = check_connect(dir.path(), &anonymous);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("not authorised); no username is set"),
        "{stderr}"
    );
}

#[test]
fn check_connect_explains_an_untrusted_certificate_and_a_closed_port() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // A CA that signed nothing the broker presents.
    let other = mosquitto::generate_ca(dir.path(), "some-other-ca");
    let untrusted = sink_table(
        &broker,
        broker.tls_port,
        &format!(
            "tls = true\ntls_ca_file = \"{}\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\"",
            other.cert.display()
        ),
    );
    let (ok, stderr) = check_connect(dir.path(), &untrusted);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("sinks.bus: TLS: the broker's certificate is not trusted: ")
            && stderr.contains(&other.cert.display().to_string()),
        "{stderr}"
    );

    // TLS to the plain port.
    let mixed = sink_table(
        &broker,
        broker.plain_port,
        &format!(
            "tls = true\ntls_ca_file = \"$CA\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\""
        ),
    );
    let (ok, stderr) = check_connect(dir.path(), &mixed);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sinks.bus: TLS: the MQTT broker at 127.0.0.1:{port} closed the connection during the TLS handshake (is port {port} a TLS port?",
            port = broker.plain_port
        )),
        "{stderr}"
    );

    // Nothing listening.
    let closed_port = crate::harness::free_tcp_port();
    let closed = sink_table(&broker, closed_port, "");
    let (ok, stderr) = check_connect(dir.path(), &closed);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach MQTT broker at 127.0.0.1:{closed_port}: connection refused"
        )),
        "{stderr}"
    );
}

#[test]
fn a_client_certificate_logs_in_where_one_is_required() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let with_cert = format!(
        "tls = true\ntls_ca_file = \"$CA\"\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"",
        broker.client_cert.display(),
        broker.client_key.display()
    );
    let (ok, stderr) = check_connect(
        dir.path(),
        &sink_table(&broker, broker.cert_port, &with_cert),
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("accepted the connection (TLS, client certificate)"),
        "{stderr}"
    );

    // Without one the broker ends the handshake; the message says what to set.
    let without = sink_table(
        &broker,
        broker.cert_port,
        "tls = true\ntls_ca_file = \"$CA\"",
    );
    let (ok, stderr) = check_connect(dir.path(), &without);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sinks.bus: TLS: the MQTT broker at 127.0.0.1:{} requires a client certificate; set tls_client_cert_file and tls_client_key_file",
            broker.cert_port
        )),
        "{stderr}"
    );

    // And events go out over it (QoS 0: done once written).
    let mut subscriber = Subscriber::connect(&broker, "herald/#");
    let config = ConfigBuilder::new()
        .extra(&format!(
            "{}preset = \"herald\"\nqos = 0\nmatch = {{ types = [\"task\"] }}\n",
            sink_table(&broker, broker.cert_port, &with_cert)
        ))
        .build();
    let mut herald = Herald::start(&config);
    send(
        "127.0.0.1",
        herald.udp,
        &[&fixture("task_reload_failed").datagram],
    );
    let events = herald.wait_for_events(1);
    let messages = subscriber.messages(1, DELIVERY);
    assert_eq!(messages[0].topic, "herald/task/scheduler");
    let json: Value = serde_json::from_slice(&messages[0].payload).expect("JSON");
    assert_eq!(json, events[0]);
}

#[test]
fn a_refused_password_is_the_reason_in_the_log_and_the_dead_letter_file() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let config = ConfigBuilder::new()
        .extra(
            &tls_sink(&broker, "bus", "preset = \"butler\"\nmax_retries = 1")
                .replace(PASSWORD, "wrong-Pa55word"),
        )
        .build();
    let mut herald = Herald::start(&config);
    send(
        "127.0.0.1",
        herald.udp,
        &[&fixture("task_reload_failed").datagram],
    );
    herald.wait_for("the event given up on", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "bus")]) == 1.0
    });
    let reason = format!(
        "MQTT broker at 127.0.0.1:{} refused the credentials (not authorised) for user \"herald\"",
        broker.tls_port
    );
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["sink"], "bus");
    let error = dead[0]["error"].as_str().unwrap_or("");
    assert!(error.contains(&reason), "{error}");
    assert!(herald.stderr().contains(&reason), "{}", herald.stderr());
    assert!(
        !herald.stderr().contains("wrong-Pa55word") && !error.contains("wrong-Pa55word"),
        "the password must never be logged"
    );
}
