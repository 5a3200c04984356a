//! The `influxdb` sink's v2 write API (`/api/v2/write`, org, bucket, token)
//! against the in-process stub: the request on the wire, the exact line protocol
//! of both schemas, a token from the environment, and a point InfluxDB refuses.

use std::fs;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    ConfigBuilder, DEADLINE, Herald, fixture, herald_bin, http_request, poll_until, run_herald,
    send,
};
use crate::http_stub::{Request, Stub};

const WRITE_PATH: &str = "/api/v2/write";

/// `[sinks.influx]` for the v2 API at `stub`, plus `extra` keys.
fn influx_sink(stub: &Stub, extra: &str) -> String {
    format!(
        "[sinks.influx]\ntype = \"influxdb\"\nurl = \"{}\"\napi = \"v2\"\norg = \"acme corp\"\nbucket = \"sense\"\n{extra}\n",
        stub.url()
    )
}

/// Makes the stub answer herald's start-up check (`/health`, then the bucket
/// lookup) like InfluxDB 2 does when the bucket exists.
fn answer_startup_check(stub: &Stub) {
    stub.respond_when(
        |r| r.path == "/health",
        200,
        &[("Content-Type", "application/json")],
        r#"{"status":"pass"}"#,
    );
    stub.respond_when(
        |r| r.path == "/api/v2/buckets",
        200,
        &[("Content-Type", "application/json")],
        r#"{"buckets":[{"id":"b1","name":"sense","orgID":"o1"}]}"#,
    );
}

/// The write requests the stub got so far.
fn writes(stub: &Stub) -> Vec<Request> {
    stub.requests()
        .into_iter()
        .filter(|r| r.path == WRITE_PATH)
        .collect()
}

/// Waits until the stub got `n` write requests and returns them.
fn wait_for_writes(stub: &Stub, n: usize) -> Vec<Request> {
    assert!(
        poll_until(DEADLINE, || writes(stub).len() >= n),
        "fewer than {n} write requests: {:#?}",
        stub.requests()
    );
    writes(stub)
}

/// The event in `events` with tag `tag`.
fn event_by_tag<'a>(events: &'a [Value], tag: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["tag"] == tag)
        .unwrap_or_else(|| panic!("no event with tag {tag}: {events:#?}"))
}

/// The event's `time` in whole milliseconds since the epoch.
fn time_ms(event: &Value) -> i128 {
    let time: jiff::Timestamp = event["time"]
        .as_str()
        .expect("event time")
        .parse()
        .expect("RFC 3339 time");
    i128::from(time.as_millisecond())
}

