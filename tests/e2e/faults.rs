//! Fault injection: nothing herald accepted is lost when its destination is
//! down, when it is stopped, restarted or killed, when its disk buffer is
//! damaged or its disk is full. Each test counts what arrived from the real
//! destination (InfluxDB's own `/query`, or the recorded requests of the
//! in-process Slack server), not from herald's word.
//!
//! The InfluxDB tests need `influxd` (Debian's `influxdb` package): without it
//! they say "skipped", except under CI, where `.ci/run` installs it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::influxdb::influxd::Influxd;

use crate::harness::{ConfigBuilder, Herald, poll_until, read_json_lines, run_herald_in, send};
use crate::http_stub::Stub;

/// An engine log event whose time is `base + i` milliseconds: a distinct point
/// in InfluxDB for every `i` (points are keyed by series and time).
fn engine_event(i: u64) -> Vec<u8> {
    let ms = 114 + i;
    let (second, milli) = (12 + ms / 1000, ms % 1000);
    let (minute, second) = (3 + second / 60, second % 60);
    format!(
        "/qseow-engine/;{i};20240519T12{minute:02}{second:02}.{milli:03}+0200;2024-05-19 12:03:12,114;ERROR;pro2-win1;System.Engine.Engine;LAB\\qlikservice;Fault test event {i};3b6c1f7e-2f1d-4a55-9d2e-4b1f0b3a9c11;LAB;goran;2024-05-19T12:03:12.113+02:00;6f1e7a5a-0c77-4d52-8a3e-5d1f7c9e2b10;14.173.3;2024-05-18T06:01:44.000+02:00;Error;a1b2c3d4-0000-4000-8000-1234567890ab;e7af59a0-c243-480d-9571-08727551a66f"
    )
    .into_bytes()
}

