//! Loading and validating configs: defaults, every error's key and fix, references, redaction.

use super::*;

const MINIMAL: &str = r#"
[ingest]
listen = ["0.0.0.0:9996"]
allow = ["127.0.0.0/8"]

[sinks.events]
type = "file"
path = "data/events.jsonl"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"))
}

#[test]
fn minimal_config_gets_defaults() {
    let config = load(MINIMAL).unwrap();
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9995");
    assert_eq!(config.ingest.max_datagram_bytes, 65_507);
    assert_eq!(config.ingest.receive_buffer_bytes, 8 << 20);
}

#[test]
fn misspelled_key_is_rejected_with_the_valid_keys() {
    let err = load(&MINIMAL.replace("allow =", "alow ="))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid config file test.toml"), "{err}");
    assert!(err.contains("unknown field `alow`"), "{err}");
    assert!(err.contains("`allow`"), "{err}");
}

#[test]
fn empty_allowlist_fails_closed_and_says_how_to_open_it() {
    let err = load(&MINIMAL.replace("[\"127.0.0.0/8\"]", "[]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ingest.allow"), "{err}");
    assert!(err.contains("0.0.0.0/0"), "{err}");
    assert!(err.contains("::/0"), "{err}");
}

#[test]
fn bad_allow_entry_names_its_index() {
    let err = load(&MINIMAL.replace("\"127.0.0.0/8\"", "\"127.0.0.0/8\", \"10.0.0.0/40\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ingest.allow[1]"), "{err}");
}

#[test]
fn no_sinks_is_an_error_with_an_example() {
    let text = MINIMAL.split("[sinks.events]").next().unwrap();
    let err = load(text).unwrap_err().to_string();
    assert!(err.contains("no sinks configured"), "{err}");
}

#[test]
fn unknown_time_zone_names_the_host_key() {
    let text = format!("{MINIMAL}\n[parse.host_time_zones]\npro2-win1 = \"Mars/Olympus\"\n");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("parse.host_time_zones.pro2-win1"), "{err}");
}

#[test]
fn bad_log_level_is_named() {
    let err = load(&format!("{MINIMAL}\n[log]\nlevel = \"herald=loud\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.level"), "{err}");
}

#[test]
fn any_string_may_come_from_the_environment_or_a_file() {
    // SAFETY: only this test uses this variable.
    unsafe { std::env::set_var("HERALD_TEST_LISTEN", "127.0.0.1:9999") };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("path.txt");
    std::fs::write(&file, "data/from-file.jsonl\n").unwrap();
    let text = MINIMAL
        .replace("\"0.0.0.0:9996\"", "\"${HERALD_TEST_LISTEN}\"")
        .replace(
            "\"data/events.jsonl\"",
            &format!("\"file:{}\"", file.display()),
        );
    let config = load(&text).unwrap();
    assert_eq!(config.ingest.listen[0].to_string(), "127.0.0.1:9999");
    let SinkKind::File(sink) = &config.sinks["events"].kind else {
        panic!("file sink")
    };
    assert_eq!(sink.path.to_str(), Some("data/from-file.jsonl"));
    let err = load(&MINIMAL.replace("\"127.0.0.0/8\"", "\"${HERALD_TEST_NOT_SET}\"")).unwrap_err();
    assert!(
        err.to_string()
            .contains("ingest.allow[0]: environment variable HERALD_TEST_NOT_SET is not set"),
        "{err}"
    );
}

