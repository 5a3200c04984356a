//! The NATS sink against a real nats-server with JetStream (Debian's
//! `nats-server` package), started here on a loopback port with a temporary
//! store: every event stored once, on the subject its template gives, in a
//! batch larger than one acknowledgement window too, through
//! a server that stalls and one that restarts; logins accepted and refused.
//!
//! Without nats-server these tests say so and pass, except under CI (`CI` set).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../support/nats.rs"]
mod nats_server;

// The CA and certificates of the TLS test, made with the openssl CLI.
use crate::mqtt::mosquitto as certs;
use nats_server::NatsServer;

use crate::harness::{ConfigBuilder, Herald, fixture, poll_until, run_herald, send};

/// How long the stream may take to hold what herald was sent.
const DELIVERY: Duration = Duration::from_secs(60);

/// A `[sinks.<name>]` table for `server` with quick retries.
fn sink(server: &NatsServer, name: &str, stream: &str, extra: &str) -> String {
    format!(
        "[sinks.{name}]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"{stream}\"\ncreate_stream = true\n\
         retry_initial_ms = 100\nretry_max_ms = 1000\n{extra}\n",
        server.url()
    )
}

/// `value` as the sink makes it one subject token.
fn token(value: Option<&str>) -> String {
    match value {
        None | Some("") => "_".into(),
        Some(value) => value
            .chars()
            .map(|c| {
                if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    }
}

#[test]
fn every_event_is_stored_once_on_the_subject_its_template_gives() {
    let Some(server) = NatsServer::start("") else {
        return;
    };
    let config = ConfigBuilder::new()
        .extra(&sink(&server, "stream", "QLIK", ""))
        .extra(&sink(
            &server,
            "by_host",
            "BYHOST",
            "subject = \"sense.{{ host }}.{{ type }}.{{ level }}\"",
        ))
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();
    let events: BTreeMap<String, Value> = herald
        .wait_for_events(samples)
        .into_iter()
        .map(|e| (e["tag"].as_str().expect("tag").to_string(), e))
        .collect();
    assert!(
        poll_until(DELIVERY, || server.count("QLIK") == samples as u64
            && server.count("BYHOST") == samples as u64),
        "QLIK holds {}, BYHOST {}\n{}",
        server.count("QLIK"),
        server.count("BYHOST"),
        herald.stderr()
    );

    for (stream, subject_of) in [
        (
            "QLIK",
            Box::new(|e: &Value| {
                format!(
                    "qliksense.{}.{}.{}",
                    e["type"].as_str().unwrap(),
                    e["source"].as_str().unwrap(),
                    token(e["host"].as_str())
                )
            }) as Box<dyn Fn(&Value) -> String>,
        ),
        (
            "BYHOST",
            Box::new(|e: &Value| {
                format!(
                    "sense.{}.{}.{}",
                    token(e["host"].as_str()),
                    e["type"].as_str().unwrap(),
                    token(e["level"].as_str())
                )
            }),
        ),
    ] {
        let stored = server.messages(stream);
        assert_eq!(stored.len(), samples, "{stream}");
        let mut tags = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for message in &stored {
            let json: Value =
                serde_json::from_slice(&message.payload).expect("the payload is JSON");
            let tag = json["tag"].as_str().expect("tag").to_string();
            // Exactly the event the file sink wrote (docs/EVENTS.md).
            assert_eq!(json, events[&tag], "{stream}: {tag}");
            assert_eq!(message.subject, subject_of(&json), "{stream}: {tag}");
            let id = message.msg_id.clone().expect("a Nats-Msg-Id");
            assert_eq!(id.len(), 32, "{id}");
            ids.insert(id);
            tags.insert(tag);
        }
        assert_eq!(tags.len(), samples, "{stream}: one message per event");
        assert_eq!(ids.len(), samples, "{stream}: one id per event");
    }
    // The same event in both streams has the same id.
    let ids = |stream: &str| -> BTreeSet<String> {
        server
            .messages(stream)
            .into_iter()
            .filter_map(|m| m.msg_id)
            .collect()
    };
    assert_eq!(ids("QLIK"), ids("BYHOST"));
}

/// `count` engine samples, each with a message of its own so that each event
/// can be told apart.
fn numbered(count: usize) -> Vec<Vec<u8>> {
    let sample = String::from_utf8(fixture("engine_error").datagram).expect("utf-8 sample");
    let fields: Vec<String> = sample.split(';').map(str::to_string).collect();
    (0..count)
        .map(|n| {
            let mut fields = fields.clone();
            fields[1] = ((n % 9999) + 1).to_string();
            fields[8] = format!("event number {n}");
            fields.join(";").into_bytes()
        })
        .collect()
}

/// Waits until `stream` holds at least `count` messages; fails the test with
/// herald's log when it does not within [`DELIVERY`].
fn wait_stored(server: &NatsServer, stream: &str, count: usize, herald: &Herald) {
    assert!(
        poll_until(DELIVERY, || server.count(stream) >= count as u64),
        "{stream} holds {} of {count}\n{}",
        server.count(stream),
        herald.stderr()
    );
}

/// How many different `message` values the stored events hold ([`numbered`]
/// gives each event its own).
fn distinct_messages(stored: &[nats_server::Stored]) -> usize {
    stored
        .iter()
        .map(|m| {
            let json: Value = serde_json::from_slice(&m.payload).expect("JSON");
            json["message"].as_str().expect("message").to_string()
        })
        .collect::<BTreeSet<String>>()
        .len()
}

#[test]
fn a_server_that_stalls_and_one_that_restarts_store_every_event_exactly_once() {
    let Some(mut server) = NatsServer::start("") else {
        return;
    };
    let config = ConfigBuilder::new()
        .extra(&sink(
            &server,
            "stream",
            "QLIK",
            "timeout_ms = 1000\nbatch_max_events = 50\nflush_interval_ms = 20",
        ))
        .build();
    let mut herald = Herald::start(&config);
    const TOTAL: usize = 4000;
    let udp = herald.udp;
    let datagrams = numbered(TOTAL);
    let sender = std::thread::spawn(move || {
        // 4000 events over about 8 s: 25 every 50 ms.
        for chunk in datagrams.chunks(25) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            send("127.0.0.1", udp, &refs);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let start = Instant::now();
    let pid = server_pid(&server);
    // A stall longer than the acknowledgement timeout: the publishes herald
    // gave up on are stored when the server wakes, and then sent again.
    assert!(
        poll_until(Duration::from_secs(10), || server.count("QLIK") > 0),
        "nothing stored\n{}",
        herald.stderr()
    );
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed()));
    signal(pid, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2500));
    signal(pid, libc::SIGCONT);
    // Then a crash and a restart on the same store.
    std::thread::sleep(Duration::from_millis(5000).saturating_sub(start.elapsed()));
    server.stop();
    std::thread::sleep(Duration::from_millis(1500));
    server.run();
    sender.join().expect("the sender");
    herald.wait_for_events(TOTAL);
    wait_stored(&server, "QLIK", TOTAL, &herald);
    // Nothing more arrives later: every event was stored exactly once.
    std::thread::sleep(Duration::from_secs(2));
    let stored = server.messages("QLIK");
    assert_eq!(distinct_messages(&stored), TOTAL, "distinct events stored");
    assert_eq!(stored.len(), TOTAL, "messages stored");
    let retries = herald.metric("herald_sink_retries_total", &[("sink", "stream")]);
    let duplicates = herald.metric("herald_sink_duplicates_total", &[("sink", "stream")]);
    assert!(retries > 0.0, "the outages made herald retry");
    assert!(
        duplicates > 0.0,
        "the stall made herald send again what the stream had stored, and the stream stored it once"
    );
    assert_eq!(
        herald.metric("herald_sink_events_failed_total", &[("sink", "stream")]),
        0.0
    );
    eprintln!("retries {retries}, duplicates stored once {duplicates}");
}

#[test]
fn a_batch_larger_than_one_acknowledgement_window_is_stored_once() {
    let Some(server) = NatsServer::start("") else {
        return;
    };
    // The sink publishes 1000 events at a time and awaits their
    // acknowledgements before the next 1000: one batch of 2500 takes three
    // windows. The batch is only full once all of them are queued.
    const TOTAL: usize = 2500;
    let config = ConfigBuilder::new()
        .extra(&sink(
            &server,
            "stream",
            "QLIK",
            &format!("batch_max_events = {TOTAL}\nflush_interval_ms = 60000"),
        ))
        .build();
    let mut herald = Herald::start(&config);
    // Paced, so that a small default receive buffer never overflows; the
    // batch still waits until all of them are queued.
    let datagrams = numbered(TOTAL);
    for chunk in datagrams.chunks(50) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        send("127.0.0.1", herald.udp, &refs);
        std::thread::sleep(Duration::from_millis(20));
    }
    herald.wait_for_events(TOTAL);
    wait_stored(&server, "QLIK", TOTAL, &herald);
    herald.wait_for("the batch counted as delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "stream")]) == TOTAL as f64
    });
    let stored = server.messages("QLIK");
    assert_eq!(stored.len(), TOTAL, "messages stored");
    let ids: BTreeSet<String> = stored.iter().filter_map(|m| m.msg_id.clone()).collect();
    assert_eq!(ids.len(), TOTAL, "one id per event");
    assert_eq!(distinct_messages(&stored), TOTAL, "distinct events stored");
    assert_eq!(
        herald.metric("herald_sink_retries_total", &[("sink", "stream")]),
        0.0
    );
}

