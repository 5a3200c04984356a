//! `herald import`: turns a Butler SOS or Butler config (YAML) into an
//! equivalent herald config (TOML), for admins moving over.
//!
//! What maps is carried over: listen ports and addresses, the allowlist,
//! InfluxDB, MQTT, Slack, Teams, email and webhook notifications for failed
//! and aborted reloads with their rate limits, categorisation rules and
//! static tags. What herald does not do (New Relic, polling Sense's APIs,
//! custom-property lookups, Handlebars templates, ...) is listed in the
//! output's header, key by key, so nothing disappears silently. Secrets never
//! reach the output: each becomes a `${VARIABLE}` reference, and the header
//! lists the variables to set and which YAML key each value was in.
//!
//! The allowlist comes from the Sense hosts the YAML names (the source
//! allowlist if it has one, else the servers it talks to); when it names
//! none, the import allows only this machine and says so: never everyone.
//!
//! [`yaml`] reads the YAML; [`butler_sos`] and [`butler`] map each tool's
//! keys into a [`Draft`]; [`Draft::render`] writes the TOML. This module
//! touches no file: the caller reads and writes them.

use std::collections::BTreeMap;

use toml::{Table, Value};

use self::yaml::Node;

mod butler;
mod butler_sos;
mod yaml;

pub use yaml::YamlError;

/// Which tool's config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Butler SOS (log and user events).
    ButlerSos,
    /// Butler (task events and alerts).
    Butler,
}

impl Tool {
    /// The tool's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::ButlerSos => "Butler SOS",
            Tool::Butler => "Butler",
        }
    }
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The herald config, its header comments included.
    pub toml: String,
    /// The environment variables the config reads.
    pub variables: Vec<Variable>,
    /// What was not carried over, one line each.
    pub not_carried_over: Vec<String>,
    /// How keys were read, where the admin should know, one line each.
    pub notes: Vec<String>,
}

/// An environment variable the imported config reads instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Its name, e.g. `INFLUX_TOKEN`.
    pub name: String,
    /// The YAML key the value was in.
    pub from: String,
}

/// Reads `yaml` as `tool`'s config and writes the herald config for it;
/// `source` names the file in the output's header.
///
/// # Errors
///
/// When the text is not YAML, or not the tool's config (its top-level key
/// is missing).
pub fn import(tool: Tool, yaml: &str, source: &str) -> Result<Imported, YamlError> {
    let document = yaml::parse(yaml)?;
    let mut draft = Draft::default();
    match tool {
        Tool::ButlerSos => {
            let root = document.key("Butler-SOS").ok_or_else(|| {
                YamlError::new("no top-level `Butler-SOS:` key: is this a Butler SOS config?")
            })?;
            butler_sos::map(&root, &mut draft);
        }
        Tool::Butler => {
            let root = document.key("Butler").ok_or_else(|| {
                YamlError::new("no top-level `Butler:` key: is this a Butler config?")
            })?;
            butler::map(&root, &mut draft);
        }
    }
    Ok(draft.render(tool, source))
}

/// The herald config being built.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    listen: Vec<String>,
    allow: Vec<String>,
    max_per_source_per_second: Option<u64>,
    tags: BTreeMap<String, String>,
    rules: Vec<Table>,
    default_categories: BTreeMap<String, String>,
    sinks: Vec<(String, Table)>,
    variables: Vec<Variable>,
    not_carried_over: Vec<String>,
    notes: Vec<String>,
}

impl Draft {
    /// Listens on `host:port` (a host name or placeholder becomes `0.0.0.0`).
    fn listen(&mut self, host: Option<&str>, port: u16, key: &str) {
        let address = match host.map(str::trim) {
            Some(host) if host.parse::<std::net::IpAddr>().is_ok() => host.to_string(),
            Some(host) if !host.is_empty() && !placeholder(host) => {
                self.note(format!(
                    "{key} is the host name {host:?}; herald binds to addresses, so it listens on all of them (0.0.0.0:{port}): put this machine's address in ingest.listen to narrow it"
                ));
                "0.0.0.0".into()
            }
            _ => "0.0.0.0".into(),
        };
        let entry = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        if !self.listen.contains(&entry) {
            self.listen.push(entry);
        }
    }

