//! Imports of the Butler SOS and Butler configs in `fixtures/import/`, read
//! back as TOML. (`tests/e2e/import.rs` runs `herald check` on them.)

use super::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn imported(tool: Tool, name: &str) -> (Imported, Table) {
    let imported = import(tool, &fixture(name), name).unwrap();
    let table: Table =
        toml::from_str(&imported.toml).unwrap_or_else(|err| panic!("{err}\n{}", imported.toml));
    (imported, table)
}

fn at<'a>(table: &'a Table, path: &str) -> &'a Value {
    let mut value = table
        .get(path.split('.').next().unwrap())
        .unwrap_or_else(|| panic!("{path}"));
    for key in path.split('.').skip(1) {
        value = value
            .get(key)
            .unwrap_or_else(|| panic!("{path}: no {key} in {value}"));
    }
    value
}

fn texts(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn butler_sos_listeners_allowlist_tags_and_destinations_carry_over() {
    let (imported, config) = imported(Tool::ButlerSos, "butler-sos.yaml");
    assert_eq!(
        texts(at(&config, "ingest.listen")),
        ["10.1.0.20:9996", "10.1.0.20:9997"]
    );
    // The source allowlist, placeholders left out.
    assert_eq!(
        texts(at(&config, "ingest.allow")),
        ["10.1.0.11", "10.1.0.12"]
    );
    assert_eq!(
        at(&config, "ingest.max_datagrams_per_source_per_second").as_integer(),
        Some(100)
    );
    assert_eq!(at(&config, "tags.qs_site").as_str(), Some("stockholm"));

    let influx = at(&config, "sinks.influxdb");
    assert_eq!(
        influx["url"].as_str(),
        Some("http://influx.corp.example:8086")
    );
    assert_eq!(influx["api"].as_str(), Some("v1"));
    assert_eq!(influx["schema"].as_str(), Some("butler-sos"));
    assert_eq!(influx["database"].as_str(), Some("senseops"));
    assert_eq!(influx["username"].as_str(), Some("butlersos"));
    assert_eq!(influx["password"].as_str(), Some("${INFLUX_PASSWORD}"));
    assert_eq!(
        texts(&influx["match"]["types"]),
        ["log", "qix_perf", "session", "connection"]
    );
    let mqtt = at(&config, "sinks.mqtt");
    assert_eq!(mqtt["host"].as_str(), Some("mqtt.corp.example"));
    assert_eq!(mqtt["preset"].as_str(), Some("butler-sos"));
    assert!(mqtt.get("base_topic").is_none());

    // Secrets are references, listed with where they were; never the values.
    assert_eq!(
        imported.variables,
        [Variable {
            name: "INFLUX_PASSWORD".into(),
            from: "Butler-SOS.influxdbConfig.v1Config.auth.password".into()
        }]
    );
    assert!(!imported.toml.contains("s3cret-influx-password"));
    assert!(!imported.toml.contains("NRII-"));
    for missing in [
        "newRelic",
        "serversToMonitor",
        "prometheus",
        "qlikSenseEvents",
        "uptimeMonitor",
        "appNames",
    ] {
        assert!(
            imported
                .not_carried_over
                .iter()
                .any(|line| line.contains(missing)),
            "{missing}: {:#?}",
            imported.not_carried_over
        );
    }
}

#[test]
fn butler_sos_categories_sources_and_qix_perf_filters_become_rules() {
    let (imported, config) = imported(Tool::ButlerSos, "butler-sos.yaml");
    let rules = at(&config, "categorise.rules").as_array().unwrap();
    let find = |what: &str| {
        rules
            .iter()
            .find(|r| r["description"].as_str().unwrap_or("").contains(what))
            .unwrap_or_else(|| panic!("no rule for {what}: {rules:#?}"))
    };
    let access = find("access denied");
    assert_eq!(texts(&access["levels"]), ["WARN", "ERROR"]);
    assert_eq!(access["filters"][0]["type"].as_str(), Some("starts_with"));
    assert_eq!(access["filters"][1]["type"].as_str(), Some("contains"));
    assert_eq!(
        access["categories"]["qs_log_category"].as_str(),
        Some("access-denied")
    );
    assert_eq!(find("license")["action"].as_str(), Some("drop"));
    assert!(imported.notes.iter().any(|n| n.contains("known bug")));
    assert_eq!(
        at(&config, "categorise.default_categories.qs_log_category").as_str(),
        Some("unknown")
    );
    // repository is off: its log events are dropped.
    let repository = find("source.repository");
    assert_eq!(texts(&repository["match"]["sources"]), ["repository"]);
    // Excluded users' user events.
    let users = find("excludeUser");
    assert_eq!(
        texts(&users["match"]["users"]),
        ["LAB\\testuser1", "LAB\\sa_monitor"]
    );
    assert_eq!(texts(&users["match"]["types"]), ["session", "connection"]);
    // qix-perf: excluded app, excluded object types, only some methods.
    let apps: Vec<_> = rules
        .iter()
        .filter(|r| {
            r["description"]
                .as_str()
                .unwrap_or("")
                .ends_with("appExclude")
        })
        .collect();
    assert_eq!(
        texts(&apps[0]["match"]["app_ids"]),
        ["5b817efe-472d-43ce-8a31-6cce34af7de9"]
    );
    assert_eq!(texts(&apps[1]["match"]["app_names"]), ["Sales forecast"]);
    assert_eq!(
        texts(&find("objectType")["match"]["object_types"]),
        ["LoadModelList", "<Unknown>"]
    );
    assert_eq!(
        texts(&find("method")["match"]["exclude"]["methods"]),
        ["GenericObject::GetLayout", "Doc::DoReload"]
    );
}

#[test]
fn butler_sos_template_placeholders_give_a_closed_allowlist() {
    let (imported, config) = imported(Tool::ButlerSos, "butler-sos-template.yaml");
    assert_eq!(texts(at(&config, "ingest.listen")), ["0.0.0.0:9996"]);
    assert_eq!(texts(at(&config, "ingest.allow")), ["127.0.0.1"]);
    assert!(
        imported
            .toml
            .contains("# ingest.allow: the YAML names no Sense host")
    );
    // No destination enabled: every event to a file.
    assert_eq!(at(&config, "sinks.events.type").as_str(), Some("file"));
    // Every source but qix-perf is off, and qix-perf's monitor too.
    let rules = at(&config, "categorise.rules").as_array().unwrap();
    assert_eq!(rules.len(), 5);
}

#[test]
fn butler_alerts_carry_over_with_their_rate_limits_and_secrets() {
    let (imported, config) = imported(Tool::Butler, "butler.yaml");
    assert_eq!(texts(at(&config, "ingest.listen")), ["0.0.0.0:9998"]);
    // No source allowlist: the Sense servers Butler talks to.
    assert_eq!(
        texts(at(&config, "ingest.allow")),
        ["sense-central.corp.example", "10.1.0.11"]
    );
    assert_eq!(
        at(&config, "ingest.max_datagrams_per_source_per_second").as_integer(),
        Some(10)
    );

    let slack = at(&config, "sinks.slack-failed");
    assert_eq!(slack["type"].as_str(), Some("slack"));
    assert_eq!(
        slack["webhook_url"].as_str(),
        Some("${SLACK_FAILED_WEBHOOK_URL}")
    );
    assert_eq!(slack["rate_limit_window_s"].as_integer(), Some(60));
    assert_eq!(slack["dedupe_window_s"].as_integer(), Some(600));
    assert_eq!(
        slack["sense_url"].as_str(),
        Some("https://sense.corp.example")
    );
    assert_eq!(texts(&slack["match"]["outcomes"]), ["failed"]);
    assert!(config["sinks"].get("slack-aborted").is_none(), "disabled");
    assert_eq!(
        texts(&at(&config, "sinks.teams-aborted")["match"]["outcomes"]),
        ["aborted"]
    );

    let email = at(&config, "sinks.email-failed");
    assert_eq!(email["host"].as_str(), Some("smtp.corp.example"));
    assert_eq!(email["port"].as_integer(), Some(587));
    assert_eq!(email["security"].as_str(), Some("starttls"));
    assert_eq!(email["password"].as_str(), Some("${SMTP_PASSWORD}"));
    assert_eq!(email["per_recipient_rate_limit_s"].as_integer(), Some(600));
    assert_eq!(
        texts(&email["to"]),
        ["sense-admins@corp.example", "oncall@corp.example"]
    );
    // The aborted email's only recipient is a placeholder: no sink, a note.
    assert!(config["sinks"].get("email-aborted").is_none());
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("no recipients; no email sink")),
        "{:#?}",
        imported.notes
    );

    let hook = at(&config, "sinks.webhook-failed-1");
    assert_eq!(hook["url"].as_str(), Some("${WEBHOOK_FAILED_1_URL}"));
    // The CA file is not on this machine: a note says to copy it.
    assert!(hook.get("tls_ca_file").is_none());
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("/etc/ssl/corp-ca.pem"))
    );
    assert!(config["sinks"].get("webhook-failed-2").is_none(), "GET");
    assert_eq!(
        at(&config, "sinks.webhook-aborted-1.method").as_str(),
        Some("PUT")
    );
    assert_eq!(at(&config, "sinks.mqtt.preset").as_str(), Some("butler"));
    let influx = at(&config, "sinks.influxdb");
    assert_eq!(influx["api"].as_str(), Some("v2"));
    assert_eq!(influx["org"].as_str(), Some("senseops"));
    assert_eq!(influx["bucket"].as_str(), Some("butler"));
    assert_eq!(texts(&influx["match"]["outcomes"]), ["failed", "success"]);

    let names: Vec<&str> = imported.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "SLACK_FAILED_WEBHOOK_URL",
            "TEAMS_FAILED_WEBHOOK_URL",
            "TEAMS_ABORTED_WEBHOOK_URL",
            "SMTP_PASSWORD",
            "WEBHOOK_FAILED_1_URL",
            "WEBHOOK_ABORTED_1_URL",
            "INFLUX_TOKEN",
        ]
    );
    for secret in [
        "XXXXXXXX",
        "smtp-password-value",
        "key=abc123",
        "influx-token-value-123",
        "workflows/1234",
    ] {
        assert!(!imported.toml.contains(secret), "{secret} leaked");
    }
    for missing in [
        "scheduler",
        "restServerConfig",
        "signl4",
        "heartbeat",
        "appOwnerAlert",
        "Handlebars",
        "GET webhook",
        "reloadTaskSuccess",
    ] {
        assert!(
            imported
                .not_carried_over
                .iter()
                .any(|line| line.contains(missing)),
            "{missing} not mentioned: {:#?}",
            imported.not_carried_over
        );
    }
}

