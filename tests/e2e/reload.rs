//! Config reload on SIGHUP: what can change while running changes at once
//! without losing or repeating an event; an invalid file changes nothing.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::{ConfigBuilder, Herald, fixture, send};

fn engine(message: &str) -> Vec<u8> {
    String::from_utf8(fixture("engine_error").datagram)
        .expect("UTF-8 fixture")
        .replace("could not be opened: file not found", message)
        .into_bytes()
}

fn reload(herald: &mut Herald, config: &str, reloads: f64) {
    std::fs::write(herald.dir().join("herald.toml"), config).expect("write config");
    herald.signal(libc::SIGHUP);
    herald.wait_for("the reload counted", |h| {
        h.metric("herald_config_reloads_total", &[]) >= reloads
    });
}

#[test]
fn a_reload_under_a_steady_stream_moves_a_sink_and_applies_allowlist_and_tags_losing_nothing() {
    let config = ConfigBuilder::new()
        .allow(&["127.0.0.1/32"])
        .flush_interval_ms(20)
        .build();
    let mut herald = Herald::start(&config);
    let to = herald.udp;
    const SENT: usize = 3_000;
    let stream = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let start = Instant::now();
        for i in 0..SENT {
            // 1,000 a second.
            let due = start + Duration::from_millis(i as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            socket
                .send_to(&engine(&format!("n={i}")), to)
                .expect("send");
        }
    });
    std::thread::sleep(Duration::from_millis(1_000));
    // Before the reload 127.0.0.2 is refused.
    send("127.0.0.2", to, &[&engine("early outsider")]);
    // The list applies when herald reads a datagram: wait until this one
    // was read, or the reload could come first.
    herald.wait_for("the outsider refused", |h| {
        h.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]) >= 1.0
    });
    // Same ports; the allowlist widened, tags added, the sink moved.
    let new = format!("{config}\n[tags]\nsite = \"reloaded\"\n")
        .replace(
            "allow = [\"127.0.0.1/32\"]",
            "allow = [\"127.0.0.1/32\", \"127.0.0.2/32\"]",
        )
        .replace("path = \"events.jsonl\"", "path = \"moved.jsonl\"");
    assert!(new.contains("127.0.0.2/32") && new.contains("moved.jsonl"));
    reload(&mut herald, &new, 1.0);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "applied")]),
        1.0,
        "{}",
        herald.stderr()
    );
    send("127.0.0.2", to, &[&engine("late insider")]);
    stream.join().expect("sender");
    let written = |h: &Herald| {
        let mut events = h.events();
        events.extend(h.json_lines("moved.jsonl"));
        events
    };
    herald.wait_for("every event written", |h| written(h).len() > SENT);

    let before = herald.events().len();
    let after = herald.json_lines("moved.jsonl").len();
    assert!(
        before > 0 && after > 0,
        "{before} before the move, {after} after"
    );
    let events = written(&herald);
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut tagged = 0;
    for event in &events {
        let message = event["message"].as_str().unwrap_or_default();
        if let Some((_, n)) = message.rsplit_once(" n=") {
            *seen.entry(n.parse().expect("number")).or_default() += 1;
        }
        if event["tags"]["site"] == "reloaded" {
            tagged += 1;
        }
    }
    let lost: Vec<_> = (0..SENT).filter(|n| !seen.contains_key(n)).collect();
    let twice: Vec<_> = seen
        .iter()
        .filter(|&(_, &c)| c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        lost.is_empty(),
        "lost {} events: {:?}…",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(twice.is_empty(), "written twice: {twice:?}");
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("late insider"))),
        "the reloaded allowlist admits 127.0.0.2"
    );
    assert!(events.iter().all(|e| {
        !e["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("early outsider"))
    }));
    assert!(
        tagged > 0 && tagged < events.len(),
        "the new tags apply from the reload on: {tagged} of {}",
        events.len()
    );
    let (_, health) = herald.http_get("/health");
    assert!(health.contains("\"result\": \"applied\""), "{health}");
    assert!(health.contains("ingest.allow"), "{health}");
    assert!(health.contains("sinks.events"), "{health}");
}

#[test]
fn an_invalid_config_is_refused_and_herald_keeps_running_on_the_old_one() {
    let config = ConfigBuilder::new().build();
    let mut herald = Herald::start(&config);
    let broken = config.replace("[sinks.events]", "[sinks.events]\nqueue_events = 0");
    reload(&mut herald, &broken, 1.0);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "failed")]),
        1.0
    );
    let stderr = herald.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("config reload failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{stderr}"));
    assert!(line.contains("sinks.events.queue_events"), "{line}");
    assert!(line.contains("herald.toml"), "{line}");
    // Still running, on the old config.
    send("127.0.0.1", herald.udp, &[&engine("still here")]);
    herald.wait_for_events(1);
    let (_, health) = herald.http_get("/health");
    assert!(health.contains("\"result\": \"failed\""), "{health}");

    // A sink added, then removed; a restart-only change is named.
    let added = format!(
        "{config}\n[sinks.extra]\ntype = \"file\"\npath = \"extra.jsonl\"\nflush_interval_ms = 20\n"
    );
    reload(&mut herald, &added, 2.0);
    send("127.0.0.1", herald.udp, &[&engine("to both")]);
    herald.wait_for("the added sink writes", |h| {
        h.json_lines("extra.jsonl").len() == 1
    });
    let removed = config.replace(
        "[sinks.events]",
        "[pipeline]\nworkers = 3\n\n[sinks.events]",
    );
    reload(&mut herald, &removed, 3.0);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "applied")]),
        2.0,
        "{}",
        herald.stderr()
    );
    herald.wait_for("the restart-only change named", |h| {
        h.stderr()
            .lines()
            .any(|l| l.contains("next restart") && l.contains("pipeline"))
    });
    send("127.0.0.1", herald.udp, &[&engine("only events")]);
    herald.wait_for_events(3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        herald.json_lines("extra.jsonl").len(),
        1,
        "the removed sink stopped"
    );
}

