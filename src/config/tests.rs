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
