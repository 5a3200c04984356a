use serde_json::Value;

use crate::harness::{ConfigBuilder, Herald, fixture, metric_names, sample_datagrams, send};

/// Metrics whose series appear with the first thing they count (their labels
/// are not known up front); `fixtures::fixtures_arrive_exactly_as_expected`
/// checks this one.
const REGISTERED_WHEN_COUNTED: [&str; 1] = ["herald_parse_malformed_fields_total"];

/// Metrics only sinks of one type have; `nats::a_server_that_stalls_and_one_that_restarts_store_every_event_exactly_once`
/// checks this one.
const ONE_SINK_TYPE_ONLY: [&str; 1] = ["herald_sink_duplicates_total"];

/// Every name declared in src/metrics.rs.
const METRICS: [&str; 35] = [
    "herald_ingest_datagrams_total",
    "herald_ingest_rejected_total",
    "herald_ingest_kernel_drops_total",
    "herald_ingest_receive_buffer_bytes",
    "herald_allowlist_entries",
    "herald_allowlist_unresolved_hosts",
    "herald_parse_events_total",
    "herald_parse_errors_total",
    "herald_parse_malformed_fields_total",
    "herald_pipeline_dropped_total",
    "herald_route_unrouted_total",
    "herald_sender_gap_events_total",
    "herald_sender_restarts_total",
    "herald_sender_gap_streams_untracked_total",
    "herald_events_total",
    "herald_task_events_total",
    "herald_event_latency_seconds",
    "herald_sink_events_delivered_total",
    "herald_sink_events_failed_total",
    "herald_sink_retries_total",
    "herald_sink_duplicates_total",
    "herald_sink_queue_depth",
    "herald_sink_queue_capacity",
    "herald_sink_batch_events",
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
    "herald_config_reloads_total",
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
        if REGISTERED_WHEN_COUNTED.contains(&name) || ONE_SINK_TYPE_ONLY.contains(&name) {
            continue;
        }
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

    // A request head that never ends within 8 KiB is refused as too large.
    let mut stream = std::net::TcpStream::connect(herald.http).expect("connect");
    let head = format!("GET /health HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(9000));
    let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "an oversized head got {answer:?}"
    );
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
        .filter(|m| !REGISTERED_WHEN_COUNTED.contains(m) && !ONE_SINK_TYPE_ONLY.contains(m))
        .filter(|m| !names.iter().any(|n| n == m || *n == format!("{m}_count")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from /metrics: {missing:?}\n{text}"
    );
}

#[test]
fn a_token_guards_health_and_if_asked_metrics() {
    use crate::harness::http_request_with;
    let token = "0123456789abcdef0123";
    let herald = Herald::start_with_token(
        &ConfigBuilder::new().build(),
        token,
        "metrics_public = false\n",
    );
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let get = |path: &str, headers: &str| {
        http_request_with(herald.http, "GET", path, headers).unwrap_or((0, String::new()))
    };
    assert_eq!(get("/health", &bearer).0, 200);
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

/// Raises this test process's soft limit on open files to the hard limit and
/// returns it: 2,000 connections do not fit in the usual 1,024.
fn raise_own_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only to the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_cur
}

/// Connections that open and send nothing, for the endpoint to time out.
const IDLE: usize = 2_000;
/// Connections that send a byte of request head now and then, never finishing it.
const SLOW: usize = 50;

#[test]
fn thousands_of_idle_and_slow_connections_neither_block_requests_nor_stay_open() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use crate::harness::{http_request, poll_until};

    let limit = raise_own_open_file_limit();
    assert!(
        limit >= (IDLE + SLOW + 256) as u64,
        "this test needs {} open files; the hard limit is {limit}",
        IDLE + SLOW + 256
    );
    // Started the way a service manager often starts it, with a soft limit
    // of 1,024 under a higher hard limit: herald raises its own limit.
    let mut herald = Herald::start_with_open_file_limit(
        &ConfigBuilder::new()
            .extra("[log]\nlevel = \"info,herald=debug\"")
            .build(),
        1024,
    );
    herald.wait_for("the open-file limit logged", |h| {
        h.stderr().contains("open-file limit")
    });
    let log = herald.stderr();
    let soft: u64 = log
        .lines()
        .find(|line| line.contains("open-file limit"))
        .and_then(|line| line.split("soft=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no soft= in the open-file limit line:\n{log}"));
    assert_eq!(soft, limit, "herald did not raise its soft limit:\n{log}");
    assert!(log.contains("was=1024"), "{log}");
    // The fewest over a moment: the connection that found herald up may not
    // be closed yet.
    let baseline = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            herald.open_fds()
        })
        .min()
        .unwrap_or_default();
    let timed_get = |path: &str| {
        let start = Instant::now();
        let answer = http_request(herald.http, "GET", path);
        (answer, start.elapsed())
    };

    let opened = Instant::now();
    let mut slowest_connect = Duration::ZERO;
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let start = Instant::now();
            let stream = TcpStream::connect_timeout(&herald.http, Duration::from_secs(5))
                .unwrap_or_else(|err| panic!("idle connection {i}: {err}"));
            slowest_connect = slowest_connect.max(start.elapsed());
            stream
        })
        .collect();
    // Each slow client sends one byte of a never-ending head every 250 ms and
    // reports how long after connecting herald closed (or answered) it.
    let slow: Vec<std::thread::JoinHandle<Option<Duration>>> = (0..SLOW)
        .map(|i| {
            let mut stream = TcpStream::connect_timeout(&herald.http, Duration::from_secs(5))
                .unwrap_or_else(|err| panic!("slow connection {i}: {err}"));
            std::thread::spawn(move || {
                let start = Instant::now();
                let head = b"GET /health HTTP/1.1\r\nX-Slow: ".iter().copied();
                let mut bytes = head.chain(std::iter::repeat(b'a'));
                stream
                    .set_read_timeout(Some(Duration::from_millis(250)))
                    .expect("read timeout");
                let mut answer = [0u8; 256];
                while start.elapsed() < Duration::from_secs(30) {
                    let byte = bytes.next().unwrap_or(b'a');
                    if stream.write_all(&[byte]).is_err() {
                        return Some(start.elapsed());
                    }
                    match stream.read(&mut answer) {
                        Err(err)
                            if matches!(
                                err.kind(),
                                ErrorKind::WouldBlock | ErrorKind::TimedOut
                            ) => {}
                        // An answer, the end of the stream or a reset: closed.
                        _ => return Some(start.elapsed()),
                    }
                }
                None
            })
        })
        .collect();
    println!(
        "opened {IDLE} idle and {SLOW} slow connections in {:?} (the slowest idle one in {slowest_connect:?})",
        opened.elapsed()
    );
    let accepted = poll_until(Duration::from_secs(3), || {
        herald.open_fds() >= baseline + IDLE + SLOW
    });
    let held = herald.open_fds();
    assert!(
        accepted,
        "herald holds {held} descriptors, fewer than its {baseline} plus one per connection"
    );

    // Ordinary requests are answered in full while all of those are open.
    let mut latencies = Vec::new();
    for round in 0..5 {
        for path in ["/health", "/metrics"] {
            let (answer, took) = timed_get(path);
            let (status, body) =
                answer.unwrap_or_else(|err| panic!("GET {path} (round {round}) failed: {err}"));
            assert_eq!(status, 200, "GET {path}: {body}");
            match path {
                "/health" => {
                    let health: Value = serde_json::from_str(&body).expect("/health is JSON");
                    assert_eq!(health["status"], "ok", "{health}");
                }
                _ => assert!(
                    body.contains("# TYPE herald_ingest_datagrams_total counter\n"),
                    "{body}"
                ),
            }
            assert!(
                took < Duration::from_secs(5),
                "GET {path} took {took:?} with {IDLE} idle connections open"
            );
            latencies.push((path, took));
        }
    }
    let still_open = herald.open_fds().saturating_sub(baseline);
    for (path, took) in &latencies {
        println!("GET {path} answered in {:.1} ms", took.as_secs_f64() * 1e3);
    }
    println!(
        "{still_open} connections still open after the requests ({:?} after opening)",
        opened.elapsed()
    );

    // herald answers each idle connection 408 once the request head is
    // overdue and closes it, so none can be held open for ever. (A connection
    // beyond the cap would be closed without an answer.)
    let mut closed_after = Vec::with_capacity(IDLE);
    for (i, mut stream) in idle.into_iter().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut answer = Vec::new();
        if let Err(err) = stream.read_to_end(&mut answer) {
            panic!("idle connection {i} was not closed by herald: {err}");
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "idle connection {i} got {answer:?}"
        );
        closed_after.push(opened.elapsed());
    }
    let last_idle = closed_after.iter().max().copied().unwrap_or_default();
    println!("the last idle connection was closed {last_idle:?} after opening");
    let slow_closed: Vec<Duration> = slow
        .into_iter()
        .enumerate()
        .map(|(i, handle)| {
            handle
                .join()
                .expect("slow client thread")
                .unwrap_or_else(|| panic!("slow connection {i} was still open after 30 s"))
        })
        .collect();
    println!(
        "the slow connections were closed {:?} to {:?} after connecting",
        slow_closed.iter().min().copied().unwrap_or_default(),
        slow_closed.iter().max().copied().unwrap_or_default()
    );

    // And the descriptors they held are given back (a few may come and go
    // meanwhile, e.g. a file sink reopening its file).
    let back = poll_until(Duration::from_secs(10), || {
        herald.open_fds() <= baseline + 4
    });
    let after = herald.open_fds();
    println!("herald holds {after} descriptors, {baseline} before the connections");
    assert!(
        back,
        "herald holds {after} descriptors, {baseline} before the connections"
    );
    let (status, _) = herald.http_get("/health");
    assert_eq!(status, 200);
}
