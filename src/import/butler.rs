//! Butler's config (`Butler:`) into a [`Draft`]: the task-event server, its
//! source allowlist, rate limit and de-duplication, and the alerts for failed
//! and aborted reloads (Slack, Teams, email, webhooks, MQTT) with their rate
//! limits, plus InfluxDB.

use toml::{Table, Value};

use super::yaml::Node;
use super::{Draft, env_name, influx_api, list, mqtt_sink, placeholder, udp_server};

/// What Butler does that herald does not, by key (reported when enabled).
const NOT_CARRIED: &[(&str, &str)] = &[
    ("scheduler", "Butler's own task scheduler"),
    ("keyValueStore", "the key-value store"),
    ("serviceMonitor", "Windows service monitoring"),
    (
        "qlikSenseVersion.versionMonitor",
        "Sense version monitoring",
    ),
    (
        "qlikSenseLicense.serverLicenseMonitor",
        "server licence monitoring",
    ),
    (
        "qlikSenseLicense.licenseMonitor",
        "access licence monitoring",
    ),
    (
        "qlikSenseLicense.licenseRelease",
        "releasing unused licences",
    ),
    (
        "restServerConfig",
        "the REST API (starting tasks, key-value store, ...)",
    ),
    ("incidentTool.signl4", "Signl4 incidents"),
    (
        "incidentTool.newRelic",
        "New Relic incidents: herald has no New Relic destination",
    ),
    ("qlikSenseCloud", "Qlik Cloud events"),
    ("heartbeat", "heartbeat calls to a monitoring URL"),
    (
        "uptimeMonitor",
        "uptime reports: herald's figures are at /metrics and /health",
    ),
    (
        "configVisualisation",
        "the config web page: herald's status page at / shows the effective config",
    ),
    (
        "dockerHealthCheck",
        "the Docker health endpoint: use /health",
    ),
    (
        "scriptLog.storeOnDisk.clientManaged.reloadTaskFailure",
        "storing script logs: herald does not read the repository",
    ),
];

/// The two kinds of reload alert Butler sends.
const ALERTS: [(&str, &str, &str); 2] = [
    ("reloadTaskFailure", "failed", "failed"),
    ("reloadTaskAborted", "aborted", "aborted"),
];

pub(super) fn map(root: &Node, draft: &mut Draft) {
    let server = root.get("udpServerConfig").filter(|s| s.on("enable"));
    let mut dedupe = None;
    if let Some(server) = &server {
        let port = server
            .number("portTaskFailure")
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(9998);
        let host = server.text("serverHost");
        draft.listen(host.as_deref(), port, &server.path_of("serverHost"));
        udp_server(server, "Butler", draft);
        if server.on("deduplication.enable") {
            dedupe = server
                .number("deduplication.ttlMinutes")
                .map(|minutes| minutes.saturating_mul(60));
        }
    } else {
        draft.note("udpServerConfig.enable is false: Butler receives no task events; herald listens on 0.0.0.0:9998 for them");
        draft.listen(None, 9998, "udpServerConfig");
    }
    // Without a source allowlist: the Sense servers Butler talks to.
    if draft.allow.is_empty() {
        for key in ["configQRS.host", "configEngine.host", "configProxy.host"] {
            if let Some(host) = root.text(key) {
                draft.allow(&host);
            }
        }
    }
    let sense_url = root
        .text("qlikSenseUrls.qmc")
        .or_else(|| root.text("qlikSenseUrls.hub"))
        .filter(|url| !placeholder(url))
        .and_then(|url| {
            let (scheme, rest) = url.split_once("://")?;
            let host = rest.split('/').next()?;
            (!host.is_empty()).then(|| format!("{scheme}://{host}"))
        });
    let alert = Alert { dedupe, sense_url };
    chat(root, "slackNotification", "slack", &alert, draft);
    chat(root, "teamsNotification", "teams", &alert, draft);
    email(root, &alert, draft);
    webhooks(root, &alert, draft);
    mqtt(root, draft);
    influxdb(root, draft);
    for (key, what) in NOT_CARRIED {
        if root.get(key).is_some_and(|node| node.on("enable")) {
            draft.not_carried(format!("{}: {what}", root.path_of(key)));
        }
    }
    for event in [
        "reloadTaskSuccess",
        "distributeTaskSuccess",
        "distributeTaskFailure",
        "preloadTaskSuccess",
        "preloadTaskFailure",
        "serviceStopped",
        "serviceStarted",
    ] {
        if root.on(&format!("emailNotification.{event}.enable")) {
            draft.not_carried(format!(
                "{}: email for {event}; herald's email sink can take these too: copy the email sink and set its match",
                root.path_of(&format!("emailNotification.{event}"))
            ));
        }
    }
}