fn server_pid(server: &NatsServer) -> i32 {
    i32::try_from(server.pid().expect("nats-server runs")).expect("a pid")
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal})");
}

/// `herald check --connect` on a `nats` sink for `server` with `keys`
/// (written to `dir`): whether it passed, and what it printed.
fn check_connect(server: &NatsServer, dir: &std::path::Path, keys: &str) -> (bool, String) {
    let path = dir.join("herald.toml");
    let config = ConfigBuilder::new()
        .extra(&format!(
            "[sinks.stream]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"QLIK\"\ncreate_stream = true\n{keys}\n",
            server.url()
        ))
        .build();
    std::fs::write(&path, config).expect("write config");
    let output = run_herald(&[
        "check",
        "--config",
        path.to_str().expect("path"),
        "--connect",
    ]);
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn logins_are_checked_and_a_refused_one_is_said_plainly() {
    let user = nkeys::KeyPair::new_user();
    let Some(server) = NatsServer::start(&format!(
        "authorization {{\n  users = [\n    {{ user: herald, password: \"s3cret-Pa55\" }}\n    {{ nkey: {} }}\n  ]\n}}",
        user.public_key()
    )) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let seed_file = dir.path().join("herald.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().expect("a seed"))).expect("write seed");
    let check = |login: &str| check_connect(&server, dir.path(), login);
    let (ok, text) = check("username = \"herald\"\npassword = \"s3cret-Pa55\"");
    assert!(ok, "{text}");
    assert!(text.contains("accepted the connection"), "{text}");
    assert!(text.contains("will create it"), "{text}");
    let (ok, text) = check(&format!("nkey_seed = \"file:{}\"", seed_file.display()));
    assert!(ok, "{text}");
    let (ok, text) = check("username = \"herald\"\npassword = \"wrong-Pa55\"");
    assert!(!ok, "{text}");
    assert!(text.contains("refused the login"), "{text}");
    assert!(!text.contains("wrong-Pa55"), "{text}");
    let (ok, text) = check("");
    assert!(!ok, "{text}");
    assert!(text.contains("refused the login"), "{text}");

    // A token login, on a server that takes tokens.
    let Some(tokens) = NatsServer::start("authorization {\n  token: \"t0ken-Secret\"\n}") else {
        return;
    };
    let (ok, text) = check_connect(&tokens, dir.path(), "token = \"t0ken-Secret\"");
    assert!(ok, "{text}");
    assert!(text.contains("with a token"), "{text}");
    let (ok, text) = check_connect(&tokens, dir.path(), "token = \"wrong-t0ken\"");
    assert!(!ok, "{text}");
    assert!(text.contains("refused the login"), "{text}");
    assert!(!text.contains("wrong-t0ken"), "{text}");

    // A running herald with a refused login says so in /health, and its logs
    // and /health never show the password.
    let wrong = ConfigBuilder::new()
        .extra(&sink(
            &server,
            "stream",
            "QLIK",
            "username = \"herald\"\npassword = \"${NATS_PASSWORD}\"",
        ))
        .build();
    let mut herald = Herald::start_with_env(&wrong, &[("NATS_PASSWORD", "wrong-Pa55")]);
    let samples = herald.send_samples();
    herald.wait_for_events(samples);
    herald.wait_for("a refused login in /health", |h| {
        h.http_get("/health").1.contains("refused the login")
    });
    let (_, health) = herald.http_get("/health");
    assert!(!health.contains("wrong-Pa55"), "{health}");
    assert!(health.contains("check username and password"), "{health}");
    herald.sigterm();
    herald.wait_exit();
    assert!(
        !herald.stderr().contains("wrong-Pa55"),
        "{}",
        herald.stderr()
    );
}

#[test]
fn tls_is_verified_against_the_ca_given() {
    let certificates = tempfile::tempdir().expect("temp dir");
    let ca = certs::generate_ca(certificates.path(), "nats-test-ca");
    let (cert, key) = certs::issue(
        certificates.path(),
        &ca,
        "nats-server",
        "localhost",
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
         keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
    );
    let Some(server) = NatsServer::start(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}",
        cert.display(),
        key.display()
    )) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let trusted = format!("tls = true\ntls_ca_file = \"{}\"", ca.cert.display());
    let (ok, text) = check_connect(&server, dir.path(), &trusted);
    assert!(ok, "{text}");
    // Without the CA the server's certificate is not trusted, and the
    // message says which key fixes it.
    let (ok, text) = check_connect(&server, dir.path(), "tls = true");
    assert!(!ok, "{text}");
    assert!(text.contains("tls_ca_file"), "{text}");

    let config = ConfigBuilder::new()
        .extra(&sink(&server, "stream", "QLIK", &trusted))
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();
    herald.wait_for_events(samples);
    let reader = || {
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.cert.clone())
            .require_tls(true)
    };
    assert!(
        poll_until(DELIVERY, || server.count_with("QLIK", reader())
            == samples as u64),
        "the stream holds {}\n{}",
        server.count_with("QLIK", reader()),
        herald.stderr()
    );
}

