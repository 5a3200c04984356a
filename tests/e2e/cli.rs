//! The command line itself: `herald send` (host names, failures, pacing),
//! `herald appenders`, which options each command takes, and output into a
//! pipe nobody reads.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::{
    ConfigBuilder, Herald, free_udp_port, herald_command, run_herald, run_herald_in,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn send_takes_a_host_name() {
    let mut herald = Herald::start(&ConfigBuilder::new().build());
    let to = format!("localhost:{}", herald.udp.port());
    let output = run_herald(&["send", "--to", &to, "--kind", "engine"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with(&format!(
            "sent 1 datagram(s) to 127.0.0.1:{}",
            herald.udp.port()
        )),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(herald.wait_for_events(1).len(), 1);
}

#[test]
fn send_names_a_host_that_does_not_resolve() {
    let output = run_herald(&["send", "--to", "no-such-host.invalid:9996"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("\"no-such-host.invalid\""), "{stderr}");
    let output = run_herald(&["send", "--to", "localhost"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("HOST:PORT"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn send_to_nothing_says_why_and_fails() {
    let port = free_udp_port();
    let to = format!("127.0.0.1:{port}");
    let output = run_herald(&["send", "--to", &to, "--count", "20"]);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(
        stderr.contains(&format!("nothing listens on {to}?")),
        "{stderr}"
    );

    let output = run_herald(&["send", "--to", &to, "--count", "20", "--json"]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json output");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "connection_refused", "{report}");
    assert!(problems[0]["count"].as_u64() >= Some(1), "{report}");
}

#[test]
fn send_meets_a_low_rate() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let to = receiver.local_addr().unwrap().to_string();
    let started = Instant::now();
    let output = run_herald(&[
        "send", "--to", &to, "--count", "100", "--rate", "50", "--json",
    ]);
    let wall = started.elapsed();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json output");
    assert_eq!(report["sent"], 100, "{report}");
    let rate = report["rate"].as_f64().expect("rate");
    // The sender's own account: within 2 % of 50/s (100 datagrams in 2 s).
    assert!((rate - 50.0).abs() <= 1.0, "{report}");
    // The clock around the run agrees, generously: never faster, and not
    // seconds slower (the process starts and stops around the 2 s).
    assert!(wall >= Duration::from_millis(1980), "{wall:?}");
    assert!(wall < Duration::from_secs(10), "{wall:?}");
    let mut buf = [0u8; 65_536];
    for i in 0..100 {
        receiver
            .recv(&mut buf)
            .unwrap_or_else(|err| panic!("datagram {i}: {err}"));
    }
}

#[test]
fn appenders_refuse_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["appenders", "--herald", "herald.corp.local", "--out", "out"];
    let output = run_herald_in(dir.path(), &args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let engine = dir.path().join("out/Engine/LocalLogConfig.xml");
    std::fs::write(&engine, "edited by hand").unwrap();

    let output = run_herald_in(dir.path(), &args);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("out/Engine/LocalLogConfig.xml"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&engine).unwrap(), "edited by hand");

    // Even one existing file stops the whole run, before anything is written.
    std::fs::remove_file(dir.path().join("out/Proxy/LocalLogConfig.xml")).unwrap();
    let output = run_herald_in(dir.path(), &args);
    assert!(!output.status.success());
    assert!(!dir.path().join("out/Proxy/LocalLogConfig.xml").exists());

    let mut forced = args.to_vec();
    forced.push("--force");
    let output = run_herald_in(dir.path(), &forced);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        std::fs::read_to_string(&engine)
            .unwrap()
            .contains("herald.corp.local")
    );
}

#[test]
fn config_is_an_option_of_the_commands_that_read_one() {
    let send_help = text(&run_herald(&["send", "--help"]).stdout);
    assert!(send_help.contains("--to <HOST:PORT>"), "{send_help}");
    assert!(!send_help.contains("--config"), "{send_help}");
    let check_help = text(&run_herald(&["check", "--help"]).stdout);
    assert!(check_help.contains("--config <PATH>"), "{check_help}");

    let output = run_herald(&["--config", "herald.toml", "send", "--to", "localhost:9996"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--config applies to run, check and replay"),
        "{stderr}"
    );

    // Without a command herald runs, with the config given.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let output = run_herald(&["--config", missing.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("missing.toml"),
        "{}",
        text(&output.stderr)
    );
}

/// `herald check | head -1` and the like: when the reader of the output has
/// gone, a command ends quietly (as other command-line tools do) instead of
/// panicking on the failed write.
#[test]
fn commands_end_quietly_when_nobody_reads_their_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, ConfigBuilder::new().build()).expect("write config");
    let config = config.to_string_lossy().into_owned();
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = listener.local_addr().expect("address").to_string();
    for args in [
        vec!["send", "--to", &to, "--kind", "all"],
        vec!["check", "--config", &config],
        vec!["completions", "bash"],
    ] {
        // A pipe whose reading end is closed before herald writes.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = herald_command(&args)
            .stdout(writer)
            .output()
            .expect("run herald");
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked"), "herald {args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "herald {args:?}: {stderr}");
    }
}