/// What every alert sink of the import shares.
struct Alert {
    dedupe: Option<u64>,
    sense_url: Option<String>,
}

impl Alert {
    /// The common keys of an alert sink for `outcome`, rate-limited by
    /// `node.rateLimit`.
    fn table(&self, kind: &str, outcome: &str, node: &Node) -> Table {
        let mut sink = Table::new();
        sink.insert("type".into(), kind.into());
        let mut m = Table::new();
        m.insert("types".into(), list(["task"]));
        m.insert("outcomes".into(), list([outcome]));
        sink.insert("match".into(), Value::Table(m));
        sink.insert(
            "rate_limit_window_s".into(),
            integer(node.number("rateLimit").unwrap_or(300)),
        );
        if let Some(seconds) = self.dedupe {
            sink.insert("dedupe_window_s".into(), integer(seconds));
        }
        if let Some(url) = &self.sense_url {
            sink.insert("sense_url".into(), url.clone().into());
        }
        sink
    }
}

/// Slack or Teams: one sink per enabled alert, each with its own webhook.
fn chat(root: &Node, key: &str, kind: &str, alert: &Alert, draft: &mut Draft) {
    let Some(config) = root.get(key).filter(|c| c.on("enable")) else {
        return;
    };
    for (event, outcome, name) in ALERTS {
        let Some(node) = config.get(event).filter(|n| n.on("enable")) else {
            continue;
        };
        if node.text("webhookURL").is_none_or(|url| placeholder(&url)) {
            draft.note(format!(
                "{}: no webhook URL; no {kind} sink",
                node.path_of("webhookURL")
            ));
            continue;
        }
        let mut sink = alert.table(kind, outcome, &node);
        let variable = env_name(&[kind, name, "webhook_url"]);
        let url = draft.secret(&variable, &node.path_of("webhookURL"));
        sink.insert("webhook_url".into(), url.into());
        draft.sink(&format!("{kind}-{name}"), sink);
        if node.text("templateFile").is_some() || node.text("basicMsgTemplate").is_some() {
            draft.not_carried(format!(
                "{}: Handlebars message templates: herald sends its own message (task, app, host, time, message, links); title_template and text_template change it",
                node.path()
            ));
        }
        if kind == "slack" && (node.text("channel").is_some() || node.text("fromUser").is_some()) {
            draft.note(format!(
                "{}: channel, fromUser and iconEmoji are not carried over: Slack app webhooks post to the channel they were made for",
                node.path()
            ));
        }
    }
}