/// Sends events `from..to` from 127.0.0.1, a few hundred a second so the
/// socket never overflows.
fn send_events(to: std::net::SocketAddr, from: u64, to_excl: u64) {
    let datagrams: Vec<Vec<u8>> = (from..to_excl).map(engine_event).collect();
    for chunk in datagrams.chunks(50) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        send("127.0.0.1", to, &refs);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A herald with one `influxdb` sink (herald schema, database `herald`).
fn influx_config(influxd: &Influxd, buffer: &str, extra: &str) -> ConfigBuilder {
    ConfigBuilder::new().extra(&format!(
        "[pipeline]\nshutdown_grace_ms = 3000\n\n\
         [sinks.grafana]\ntype = \"influxdb\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"herald\"\n\
         flush_interval_ms = 100\nbatch_max_events = 500\n{buffer}\n{extra}",
        influxd.url()
    ))
}

const DISK: &str = "buffer = { type = \"disk\", max_bytes = 104857600, sync_interval_ms = 100 }";
const MEMORY: &str = "buffer = { type = \"memory\" }";

/// Distinct points and all points of the `log` measurement: (distinct, total).
fn stored(influxd: &Influxd) -> (usize, usize) {
    let rows = influxd.rows("herald", "log");
    let mut times: Vec<i64> = rows.iter().filter_map(|r| r["time"].as_i64()).collect();
    let total = times.len();
    times.sort_unstable();
    times.dedup();
    (times.len(), total)
}

/// Waits until InfluxDB holds `n` distinct events.
fn wait_stored(influxd: &Influxd, n: usize, within: Duration) {
    let ok = poll_until(within, || stored(influxd).0 >= n);
    assert!(ok, "InfluxDB holds {:?} of {n} events", stored(influxd));
}

/// The events of the `grafana` sink waiting in its disk buffer, from `/metrics`.
fn buffered(herald: &Herald) -> f64 {
    herald.metric("herald_buffer_events", &[("sink", "grafana")])
}

#[test]
fn an_influxdb_outage_of_a_minute_under_steady_load_loses_nothing_and_stores_each_event_once() {
    let Some(mut influxd) = Influxd::start() else {
        return;
    };
    influxd.create_database("herald");
    let config = influx_config(
        &influxd,
        DISK,
        "retry_initial_ms = 200\nretry_max_ms = 2000",
    )
    .build();
    let mut herald = Herald::start(&config);
    send_events(herald.udp, 0, 200);
    wait_stored(&influxd, 200, Duration::from_secs(30));

    // Down for 60 s while events keep coming at a steady 100 a second.
    influxd.stop();
    let down = Instant::now();
    let mut next = 200;
    while down.elapsed() < Duration::from_secs(60) {
        send_events(herald.udp, next, next + 50);
        next += 50;
        std::thread::sleep(Duration::from_millis(400));
    }
    herald.wait_for("the outage's events in the disk buffer", |h| {
        buffered(h) >= (next - 200) as f64
    });
    assert!(herald.metric("herald_sink_retries_total", &[("sink", "grafana")]) > 0.0);
    influxd.run();
    influxd.create_database("herald");
    wait_stored(&influxd, next as usize, Duration::from_secs(60));
    let (distinct, total) = stored(&influxd);
    assert_eq!(distinct, next as usize, "every event arrived");
    assert_eq!(total, distinct, "and each once");
    let rss = herald.peak_rss_bytes();
    assert!(rss < 150 << 20, "peak RSS {} MiB", rss >> 20);
    herald.wait_for("an empty buffer", |h| buffered(h) == 0.0);
    assert_eq!(
        herald.metric("herald_pipeline_dropped_total", &[("sink", "grafana")]),
        0.0
    );
}

#[test]
fn kill_9_with_events_in_the_disk_buffer_loses_nothing_after_a_restart() {
    let Some((mut herald, mut influxd, config)) = buffered_while_down(3000) else {
        return;
    };
    herald.signal(libc::SIGKILL);
    herald.wait_exit();

    let mut herald = herald.restart(&config);
    assert!(
        herald.stderr().contains("resuming from the disk buffer"),
        "{}",
        herald.stderr()
    );
    influxd.run();
    influxd.create_database("herald");
    wait_stored(&influxd, 3000, Duration::from_secs(60));
    let (distinct, total) = stored(&influxd);
    assert_eq!(distinct, 3000);
    // InfluxDB stores a batch before herald hears back and counts it.
    herald.wait_for("every stored event counted as delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "grafana")]) >= 3000.0
    });
    // InfluxDB keeps one point per series and time, so a re-sent batch shows
    // in herald's count of deliveries, not in the points.
    let delivered = herald.metric("herald_sink_events_delivered_total", &[("sink", "grafana")]);
    let resent = delivered as usize - distinct;
    assert!(
        resent <= 500,
        "at most the batch in flight is sent again: {resent}"
    );
    eprintln!("points {total}, delivered after restart {delivered}, sent again {resent}");
}

/// SIGTERM while the sink waits out its longest retry delay.
fn stop_during_a_long_outage(buffer: &str) -> (Herald, Influxd, Duration) {
    let mut influxd = Influxd::start().expect("influxd");
    influxd.create_database("herald");
    influxd.stop();
    let config = influx_config(
        &influxd,
        buffer,
        "retry_initial_ms = 30000\nretry_max_ms = 30000",
    )
    .build();
    let mut herald = Herald::start(&config);
    send_events(herald.udp, 0, 1000);
    herald.wait_for("a retry", |h| {
        h.metric("herald_sink_retries_total", &[("sink", "grafana")]) >= 1.0
            && h.metric("herald_sink_queue_depth", &[("sink", "grafana")]) >= 500.0
    });
    let asked = Instant::now();
    herald.sigterm();
    let status = herald.wait_exit();
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", herald.stderr());
    assert!(
        !herald.stderr().contains("were lost"),
        "{}",
        herald.stderr()
    );
    (herald, influxd, took)
}