#[test]
fn an_environment_value_starting_with_file_is_the_value_not_a_path() {
    // SAFETY: only this test uses these variables.
    unsafe {
        std::env::set_var("HERALD_TEST_FILE_LIKE_SECRET", "file:/no/such/s3cret-value");
        std::env::set_var(
            "HERALD_TEST_FILE_LIKE_REF",
            "${HERALD_TEST_FILE_LIKE_SECRET}",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hook");
    std::fs::write(&file, "${HERALD_TEST_FILE_LIKE_SECRET}\n").unwrap();
    let text = format!(
        "{MINIMAL}\n[sinks.hook]\ntype = \"webhook\"\nurl = \"http://hooks.corp/x\"\n\
             hmac_secret = \"${{HERALD_TEST_FILE_LIKE_SECRET}}\"\n\
             headers = {{ X-Ref = \"${{HERALD_TEST_FILE_LIKE_REF}}\", X-File = \"file:{}\" }}\n",
        file.display()
    );
    let config = load(&text).unwrap();
    let SinkKind::Webhook(hook) = &config.sinks["hook"].kind else {
        panic!("webhook sink")
    };
    let secret = |s: &Option<crate::secret::Secret>| s.as_ref().unwrap().expose().to_string();
    assert_eq!(secret(&hook.hmac_secret), "file:/no/such/s3cret-value");
    // Neither an environment value nor a file's contents is resolved again.
    assert_eq!(
        hook.headers["X-Ref"].expose(),
        "${HERALD_TEST_FILE_LIKE_SECRET}"
    );
    assert_eq!(
        hook.headers["X-File"].expose(),
        "${HERALD_TEST_FILE_LIKE_SECRET}"
    );
    let shown = config.to_toml();
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert!(
        config
            .redactor()
            .redact("x file:/no/such/s3cret-value")
            .contains("<redacted>")
    );
}

#[test]
fn http_sink_urls_are_checked_and_the_key_named_without_the_url() {
    for (sink, field) in [
        ("type = \"webhook\"\nurl", "url"),
        ("type = \"slack\"\nwebhook_url", "webhook_url"),
        ("type = \"teams\"\nwebhook_url", "webhook_url"),
        ("type = \"loki\"\nurl", "url"),
        ("type = \"influxdb\"\ndatabase = \"d\"\nurl", "url"),
    ] {
        for url in [
            "ftp://files.corp/t0ken-abc",
            "ht!tp://bad url/t0ken-abc",
            "hooks.corp/t0ken-abc",
        ] {
            let text = format!("{MINIMAL}\n[sinks.out]\n{sink} = \"{url}\"\n");
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("sinks.out.{field}: ")), "{err}");
            assert!(err.contains("http"), "{err}");
            assert!(!err.contains("t0ken-abc"), "{err}");
        }
    }
}

#[test]
fn the_effective_config_shows_urls_with_their_secrets_redacted() {
    let text = format!(
        "{MINIMAL}\n[sinks.db]\ntype = \"influxdb\"\nurl = \"HTTP://herald:pw@db.corp:8086\"\n\
             database = \"d\"\n\n[sinks.logs]\ntype = \"loki\"\n\
             url = \"https://gw.corp/loki?api_key=k3y-123456\"\n"
    );
    let shown = load(&text).unwrap().to_toml();
    assert!(
        shown.contains("url = \"http://herald:<redacted>@db.corp:8086\""),
        "{shown}"
    );
    assert!(
        shown.contains("url = \"https://gw.corp/loki?api_key=<redacted>\""),
        "{shown}"
    );
    assert!(
        !shown.contains(":pw@") && !shown.contains("k3y-123456"),
        "{shown}"
    );
}

#[test]
fn listen_accepts_a_single_address() {
    let config = load(&MINIMAL.replace("[\"0.0.0.0:9996\"]", "\"0.0.0.0:9996\"")).unwrap();
    assert_eq!(config.ingest.listen.len(), 1);
}

#[test]
fn effective_config_round_trips() {
    let config = load(MINIMAL).unwrap();
    let again = load(&config.to_toml()).unwrap();
    assert_eq!(again.to_toml(), config.to_toml());
}

/// Words of Rust, not of a config file.
fn rust_words(message: &str) -> Vec<String> {
    let camel = regex::Regex::new(r"\b[A-Z][a-z]+[A-Z][A-Za-z]*\b").unwrap();
    let mut found: Vec<String> = camel
        .find_iter(message)
        .map(|m| m.as_str().to_string())
        .collect();
    for word in [
        "usize", "u8", "u16", "u32", "u64", "i64", "f64", "struct", "enum", "variant", "sequence",
        "untagged", "a map", "Option",
    ] {
        let pattern = regex::Regex::new(&format!(r"\b{}\b", regex::escape(word))).unwrap();
        if pattern.is_match(message) {
            found.push(word.to_string());
        }
    }
    found
}

fn problems(text: &str) -> Vec<Problem> {
    match load(text).unwrap_err() {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("not a list of problems: {other}"),
    }
}

