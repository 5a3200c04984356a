use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{MINIMAL_CONFIG, repo_root};

/// The secrets the example configs read from the environment.
const EXAMPLE_SECRETS: [(&str, &str); 5] = [
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    ),
    (
        "TEAMS_WEBHOOK_URL",
        "https://prod.westeurope.logic.azure.com/workflows/x",
    ),
    ("HOOK_HMAC_SECRET", "s3cret"),
    ("SMTP_PASSWORD", "p4ss"),
    ("MQTT_PASSWORD", "p4ss"),
];

fn check(path: &Path) -> (bool, String, String) {
    let output = std::process::Command::new(crate::harness::herald_bin())
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .envs(EXAMPLE_SECRETS)
        .env_remove("HERALD_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run herald check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn shipped_config() -> PathBuf {
    repo_root().join("config").join("herald.toml")
}

#[test]
fn check_command_prints_the_effective_shipped_config() {
    let (ok, stdout, stderr) = check(&shipped_config());
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("max_datagram_bytes = 65507"), "{stdout}");
    assert!(
        stdout.contains("receive_buffer_bytes = 8388608"),
        "{stdout}"
    );
    assert!(stdout.contains("[sinks.console]"), "{stdout}");
    assert!(stderr.contains("is valid: 3 listener(s)"), "{stderr}");
    // What it prints is itself a valid config.
    let dir = tempfile::tempdir().unwrap();
    let effective = dir.path().join("effective.toml");
    fs::write(&effective, &stdout).unwrap();
    let (ok, again, stderr) = check(&effective);
    assert!(ok, "{stderr}");
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&stdout));
}

#[test]
fn check_command_names_a_misspelled_key_and_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    fs::write(&path, MINIMAL_CONFIG.replace("allow =", "alow =")).unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "check accepted a misspelled key:\n{stdout}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("`alow`"), "{stderr}");
    assert!(stderr.contains("`allow`"), "{stderr}");
}

#[test]
fn check_command_refuses_an_empty_allowlist_and_says_how_to_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    fs::write(&path, MINIMAL_CONFIG.replace("[\"127.0.0.0/8\"]", "[]")).unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "check accepted an empty allowlist:\n{stdout}");
    assert!(stderr.contains("ingest.allow"), "{stderr}");
    assert!(stderr.contains("0.0.0.0/0"), "{stderr}");
}