#[test]
fn sigterm_during_a_long_outage_keeps_every_event_in_the_disk_buffer_for_the_next_start() {
    if Influxd::start().is_none() {
        return;
    }
    let (herald, mut influxd, took) = stop_during_a_long_outage(DISK);
    assert!(
        took < Duration::from_secs(6),
        "stopped in {took:?} (grace 3 s)"
    );
    assert!(
        herald.stderr().contains("in_disk_buffer=1000"),
        "{}",
        herald.stderr()
    );
    let config = influx_config(&influxd, DISK, "").build();
    influxd.run();
    influxd.create_database("herald");
    let _herald = herald.restart(&config);
    wait_stored(&influxd, 1000, Duration::from_secs(30));
    assert_eq!(stored(&influxd), (1000, 1000));
}

#[test]
fn sigterm_during_a_long_outage_puts_a_memory_buffer_in_the_dead_letter_file() {
    if Influxd::start().is_none() {
        return;
    }
    let (herald, _influxd, took) = stop_during_a_long_outage(MEMORY);
    assert!(
        took < Duration::from_secs(6),
        "stopped in {took:?} (grace 3 s)"
    );
    let dead = herald.json_lines("dead.jsonl");
    let shutdown: Vec<_> = dead.iter().filter(|r| r["reason"] == "shutdown").collect();
    assert_eq!(shutdown.len(), 1000, "{}", herald.stderr());
    let mut rows: Vec<i64> = shutdown
        .iter()
        .filter_map(|r| r["event"]["log_row"].as_i64())
        .collect();
    rows.sort_unstable();
    rows.dedup();
    assert_eq!(rows.len(), 1000, "every event once");
    assert!(shutdown.iter().all(|r| r["sink"] == "grafana"));
}

/// A herald with a disk-buffered InfluxDB sink whose server is down, holding
/// events 0..n in its buffer (`None` without influxd).
fn buffered_while_down(n: u64) -> Option<(Herald, Influxd, String)> {
    let mut influxd = Influxd::start()?;
    influxd.create_database("herald");
    influxd.stop();
    let config = influx_config(
        &influxd,
        DISK,
        "retry_initial_ms = 200\nretry_max_ms = 1000",
    )
    .build();
    let mut herald = Herald::start(&config);
    send_events(herald.udp, 0, n);
    herald.wait_for(&format!("{n} events in the disk buffer"), |h| {
        buffered(h) >= n as f64
    });
    Some((herald, influxd, config))
}