    /// Allows datagrams from `host` (a Sense node's address or name; a port,
    /// a URL scheme and placeholders are dropped). False when it was no host.
    fn allow(&mut self, host: &str) -> bool {
        let host = host.trim();
        let host = host.split_once("://").map_or(host, |(_, rest)| rest);
        let host = host.split(['/', '?']).next().unwrap_or("");
        // `name:4747`, but not an IPv6 address.
        let host = match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => host,
        };
        if host.is_empty()
            || placeholder(host)
            || crate::ingest::allowlist::AllowEntry::parse(host).is_err()
        {
            return false;
        }
        if !self
            .allow
            .iter()
            .any(|known| known.eq_ignore_ascii_case(host))
        {
            self.allow.push(host.to_string());
        }
        true
    }

    /// A secret: records the variable that replaces it; the `${NAME}` text.
    fn secret(&mut self, name: &str, from: &str) -> String {
        if !self.variables.iter().any(|v| v.name == name) {
            self.variables.push(Variable {
                name: name.into(),
                from: from.into(),
            });
        }
        format!("${{{name}}}")
    }

    fn sink(&mut self, name: &str, table: Table) {
        self.sinks.push((name.to_string(), table));
    }

    /// Something of the YAML that has no place in herald.
    fn not_carried(&mut self, line: impl Into<String>) {
        self.not_carried_over.push(line.into());
    }

    /// Something the admin should know about how a key was read.
    fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// The herald config: header comments, then the tables.
    fn render(mut self, tool: Tool, source: &str) -> Imported {
        let mut ingest = Table::new();
        if self.listen.is_empty() {
            self.note("the YAML enables no UDP server; herald listens on 0.0.0.0:9996 (log events): change ingest.listen as needed");
            self.listen.push("0.0.0.0:9996".into());
        }
        let allow_open = self.allow.is_empty();
        if allow_open {
            self.allow.push("127.0.0.1".into());
        }
        ingest.insert("listen".into(), strings(&self.listen));
        ingest.insert("allow".into(), strings(&self.allow));
        if let Some(limit) = self.max_per_source_per_second {
            ingest.insert(
                "max_datagrams_per_source_per_second".into(),
                Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
            );
        }
        let mut root = Table::new();
        root.insert("ingest".into(), Value::Table(ingest));
        if !self.tags.is_empty() {
            root.insert("tags".into(), map(&self.tags));
        }
        if !self.rules.is_empty() || !self.default_categories.is_empty() {
            let mut categorise = Table::new();
            if !self.default_categories.is_empty() {
                categorise.insert("default_categories".into(), map(&self.default_categories));
            }
            if !self.rules.is_empty() {
                categorise.insert(
                    "rules".into(),
                    Value::Array(
                        std::mem::take(&mut self.rules)
                            .into_iter()
                            .map(Value::Table)
                            .collect(),
                    ),
                );
            }
            root.insert("categorise".into(), Value::Table(categorise));
        }
        if self.sinks.is_empty() {
            self.note("no destination was enabled in the YAML; herald writes every event to data/events.jsonl");
            let mut file = Table::new();
            file.insert("type".into(), "file".into());
            file.insert("path".into(), "data/events.jsonl".into());
            self.sinks.push(("events".into(), file));
        }
        let mut sinks = Table::new();
        for (name, table) in self.sinks {
            sinks.insert(name, Value::Table(table));
        }
        root.insert("sinks".into(), Value::Table(sinks));

        let mut out = format!(
            "# herald config imported from the {} config {source} by `herald import`.\n\
             # Review it, set the environment variables below, then check it with\n\
             # `herald check --config <this file>`.\n",
            tool.name()
        );
        if allow_open {
            out.push_str(
                "#\n# ingest.allow: the YAML names no Sense host herald could use, so only this\n\
                 # machine may send. Add the address or name of every Sense node, e.g.\n\
                 # allow = [\"10.1.0.11\", \"sense-node2.corp.local\"].\n",
            );
        }
        if !self.variables.is_empty() {
            out.push_str("#\n# Environment variables to set (their values were in the YAML; herald reads\n# secrets from the environment, never from this file):\n");
            let width = self
                .variables
                .iter()
                .map(|v| v.name.len())
                .max()
                .unwrap_or(0);
            for variable in &self.variables {
                out.push_str(&format!(
                    "#   {:width$}  from {}\n",
                    variable.name, variable.from
                ));
            }
        }
        for (title, lines) in [
            ("Not carried over", &self.not_carried_over),
            ("Notes", &self.notes),
        ] {
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("#\n# {title}:\n"));
            for line in lines {
                out.push_str(&comment_wrapped(line));
            }
        }
        out.push('\n');
        write_tables(&mut out, &root);
        Imported {
            toml: out,
            variables: self.variables,
            not_carried_over: self.not_carried_over,
            notes: self.notes,
        }
    }
}

