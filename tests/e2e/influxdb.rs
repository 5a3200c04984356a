//! herald against a real InfluxDB 1.x: `influxd` (Debian's `influxdb` package)
//! is started here on free loopback ports with a temporary data directory, and
//! every assertion reads back through `/query`.
//!
//! Without `influxd` on the PATH these tests say so and pass, except under CI
//! (`CI` set), where `.ci/run` installs it and a missing binary is a failure.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../support/influxd.rs"]
pub mod influxd;
use influxd::Influxd;

use crate::harness::{ConfigBuilder, Herald, fixture, free_tcp_port, poll_until, run_herald};

/// A herald config with one `influxdb` sink writing to `db` in `schema`.
fn herald_config(influxd: &Influxd, db: &str, schema: &str, extra: &str) -> ConfigBuilder {
    ConfigBuilder::new().extra(&format!(
        "[parse]\ntime_zone = \"+01:00\"\n\n\
         [sinks.influx]\ntype = \"influxdb\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\nschema = \"{schema}\"\n\
         flush_interval_ms = 100\nretry_initial_ms = 100\nretry_max_ms = 1000\n{extra}",
        influxd.url()
    ))
}

/// The event's time in milliseconds, from an event JSON line.
fn event_millis(event: &Value) -> i128 {
    let time: jiff::Timestamp = event["time"]
        .as_str()
        .expect("time")
        .parse()
        .expect("RFC 3339");
    time.as_millisecond() as i128
}

fn point_millis(row: &serde_json::Map<String, Value>) -> i128 {
    row["time"].as_i64().expect("epoch ns") as i128 / 1_000_000
}

fn wait_points(influxd: &Influxd, db: &str, measurements: &[&str], want: usize) {
    let ok = poll_until(Duration::from_secs(20), || {
        measurements
            .iter()
            .map(|m| influxd.count(db, m))
            .sum::<usize>()
            >= want
    });
    assert!(
        ok,
        "InfluxDB has {} of {want} points",
        measurements
            .iter()
            .map(|m| influxd.count(db, m))
            .sum::<usize>()
    );
}

#[test]
fn every_family_lands_in_influxdb_with_event_time_in_the_herald_schema() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("herald");
    let mut herald = Herald::start(&herald_config(&influxd, "herald", "herald", "").build());
    let samples = herald.send_samples();
    let events = herald.wait_for_events(samples);
    let measurements = [
        "log",
        "qix_perf",
        "session",
        "connection",
        "task",
        "engine_reload_failed",
    ];
    wait_points(&influxd, "herald", &measurements, samples);

    let counts: Vec<usize> = measurements
        .iter()
        .map(|m| influxd.count("herald", m))
        .collect();
    assert_eq!(counts, [4, 1, 1, 1, 4, 1], "points per measurement");

    // Every point carries its event's own time (millisecond digits).
    for measurement in measurements {
        let mut points: Vec<i128> = influxd
            .rows("herald", measurement)
            .iter()
            .map(point_millis)
            .collect();
        let mut expected: Vec<i128> = events
            .iter()
            .filter(|e| e["type"] == measurement)
            .map(event_millis)
            .collect();
        points.sort();
        expected.sort();
        assert_eq!(points, expected, "{measurement} times");
    }

    let log = influxd.rows("herald", "log");
    let engine = log
        .iter()
        .find(|r| r["source"] == "engine")
        .expect("engine point");
    assert_eq!(engine["host"], "pro2-win1");
    assert_eq!(engine["level"], "ERROR");
    assert_eq!(engine["subsystem"], "System.Engine.Engine");
    assert_eq!(engine["log_row"], 4711);
    assert_eq!(engine["user_full"], "LAB\\goran");
    assert_eq!(engine["app_id"], "e7af59a0-c243-480d-9571-08727551a66f");
    assert_eq!(
        point_millis(engine),
        1_716_112_992_114,
        "2024-05-19T12:03:12.114+02:00"
    );

    let qix = &influxd.rows("herald", "qix_perf")[0];
    assert_eq!(qix["method"], "GenericObject::GetLayout");
    assert_eq!(qix["activity"], "user");
    assert!(
        qix["process_time"].is_f64(),
        "process_time is a float: {:?}",
        qix["process_time"]
    );
    assert!(
        qix["net_ram"].is_i64(),
        "net_ram is an integer: {:?}",
        qix["net_ram"]
    );

    let tasks = influxd.rows("herald", "task");
    let failed = tasks
        .iter()
        .find(|r| r["outcome"] == "failed")
        .expect("failed task");
    assert_eq!(
        failed["task_name"],
        "Manually triggered reload of Test failing reloads 2"
    );
    assert_eq!(
        failed["execution_id"],
        "14a81bf5-f81c-4047-b1a1-193b0920de28"
    );
    assert_eq!(failed["message"], "Max retries reached");
    // %date read in the configured zone (+01:00): 2021-02-16 09:24:59,099 local.
    assert_eq!(point_millis(failed), 1_613_463_899_099);

    // Tags hold only bounded values: never messages or ids.
    let tag_keys = influxd.query("herald", "SHOW TAG KEYS");
    for series in tag_keys {
        for key in series["values"].as_array().cloned().unwrap_or_default() {
            let key = key[0].as_str().unwrap_or("").to_string();
            assert!(
                [
                    "source",
                    "host",
                    "level",
                    "subsystem",
                    "method",
                    "object_type",
                    "activity",
                    "layout",
                    "command",
                    "outcome"
                ]
                .contains(&key.as_str()),
                "unexpected tag {key} on {}",
                series["name"]
            );
        }
    }
    assert_eq!(
        herald.metric("herald_sink_events_delivered_total", &[("sink", "influx")]),
        samples as f64
    );
}

