//! `herald tap` against a running herald: a filtered live stream, a limit that
//! counts what it does not show, a token, and mistakes named.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    ConfigBuilder, Herald, fixture, herald_command, http_request_with, poll_until, send,
};

/// Starts `herald tap` against `herald` with `args`; waits until herald
/// counts it as open.
fn tap(herald: &Herald, args: &[&str], env: &[(&str, &str)]) -> Child {
    let url = format!("http://{}", herald.http);
    let mut command = herald_command(&["tap", "--url", &url]);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("start herald tap");
    let open = poll_until(Duration::from_secs(10), || {
        let token = env.iter().find(|(name, _)| *name == "HERALD_HTTP_TOKEN");
        let headers = token.map_or(String::new(), |(_, token)| {
            format!("Authorization: Bearer {token}\r\n")
        });
        let Ok((_, body)) = http_request_with(herald.http, "GET", "/health", &headers) else {
            return false;
        };
        serde_json::from_str::<Value>(&body).is_ok_and(|health| health["taps_open"] == 1)
    });
    assert!(open, "the tap did not open");
    child
}

/// Waits for `child` to exit (up to 20 s); its stdout and stderr.
fn finish(mut child: Child) -> (String, String) {
    let ended = poll_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let _ = child.wait();
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        ended,
        "herald tap did not end\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

#[test]
fn tap_shows_a_filtered_live_stream() {
    let herald = Herald::start(&ConfigBuilder::new().build());
    let child = tap(
        &herald,
        &[
            "--type",
            "task",
            "--outcome",
            "failed,aborted",
            "--task-name",
            "*failing*",
            "--format",
            "json",
            "--count",
            "2",
        ],
        &[],
    );
    let engine = fixture("engine_error").datagram;
    let failed = fixture("task_reload_failed").datagram;
    let success = fixture("task_success_double_slash").datagram;
    let aborted = fixture("task_aborted").datagram;
    send(
        "127.0.0.1",
        herald.udp,
        &[&engine, &success, &failed, &engine, &aborted, &failed],
    );
    let (out, err) = finish(child);
    let events: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON event per line"))
        .collect();
    assert_eq!(events.len(), 2, "{out}\n{err}");
    for event in &events {
        assert_eq!(event["type"], "task");
        assert!(
            matches!(event["outcome"].as_str(), Some("failed" | "aborted")),
            "{event}"
        );
        assert!(
            event["task_name"].as_str().unwrap().contains("failing"),
            "{event}"
        );
    }
    // The tap closed with the client.
    assert!(poll_until(Duration::from_secs(5), || {
        let (_, body) = herald.http_get("/health");
        serde_json::from_str::<Value>(&body).is_ok_and(|h| h["taps_open"] == 0)
    }));
}

#[test]
fn a_tap_over_its_limit_counts_what_it_does_not_show() {
    let herald = Herald::start(&ConfigBuilder::new().build());
    let child = tap(&herald, &["--limit", "1", "--count", "3"], &[]);
    let engine = fixture("engine_error").datagram;
    let burst: Vec<&[u8]> = std::iter::repeat_n(engine.as_slice(), 200).collect();
    for _ in 0..4 {
        send("127.0.0.1", herald.udp, &burst);
        std::thread::sleep(Duration::from_millis(700));
    }
    let (out, err) = finish(child);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}\n{err}");
    // Text lines: time, level, host, source and what the event says.
    assert!(
        lines[0].contains(" ERROR pro2-win1 engine System.Engine.Engine: Document"),
        "{}",
        lines[0]
    );
    assert!(
        err.contains("matching events not shown so far (over --limit 1 a second)"),
        "{err}"
    );
    // Every datagram still reached the sink.
    let mut herald = herald;
    herald.wait_for_events(800);
}

#[test]
fn a_tap_needs_the_token_and_names_a_wrong_filter() {
    let token = "0123456789abcdef0123";
    let herald = Herald::start_with_token(&ConfigBuilder::new().build(), token, "");
    let url = format!("http://{}", herald.http);
    let output = herald_command(&["tap", "--url", &url, "--count", "1"])
        .output()
        .expect("run herald tap");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("HERALD_HTTP_TOKEN"), "{err}");

    let output = herald_command(&["tap", "--url", &url, "--type", "tsk"])
        .env("HERALD_HTTP_TOKEN", token)
        .output()
        .expect("run herald tap");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("tsk") && err.contains("task"), "{err}");

    // With the token from the environment, it streams.
    let child = tap(&herald, &["--count", "1"], &[("HERALD_HTTP_TOKEN", token)]);
    send(
        "127.0.0.1",
        herald.udp,
        &[&fixture("engine_error").datagram],
    );
    let (out, _) = finish(child);
    assert_eq!(out.lines().count(), 1, "{out}");

    let output = herald_command(&["tap", "--url", "https://127.0.0.1:1"])
        .output()
        .expect("run herald tap");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("use http://HOST:PORT"), "{err}");
}
