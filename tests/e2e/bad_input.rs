use std::collections::BTreeMap;

use crate::harness::{ConfigBuilder, Herald, Rng, base64_decode, fixture, fixtures, send};

/// The reason herald must give random bytes: tags are checked first, so anything
/// not empty once a trailing `\n` / `\r\n` is stripped is an unknown tag.
fn reason_for_random(bytes: &[u8]) -> &'static str {
    let stripped = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let stripped = stripped.strip_suffix(b"\r").unwrap_or(stripped);
    if stripped.is_empty() {
        "empty"
    } else {
        "unknown_tag"
    }
}

#[test]
fn bad_input_is_counted_and_kept_in_the_dead_letter_file() {
    let mut herald = Herald::start(&ConfigBuilder::new().max_datagram_bytes(1024).build());

    let rejects: Vec<_> = fixtures()
        .into_iter()
        .filter(|f| f.error().is_some())
        .collect();
    let names: Vec<&str> = rejects.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bad_guid",
            "empty",
            "empty_fields",
            "oversize",
            "too_few_fields",
            "too_many_fields",
            "unknown_tag"
        ]
    );

    // (bytes, reason) for everything that must end up a parse error.
    let mut parse_errors: Vec<(Vec<u8>, String)> = rejects
        .iter()
        .filter(|f| f.error() != Some("oversized"))
        .map(|f| (f.datagram.clone(), f.error().unwrap().to_string()))
        .collect();
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    for _ in 0..200 {
        let len = rng.below(1..900);
        let bytes = rng.bytes(len);
        let reason = reason_for_random(&bytes).to_string();
        parse_errors.push((bytes, reason));
    }
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (_, reason) in &parse_errors {
        *expected.entry(reason.clone()).or_default() += 1.0;
    }

    let oversize = fixture("oversize").datagram;
    assert_eq!(oversize.len(), 2000);
    let valid = fixture("task_reload_failed").datagram;
    let mut all: Vec<&[u8]> = parse_errors.iter().map(|(b, _)| b.as_slice()).collect();
    all.insert(2, &oversize);
    all.push(&valid);
    let sender = send("127.0.0.1", herald.udp, &all);
    let total = all.len() as f64;
    assert_eq!(total, 208.0);

    herald.wait_for("the valid datagram delivered", |h| h.events().len() == 1);
    herald.wait_for("every datagram read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= total
    });
    herald.wait_for("every parse error counted", |h| {
        h.metric("herald_parse_errors_total", &[]) >= parse_errors.len() as f64
    });
    herald.wait_for("every parse error in the dead-letter file", |h| {
        h.json_lines("dead.jsonl").len() >= parse_errors.len()
    });

    assert!(!herald.has_exited(), "herald died:\n{}", herald.stderr());
    assert_eq!(herald.http_get("/health").0, 200);
    assert_eq!(herald.metric("herald_ingest_datagrams_total", &[]), total);
    for reason in [
        "empty",
        "empty_fields",
        "unknown_tag",
        "too_few_fields",
        "too_many_fields",
        "bad_guid",
    ] {
        assert_eq!(
            herald.metric("herald_parse_errors_total", &[("reason", reason)]),
            expected.get(reason).copied().unwrap_or(0.0),
            "herald_parse_errors_total{{reason={reason:?}}}"
        );
    }
    assert_eq!(
        herald.metric("herald_parse_errors_total", &[]),
        parse_errors.len() as f64
    );
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "oversized")]),
        1.0
    );
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "not_allowed")]),
        0.0
    );
    assert_eq!(herald.metric("herald_parse_events_total", &[]), 1.0);
    assert_eq!(herald.metric("herald_dead_letters_total", &[]), 206.0);
    assert_eq!(herald.metric("herald_dead_letters_lost_total", &[]), 0.0);
    let event = &herald.events()[0];
    assert_eq!(event["outcome"], "failed");
    assert_eq!(event["sender"], sender.to_string());

    // One dead letter per parse error, matched as a multiset of (bytes, reason).
    let mut wanted: BTreeMap<(Vec<u8>, String), usize> = BTreeMap::new();
    for (bytes, reason) in &parse_errors {
        *wanted.entry((bytes.clone(), reason.clone())).or_default() += 1;
    }
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), parse_errors.len());
    for record in &dead {
        assert!(record.is_object(), "{record}");
        assert_eq!(record["kind"], "datagram", "{record}");
        assert_eq!(record["sender"], sender.to_string(), "{record}");
        let reason = record["reason"].as_str().expect("reason").to_string();
        let bytes = base64_decode(record["raw_base64"].as_str().expect("raw_base64"));
        let left = wanted
            .get_mut(&(bytes.clone(), reason.clone()))
            .filter(|n| **n > 0)
            .unwrap_or_else(|| {
                panic!(
                    "unexpected dead letter ({reason}, {} bytes): {record}",
                    bytes.len()
                )
            });
        *left -= 1;
        assert_eq!(
            record["raw"].as_str().expect("raw"),
            String::from_utf8_lossy(&bytes),
            "{record}"
        );
        let at: jiff::Timestamp = record["received_at"]
            .as_str()
            .expect("received_at")
            .parse()
            .unwrap();
        assert!(at > jiff::Timestamp::UNIX_EPOCH);
    }
    assert!(wanted.values().all(|&n| n == 0), "dead letters missing");
}

#[test]
fn a_datagram_of_exactly_max_datagram_bytes_is_accepted_and_one_byte_more_is_not() {
    let mut herald = Herald::start(&ConfigBuilder::new().max_datagram_bytes(1024).build());
    // A task datagram ends with its free-text message, so padding it keeps it valid.
    let base = fixture("task_reload_failed").datagram;
    let pad = |len: usize| {
        let mut datagram = base.clone();
        datagram.resize(len, b'x');
        datagram
    };
    let exact = pad(1024);
    let over = pad(1025);
    let sender = send("127.0.0.1", herald.udp, &[&over, &exact]);
    herald.wait_for("both datagrams read", |h| {
        h.metric("herald_ingest_datagrams_total", &[]) >= 2.0
    });
    let events = herald.wait_for_events(1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sender"], sender.to_string());
    let message = events[0]["message"].as_str().unwrap();
    assert!(message.starts_with("Max retries reached"), "{message}");
    assert_eq!(
        message.len(),
        "Max retries reached".len() + 1024 - base.len()
    );
    assert_eq!(
        herald.metric("herald_ingest_rejected_total", &[("reason", "oversized")]),
        1.0
    );
    assert_eq!(herald.metric("herald_parse_errors_total", &[]), 0.0);
    herald.wait_for("an oversize warning", |h| {
        h.stderr().contains("over ingest.max_datagram_bytes")
    });
}