#[test]
fn the_butler_sos_schema_writes_the_names_existing_dashboards_query() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("butler");
    let mut herald = Herald::start(&herald_config(&influxd, "butler", "butler-sos", "").build());
    let samples = herald.send_samples();
    let events = herald.wait_for_events(samples);
    let measurements = [
        "log_event",
        "user_events",
        "reload_task_failed",
        "reload_task_aborted",
        "external_program_task_success",
        "distribute_task_finished",
        "engine_reload_failed",
    ];
    wait_points(&influxd, "butler", &measurements, samples);
    let counts: Vec<usize> = measurements
        .iter()
        .map(|m| influxd.count("butler", m))
        .collect();
    assert_eq!(counts, [5, 2, 1, 1, 1, 1, 1], "points per measurement");

    let log = influxd.rows("butler", "log_event");
    let sources: std::collections::BTreeSet<_> = log
        .iter()
        .map(|r| r["source"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        [
            "qseow-engine",
            "qseow-proxy",
            "qseow-qix-perf",
            "qseow-repository",
            "qseow-scheduler"
        ]
    );
    let proxy = log
        .iter()
        .find(|r| r["source"] == "qseow-proxy")
        .expect("proxy");
    assert_eq!(proxy["result_code"], "401");
    assert_eq!(proxy["message"], "Authentication failed for user LAB\\jdoe");
    let raw: Value = serde_json::from_str(proxy["raw_event"].as_str().expect("raw_event"))
        .expect("raw_event is JSON");
    assert_eq!(raw["type"], "log");

    let qix = log
        .iter()
        .find(|r| r["source"] == "qseow-qix-perf")
        .expect("qix");
    assert_eq!(qix["event_activity_source"], "user");
    assert!(qix["process_time"].is_f64());

    let sessions = influxd.rows("butler", "user_events");
    let start = sessions
        .iter()
        .find(|r| r["event_action"] == "Start session")
        .expect("session");
    assert_eq!(start["userFull"], "LAB\\goran");
    assert_eq!(start["origin"], "AppAccess");

    let failed = &influxd.rows("butler", "reload_task_failed")[0];
    assert_eq!(
        failed["task_name"],
        "Manually triggered reload of Test failing reloads 2"
    );
    assert_eq!(failed["user"], "LAB\\goran");
    assert_eq!(failed["log_message"], "Max retries reached");
    assert_eq!(failed["log_timestamp"], "2021-02-16 09:24:59,099");
    let failed_event = events
        .iter()
        .find(|e| e["outcome"] == "failed")
        .expect("failed event");
    assert_eq!(
        point_millis(failed),
        event_millis(failed_event),
        "event time, not receive time"
    );
}

/// An engine log datagram with its own millisecond, so every point is distinct.
fn numbered_datagram(n: usize) -> Vec<u8> {
    let ms = n % 1000;
    let second = (n / 1000) % 60;
    let minute = n / 60_000;
    format!(
        "/qseow-engine/;{};20240519T12{minute:02}{second:02}.{ms:03}+0200;2024-05-19 12:{minute:02}:{second:02},{ms:03};ERROR;pro2-win1;System.Engine.Engine;LAB\\qlikservice;event {n};;;;;;;;;;",
        n % 9999 + 1
    )
    .into_bytes()
}