/// Writes `root` as TOML the way a person would: a section per table (`type`
/// first in a sink, `listen` first in `[ingest]`), `[[categorise.rules]]`
/// for the rules, and small tables such as `match` inline.
fn write_tables(out: &mut String, root: &Table) {
    const FIRST: [&str; 3] = ["type", "listen", "description"];
    fn section(out: &mut String, header: &str, table: &Table) {
        if table.is_empty() && !header.starts_with("[[") {
            return;
        }
        out.push_str(header);
        out.push('\n');
        let mut keys: Vec<&String> = table.keys().collect();
        keys.sort_by_key(|key| {
            (
                !FIRST.contains(&key.as_str()),
                key.as_str() == "match",
                key.as_str(),
            )
        });
        for key in keys {
            let key_text = Value::String(key.clone()).to_string();
            // Bare keys where TOML allows them.
            let key_text = if key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                key.clone()
            } else {
                key_text
            };
            out.push_str(&format!("{key_text} = {}\n", table[key]));
        }
        out.push('\n');
    }
    let table_of = |value: &Value| value.as_table().cloned().unwrap_or_default();
    if let Some(ingest) = root.get("ingest") {
        section(out, "[ingest]", &table_of(ingest));
    }
    if let Some(tags) = root.get("tags") {
        section(out, "[tags]", &table_of(tags));
    }
    if let Some(categorise) = root.get("categorise") {
        let mut categorise = table_of(categorise);
        let rules = categorise.remove("rules");
        section(out, "[categorise]", &categorise);
        for rule in rules
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            section(out, "[[categorise.rules]]", &table_of(rule));
        }
    }
    if let Some(sinks) = root.get("sinks").and_then(Value::as_table) {
        for (name, sink) in sinks {
            section(out, &format!("[sinks.{name}]"), &table_of(sink));
        }
    }
}

/// `# - line`, wrapped at about 78 columns.
fn comment_wrapped(line: &str) -> String {
    let mut out = String::new();
    let mut current = String::from("#   -");
    for word in line.split_whitespace() {
        if current.len() + 1 + word.len() > 78 && current.len() > 6 {
            out.push_str(&current);
            out.push('\n');
            current = String::from("#    ");
        }
        current.push(' ');
        current.push_str(word);
    }
    out.push_str(&current);
    out.push('\n');
    out
}

/// Whether a value is one of the templates' placeholders (`<IP or FQDN>`).
fn placeholder(value: &str) -> bool {
    value.contains('<') || value.contains('>')
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| Value::String(s.clone())).collect())
}