/// Escapes a line-protocol string field value: `"` and `\` get a backslash.
fn string_field(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Checks `body` holds exactly `expected` lines, each `(line without timestamp,
/// event time in ms)`, in any order; each timestamp must be that millisecond in
/// ns plus a sub-millisecond sequence, distinct across lines.
fn assert_lines(body: &str, expected: &[(String, i128)]) {
    assert!(body.ends_with('\n'), "{body:?}");
    let mut actual: Vec<(String, i128)> = body
        .lines()
        .map(|line| {
            let (head, ts) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
            assert!(
                ts.bytes().all(|b| b.is_ascii_digit()),
                "timestamp {ts:?} in {line:?}"
            );
            (head.to_string(), ts.parse::<i128>().unwrap())
        })
        .collect();
    assert_eq!(actual.len(), expected.len(), "{body}");
    let mut sequences: Vec<i128> = actual
        .iter()
        .map(|(_, ts)| ts.rem_euclid(1_000_000))
        .collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(
        sequences.len(),
        actual.len(),
        "sub-ms digits repeat: {body}"
    );
    actual.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    for ((line, ts), (expected_line, ms)) in actual.iter().zip(&expected) {
        assert_eq!(line, expected_line);
        assert_eq!(ts.div_euclid(1_000_000), *ms, "{line}");
    }
}

#[test]
fn influxdb_v2_write_carries_org_bucket_token_and_herald_lines() {
    let stub = Stub::start();
    answer_startup_check(&stub);
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&influx_sink(
                &stub,
                "token = \"tok-123\"\nbatch_max_events = 2\nflush_interval_ms = 10000",
            ))
            .build(),
    );
    let engine = fixture("engine_error").datagram;
    let session = fixture("session_start").datagram;
    let sender = send("127.0.0.1", herald.udp, &[&engine, &session]);
    let events = herald.wait_for_events(2);
    let requests = wait_for_writes(&stub, 1);
    let request = &requests[0];

    assert_eq!(request.method, "POST");
    assert_eq!(
        request.query,
        [
            ("org".to_string(), "acme corp".to_string()),
            ("bucket".to_string(), "sense".to_string()),
            ("precision".to_string(), "ns".to_string()),
        ]
    );
    assert_eq!(request.header("authorization"), Some("Token tok-123"));
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    assert_eq!(
        request.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_ne!(request.raw_body, request.body, "the body is gzipped");

    let engine_line = format!(
        r#"log,host=pro2-win1,level=ERROR,source=engine,subsystem=System.Engine.Engine log_row=4711i,ts_iso="20240519T120312.114+0200",ts_local="2024-05-19 12:03:12,114",windows_user="LAB\\qlikservice",user_full="LAB\\goran",user_directory="LAB",user_id="goran",proxy_session_id="3b6c1f7e-2f1d-4a55-9d2e-4b1f0b3a9c11",engine_ts="2024-05-19T12:03:12.113+02:00",process_id="6f1e7a5a-0c77-4d52-8a3e-5d1f7c9e2b10",engine_exe_version="14.173.3",server_started="2024-05-18T06:01:44.000+02:00",entry_type="Error",session_id="a1b2c3d4-0000-4000-8000-1234567890ab",app_id="e7af59a0-c243-480d-9571-08727551a66f",message="Document e7af59a0-c243-480d-9571-08727551a66f could not be opened: file not found",time_source="event",sender="{sender}""#
    );
    let user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    let session_line = format!(
        r#"session,command=Start\ session,host=pro2-win1,source=proxy user_full="LAB\\goran",user_directory="LAB",user_id="goran",origin="AppAccess",context="/hub/",user_agent="{user_agent}",message="Start session for user 'LAB\\goran' UserAgent: '{user_agent}'",time_source="received",sender="{sender}""#
    );
    assert_lines(
        request.body_text(),
        &[
            (
                engine_line,
                time_ms(event_by_tag(&events, "/qseow-engine/")),
            ),
            (
                session_line,
                time_ms(event_by_tag(&events, "/qseow-proxy-session/")),
            ),
        ],
    );
    // 2024-05-19T12:03:12.114+02:00 is 1716112992114 ms.
    assert_eq!(
        time_ms(event_by_tag(&events, "/qseow-engine/")),
        1_716_112_992_114
    );

    herald.wait_for("2 delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "influx")]) == 2.0
    });
    // The start-up check runs beside delivery: once it reports the bucket
    // ready, it looked the bucket up with the same org and token.
    herald.wait_for("the start-up check to report the bucket ready", |h| {
        h.stderr()
            .contains("bucket \\\"sense\\\" in org \\\"acme corp\\\" is ready")
            || h.stderr()
                .contains("bucket \"sense\" in org \"acme corp\" is ready")
    });
    let lookup = stub
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v2/buckets")
        .expect("a bucket lookup at start-up");
    assert_eq!(lookup.query_param("org"), Some("acme corp"));
    assert_eq!(lookup.query_param("name"), Some("sense"));
    assert_eq!(lookup.header("authorization"), Some("Token tok-123"));
}

#[test]
fn influxdb_v2_butler_sos_lines_use_butler_names_and_result_code_field() {
    let stub = Stub::start();
    answer_startup_check(&stub);
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&influx_sink(
                &stub,
                "schema = \"butler-sos\"\ntoken = \"tok-123\"\nbatch_max_events = 2\nflush_interval_ms = 10000",
            ))
            .build(),
    );
    let proxy = fixture("proxy_warn").datagram;
    let task = fixture("task_reload_failed").datagram;
    send("127.0.0.1", herald.udp, &[&proxy, &task]);
    let events = herald.wait_for_events(2);
    let lines = fs::read_to_string(herald.dir().join("events.jsonl")).unwrap();
    let json_of = |tag: &str| {
        lines
            .lines()
            .find(|line| line.contains(&format!("\"tag\":\"{tag}\"")))
            .unwrap_or_else(|| panic!("no {tag} in {lines}"))
            .to_string()
    };
    let requests = wait_for_writes(&stub, 1);
    let request = &requests[0];
    assert_eq!(request.query_param("precision"), Some("ns"));

    // v2 writes the result code field as `result_code_field` (Butler SOS's name
    // there), beside the `result_code` tag.
    let proxy_line = format!(
        r#"log_event,host=pro2-win1,level=WARN,result_code=401,source=qseow-proxy,subsystem=Audit.Proxy.Proxy.SessionEstablishment.Authentication,user_directory=LAB,user_full=LAB\jdoe,user_id=jdoe message="Authentication failed for user LAB\\jdoe",command="Login",origin="AppAccess",context="/hub/",result_code_field="401",log_row=87i,raw_event="{}""#,
        string_field(&json_of("/qseow-proxy/"))
    );
    let task_line = format!(
        r#"reload_task_failed,app_id=e7af59a0-c243-480d-9571-08727551a66f,app_name=Test\ failing\ reloads\ 2,host=pro2-win1,log_level=INFO,task_id=dec2a02a-1680-44ef-8dc2-e2bfb180af87,task_name=Manually\ triggered\ reload\ of\ Test\ failing\ reloads\ 2,user=LAB\goran log_timestamp="2021-02-16 09:24:59,099",execution_id="14a81bf5-f81c-4047-b1a1-193b0920de28",log_message="Max retries reached",raw_event="{}""#,
        string_field(&json_of("/scheduler-reload-failed/"))
    );
    assert_lines(
        request.body_text(),
        &[
            (proxy_line, time_ms(event_by_tag(&events, "/qseow-proxy/"))),
            (
                task_line,
                time_ms(event_by_tag(&events, "/scheduler-reload-failed/")),
            ),
        ],
    );
    herald.wait_for("2 delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "influx")]) == 2.0
    });
}

