//! Secrets never leave: every HTTP sink, configured with URLs in the spellings
//! that defeat redaction by configured text (`HTTPS://…:443`, `HTTP://`,
//! percent-encoded userinfo, a token in the query) and with a `${ENV}` secret
//! whose value starts with `file:`, fails to deliver; then the log, `/health`,
//! the dead-letter file and `herald check` (with and without `--connect`) are
//! searched for every secret, in every spelling a client may print.
//!
//! The failures are real and reported: a refused connection to `:443` (the
//! client prints the URL without the port), a TLS handshake with a plain-text
//! server, and a server answering 500 with the secrets echoed in its message.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    ConfigBuilder, Herald, TASK, execution, herald_bin, poll_until, read_json_lines, send,
    task_failure,
};
use crate::http_stub::Stub;

const TEAMS_SIG: &str = "Zx9QwErTy_UiOp-AsDfGh1JkLmNbVcX2zQwE3rTyUi0";
const TEAMS_WORKFLOW: &str = "3f2a9c41d0b84e7f9a6c5b1d2e3f4a5b";
const SLACK_TOKEN: &str = "q8Wz3NvY5tLm2KpR7xJc4HsD";
const HOOK_PATH_TOKEN: &str = "hK7pQ2mX9vL4nR8sT1wY6zB3";
/// The webhook's query token as written (percent-encoded) and as decoded.
const HOOK_QUERY: &str = "Qy5-Tk3n%2BVal9-x";
const HOOK_QUERY_DECODED: &str = "Qy5-Tk3n+Val9-x";
const HOOK_HEADER: &str = "ApiKey-7f3e9d2c1b";
const HOOK_HMAC: &str = "hmac-s3cret-9a8b7c";
/// The InfluxDB password in the URL's userinfo, as written and as decoded.
const INFLUX_PASSWORD: &str = "Pa%21ss%2Fw0rd-42x";
const INFLUX_PASSWORD_DECODED: &str = "Pa!ss/w0rd-42x";
/// The Loki password, given through `${ENV}`; its value starts with `file:`.
const LOKI_PASSWORD: &str = "file:L0ki-pass-from-env";

/// Every secret in every spelling searched for.
const SECRETS: [&str; 11] = [
    TEAMS_SIG,
    TEAMS_WORKFLOW,
    SLACK_TOKEN,
    HOOK_PATH_TOKEN,
    HOOK_QUERY,
    HOOK_QUERY_DECODED,
    HOOK_HEADER,
    HOOK_HMAC,
    INFLUX_PASSWORD,
    INFLUX_PASSWORD_DECODED,
    "L0ki-pass-from-env",
];

const SINKS: [&str; 5] = ["influx", "loki", "slack", "teams", "hook"];

/// A Teams Workflows URL as Microsoft hands them out: with `:443`. Nothing
/// listens on 127.0.0.1:443, so the client reports the URL, normalised.
fn teams_url() -> String {
    format!(
        "HTTPS://127.0.0.1:443/workflows/{TEAMS_WORKFLOW}/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"
    )
}

/// A plain-text server that answers anything with a 400 and hangs up: a TLS
/// client fails its handshake at once.
fn plain_text_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

fn config(stub: &Stub, tls_port: u16) -> String {
    let stub_port = stub
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let retry = "max_retries = 1\nretry_initial_ms = 100\nflush_interval_ms = 100";
    ConfigBuilder::new()
        .extra(&format!(
            "[sinks.influx]\ntype = \"influxdb\"\n\
             url = \"HTTP://herald:{INFLUX_PASSWORD}@127.0.0.1:{stub_port}\"\n\
             database = \"herald\"\n{retry}\n\n\
             [sinks.loki]\ntype = \"loki\"\nurl = \"HTTP://127.0.0.1:{stub_port}/\"\n\
             username = \"herald\"\npassword = \"${{HERALD_E2E_LOKI_PASSWORD}}\"\n{retry}\n\n\
             [sinks.slack]\ntype = \"slack\"\n\
             webhook_url = \"HTTPS://127.0.0.1:{tls_port}/services/T0AB12CD3/B0EF45GH6/{SLACK_TOKEN}\"\n{retry}\n\n\
             [sinks.teams]\ntype = \"teams\"\nwebhook_url = \"${{HERALD_E2E_TEAMS_URL}}\"\n{retry}\n\n\
             [sinks.hook]\ntype = \"webhook\"\n\
             url = \"HTTP://127.0.0.1:{stub_port}/hooks/{HOOK_PATH_TOKEN}?token={HOOK_QUERY}\"\n\
             headers = {{ X-Api-Key = \"{HOOK_HEADER}\" }}\nhmac_secret = \"{HOOK_HMAC}\"\n{retry}\n"
        ))
        .build()
}