/// Stops a herald whose InfluxDB is down, leaving `n` events in its buffer;
/// returns it (exited) and the buffer's segment files.
fn buffer_with_events(n: u64) -> Option<(Herald, Influxd, String, Vec<PathBuf>)> {
    let (mut herald, influxd, config) = buffered_while_down(n)?;
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    let segments = segments(&herald.dir().join("data/buffer/grafana"));
    assert!(!segments.is_empty());
    Some((herald, influxd, config, segments))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Restarts the herald with InfluxDB back, and returns how many events were
/// stored and how many herald counted as damaged.
fn restart_and_count(
    herald: Herald,
    mut influxd: Influxd,
    config: &str,
    expect: usize,
) -> (usize, f64) {
    influxd.run();
    influxd.create_database("herald");
    let mut herald = herald.restart(config);
    wait_stored(&influxd, expect, Duration::from_secs(30));
    herald.wait_for("an empty buffer", |h| buffered(h) == 0.0);
    let damaged = herald.metric(
        "herald_buffer_corrupt_records_total",
        &[("sink", "grafana")],
    );
    (stored(&influxd).0, damaged)
}

#[test]
fn a_truncated_buffer_segment_delivers_its_intact_events_and_counts_the_cut_ones() {
    let Some((herald, influxd, config, segments)) = buffer_with_events(1000) else {
        return;
    };
    let last = segments.last().expect("a segment");
    let len = fs::metadata(last).unwrap().len();
    // Cut a tenth off, in the middle of a record.
    let cut = len - len / 10 - 7;
    fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (arrived, damaged) = restart_and_count(herald, influxd, &config, 850);
    assert!(arrived < 1000 && arrived > 850, "{arrived}");
    assert_eq!(
        arrived as f64 + damaged,
        1000.0,
        "every event delivered or counted"
    );
}

#[test]
fn a_flipped_bit_in_a_buffer_segment_costs_only_its_event() {
    let Some((herald, influxd, config, segments)) = buffer_with_events(1000) else {
        return;
    };
    let segment = segments.last().expect("a segment");
    let mut bytes = fs::read(segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    fs::write(segment, &bytes).unwrap();
    let (arrived, damaged) = restart_and_count(herald, influxd, &config, 999);
    assert_eq!((arrived, damaged), (999, 1.0));
}

#[test]
fn a_full_disk_for_the_buffer_keeps_herald_running_and_says_so() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs for the buffer needs root");
        return;
    }
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "herald-test"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs as root under CI"
        );
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let stub = Stub::start();
    stub.set_default(503, &[], "down");
    let config = format!(
        "data_dir = {:?}\n{}",
        mount.path().display().to_string(),
        ConfigBuilder::new()
            .extra(&format!(
                "[sinks.collector]\ntype = \"webhook\"\nurl = \"{}/in\"\nbody = \"ndjson\"\n\
                 flush_interval_ms = 100\nretry_initial_ms = 100\nretry_max_ms = 500\n\
                 buffer = {{ type = \"disk\", max_bytes = 104857600, sync_interval_ms = 100 }}\n",
                stub.url()
            ))
            .build()
    );
    let mut herald = Herald::start(&config);
    send_events(herald.udp, 0, 5000);
    herald.wait_for("the disk refusing writes", |h| {
        h.metric("herald_buffer_write_errors_total", &[("sink", "collector")]) > 0.0
    });
    let (status, health) = herald.http_get("/health");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("the disk refuses writes"), "{health}");
    // Still running and receiving: the file sink has every event.
    herald.wait_for_events(5000);
    // The collector comes back: every event reaches it, from disk or memory.
    let back = Instant::now();
    stub.set_default(200, &[], "");
    let mut rows: Vec<i64> = Vec::new();
    let ok = poll_until(Duration::from_secs(30), || {
        rows = answered_after(&stub, back)
            .iter()
            .flat_map(|r| {
                r.body_text()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .filter_map(|event| event["log_row"].as_i64())
            .collect();
        rows.sort_unstable();
        rows.dedup();
        rows.len() >= 5000
    });
    assert!(ok, "{} of 5000 events\n{}", rows.len(), herald.stderr());
}

#[test]
fn slack_down_for_30_s_with_a_restart_gets_every_failed_reload_exactly_once() {
    let stub = Stub::start();
    stub.set_default(500, &[], "internal_error");
    let config = ConfigBuilder::new()
        .extra(&format!(
            "[pipeline]\nshutdown_grace_ms = 2000\n\n\
             [sinks.slack]\ntype = \"slack\"\nwebhook_url = \"{}/hook\"\nmatch = {{ types = [\"task\"] }}\n\
             max_retries = 1000\nretry_initial_ms = 200\nretry_max_ms = 1000\npace_per_second = 0\n\
             buffer = {{ type = \"disk\", max_bytes = 10485760, sync_interval_ms = 100 }}\n",
            stub.url()
        ))
        .build();
    let mut herald = Herald::start(&config);
    let started = Instant::now();
    let failures: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            crate::harness::task_failure(
                &format!("Reload {i}"),
                &format!("dec2a02a-1680-44ef-8dc2-e2bfb180af8{i}"),
                &crate::harness::execution(i),
                "Max retries reached",
            )
        })
        .collect();
    let mut datagrams: Vec<&[u8]> = failures.iter().map(Vec::as_slice).collect();
    datagrams.push(&failures[2]); // Sense sends some failures twice
    send("127.0.0.1", herald.udp, &datagrams);
    herald.wait_for("the first tries", |_| stub.requests().len() >= 2);
    std::thread::sleep(Duration::from_secs(5));
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    let herald = herald.restart(&config);
    let wait = Duration::from_secs(30).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let back = Instant::now();
    stub.set_default(200, &[], "ok");
    let ok = poll_until(Duration::from_secs(30), || {
        answered_after(&stub, back).len() >= 5
    });
    assert!(ok, "{}", herald.stderr());
    std::thread::sleep(Duration::from_secs(2));
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for request in answered_after(&stub, back) {
        let text = request.body_text().to_string();
        let task = (0..5)
            .map(|i| format!("Reload {i}"))
            .find(|name| text.contains(name.as_str()))
            .expect("a task name in the alert");
        *delivered.entry(task).or_default() += 1;
    }
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
}