#[test]
fn butler_template_placeholders_give_a_closed_allowlist() {
    let (imported, config) = imported(Tool::Butler, "butler-template.yaml");
    assert_eq!(texts(at(&config, "ingest.listen")), ["0.0.0.0:9998"]);
    assert_eq!(texts(at(&config, "ingest.allow")), ["127.0.0.1"]);
    assert_eq!(at(&config, "sinks.events.type").as_str(), Some("file"));
    assert!(imported.variables.is_empty());
}

#[test]
fn the_wrong_file_is_named() {
    let err = import(Tool::Butler, &fixture("butler-sos.yaml"), "x").unwrap_err();
    assert!(err.to_string().contains("`Butler:`"), "{err}");
    let err = import(Tool::ButlerSos, "a: [", "x").unwrap_err();
    assert!(err.to_string().starts_with("not valid YAML"), "{err}");
}

#[test]
fn qix_perf_filters_that_keep_nothing_drop_everything_and_bad_ids_are_left_out() {
    let yaml = "Butler-SOS:\n  logEvents:\n    source:\n      qixPerf:\n        enable: true\n    enginePerformanceMonitor:\n      enable: true\n      monitorFilter:\n        allApps:\n          enable: true\n          appExclude:\n            - appId: <app id>\n            - appName: <app name>\n          objectType:\n            allObjectTypes: false\n            someObjectTypesInclude:\n";
    let imported = import(Tool::ButlerSos, yaml, "x").unwrap();
    let config: Table = toml::from_str(&imported.toml).unwrap();
    let rules = at(&config, "categorise.rules").as_array().unwrap();
    assert!(rules.iter().all(|r| r["match"].get("app_ids").is_none()));
    assert!(rules.iter().all(|r| r["match"].get("app_names").is_none()));
    assert!(rules.iter().any(|r| {
        r["description"]
            .as_str()
            .unwrap()
            .contains("someObjectTypesInclude is empty")
            && r["match"].get("exclude").is_none()
    }));
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("is not an app ID"))
    );
}
