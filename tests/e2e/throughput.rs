//! A short load smoke test: catches an order-of-magnitude slowdown or a leak in
//! the accounting, never a flaky timing. The real figures are in BENCHMARKS.md.

use std::time::{Duration, Instant};

use crate::harness::{ConfigBuilder, Herald, run_herald};

#[test]
fn a_burst_of_100k_datagrams_is_handled_and_every_one_is_accounted_for() {
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra("[sinks.sink]\ntype = \"null\"\n")
            .build(),
    );
    let to = herald.udp.to_string();
    let start = Instant::now();
    let output = run_herald(&[
        "send", "--to", &to, "--kind", "all", "--count", "100000", "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json output");
    let sent = report["sent"].as_f64().expect("sent");
    assert!(sent > 90_000.0, "{report}");
    // Every datagram the sender handed to the kernel is either read by herald or
    // counted as a kernel drop; every one read is delivered or counted as dropped.
    herald.wait_for("every datagram accounted for", |h| {
        h.metric("herald_ingest_datagrams_total", &[])
            + h.metric("herald_ingest_kernel_drops_total", &[])
            >= sent
    });
    herald.wait_for("every datagram read is handled", |h| {
        let read = h.metric("herald_ingest_datagrams_total", &[]);
        let handled = h.metric("herald_sink_events_delivered_total", &[("sink", "sink")])
            + h.metric("herald_pipeline_dropped_total", &[]);
        handled >= read
    });
    let elapsed = start.elapsed();
    // About a second on a 2-core machine; thirty means something is badly wrong.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    // How many the kernel dropped depends on what else the machine is doing (a
    // debug build beside other tests); that they are counted is what matters.
    let read = herald.metric("herald_ingest_datagrams_total", &[]);
    assert!(read > 0.0, "herald read nothing");
}