#[test]
fn a_lost_stream_is_created_again_and_subjects_no_stream_of_ours_takes_are_dead_lettered() {
    let Some(mut server) = NatsServer::start("") else {
        return;
    };
    // There before herald publishes, so that the subjects of MEM are taken
    // when the `mismatch` sink first publishes.
    server.create_stream("MEM", &["qliksense.>"], true);
    let config = ConfigBuilder::new()
        // A memory stream: gone when the server restarts.
        .extra(&sink(
            &server,
            "memory",
            "MEM",
            "stream_storage = \"memory\"",
        ))
        // A subject no stream takes.
        .extra(&sink(
            &server,
            "unbound",
            "OTHER",
            "stream_subjects = [\"other.>\"]\nsubject = \"unbound.{{ type }}\"",
        ))
        // A subject another stream (MEM) takes.
        .extra(&sink(
            &server,
            "mismatch",
            "OTHER",
            "stream_subjects = [\"other.>\"]",
        ))
        .build();
    let mut herald = Herald::start(&config);
    let samples = herald.send_samples();
    herald.wait_for_events(samples);
    assert!(
        poll_until(DELIVERY, || server.count("MEM") == samples as u64),
        "MEM holds {}\n{}",
        server.count("MEM"),
        herald.stderr()
    );
    let expected = 2 * samples;
    herald.wait_for("both other sinks' events in the dead-letter file", |h| {
        h.json_lines("dead.jsonl").len() >= expected
    });
    assert_eq!(server.count("OTHER"), 0);
    for record in herald.json_lines("dead.jsonl") {
        let error = record["error"].as_str().expect("error").to_string();
        match record["sink"].as_str() {
            Some("unbound") => assert!(
                error.contains("takes other.> but not the subject unbound."),
                "{error}"
            ),
            Some("mismatch") => assert!(
                error.contains("belongs to a stream other than OTHER"),
                "{error}"
            ),
            other => panic!("{other:?}: {record}"),
        }
    }

    // The server restarts without the memory stream; herald creates it again
    // and delivers what comes next.
    server.stop();
    server.run();
    herald.send_samples();
    herald.wait_for_events(2 * samples);
    assert!(
        poll_until(DELIVERY, || server.count("MEM") == samples as u64),
        "MEM holds {}\n{}",
        server.count("MEM"),
        herald.stderr()
    );
    assert_eq!(
        herald.metric("herald_sink_events_failed_total", &[("sink", "memory")]),
        0.0
    );
}