#[test]
fn influxdb_v2_partial_write_dead_letters_only_the_refused_point() {
    let stub = Stub::start();
    answer_startup_check(&stub);
    let marker = "Authentication failed for user";
    stub.respond_when(
        move |r| r.path == WRITE_PATH && String::from_utf8_lossy(&r.body).contains(marker),
        400,
        &[("Content-Type", "application/json")],
        r#"{"error":"partial write: field type conflict"}"#,
    );
    let mut herald = Herald::start(
        &ConfigBuilder::new()
            .extra(&influx_sink(
                &stub,
                "token = \"tok-123\"\nbatch_max_events = 4\nflush_interval_ms = 10000",
            ))
            .build(),
    );
    let names = [
        "engine_error",
        "proxy_warn",
        "session_start",
        "task_reload_failed",
    ];
    let datagrams: Vec<Vec<u8>> = names.iter().map(|n| fixture(n).datagram).collect();
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    send("127.0.0.1", herald.udp, &refs);

    let metric = |h: &Herald, name: &str| h.metric(name, &[("sink", "influx")]);
    herald.wait_for("1 failed and 3 delivered", |h| {
        metric(h, "herald_sink_events_failed_total") == 1.0
            && metric(h, "herald_sink_events_delivered_total") == 3.0
    });
    herald.wait_for("1 dead letter", |h| !h.json_lines("dead.jsonl").is_empty());
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["kind"], "event");
    assert_eq!(dead[0]["sink"], "influx");
    assert_eq!(dead[0]["event"]["tag"], "/qseow-proxy/");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 400: partial write: field type conflict"),
        "{error}"
    );
    assert_eq!(metric(&herald, "herald_sink_retries_total"), 0.0);

    // The batch was split until the refused line was alone; every other line
    // was accepted exactly once.
    let writes = writes(&stub);
    assert_eq!(writes[0].body_text().lines().count(), 4);
    let mut accepted: Vec<String> = writes
        .iter()
        .filter(|r| !r.body_text().contains(marker))
        .flat_map(|r| {
            r.body_text()
                .lines()
                .map(|l| l.split([',', ' ']).next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    accepted.sort();
    assert_eq!(accepted, ["log", "session", "task"]);
    let refused: Vec<&Request> = writes
        .iter()
        .filter(|r| r.body_text().contains(marker))
        .collect();
    assert_eq!(refused.last().unwrap().body_text().lines().count(), 1);
}

/// A `herald run` started with extra environment variables (the harness's
/// [`Herald`] passes none); killed on drop.
struct HeraldWithEnv {
    _dir: tempfile::TempDir,
    child: Child,
}

impl HeraldWithEnv {
    /// Starts herald with `config` and `env`, and waits until `/health` answers.
    fn start(config: &ConfigBuilder, env: &[(&str, &str)]) -> HeraldWithEnv {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        fs::write(&path, config.build()).unwrap();
        let mut command = Command::new(herald_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .env_remove("HERALD_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr.txt")).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut herald = HeraldWithEnv {
            child: command.spawn().expect("start herald"),
            _dir: dir,
        };
        let http = SocketAddr::from(([127, 0, 0, 1], config.http_port));
        let up = poll_until(Duration::from_secs(30), || {
            herald.child.try_wait().ok().flatten().is_some()
                || http_request(http, "GET", "/health").is_ok_and(|(status, _)| status == 200)
        });
        assert!(
            up && herald.child.try_wait().ok().flatten().is_none(),
            "herald did not come up: {}",
            fs::read_to_string(herald._dir.path().join("stderr.txt")).unwrap_or_default()
        );
        herald
    }
}

impl Drop for HeraldWithEnv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn influxdb_v2_token_comes_from_the_environment() {
    const VAR: &str = "HERALD_E2E_INFLUX_V2_TOKEN";
    let stub = Stub::start();
    answer_startup_check(&stub);
    let config = ConfigBuilder::new().extra(&influx_sink(
        &stub,
        &format!("token = \"${{{VAR}}}\"\nbatch_max_events = 1"),
    ));
    let herald = HeraldWithEnv::start(&config, &[(VAR, "env-t0ken==")]);
    send(
        "127.0.0.1",
        config.listen,
        &[&fixture("engine_error").datagram],
    );
    let requests = wait_for_writes(&stub, 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Token env-t0ken==")
    );
    drop(herald);

    // Unset, the variable is named and the config refused.
    assert!(std::env::var_os(VAR).is_none());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    fs::write(&path, config.build()).unwrap();
    let output = run_herald(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("environment variable {VAR} is not set")),
        "{stderr}"
    );
}