#[test]
fn every_problem_is_reported_in_one_run_in_the_order_of_the_file() {
    let text = r#"
[ingest]
listen = 5
alow = ["127.0.0.0/8"]

[pipeline]
workers = "four"
queue_batches = 0

[http]
listen = "0.0.0.0:9995"

[sinks.grafana]
type = "loki"
url = "ftp://loki.corp:3100"
queue_events = -1

[sinks.events]
type = "file"
path = "data/events.jsonl"
overflow = "drop"
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ingest.allow",
            "ingest.listen",
            "ingest.alow",
            "pipeline.workers",
            "pipeline.queue_batches",
            "http.listen",
            "sinks.grafana.url",
            "sinks.grafana.queue_events",
            "sinks.events.overflow",
        ],
        "{found:#?}"
    );
    let lines: Vec<Option<usize>> = found.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        [2, 3, 4, 7, 8, 11, 15, 16, 21].map(Some),
        "{found:#?}"
    );
    let text_of = |key: &str| &found.iter().find(|p| p.key == key).unwrap().problem;
    assert_eq!(
        text_of("ingest.listen"),
        "expected an address like \"0.0.0.0:9996\" or a list of them, found 5"
    );
    assert!(
        text_of("ingest.alow").starts_with("unknown field `alow`, expected one of"),
        "{found:#?}"
    );
    assert_eq!(
        text_of("pipeline.workers"),
        "expected a whole number (0 or more), found the string \"four\""
    );
    assert_eq!(
        text_of("sinks.grafana.queue_events"),
        "expected a whole number (0 or more), found -1"
    );
    assert!(
        text_of("sinks.events.overflow").contains("\"drop_oldest\""),
        "{found:#?}"
    );
    for problem in &found {
        assert!(rust_words(&problem.problem).is_empty(), "{problem}");
    }
    let shown = load(text).unwrap_err().to_string();
    assert!(
        shown.starts_with("invalid config file test.toml: 9 problems\n  line 2: ingest.allow: "),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 10, "{shown}");
}

#[test]
fn a_problem_inside_a_sink_names_the_key_and_its_line_not_the_table() {
    let text = format!(
        "{MINIMAL}\n[sinks.grafana]\ntype = \"loki\"\nurl = \"http://loki:3100\"\nbatch_max_events = \"lots\"\n"
    );
    let err = load(&text).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid config file test.toml, line 13: sinks.grafana.batch_max_events: \
         expected a whole number (0 or more), found the string \"lots\""
    );
    let err = load(&format!(
        "{MINIMAL}\n[sinks.grafana]\ntype = \"loki\"\nurll = \"x\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 12: sinks.grafana.urll: unknown field `urll`"),
        "{err}"
    );
    assert!(
        err.contains("line 10: sinks.grafana.url: missing; this key is required"),
        "{err}"
    );
    let err = load(&format!("{MINIMAL}\n[sinks.grafana]\ntype = \"kafka\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 11: sinks.grafana.type: unknown sink type \"kafka\""),
        "{err}"
    );
    let err = load(&format!("{MINIMAL}\n[sinks.grafana]\nurl = \"http://x\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 10: sinks.grafana: missing `type`"),
        "{err}"
    );
}

#[test]
fn wrong_types_anywhere_are_said_in_plain_words() {
    // A value of the wrong type for every kind of key the config has.
    let sections = [
        "data_dir = 5",
        "[ingest]\nlisten = [\"0.0.0.0:9996\"]\nallow = [\"0.0.0.0/0\"]\nmax_datagram_bytes = \"big\"\nrecv_batch = 1.5\nallow_refresh_seconds = true",
        "[http]\nlisten = 9995\nenabled = \"yes\"\nmetrics_public = 1",
        "[log]\nlevel = 3\nformat = \"xml\"",
        "[pipeline]\nworkers = [2]\nqueue_bytes = { a = 1 }",
        "[metrics]\nmax_hosts = -3",
        "[parse]\ntime_zone = 1",
        "tags = 5",
        "sinks = 5",
        "[dead_letter]\npath = 3",
        "[categorise]\nrules = 5",
    ];
    for section in sections {
        let text = format!(
            "[ingest]\nlisten = [\"0.0.0.0:9996\"]\nallow = [\"0.0.0.0/0\"]\n[sinks.s]\ntype = \"null\"\n{}",
            section.replace(
                "[ingest]\nlisten = [\"0.0.0.0:9996\"]\nallow = [\"0.0.0.0/0\"]\n",
                ""
            )
        );
        let text = if section.starts_with("data_dir")
            || section.starts_with("tags")
            || section.starts_with("sinks")
        {
            format!("{section}\n{}", text.replace(section, ""))
        } else {
            text
        };
        let text = if section.starts_with("sinks") {
            text.replace("[sinks.s]\ntype = \"null\"\n", "")
        } else {
            text
        };
        let found = problems(&text);
        assert!(!found.is_empty(), "{text}");
        for problem in &found {
            assert!(
                rust_words(&problem.problem).is_empty(),
                "{}: {problem}\n{text}",
                rust_words(&problem.problem).join(", ")
            );
        }
    }
    // And in every sink type.
    for sink in [
        "file\"\npath = 5",
        "stdout\"\nformat = 5",
        "influxdb\"\nurl = \"http://db:8086\"\ndatabase = 5",
        "loki\"\nurl = 5",
        "slack\"\nwebhook_url = \"https://hooks.slack.com/x\"\ndedupe_window_s = \"x\"",
        "teams\"\nwebhook_url = [1]",
        "webhook\"\nurl = \"https://x\"\nbody = 5",
        "mqtt\"\nhost = 5",
        "email\"\nport = \"x\"",
        "null\"\nbuffer = 5",
        "file\"\npath = \"x\"\nmatch = { types = 5 }",
    ] {
        let text = format!("{MINIMAL}\n[sinks.out]\ntype = \"{sink}\n");
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.key.starts_with("sinks.out.")),
            "{found:#?}"
        );
        for problem in &found {
            assert!(
                rust_words(&problem.problem).is_empty(),
                "{}: {problem}\n{text}",
                rust_words(&problem.problem).join(", ")
            );
        }
    }
}

