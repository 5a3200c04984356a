//! Rotation under a steady stream: the file sink rotates hundreds of times and
//! nothing overflows; every event is in exactly one file.

use std::collections::BTreeMap;
use std::fs;

use crate::harness::*;

#[test]
fn rotating_at_a_tiny_size_under_a_steady_stream_loses_and_repeats_nothing() {
    const EVENTS: usize = 40_000;
    // About 120 rotations of 256 KiB; every file is kept so every line can be
    // found again.
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .events_sink_key("max_bytes = 262144")
            .events_sink_key("max_files = 400")
            .build(),
    );
    let lines: Vec<Vec<u8>> = (0..EVENTS)
        .map(|n| task_failure("Rotation", TASK, &execution(n), &format!("line {n}")))
        .collect();
    let input = herald.dir().join("stream.txt");
    fs::write(&input, lines.join(&b'\n')).expect("write the stream");
    let to = herald.udp.to_string();
    let output = run_herald(&[
        "send",
        "--to",
        &to,
        "--file",
        &input.display().to_string(),
        "--rate",
        "10000",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    herald.wait_for("every datagram read or counted as dropped", |h| {
        h.metric("herald_ingest_datagrams_total", &[])
            + h.metric("herald_ingest_kernel_drops_total", &[])
            >= EVENTS as f64
    });
    herald.wait_for("every datagram read is delivered", |h| {
        let read = h.metric("herald_ingest_datagrams_total", &[]);
        read > 0.0
            && h.metric("herald_sink_events_delivered_total", &[("sink", "events")])
                + h.metric("herald_pipeline_dropped_total", &[])
                >= read
    });
    assert_eq!(
        herald.metric("herald_pipeline_dropped_total", &[]),
        0.0,
        "a queue overflowed while the file rotated"
    );
    let read = herald.metric("herald_ingest_datagrams_total", &[]) as usize;
    let kernel_drops = herald.metric("herald_ingest_kernel_drops_total", &[]) as usize;
    assert_eq!(
        read + kernel_drops,
        EVENTS,
        "every datagram sent is read or counted as dropped by the kernel"
    );

    // Every line of every file, by the line number in its message.
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut files = 0;
    for entry in fs::read_dir(herald.dir()).expect("read the directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("events.jsonl") {
            continue;
        }
        files += 1;
        let size = fs::metadata(&path).expect("metadata").len();
        assert!(size <= 262_144, "{name} has {size} bytes");
        for event in read_json_lines(&path) {
            let message = event["message"].as_str().unwrap_or_default();
            let n: usize = message
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: unexpected event {event}"));
            *seen.entry(n).or_default() += 1;
        }
    }
    assert!(
        files > 50,
        "only {files} files: the test did not rotate enough"
    );
    let repeated: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        repeated.is_empty(),
        "lines in more than one place: {repeated:?}"
    );
    assert_eq!(
        seen.len(),
        read,
        "every event read is in exactly one file ({} kernel drops)",
        kernel_drops
    );
}