#[test]
fn an_influxdb_outage_loses_nothing_and_duplicates_nothing() {
    let Some(mut influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("outage");
    let mut herald = Herald::start(&herald_config(&influxd, "outage", "herald", "").build());
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut sent = 0;
    let send_for = |duration: Duration, sent: &mut usize| {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            sender
                .send_to(&numbered_datagram(*sent), herald.udp)
                .expect("send");
            *sent += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    send_for(Duration::from_secs(2), &mut sent);
    influxd.stop();
    send_for(Duration::from_secs(10), &mut sent);
    let queued = herald.metric("herald_sink_queue_depth", &[("sink", "influx")]);
    influxd.run();
    send_for(Duration::from_secs(2), &mut sent);

    herald.wait_for("every datagram read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= sent as f64
    });
    let ok = poll_until(Duration::from_secs(30), || {
        influxd.count("outage", "log") >= sent
    });
    let stored = influxd.count("outage", "log");
    if !ok {
        let present: std::collections::BTreeSet<String> = influxd
            .rows("outage", "log")
            .iter()
            .map(|r| r["message"].as_str().unwrap_or("").to_string())
            .collect();
        let missing: Vec<usize> = (0..sent)
            .filter(|n| !present.contains(&format!("event {n}")))
            .collect();
        panic!(
            "InfluxDB has {stored} of {sent} events; missing {missing:?}\nmetrics:\n{}\n{}",
            herald
                .metrics_text()
                .lines()
                .filter(|l| l.contains("influx") || l.contains("ingest"))
                .collect::<Vec<_>>()
                .join("\n"),
            herald.stderr()
        );
    }
    assert_eq!(stored, sent, "exactly once");
    let messages: std::collections::BTreeSet<String> = influxd
        .rows("outage", "log")
        .iter()
        .map(|r| r["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(messages.len(), sent, "every event is there once");
    assert!(herald.metric("herald_sink_retries_total", &[("sink", "influx")]) > 0.0);
    assert_eq!(
        herald.metric("herald_sink_events_failed_total", &[("sink", "influx")]),
        0.0
    );
    assert_eq!(
        herald.metric("herald_sink_events_delivered_total", &[("sink", "influx")]),
        sent as f64
    );
    assert!(queued > 0.0, "events waited in the queue during the outage");
    assert!(
        herald.stderr().contains("delivery failed; retrying"),
        "{}",
        herald.stderr()
    );
}

#[test]
fn points_influxdb_refuses_go_to_the_dead_letter_file_and_the_rest_are_written() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("conflict");
    // InfluxDB 1.x fixes a field's type per shard: an integer `message` on `log`
    // at each log sample's time makes herald's string messages there conflict,
    // while the other measurements are unaffected.
    let mut lines = String::new();
    for name in [
        "engine_error",
        "proxy_warn",
        "repository_warn",
        "scheduler_warn",
    ] {
        let time: jiff::Timestamp = fixture(name).expected["time"]
            .as_str()
            .expect("time")
            .parse()
            .expect("time");
        lines.push_str(&format!(
            "log,host=x message=1i {}\n",
            time.as_nanosecond() + 500_000
        ));
    }
    let (status, body) = influxd.request("POST", "/write?db=conflict", &lines);
    assert_eq!(status, 204, "{body}");
    let mut herald = Herald::start(&herald_config(&influxd, "conflict", "herald", "").build());
    let samples = herald.send_samples();
    herald.wait_for("the batch settled", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "influx")])
            + h.metric("herald_sink_events_delivered_total", &[("sink", "influx")])
            >= samples as f64
    });
    assert_eq!(
        herald.metric("herald_sink_events_failed_total", &[("sink", "influx")]),
        4.0
    );
    assert_eq!(
        herald.metric("herald_sink_events_delivered_total", &[("sink", "influx")]),
        (samples - 4) as f64,
        "every event but the four log events"
    );
    assert_eq!(influxd.count("conflict", "task"), 4);
    assert_eq!(
        influxd.count("conflict", "log"),
        4,
        "only the pre-existing points"
    );
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 4, "{dead:#?}");
    for record in &dead {
        assert_eq!(record["sink"], "influx");
        assert_eq!(record["event"]["type"], "log");
        assert!(
            record["error"]
                .as_str()
                .unwrap_or("")
                .contains("field type conflict"),
            "{record}"
        );
    }
}

#[test]
fn check_connect_says_what_is_wrong_with_the_influxdb_settings() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("ready");
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |database: &str, url: &str| {
        let config = ConfigBuilder::new().extra(&format!(
            "[sinks.influx]\ntype = \"influxdb\"\nurl = \"{url}\"\ndatabase = \"{database}\"\n"
        ));
        let path: PathBuf = dir.path().join(format!("{database}.toml"));
        std::fs::write(&path, config.build()).expect("write config");
        run_herald(&[
            "check",
            "--connect",
            "--config",
            path.to_str().expect("utf-8 path"),
        ])
    };
    let ok = check("ready", &influxd.url());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("database \"ready\" is ready"));

    let missing = check("absent", &influxd.url());
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("sinks.influx: database \"absent\" does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("CREATE DATABASE"), "{stderr}");

    let down = check("ready", &format!("http://127.0.0.1:{}", free_tcp_port()));
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach InfluxDB"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