/// Requests the stub received after `back` (when it began to answer 200).
fn answered_after(stub: &Stub, back: Instant) -> Vec<crate::http_stub::Request> {
    stub.requests()
        .into_iter()
        .filter(|r| r.received > back)
        .collect()
}

/// `herald replay` of the herald's dead-letter file with its config, plus
/// `args`; fails the test unless it succeeds, and returns what it printed.
fn replay(herald: &Herald, args: &[&str]) -> String {
    let mut all = vec![
        "replay",
        "--config",
        "herald.toml",
        "--dead-letter",
        "dead.jsonl",
    ];
    all.extend_from_slice(args);
    let out = run_herald_in(herald.dir(), &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn replay_of_a_dead_letter_file_after_the_cause_is_fixed_delivers_every_event() {
    let Some(mut influxd) = Influxd::start() else {
        return;
    };
    influxd.stop();
    // The sink gives up at once: every event goes to the dead-letter file.
    let config = influx_config(&influxd, MEMORY, "max_retries = 0").build();
    let mut herald = Herald::start(&config);
    send_events(herald.udp, 0, 300);
    herald.wait_for("300 dead letters", |h| {
        h.json_lines("dead.jsonl")
            .iter()
            .filter(|r| r["reason"] == "sink_failed")
            .count()
            >= 300
    });
    herald.sigterm();
    assert!(herald.wait_exit().success());
    influxd.run();
    influxd.create_database("herald");
    let dead = herald.dir().join("dead.jsonl");
    let dry = replay(&herald, &["--dry-run"]);
    assert!(
        dry.contains("would send 300 event(s) to sinks.grafana"),
        "{dry}"
    );
    assert_eq!(stored(&influxd).0, 0, "a dry run sends nothing");
    let sent = replay(&herald, &["--reason", "sink_failed"]);
    assert!(
        sent.contains("sent 300 event(s) to sinks.grafana"),
        "{sent}"
    );
    wait_stored(&influxd, 300, Duration::from_secs(10));
    assert_eq!(stored(&influxd), (300, 300));
    let leftovers: Vec<_> = fs::read_dir(herald.dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".replay-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing failed, so no new dead-letter file"
    );
    assert_eq!(
        read_json_lines(&dead).len(),
        300,
        "the file read is left as it was"
    );
}

#[test]
fn a_disk_buffered_alert_sink_remembers_across_a_restart_what_it_delivered() {
    let stub = Stub::start();
    stub.set_default(200, &[], "ok");
    let config = ConfigBuilder::new()
        .extra(&format!(
            "[sinks.slack]\ntype = \"slack\"\nwebhook_url = \"{}/hook\"\nmatch = {{ types = [\"task\"] }}\n\
             pace_per_second = 0\nbuffer = {{ type = \"disk\", max_bytes = 10485760 }}\n",
            stub.url()
        ))
        .build();
    let failure = crate::harness::task_failure(
        "Reload 1",
        "dec2a02a-1680-44ef-8dc2-e2bfb180af87",
        &crate::harness::execution(1),
        "Max retries reached",
    );
    let mut herald = Herald::start(&config);
    send("127.0.0.1", herald.udp, &[&failure]);
    stub.wait_for_requests(1, Duration::from_secs(20));
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    // Sense sends the same failure again after herald restarted.
    let mut herald = herald.restart(&config);
    send("127.0.0.1", herald.udp, &[&failure]);
    herald.wait_for("the duplicate suppressed", |h| {
        h.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "slack"), ("reason", "duplicate")],
        ) >= 1.0
    });
    assert_eq!(stub.requests().len(), 1, "one message for one failure");
}