/// Email alerts: one sink per enabled alert.
fn email(root: &Node, alert: &Alert, draft: &mut Draft) {
    let Some(config) = root.get("emailNotification").filter(|c| c.on("enable")) else {
        return;
    };
    let smtp = config.get("smtp");
    for (event, outcome, name) in ALERTS {
        let Some(node) = config.get(event).filter(|n| n.on("enable")) else {
            continue;
        };
        let (Some(smtp), Some(host)) = (
            &smtp,
            smtp.as_ref()
                .and_then(|s| s.text("host"))
                .filter(|h| !placeholder(h)),
        ) else {
            draft.note(format!(
                "{}: no SMTP host; no email sink",
                config.path_of("smtp.host")
            ));
            continue;
        };
        let recipients: Vec<String> = node
            .texts("recipients")
            .into_iter()
            .filter(|r| !placeholder(r) && r.contains('@'))
            .collect();
        let Some(from) = node.text("fromAddress").filter(|f| f.contains('@')) else {
            draft.note(format!(
                "{}: no sender address; no email sink",
                node.path_of("fromAddress")
            ));
            continue;
        };
        if recipients.is_empty() {
            draft.note(format!(
                "{}: no recipients; no email sink",
                node.path_of("recipients")
            ));
            continue;
        }
        let mut sink = alert.table("email", outcome, &node);
        sink.remove("rate_limit_window_s");
        sink.insert(
            "per_recipient_rate_limit_s".into(),
            integer(node.number("rateLimit").unwrap_or(600)),
        );
        sink.insert("host".into(), host.into());
        if let Some(port) = smtp.number("port") {
            sink.insert("port".into(), integer(port));
        }
        let security = if smtp.on("secure") {
            "tls"
        } else if smtp.on("tls.ignoreTLS") {
            draft.note(format!(
                "{}: Butler does not encrypt the SMTP connection; neither does this sink (security = \"none\"): use starttls or tls if the server offers it",
                smtp.path_of("tls.ignoreTLS")
            ));
            "none"
        } else {
            "starttls"
        };
        sink.insert("security".into(), security.into());
        if smtp.on("auth.enable") {
            if let Some(user) = smtp.text("auth.user") {
                sink.insert("username".into(), user.into());
            }
            let password = draft.secret("SMTP_PASSWORD", &smtp.path_of("auth.password"));
            sink.insert("password".into(), password.into());
        }
        sink.insert("from".into(), from.into());
        sink.insert("to".into(), list(recipients));
        draft.sink(&format!("email-{name}"), sink);
        if node.on("alertEnableByCustomProperty.enable") || node.on("appOwnerAlert.enable") {
            draft.not_carried(format!(
                "{}: alertEnableByCustomProperty and appOwnerAlert, recipients chosen by task custom property or app owner (herald does not read the repository): every alert goes to the listed recipients; limit tasks with match = {{ task_names = [...] }}",
                node.path()
            ));
        }
        if node.text("htmlTemplateFile").is_some() || node.text("subject").is_some() {
            draft.not_carried(format!(
                "{}: the Handlebars subject and body: herald sends its own (subject_template changes the subject)",
                node.path()
            ));
        }
    }
    if smtp.as_ref().is_some_and(|s| {
        s.get("tls.rejectUnauthorized").is_some() && !s.on("tls.rejectUnauthorized")
    }) {
        draft.note("emailNotification.smtp.tls.rejectUnauthorized is false: herald always verifies the server's certificate (add its CA with tls_ca_file)");
    }
}

