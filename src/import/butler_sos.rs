//! Butler SOS's config (`Butler-SOS:`) into a [`Draft`]: the log and user
//! event servers, their source allowlists, tags, categorisation, which
//! services' events are handled, the qix-perf filters, and the InfluxDB and
//! MQTT destinations.

use toml::{Table, Value};

use super::yaml::Node;
use super::{Draft, influx_api, list, mqtt_sink, placeholder, rule, udp_server};

/// What Butler SOS does that herald does not: the key, the switch that
/// turns it on (below the key; empty: a non-empty `servers` list), and why.
const NOT_CARRIED: &[(&str, &str, &str)] = &[
    (
        "newRelic",
        "enable",
        "New Relic: herald has no New Relic destination",
    ),
    (
        "serversToMonitor",
        "",
        "health polling of the Sense servers (Engine API): herald only receives what Sense sends",
    ),
    (
        "userSessions",
        "enableSessionExtract",
        "session polling through the proxy API",
    ),
    (
        "appNames",
        "enableAppNameExtract",
        "app name lookup from the repository: events keep the app ID",
    ),
    (
        "prometheus",
        "enable",
        "its Prometheus endpoint: herald serves its own metrics at /metrics on http.listen",
    ),
    ("heartbeat", "enable", "heartbeat calls to a monitoring URL"),
    (
        "uptimeMonitor",
        "enable",
        "uptime and memory reports: herald's own figures are at /metrics and /health",
    ),
    (
        "qlikSenseEvents",
        "influxdb.enable",
        "event counters written to InfluxDB: herald counts events in herald_events_total at /metrics",
    ),
    (
        "configVisualisation",
        "enable",
        "the config web page: herald's status page at / shows the effective config",
    ),
    (
        "dockerHealthCheck",
        "enable",
        "the Docker health endpoint: use /health",
    ),
];

pub(super) fn map(root: &Node, draft: &mut Draft) {
    let log = root.get("logEvents");
    let user = root.get("userEvents").filter(|user| user.on("enable"));
    for (events, port_key) in [(&log, "portLogEvents"), (&user, "portUserActivityEvents")] {
        let Some(events) = events else { continue };
        let server = events.get("udpServerConfig");
        let port = server
            .as_ref()
            .and_then(|s| s.number(port_key))
            .and_then(|p| u16::try_from(p).ok());
        if let (Some(server), Some(port)) = (&server, port) {
            let host = server.text("serverHost");
            draft.listen(host.as_deref(), port, &server.path_of("serverHost"));
            udp_server(server, "Butler SOS", draft);
        }
        for (name, value) in events.pairs("tags") {
            draft.tags.insert(name, value);
        }
    }
    // Without a source allowlist: the Sense servers Butler SOS polls.
    if draft.allow.is_empty() {
        for server in root.list("serversToMonitor.servers") {
            if let Some(host) = server.text("host") {
                draft.allow(&host);
            }
        }
    }
    if let Some(log) = &log {
        sources(log, draft);
        categorise(log, draft);
    }
    if let Some(user) = &user {
        let excluded: Vec<String> = user
            .list("excludeUser")
            .iter()
            .filter_map(|u| Some(format!("{}\\{}", u.text("directory")?, u.text("userId")?)))
            .collect();
        if !excluded.is_empty() {
            let mut exclude = Table::new();
            exclude.insert("types".into(), list(["session", "connection"]));
            exclude.insert("users".into(), list(excluded));
            draft.rules.push(rule(
                "userEvents.excludeUser: user events of these users are not kept",
                "drop",
                exclude,
            ));
        }
    }
    influxdb(root, log.as_ref(), user.as_ref(), draft);
    mqtt(root, log.as_ref(), user.as_ref(), draft);
    for (key, switch, what) in NOT_CARRIED {
        let on = root.get(key).is_some_and(|node| {
            if switch.is_empty() {
                node.list("servers")
                    .iter()
                    .any(|s| s.text("host").is_some())
            } else {
                node.on(switch)
            }
        });
        if on {
            draft.not_carried(format!("{}: {what}", root.path_of(key)));
        }
    }
    if log
        .as_ref()
        .is_some_and(|log| log.on("sendToNewRelic.enable"))
        || user
            .as_ref()
            .is_some_and(|user| user.on("sendToNewRelic.enable"))
    {
        draft.not_carried(
            "logEvents/userEvents.sendToNewRelic: New Relic: herald has no New Relic destination",
        );
    }
}