#[test]
fn a_reload_binds_new_listening_addresses_and_closes_removed_ones() {
    let config = ConfigBuilder::new().build();
    let mut herald = Herald::start(&config);
    let first = herald.udp;
    let second = crate::harness::free_udp_port();
    let both = config.replace(
        &format!("listen = [\"{first}\"]"),
        &format!("listen = [\"{first}\", \"127.0.0.1:{second}\"]"),
    );
    assert_ne!(both, config);
    reload(&mut herald, &both, 1.0);
    let second: std::net::SocketAddr = format!("127.0.0.1:{second}").parse().expect("address");
    send("127.0.0.1", second, &[&engine("to the new port")]);
    send("127.0.0.1", first, &[&engine("to the old port")]);
    herald.wait_for_events(2);
    let (_, health) = herald.http_get("/health");
    assert!(health.contains(&second.to_string()), "{health}");

    // Back to the first address only: the second is closed.
    reload(&mut herald, &config, 2.0);
    herald.wait_for("the second socket closed", |_| {
        std::net::UdpSocket::bind(second).is_ok()
    });
    send("127.0.0.1", first, &[&engine("still the old port")]);
    herald.wait_for_events(3);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "applied")]),
        2.0
    );
}

#[test]
fn a_sink_that_cannot_start_fails_the_reload_and_the_running_sinks_carry_on() {
    let config = ConfigBuilder::new().flush_interval_ms(20).build();
    let mut herald = Herald::start(&config);
    // The events sink changes (it would take over its queue) and a new sink
    // cannot open its file: nothing may change.
    let broken = format!(
        "{}\n[sinks.extra]\ntype = \"file\"\npath = \"/proc/herald-cannot/extra.jsonl\"\n",
        config.replace("flush_interval_ms = 20", "flush_interval_ms = 30")
    );
    reload(&mut herald, &broken, 1.0);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "failed")]),
        1.0,
        "{}",
        herald.stderr()
    );
    assert!(
        herald.stderr().contains("sinks.extra"),
        "{}",
        herald.stderr()
    );
    send("127.0.0.1", herald.udp, &[&engine("after a failed reload")]);
    let events = herald.wait_for_events(1);
    assert_eq!(events.len(), 1);
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    assert!(
        !herald.dir().join("dead.jsonl").exists() || herald.json_lines("dead.jsonl").is_empty()
    );
}

#[test]
fn sinks_added_to_an_idle_herald_get_events_and_the_running_ones_keep_theirs() {
    // The workers are idle when the reload comes (they pick up the new routes
    // while waiting, not between two batches), and the added sinks sort before
    // and after the running one, so every route changes its place.
    let config = ConfigBuilder::new().flush_interval_ms(20).build();
    let mut herald = Herald::start(&config);
    send("127.0.0.1", herald.udp, &[&engine("before the reload")]);
    herald.wait_for_events(1);
    std::thread::sleep(Duration::from_millis(600));
    let added = format!(
        "{config}\n[sinks.archive]\ntype = \"file\"\npath = \"archive.jsonl\"\n\
         \n[sinks.later]\ntype = \"file\"\npath = \"later.jsonl\"\n"
    );
    reload(&mut herald, &added, 1.0);
    assert_eq!(
        herald.metric("herald_config_reloads_total", &[("result", "applied")]),
        1.0,
        "{}",
        herald.stderr()
    );
    std::thread::sleep(Duration::from_millis(600));
    send("127.0.0.1", herald.udp, &[&engine("after the reload")]);
    herald.wait_for("the event in every sink", |h| {
        h.events().len() == 2
            && h.json_lines("archive.jsonl").len() == 1
            && h.json_lines("later.jsonl").len() == 1
    });

    // Removed again while idle: the running sink still gets every event.
    std::thread::sleep(Duration::from_millis(600));
    reload(&mut herald, &config, 2.0);
    std::thread::sleep(Duration::from_millis(600));
    send(
        "127.0.0.1",
        herald.udp,
        &[&engine("after the second reload")],
    );
    let events = herald.wait_for_events(3);
    assert_eq!(events.len(), 3);
    herald.sigterm();
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    assert_eq!(herald.events().len(), 3);
    assert_eq!(herald.json_lines("archive.jsonl").len(), 1);
    assert_eq!(herald.json_lines("later.jsonl").len(), 1);
}

#[test]
fn secrets_a_reload_brings_in_are_redacted_on_the_status_page_and_health() {
    let config = ConfigBuilder::new().build();
    let mut herald = Herald::start(&config);
    // A Loki sink whose URL carries a password, added by a reload; nothing
    // listens there, so its error (with the URL) shows too.
    let port = crate::harness::free_tcp_port();
    let password = "Reloaded-S3cret-9f2";
    let with_loki = format!(
        "{config}\n[sinks.loki]\ntype = \"loki\"\nurl = \"http://herald:{password}@127.0.0.1:{port}\"\n"
    );
    reload(&mut herald, &with_loki, 1.0);
    herald.wait_for("the loki sink in /health", |h| {
        h.http_get("/health").1.contains("\"loki\"")
    });
    for path in ["/status.json", "/health"] {
        let (status, body) = herald.http_get(path);
        assert!(status == 200 || status == 503, "{path}: {status}");
        assert!(
            !body.contains(password),
            "{path} shows the password:\n{body}"
        );
    }
    let (_, document) = herald.http_get("/status.json");
    assert!(document.contains("[sinks.loki]"), "{document}");
}