/// Outgoing webhooks: one sink per webhook of each enabled alert.
fn webhooks(root: &Node, alert: &Alert, draft: &mut Draft) {
    let Some(config) = root.get("webhookNotification").filter(|c| c.on("enable")) else {
        return;
    };
    for (event, outcome, name) in ALERTS {
        let Some(node) = config.get(event) else {
            continue;
        };
        for (i, hook) in node.list("webhooks").iter().enumerate() {
            if hook.text("webhookURL").is_none_or(|u| placeholder(&u)) {
                continue;
            }
            let method = hook
                .text("httpMethod")
                .unwrap_or_else(|| "POST".into())
                .to_ascii_uppercase();
            if method == "GET" {
                draft.not_carried(format!(
                    "{}: a GET webhook; herald's webhooks POST or PUT the event as JSON",
                    hook.path()
                ));
                continue;
            }
            let mut sink = alert.table("webhook", outcome, &node);
            let variable = env_name(&["webhook", name, &(i + 1).to_string(), "url"]);
            let url = draft.secret(&variable, &hook.path_of("webhookURL"));
            sink.insert("url".into(), url.into());
            sink.insert("method".into(), method.into());
            if hook.on("cert.enable")
                && let Some(ca) = hook.text("cert.certCA").filter(|c| !placeholder(c))
            {
                if std::path::Path::new(&ca).is_file() {
                    sink.insert("tls_ca_file".into(), ca.into());
                } else {
                    draft.note(format!(
                        "{}: the CA file {ca:?} is not on this machine; copy it here and set tls_ca_file on the sink",
                        hook.path_of("cert.certCA")
                    ));
                }
            }
            draft.sink(&format!("webhook-{name}-{}", i + 1), sink);
        }
    }
    if !draft
        .sinks
        .iter()
        .any(|(name, _)| name.starts_with("webhook-"))
    {
        return;
    }
    draft.note("webhooks: herald sends the event as EVENTS.md describes it (task_name, app_id, message, ...), not Butler's field names (taskName, appId, logMessage, ...): adjust the receivers");
}

/// `mqttConfig` into an `mqtt` sink with Butler's topics.
fn mqtt(root: &Node, draft: &mut Draft) {
    let Some(config) = root.get("mqttConfig").filter(|c| c.on("enable")) else {
        return;
    };
    let Some(mut sink) = mqtt_sink(&config, "butler", draft) else {
        return;
    };
    if let Some(first) = config
        .text("taskFailureTopic")
        .and_then(|topic| topic.split('/').next().map(str::to_string))
        .filter(|first| !first.is_empty() && first != "qliksense")
    {
        sink.insert("base_topic".into(), first.into());
    }
    let mut m = Table::new();
    m.insert("types".into(), list(["task"]));
    m.insert("outcomes".into(), list(["failed", "aborted"]));
    sink.insert("match".into(), Value::Table(m));
    draft.sink("mqtt", sink);
    if config.on("azureEventGrid.enable") {
        draft.note("mqttConfig.azureEventGrid: set tls = true, tls_client_cert_file and tls_client_key_file on the mqtt sink, with the files Butler used");
    }
}

/// `influxDb` into an `influxdb` sink with Butler's measurement names.
fn influxdb(root: &Node, draft: &mut Draft) {
    let Some(config) = root.get("influxDb").filter(|c| c.on("enable")) else {
        return;
    };
    let mut outcomes = Vec::new();
    if config.on("reloadTaskFailure.enable") {
        outcomes.push("failed");
    }
    if config.on("reloadTaskSuccess.enable") {
        outcomes.push("success");
        if !config.on("reloadTaskSuccess.allReloadTasks.enable") {
            draft.not_carried(format!(
                "{}: successful reloads chosen by custom property: herald stores every successful reload (narrow with match task_names)",
                config.path_of("reloadTaskSuccess.byCustomProperty")
            ));
        }
    }
    if outcomes.is_empty() {
        return;
    }
    let host = config
        .text("hostIP")
        .filter(|h| !placeholder(h))
        .unwrap_or_else(|| "localhost".into());
    let port = config.number("hostPort").unwrap_or(8086);
    let mut sink = Table::new();
    sink.insert("type".into(), "influxdb".into());
    sink.insert("url".into(), format!("http://{host}:{port}").into());
    sink.insert("schema".into(), "butler-sos".into());
    // Older files keep v1's keys at the top.
    let v1 = if config.get("v1Config").is_some() {
        "v1Config."
    } else {
        ""
    };
    influx_api(&config, v1, "butler", &mut sink, draft);
    let mut m = Table::new();
    m.insert("types".into(), list(["task"]));
    m.insert("outcomes".into(), list(outcomes));
    sink.insert("match".into(), Value::Table(m));
    draft.sink("influxdb", sink);
    draft.note("influxdb: Butler adds the script log and execution details from the repository to each point; herald writes what the task event carries");
}

fn integer(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}