/// Services whose events Butler SOS does not handle become drop rules, and
/// the qix-perf filters what they can.
fn sources(log: &Node, draft: &mut Draft) {
    for (key, source) in [
        ("engine", "engine"),
        ("proxy", "proxy"),
        ("repository", "repository"),
        ("scheduler", "scheduler"),
    ] {
        if !log.on(&format!("source.{key}.enable")) {
            let mut m = Table::new();
            m.insert("types".into(), list(["log"]));
            m.insert("sources".into(), list([source]));
            draft.rules.push(rule(
                &format!("{}.enable is false", log.path_of(&format!("source.{key}"))),
                "drop",
                m,
            ));
        }
    }
    let monitor = log.get("enginePerformanceMonitor");
    let qix_on =
        log.on("source.qixPerf.enable") && monitor.as_ref().is_some_and(|m| m.on("enable"));
    let drop_all_qix = |draft: &mut Draft, why: &str| {
        let mut m = Table::new();
        m.insert("types".into(), list(["qix_perf"]));
        draft.rules.push(rule(why, "drop", m));
    };
    let Some(monitor) = monitor.filter(|_| qix_on) else {
        drop_all_qix(
            draft,
            "qix-perf events: source.qixPerf or enginePerformanceMonitor is not enabled",
        );
        return;
    };
    let all = monitor
        .get("monitorFilter.allApps")
        .filter(|a| a.on("enable"));
    let specific = monitor
        .get("monitorFilter.appSpecific")
        .filter(|a| a.on("enable"));
    if specific.is_some() {
        draft.not_carried(format!(
            "{}: app-specific qix-perf filters; herald keeps the qix-perf events the other rules keep: narrow a sink with match = {{ types = [\"qix_perf\"], app_ids = [...], methods = [...], object_types = [...] }}",
            monitor.path_of("monitorFilter.appSpecific")
        ));
    }
    let Some(all) = all else {
        if specific.is_none() {
            drop_all_qix(
                draft,
                "qix-perf events: neither monitorFilter.allApps nor appSpecific is enabled",
            );
        }
        return;
    };
    let apps = all.list("appExclude");
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for app in &apps {
        match (app.text("appId"), app.text("appName")) {
            (Some(id), _) if crate::parse::value::is_guid(id.as_bytes()) => ids.push(id),
            (Some(id), _) => draft.note(format!(
                "{}: {id:?} is not an app ID (a GUID); left out",
                app.path_of("appId")
            )),
            (None, Some(name)) if !placeholder(&name) => names.push(name),
            _ => {}
        }
    }
    for (key, values) in [("app_ids", ids), ("app_names", names)] {
        if !values.is_empty() {
            let mut m = Table::new();
            m.insert("types".into(), list(["qix_perf"]));
            m.insert(key.into(), list(values));
            draft
                .rules
                .push(rule(&all.path_of("appExclude"), "drop", m));
        }
    }
    for (what, all_key, exclude_key, include_key, field) in [
        (
            "objectType",
            "allObjectTypes",
            "allObjectTypesExclude",
            "someObjectTypesInclude",
            "object_types",
        ),
        (
            "method",
            "allMethods",
            "allMethodsExclude",
            "someMethodsInclude",
            "methods",
        ),
    ] {
        let Some(filter) = all.get(what) else {
            continue;
        };
        let mut m = Table::new();
        m.insert("types".into(), list(["qix_perf"]));
        if filter.on(all_key) {
            let excluded = filter.texts(exclude_key);
            if excluded.is_empty() {
                continue;
            }
            m.insert(field.into(), list(excluded));
        } else {
            let included = filter.texts(include_key);
            if included.is_empty() {
                // Butler SOS keeps no qix-perf event then.
                drop_all_qix(
                    draft,
                    &format!(
                        "{}: {all_key} is false and {include_key} is empty",
                        filter.path()
                    ),
                );
                continue;
            }
            let mut keep = Table::new();
            keep.insert(field.into(), list(included));
            m.insert("exclude".into(), Value::Table(keep));
        }
        draft.rules.push(rule(filter.path(), "drop", m));
    }
}