#[test]
fn a_value_from_the_environment_is_named_by_its_reference_in_a_problem() {
    // SAFETY: only this test uses these variables.
    unsafe {
        std::env::set_var("HERALD_TEST_PROBLEM_SECRET", "hunter2-s3cret-value");
        std::env::set_var(
            "HERALD_TEST_PROBLEM_HOOK",
            "https://hooks.corp/T0KEN-abcdef123456",
        );
    }
    let text = format!(
        "{MINIMAL}\n[sinks.hook]\ntype = \"webhook\"\nurl = \"${{HERALD_TEST_PROBLEM_HOOK}}\"\n\
         queue_events = \"${{HERALD_TEST_PROBLEM_SECRET}}\"\nhmac_secret = \"${{HERALD_TEST_PROBLEM_SECRET}}\"\n\
         retry_initial_ms = 10\nretry_max_ms = 1\n"
    );
    let err = load(&text).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!err.contains("T0KEN"), "{err}");
    assert!(
        err.contains("sinks.hook.queue_events: expected a whole number (0 or more), found the value of ${HERALD_TEST_PROBLEM_SECRET}"),
        "{err}"
    );
    assert!(err.contains("sinks.hook.retry_initial_ms"), "{err}");
}

#[test]
fn unset_variables_are_all_named_and_nothing_follows_from_them() {
    let text = MINIMAL
        .replace("\"127.0.0.0/8\"", "\"${HERALD_TEST_UNSET_A}\"")
        .replace("\"data/events.jsonl\"", "\"${HERALD_TEST_UNSET_B}\"");
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["ingest.allow[0]", "sinks.events.path"], "{found:#?}");
}

#[test]
fn match_tables_name_a_bad_id_or_an_empty_name_by_key() {
    let text = format!(
        r#"{MINIMAL}match = {{ task_ids = ["Finance reload"], app_names = [""] }}

[[categorise.rules]]
match = {{ app_ids = ["e7af59a0-c243-480d-9571-08727551a66F", "sales"] }}
categories = {{ team = "sales" }}
"#
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sinks.events.match.task_ids[0]",
            "sinks.events.match.app_names[0]",
            "categorise.rules[0].match.app_ids[1]",
        ]
    );
    assert!(
        found[0].problem.contains("is not an ID") && found[0].problem.contains("task_names"),
        "{}",
        found[0].problem
    );
    // Valid names and IDs of either case load.
    let text = format!(
        r#"{MINIMAL}match = {{ task_names = ["Finance*"], users = ["LAB\\svc_*"], exclude_users = ["sa_scheduler"], methods = ["Doc::*"], object_types = ["linechart"] }}
"#
    );
    let config = load(&text).unwrap();
    assert_eq!(
        config.sinks["events"].delivery.match_.task_names,
        ["Finance*"]
    );
    assert_eq!(config.sinks["events"].delivery.match_.users, ["LAB\\svc_*"]);
}
