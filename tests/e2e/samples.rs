use serde_json::Value;

use crate::harness::{ConfigBuilder, Herald, SAMPLES, run_herald};

#[test]
fn every_kind_sent_by_herald_send_arrives_parsed() {
    let mut herald = Herald::start(&ConfigBuilder::new().build());
    let to = herald.udp.to_string();
    let output = run_herald(&["send", "--to", &to, "--kind", "all"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herald send failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with(&format!("sent 12 datagram(s) to {to}")),
        "{stdout}"
    );

    let events = herald.wait_for_events(12);
    assert_eq!(events.len(), 12, "{events:#?}");
    for (name, event_type, tag) in SAMPLES {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == event_type && e["tag"] == tag)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{name}: type {event_type} tag {tag}: {events:#?}"
        );
    }

    let task = events
        .iter()
        .find(|e| e["tag"] == "/scheduler-reload-failed/")
        .unwrap();
    assert_eq!(task["outcome"], "failed");
    assert_eq!(task["source"], "scheduler");
    assert_eq!(
        task["task_name"],
        "Manually triggered reload of Test failing reloads 2"
    );
    assert_eq!(task["execution_id"], "14a81bf5-f81c-4047-b1a1-193b0920de28");
    assert_eq!(task["task_id"], "dec2a02a-1680-44ef-8dc2-e2bfb180af87");
    assert_eq!(task["time_source"], "received");

    let perf = events.iter().find(|e| e["type"] == "qix_perf").unwrap();
    assert_eq!(perf["request_id"], Value::from(42));
    assert_eq!(perf["handle"], Value::from(7));
    assert_eq!(perf["net_ram"], Value::from(1_048_576));
    assert_eq!(perf["process_time"].as_f64(), Some(15.3), "{perf}");
    assert_eq!(perf["work_time"].as_f64(), Some(12.8), "{perf}");
    assert_eq!(perf["activity"], "user");
    assert_eq!(perf["time"], "2024-05-19T14:30:05.221+02:00");

    let engine = events
        .iter()
        .find(|e| e["tag"] == "/qseow-engine/")
        .unwrap();
    assert_eq!(engine["level"], "ERROR");
    assert_eq!(engine["log_row"], Value::from(4711));
    assert_eq!(engine["user_full"], "LAB\\goran");

    for event in &events {
        let sender = event["sender"].as_str().expect("sender");
        assert!(sender.starts_with("127.0.0.1:"), "{event}");
    }
    assert_eq!(herald.metric("herald_parse_events_total", &[]), 12.0);
    assert_eq!(
        herald.metric("herald_parse_events_total", &[("type", "task")]),
        4.0
    );
}