/// `logEvents.categorise` into `[categorise]`.
fn categorise(log: &Node, draft: &mut Draft) {
    let Some(categorise) = log.get("categorise").filter(|c| c.on("enable")) else {
        return;
    };
    let mut dropping = false;
    for item in categorise.list("rules") {
        let mut table = Table::new();
        if let Some(description) = item.text("description") {
            table.insert("description".into(), description.into());
        }
        table.insert("types".into(), list(["log"]));
        let mut levels = Vec::new();
        for level in item.texts("logLevel") {
            match level.to_ascii_uppercase().as_str() {
                known @ ("DEBUG" | "INFO" | "WARN" | "ERROR" | "FATAL") => {
                    levels.push(known.to_string())
                }
                _ => draft.note(format!(
                    "{}: level {level:?} does not occur in Sense's log events; left out",
                    item.path_of("logLevel")
                )),
            }
        }
        if !levels.is_empty() {
            table.insert("levels".into(), list(levels));
        }
        let mut filters = Vec::new();
        for filter in item.list("filter") {
            let (Some(kind), Some(value)) = (filter.text("type"), filter.text("value")) else {
                continue;
            };
            let kind = match kind.as_str() {
                "sw" => "starts_with",
                "ew" => "ends_with",
                "so" => "contains",
                other => {
                    draft.note(format!(
                        "{}: filter type {other:?} is not sw, ew or so; left out",
                        filter.path()
                    ));
                    continue;
                }
            };
            let mut f = Table::new();
            f.insert("type".into(), kind.into());
            f.insert("value".into(), value.into());
            filters.push(Value::Table(f));
        }
        if !filters.is_empty() {
            table.insert("filters".into(), Value::Array(filters));
        }
        let action = item.text("action").unwrap_or_else(|| "categorise".into());
        if action == "drop" {
            dropping = true;
        }
        table.insert(
            "action".into(),
            if action == "drop" {
                "drop"
            } else {
                "categorise"
            }
            .into(),
        );
        let categories: Table = item
            .pairs("category")
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        if !categories.is_empty() {
            table.insert("categories".into(), Value::Table(categories));
        }
        draft.rules.push(table);
    }
    if dropping {
        draft.note("categorise rules with action: drop: Butler SOS stores those events anyway (a known bug); herald drops them. Change the action to categorise where you relied on that");
    }
    if categorise.on("ruleDefault.enable") {
        for (name, value) in categorise.pairs("ruleDefault.category") {
            draft.default_categories.insert(name, value);
        }
    }
}

/// The event types whose section (`logEvents`, `userEvents`) switches
/// `switch` on (`sendToInfluxdb`, `sendToMQTT`).
fn sent_to(log: Option<&Node>, user: Option<&Node>, switch: &str) -> Vec<&'static str> {
    let on = |events: Option<&Node>| events.is_some_and(|e| e.on(&format!("{switch}.enable")));
    let mut types = Vec::new();
    if on(log) {
        types.extend(["log", "qix_perf"]);
    }
    if on(user) {
        types.extend(["session", "connection"]);
    }
    types
}

/// `influxdbConfig` into an `influxdb` sink with the Butler SOS schema.
fn influxdb(root: &Node, log: Option<&Node>, user: Option<&Node>, draft: &mut Draft) {
    let Some(config) = root.get("influxdbConfig").filter(|c| c.on("enable")) else {
        return;
    };
    let types = sent_to(log, user, "sendToInfluxdb");
    if types.is_empty() {
        draft.note(format!(
            "{} is on, but neither logEvents nor userEvents sends to it: no InfluxDB sink",
            config.path_of("enable")
        ));
        return;
    }
    let host = config
        .text("host")
        .filter(|h| !placeholder(h))
        .unwrap_or_else(|| {
            draft.note(format!(
                "{} is not set; the InfluxDB sink points at localhost",
                config.path_of("host")
            ));
            "localhost".into()
        });
    let port = config.number("port").unwrap_or(8086);
    let scheme = if config.on("tls.enable") || port == 443 {
        "https"
    } else {
        "http"
    };
    let mut sink = Table::new();
    sink.insert("type".into(), "influxdb".into());
    sink.insert("url".into(), format!("{scheme}://{host}:{port}").into());
    sink.insert("schema".into(), "butler-sos".into());
    influx_api(&config, "v1Config.", "senseops", &mut sink, draft);
    let mut m = Table::new();
    m.insert("types".into(), list(types));
    sink.insert("match".into(), Value::Table(m));
    draft.sink("influxdb", sink);
}

/// `mqttConfig` into an `mqtt` sink with the Butler SOS topics.
fn mqtt(root: &Node, log: Option<&Node>, user: Option<&Node>, draft: &mut Draft) {
    let Some(config) = root.get("mqttConfig").filter(|c| c.on("enable")) else {
        return;
    };
    let types = sent_to(log, user, "sendToMQTT");
    if types.is_empty() {
        return;
    }
    let Some(mut sink) = mqtt_sink(&config, "butler-sos", draft) else {
        return;
    };
    // `qliksense/logevent` is the preset's; another first level carries over.
    if let Some(base) = log
        .and_then(|log| log.text("sendToMQTT.baseTopic"))
        .and_then(|topic| topic.split('/').next().map(str::to_string))
        .filter(|first| !first.is_empty() && first != "qliksense")
    {
        sink.insert("base_topic".into(), base.into());
    }
    let mut m = Table::new();
    m.insert("types".into(), list(types));
    sink.insert("match".into(), Value::Table(m));
    draft.sink("mqtt", sink);
}