#[test]
fn check_refuses_an_http_endpoint_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    fs::write(
        &path,
        format!("{MINIMAL_CONFIG}\n[http]\nlisten = \"0.0.0.0:9995\"\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "check accepted an open endpoint:\n{stdout}");
    assert!(stderr.contains("http.listen"), "{stderr}");
    assert!(stderr.contains("http.token"), "{stderr}");
    fs::write(
        &path,
        format!("{MINIMAL_CONFIG}\n[http]\nlisten = \"0.0.0.0:9995\"\ntoken = \"short\"\n"),
    )
    .unwrap();
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(stderr.contains("http.token"), "{stderr}");
    fs::write(
        &path,
        format!("{MINIMAL_CONFIG}\n[http]\nlisten = \"0.0.0.0:9995\"\ntoken = \"0123456789abcdef0123\"\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains("0123456789abcdef0123"),
        "the token is shown:\n{stdout}"
    );
}

#[test]
fn a_secret_from_an_unset_variable_is_named_and_a_set_one_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slack.toml");
    let sink = "\n[sinks.oncall]\ntype = \"slack\"\nwebhook_url = \"${HERALD_TEST_UNSET_HOOK}\"\n";
    fs::write(&path, format!("{MINIMAL_CONFIG}{sink}")).unwrap();
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(
        stderr.contains("HERALD_TEST_UNSET_HOOK is not set"),
        "{stderr}"
    );
    fs::write(
        &path,
        format!(
            "{MINIMAL_CONFIG}{}",
            sink.replace("HERALD_TEST_UNSET_HOOK", "SLACK_WEBHOOK_URL")
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("webhook_url = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("XXXX") && !stderr.contains("XXXX"));
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_loads() {
    let mut files = Vec::new();
    toml_files(&repo_root().join("config"), &mut files);
    assert!(files.contains(&shipped_config()), "{files:?}");
    for file in &files {
        let (ok, stdout, stderr) = check(file);
        assert!(ok, "{}:\n{stdout}\n{stderr}", file.display());
    }
}

/// Paths (as key lists) of every table in `table`, itself included.
fn table_paths(table: &toml::Table, prefix: &[String], out: &mut Vec<Vec<String>>) {
    out.push(prefix.to_vec());
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            table_paths(inner, &path, out);
        }
    }
}

#[test]
fn every_table_of_the_shipped_config_rejects_an_unknown_key() {
    let text = fs::read_to_string(shipped_config()).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    let mut paths = Vec::new();
    table_paths(&config, &[], &mut paths);
    let names: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
    assert_eq!(
        names,
        [
            "",
            "dead_letter",
            "http",
            "ingest",
            "sinks",
            "sinks.console",
            "sinks.events"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    for path in &paths {
        let mut edited = config.clone();
        let mut table = &mut edited;
        for key in path {
            table = table[key].as_table_mut().unwrap();
        }
        table.insert("not_a_key".into(), toml::Value::Integer(1));
        let file = dir.path().join("edited.toml");
        fs::write(&file, toml::to_string(&edited).unwrap()).unwrap();
        let (ok, stdout, stderr) = check(&file);
        let at = if path.is_empty() {
            "the top level".to_string()
        } else {
            path.join(".")
        };
        assert!(!ok, "not_a_key in {at} was accepted:\n{stdout}");
        assert!(stderr.contains("not_a_key"), "not_a_key in {at}: {stderr}");
    }
}

#[test]
fn check_reports_every_problem_at_its_key_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.toml");
    fs::write(
        &path,
        r#"[ingest]
listen = 9996
allow = ["127.0.0.0/8"]

[pipeline]
workers = "two"

[sinks.grafana]
type = "loki"
url = "ftp://loki.corp:3100"
queue_events = "many"
"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "check accepted it:\n{stdout}");
    let expected = [
        "4 problems",
        "line 2: ingest.listen: expected an address like \"0.0.0.0:9996\" or a list of them, found 9996",
        "line 6: pipeline.workers: expected a whole number (0 or more), found the string \"two\"",
        "line 10: sinks.grafana.url: uses ftp://",
    ];
    for line in expected {
        assert!(stderr.contains(line), "{line:?} not in:\n{stderr}");
    }
    // The queue_events problem too, one problem a line.
    assert!(
        stderr.contains("line 11: sinks.grafana.queue_events: expected a whole number"),
        "{stderr}"
    );
    for rust in ["usize", "OneOrMany", "untagged", "struct ", "enum "] {
        assert!(!stderr.contains(rust), "{rust:?} in:\n{stderr}");
    }
}

/// Every TOML example in the README that configures something (a table
/// header) passes `herald check` under a minimal `[ingest]`, with each
/// `${VARIABLE}` it reads set to a placeholder.
#[test]
fn every_toml_example_in_the_readme_passes_check() {
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    let examples: Vec<&String> = blocks
        .iter()
        .filter(|b| b.lines().any(|l| l.starts_with('[')) && !b.contains("[ingest]"))
        .collect();
    assert!(
        examples.len() >= 4,
        "only {} examples found",
        examples.len()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (i, example) in examples.iter().enumerate() {
        let path = dir.path().join(format!("example{i}.toml"));
        fs::write(
            &path,
            format!(
                "[ingest]\nlisten = [\"127.0.0.1:9996\"]\nallow = [\"127.0.0.0/8\"]\n\n{example}"
            ),
        )
        .expect("write");
        let mut command = std::process::Command::new(crate::harness::herald_bin());
        command
            .args(["check", "--config", path.to_str().expect("utf-8 path")])
            .env_remove("HERALD_LOG")
            .env("NO_COLOR", "1");
        for name in example
            .split("${")
            .skip(1)
            .filter_map(|s| s.split_once('}'))
        {
            let name = name.0;
            let value = if name.ends_with("URL") || name.ends_with("WEBHOOK") {
                "https://hooks.example.com/services/x"
            } else {
                "placeholder-secret-value"
            };
            command.env(name, value);
        }
        let output = command.output().expect("run herald check");
        if !output.status.success() {
            failures.push(format!(
                "{example}\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