fn env() -> [(&'static str, String); 2] {
    [
        ("HERALD_E2E_TEAMS_URL", teams_url()),
        ("HERALD_E2E_LOKI_PASSWORD", LOKI_PASSWORD.to_string()),
    ]
}

/// `herald check [--connect]` in `dir`: its standard output and error.
fn check(dir: &Path, connect: bool) -> (bool, String) {
    let mut command = Command::new(herald_bin());
    command
        .args(["check", "--config", "herald.toml"])
        .current_dir(dir)
        .env_remove("HERALD_LOG")
        .env("NO_COLOR", "1")
        .envs(env());
    if connect {
        command.arg("--connect");
    }
    let output = command.output().expect("run herald check");
    (
        output.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn assert_no_secret(channel: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{channel} shows the secret {secret:?}:\n{text}"
        );
    }
}

#[test]
fn no_secret_reaches_the_log_health_the_dead_letter_file_or_herald_check() {
    let stub = Stub::start();
    // A server that echoes what it was sent in its error message.
    let echo = format!(
        "{{\"error\":\"no hook {HOOK_PATH_TOKEN} token {HOOK_QUERY_DECODED} key {HOOK_HEADER} sig {TEAMS_SIG} password {INFLUX_PASSWORD_DECODED} {LOKI_PASSWORD}\"}}"
    );
    stub.set_default(500, &[("content-type", "application/json")], &echo);
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config_text = config(&stub, plain_text_server());
    let herald = Herald::start_with_env(&config_text, &env);
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(1),
            "Max retries reached",
        )],
    );

    // Every sink gives up and says so: the failures were reported.
    let dead_letters = herald.dir().join("dead.jsonl");
    let given_up = || -> Vec<String> {
        read_json_lines(&dead_letters)
            .iter()
            .filter(|r| r["kind"] == "event")
            .filter_map(|r| r["sink"].as_str().map(str::to_string))
            .collect()
    };
    let all = poll_until(Duration::from_secs(60), || {
        SINKS
            .iter()
            .all(|sink| given_up().iter().any(|s| s == sink))
    });
    assert!(
        all,
        "sinks that gave up: {:?}\nstderr:\n{}",
        given_up(),
        herald.stderr()
    );
    let (_, health) = herald.http_get("/health");
    let health_json: Value = serde_json::from_str(&health).expect("health is JSON");
    for sink in SINKS {
        let error = health_json["sinks"][sink]["last_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{sink} has no last_error: {health}"));
        // Each error carried the URL or the echo, and it was redacted.
        assert!(error.contains("<redacted>"), "{sink}: {error}");
    }
    let teams_error = health_json["sinks"]["teams"]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(
        teams_error.contains("error sending request"),
        "{teams_error}"
    );
    let stderr = herald.stderr();
    for sink in SINKS {
        assert!(
            stderr.contains(&format!("sink={sink}")) && stderr.contains("giving up on a batch"),
            "{sink} not in the log:\n{stderr}"
        );
    }

    let dead_text = std::fs::read_to_string(&dead_letters).expect("dead-letter file");
    let (checked, check_output) = check(herald.dir(), false);
    assert!(checked, "{check_output}");
    assert!(
        check_output.contains(&format!(
            "url = \"http://herald:<redacted>@127.0.0.1:{}\"",
            stub.url().rsplit(':').next().unwrap_or_default()
        )),
        "{check_output}"
    );
    assert!(
        check_output.contains("webhook_url = \"<redacted>\""),
        "{check_output}"
    );
    let (connected, connect_output) = check(herald.dir(), true);
    assert!(
        !connected,
        "InfluxDB and Loki answer 500:\n{connect_output}"
    );
    assert!(
        connect_output.contains("sinks.influx:") && connect_output.contains("sinks.loki:"),
        "{connect_output}"
    );

    for (channel, text) in [
        ("the log", stderr.as_str()),
        ("/health", health.as_str()),
        ("the dead-letter file", dead_text.as_str()),
        ("herald check", check_output.as_str()),
        ("herald check --connect", connect_output.as_str()),
    ] {
        assert_no_secret(channel, text);
    }
}

#[test]
fn check_refuses_a_url_that_is_not_http_and_names_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (sink, url) in [
        (
            "type = \"webhook\"\nurl",
            "ftp://files.corp/upload/hK7pQ2mX9vL4nR8sT1wY6zB3",
        ),
        (
            "type = \"teams\"\nwebhook_url",
            "ht!tp://bad url/hK7pQ2mX9vL4nR8sT1wY6zB3",
        ),
    ] {
        let text = ConfigBuilder::new()
            .extra(&format!("[sinks.alerts]\n{sink} = \"{url}\"\n"))
            .build();
        std::fs::write(dir.path().join("herald.toml"), text).expect("write config");
        let (ok, output) = check(dir.path(), false);
        assert!(!ok, "{url} was accepted:\n{output}");
        let key = sink.rsplit('\n').next().unwrap_or_default();
        assert!(
            output.contains(&format!("sinks.alerts.{key}: ")),
            "{output}"
        );
        assert!(!output.contains(HOOK_PATH_TOKEN), "{output}");
    }
}