fn map(pairs: &BTreeMap<String, String>) -> Value {
    Value::Table(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A name safe in an environment variable: `A-Z0-9_`, upper case.
fn env_name(parts: &[&str]) -> String {
    parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The InfluxDB API keys of an `influxdb` sink from a `version` and its
/// `v1Config` / `v2Config` / `v3Config` (both tools name them alike; Butler's
/// older files keep v1's keys at the top, `v1` is then `""`).
pub(super) fn influx_api(
    config: &Node,
    v1: &str,
    database: &str,
    sink: &mut Table,
    draft: &mut Draft,
) {
    let version = config.number("version").unwrap_or(1);
    if version == 1 {
        sink.insert("api".into(), "v1".into());
        let name = config.text(&format!("{v1}dbName"));
        sink.insert(
            "database".into(),
            name.unwrap_or_else(|| database.into()).into(),
        );
        if let Some(policy) = config.text(&format!("{v1}retentionPolicy.name")) {
            sink.insert("retention_policy".into(), policy.into());
        }
        if config.on(&format!("{v1}auth.enable")) {
            if let Some(user) = config.text(&format!("{v1}auth.username")) {
                sink.insert("username".into(), user.into());
            }
            let from = config.path_of(&format!("{v1}auth.password"));
            sink.insert(
                "password".into(),
                draft.secret("INFLUX_PASSWORD", &from).into(),
            );
        }
        return;
    }
    // InfluxDB 3 takes the v2 write API, its database as the bucket.
    let (section, bucket, org) = if version == 2 {
        (
            "v2Config",
            config.text("v2Config.bucket"),
            config.text("v2Config.org"),
        )
    } else {
        ("v3Config", config.text("v3Config.database"), None)
    };
    sink.insert("api".into(), "v2".into());
    sink.insert(
        "bucket".into(),
        bucket.unwrap_or_else(|| database.into()).into(),
    );
    sink.insert("org".into(), org.unwrap_or_else(|| "herald".into()).into());
    let from = config.path_of(&format!("{section}.token"));
    sink.insert("token".into(), draft.secret("INFLUX_TOKEN", &from).into());
}

/// An `mqtt` sink for the broker of `config` (`brokerHost`, `brokerPort`)
/// with `preset`'s topics; `None`, with a note, without a broker.
pub(super) fn mqtt_sink(config: &Node, preset: &str, draft: &mut Draft) -> Option<Table> {
    let Some(host) = config.text("brokerHost").filter(|h| !placeholder(h)) else {
        draft.note(format!(
            "{} is not set: no MQTT sink",
            config.path_of("brokerHost")
        ));
        return None;
    };
    let mut sink = Table::new();
    sink.insert("type".into(), "mqtt".into());
    sink.insert("host".into(), host.into());
    if let Some(port) = config
        .number("brokerPort")
        .and_then(|p| i64::try_from(p).ok())
    {
        sink.insert("port".into(), Value::Integer(port));
    }
    sink.insert("preset".into(), preset.into());
    draft.note("MQTT: Butler's tools connect without TLS or a password; so does this sink. Set tls = true, username and password = \"${MQTT_PASSWORD}\" once the broker offers them");
    Some(sink)
}

/// A UDP server's source allowlist (when validation is on) and its rate
/// limit, which is for all senders together in Butler's tools.
pub(super) fn udp_server(server: &Node, tool: &str, draft: &mut Draft) {
    if server.on("enableSourceValidation") {
        for source in server.texts("allowedSources") {
            if !draft.allow(&source) {
                draft.note(format!(
                    "{}: {source:?} is not an address or host name; left out of ingest.allow",
                    server.path_of("allowedSources")
                ));
            }
        }
    }
    if server.on("rateLimit.enable")
        && let Some(per_minute) = server.number("rateLimit.maxMessagesPerMinute")
    {
        let per_second = per_minute.div_ceil(60).max(1);
        draft.max_per_source_per_second = Some(
            draft
                .max_per_source_per_second
                .map_or(per_second, |known| known.max(per_second)),
        );
        draft.note(format!(
            "{}: {tool} limits all senders together to {per_minute} a minute; herald limits each sender to {per_second} a second (ingest.max_datagrams_per_source_per_second)",
            server.path_of("rateLimit")
        ));
    }
}

/// A categorisation rule: `description`, `action` and a `match` table.
pub(super) fn rule(description: &str, action: &str, matching: Table) -> Table {
    let mut table = Table::new();
    table.insert("description".into(), description.into());
    table.insert("action".into(), action.into());
    table.insert("match".into(), Value::Table(matching));
    table
}

pub(super) fn list<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

#[cfg(test)]
mod tests;
