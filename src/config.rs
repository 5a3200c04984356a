//! The configuration file: [`Config`] assembles each stage's own config struct,
//! loads it from TOML and validates it.
//!
//! Validation is pure (no sockets, no DNS, no files) and names the key and the fix
//! in every message; `herald check` adds the checks that need the machine
//! (resolving allowlist host names). Every struct denies unknown keys, so a typo
//! stops start-up with the list of valid keys instead of being ignored.
//!
//! Loading also builds the config's [`Redactor`]: every secret's value and the
//! secret parts of every HTTP sink's URL. Validation messages and the effective
//! config (`herald check`) pass through it; the command installs it for every
//! other output ([`crate::redact`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::deadletter::DeadLetterConfig;
use crate::ingest::IngestConfig;
use crate::ingest::allowlist::AllowEntry;
use crate::parse::ParseConfig;
use crate::redact::Redactor;
use crate::route::{CategoriseConfig, Categoriser};
use crate::sinks::{SinkConfig, SinkKind};

/// Where herald looks for its config when none is given.
pub const DEFAULT_PATH: &str = "config/herald.toml";

/// Most sinks one herald can have (routing keeps a bit set per event).
pub const MAX_SINKS: usize = 64;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where herald keeps its state: each disk-buffered sink's buffer under
    /// `buffer/<sink>/`. Relative to the working directory, like every path.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// UDP listeners and the allowlist.
    pub ingest: IngestConfig,
    /// The metrics and health endpoint.
    #[serde(default)]
    pub http: HttpConfig,
    /// How datagram text becomes event fields.
    #[serde(default)]
    pub parse: ParseConfig,
    /// Worker threads and queues between the stages.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// herald's own log.
    #[serde(default)]
    pub log: LogConfig,
    /// The Prometheus event metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where undeliverable datagrams and events are kept; absent: they are only counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterConfig>,
    /// Categorisation rules.
    #[serde(default)]
    pub categorise: CategoriseConfig,
    /// Static tags added to every event (`tags` in the event JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The sinks, by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Removes this config's secrets from output; built by [`Config::from_toml`].
    #[serde(skip)]
    redactor: Arc<Redactor>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// The HTTP endpoint serving `/metrics` and `/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to serve on. Loopback by default: expose it deliberately.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Set to `false` to serve nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bearer token clients must send (`Authorization: Bearer <token>`) for
    /// `/health`, and for `/metrics` unless `metrics_public`. Required when
    /// `listen` is not a loopback address. A secret: write `"${HERALD_HTTP_TOKEN}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::secret::Secret>,
    /// Whether `/metrics` is served without the token (Prometheus scrapers often
    /// send none).
    #[serde(default = "default_true")]
    pub metrics_public: bool,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9995))
}

fn default_true() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            enabled: true,
            token: None,
            metrics_public: true,
        }
    }
}

/// Threads and queues between ingest and the sinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Parse and route threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches (one socket read each) waiting for a worker before new ones are dropped.
    #[serde(default = "default_queue_batches")]
    pub queue_batches: usize,
    /// Bytes of datagrams waiting for a worker before new ones are dropped
    /// (the same drop, counted the same way, as a full `queue_batches`).
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
    /// How long shutdown may take to drain queues and flush sinks, in milliseconds.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_workers() -> usize {
    2
}

fn default_queue_batches() -> usize {
    4096
}

fn default_queue_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: default_workers(),
            queue_batches: default_queue_batches(),
            queue_bytes: default_queue_bytes(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

/// The Prometheus event metrics on `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Distinct Sense host names that get their own `host` label on
    /// `herald_events_total`; events from further hosts count as `"other"`.
    #[serde(default = "default_max_hosts")]
    pub max_hosts: usize,
}

fn default_max_hosts() -> usize {
    50
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_hosts: default_max_hosts(),
        }
    }
}

/// herald's own log, written to standard error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter such as
    /// `"info,herald::ingest=debug"`. The `HERALD_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (readable) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

/// Format of herald's own log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A config that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {}: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key and the valid keys).
        message: String,
    },
    /// A key has a value herald cannot use.
    #[error("invalid config file {}: {key}: {problem}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `ingest.allow[2]`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let syntax = |err: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_string(),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        expand_strings(&mut table, "").map_err(|(key, problem)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        })?;
        let (config, secrets) =
            crate::secret::collect(|| Config::deserialize(toml::Value::Table(table)));
        let mut config = match config {
            Ok(config) => config,
            // Reading the text again gives the same error with its line and column.
            Err(err) => return Err(syntax(toml::from_str::<Config>(text).err().unwrap_or(err))),
        };
        let redactor = config
            .build_redactor(&secrets)
            .map_err(|problem| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "sinks".into(),
                problem,
            })?;
        config.redactor = Arc::new(redactor);
        config
            .validate()
            .map_err(|(key, problem)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                problem: config.redactor.redact(&problem).into_owned(),
            })?;
        Ok(config)
    }

    /// The redactor for the values `secrets` (every [`crate::secret::Secret`]
    /// read) and the URL of every HTTP sink.
    fn build_redactor(&self, secrets: &[String]) -> Result<Redactor, String> {
        let mut builder = Redactor::builder();
        for value in secrets {
            builder.secret(value);
        }
        for sink in self.sinks.values() {
            if let Some((_, url)) = sink.kind.http_url() {
                builder.url(url);
            }
        }
        builder.build()
    }

    /// What removes this config's secrets from output; the command installs it
    /// with [`crate::redact::install`].
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone()
    }

    /// Checks what types alone cannot; returns the key and the problem.
    fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, problem: String| Err((key.to_string(), problem));
        let ingest = &self.ingest;
        if ingest.listen.is_empty() {
            return invalid(
                "ingest.listen",
                "no address to listen on; add e.g. listen = [\"0.0.0.0:9996\", \"0.0.0.0:9997\", \"0.0.0.0:9998\"]".into(),
            );
        }
        if ingest.allow.is_empty() {
            return invalid("ingest.allow", EMPTY_ALLOWLIST.into());
        }
        for (i, entry) in ingest.allow.iter().enumerate() {
            if let Err(problem) = AllowEntry::parse(entry) {
                return invalid(&format!("ingest.allow[{i}]"), problem);
            }
        }
        if !(1..=65_535).contains(&ingest.max_datagram_bytes) {
            return invalid(
                "ingest.max_datagram_bytes",
                format!(
                    "{} is out of range; use 1 to 65535 (65507 is the IPv4 maximum)",
                    ingest.max_datagram_bytes
                ),
            );
        }
        if ingest.recv_batch == 0 || ingest.recv_batch > 1024 {
            return invalid(
                "ingest.recv_batch",
                "use 1 to 1024 (64 is a good value)".into(),
            );
        }
        if self.http.enabled && !self.http.listen.ip().is_loopback() && self.http.token.is_none() {
            return invalid(
                "http.listen",
                format!(
                    "{} can be reached from other machines, and /health shows every sink's state and last error; \
                     set http.token = \"${{HERALD_HTTP_TOKEN}}\" (clients then send Authorization: Bearer <token>), \
                     or listen on 127.0.0.1",
                    self.http.listen
                ),
            );
        }
        if self
            .http
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return invalid(
                "http.token",
                "is shorter than 16 characters; use a long random value, e.g. from `openssl rand -hex 32`".into(),
            );
        }
        if ingest.allow_refresh_seconds == 0 {
            return invalid("ingest.allow_refresh_seconds", "must be at least 1".into());
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(
                "log.level",
                format!(
                    "{:?} is not a log filter ({err}); use error, warn, info, debug or trace",
                    self.log.level
                ),
            );
        }
        if self.pipeline.workers == 0 || self.pipeline.workers > 64 {
            return invalid(
                "pipeline.workers",
                "use 1 to 64 (one per core is plenty)".into(),
            );
        }
        if self.pipeline.queue_batches == 0 {
            return invalid("pipeline.queue_batches", "must be at least 1".into());
        }
        if self.pipeline.queue_bytes < MIN_QUEUE_BYTES {
            return invalid(
                "pipeline.queue_bytes",
                format!(
                    "must be at least {MIN_QUEUE_BYTES} (1 MiB); the default is 67108864 (64 MiB)"
                ),
            );
        }
        if let Err(err) = crate::parse::Parser::new(&self.parse) {
            let key = self
                .parse
                .host_time_zones
                .iter()
                .find(|(_, zone)| crate::parse::time_zone(zone).is_err())
                .map_or("parse.time_zone".to_string(), |(host, _)| {
                    format!("parse.host_time_zones.{host}")
                });
            return invalid(&key, err.to_string());
        }
        if self.parse.max_text_bytes == 0 || self.parse.max_field_bytes == 0 {
            return invalid(
                "parse.max_text_bytes",
                "field caps must be at least 1 byte".into(),
            );
        }
        if let Err(err) = Categoriser::new(&self.categorise) {
            let detail = err.source.to_string();
            return invalid(
                &format!(
                    "categorise.rules[{}].filters[{}].value",
                    err.rule, err.filter
                ),
                format!(
                    "invalid regex {:?}: {}",
                    err.value,
                    detail.lines().last().unwrap_or("")
                ),
            );
        }
        if self.sinks.is_empty() {
            return invalid(
                "sinks",
                "no sinks configured, so every event would be dropped; add one, e.g.\n  [sinks.events]\n  type = \"file\"\n  path = \"data/events.jsonl\"".into(),
            );
        }
        if self.sinks.len() > MAX_SINKS {
            return invalid(
                "sinks",
                format!(
                    "{} sinks configured; at most {MAX_SINKS} are supported",
                    self.sinks.len()
                ),
            );
        }
        for (name, sink) in &self.sinks {
            let key = |field: &str| format!("sinks.{name}.{field}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return invalid(
                    &format!("sinks.{name}"),
                    "sink names may only use letters, digits, `_` and `-`".into(),
                );
            }
            if let Some((field, url)) = sink.kind.http_url()
                && let Err(problem) = crate::sinks::transport::check_url(url)
            {
                return invalid(&key(field), problem);
            }
            let delivery = &sink.delivery;
            if delivery.queue_events == 0 {
                return invalid(&key("queue_events"), "must be at least 1".into());
            }
            if delivery.queue_bytes < MIN_QUEUE_BYTES {
                return invalid(
                    &key("queue_bytes"),
                    format!(
                        "must be at least {MIN_QUEUE_BYTES} (1 MiB); the default is 134217728 (128 MiB)"
                    ),
                );
            }
            if delivery.batch_max_events == 0 {
                return invalid(&key("batch_max_events"), "must be at least 1".into());
            }
            if delivery.retry_initial_ms > delivery.retry_max_ms {
                return invalid(
                    &key("retry_initial_ms"),
                    "must not exceed retry_max_ms".into(),
                );
            }
            if let crate::buffer::BufferConfig::Disk(disk) = &delivery.buffer {
                if disk.max_bytes < crate::buffer::MIN_DISK_BYTES {
                    return invalid(
                        &key("buffer.max_bytes"),
                        format!(
                            "{} bytes is too small for a disk buffer; use at least {} (64 KiB), e.g. 1073741824 (1 GiB)",
                            disk.max_bytes,
                            crate::buffer::MIN_DISK_BYTES
                        ),
                    );
                }
                if disk.sync_interval_ms == 0 {
                    return invalid(
                        &key("buffer.sync_interval_ms"),
                        "must be at least 1 (500 syncs twice a second)".into(),
                    );
                }
            }
            if let Some(alert) = &sink.alert
                && let Err((field, problem)) = crate::sinks::alert::Templates::new(alert)
            {
                return invalid(&key(field), problem);
            }
            match &sink.kind {
                SinkKind::File(file) if file.path.as_os_str().is_empty() => {
                    return invalid(
                        &key("path"),
                        "is empty; give a file such as \"data/events.jsonl\"".into(),
                    );
                }
                SinkKind::Influxdb(influx) => {
                    if let Err((field, problem)) = influx.validate() {
                        return invalid(&key(field), problem);
                    }
                }
                SinkKind::Loki(loki) => {
                    if let Err((field, problem)) = loki.validate() {
                        return invalid(&key(field), problem);
                    }
                }
                SinkKind::Mqtt(mqtt) => {
                    if let Err((field, problem)) = mqtt.validate() {
                        return invalid(&key(field), problem);
                    }
                }
                SinkKind::Email(email) => {
                    if let Err((field, problem)) = email.validate() {
                        return invalid(&key(field), problem);
                    }
                }
                SinkKind::Webhook(webhook) => {
                    if let Err(problem) = crate::sinks::webhook::Webhook::new(webhook) {
                        return invalid(&key("headers"), problem);
                    }
                }
                _ => {}
            }
        }
        if let Some(dead) = &self.dead_letter
            && dead.path.as_os_str().is_empty()
        {
            return invalid(
                "dead_letter.path",
                "is empty; give a file such as \"data/dead-letter.jsonl\"".into(),
            );
        }
        Ok(())
    }

    /// The effective config (defaults filled in) as TOML, for `herald check`:
    /// secrets as `<redacted>`, URLs with their secret parts redacted.
    pub fn to_toml(&self) -> String {
        let text = toml::to_string_pretty(self)
            .unwrap_or_else(|err| format!("# cannot show the config: {err}\n"));
        self.redactor.redact(&text).into_owned()
    }
}

/// Replaces every string that is exactly `${VAR}` with the variable's value and
/// every string starting with `file:` with that file's contents (trailing newline
/// stripped), so any value can stay out of the config file. This is the only
/// place references are resolved, once: a value read here is never taken for a
/// reference again. Secrets are still redacted wherever they are shown, because
/// their fields have the secret type.
fn expand_strings(table: &mut toml::Table, prefix: &str) -> Result<(), (String, String)> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        expand_value(value, &path)?;
    }
    Ok(())
}

fn expand_value(value: &mut toml::Value, path: &str) -> Result<(), (String, String)> {
    match value {
        toml::Value::String(text) if is_reference(text) => {
            *text = crate::secret::Secret::resolve(text)
                .map_err(|problem| (path.to_string(), problem))?
                .expose()
                .to_string();
        }
        toml::Value::Table(inner) => expand_strings(inner, path)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a config string refers to the environment or a file.
fn is_reference(text: &str) -> bool {
    (text.starts_with("${") && text.ends_with('}')) || text.starts_with("file:")
}

/// The smallest byte budget a queue may have: room for a few of the largest
/// datagrams.
pub const MIN_QUEUE_BYTES: u64 = 1024 * 1024;

/// The fix for an empty or unusable allowlist.
pub const EMPTY_ALLOWLIST: &str = "the allowlist is empty, so herald would accept no datagram. \
List your Qlik Sense nodes, e.g. allow = [\"10.1.0.0/24\", \"sense-node1.corp.local\"]; \
to accept every sender (not recommended) write allow = [\"0.0.0.0/0\", \"::/0\"]";

#[cfg(test)]
mod tests {
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
        let err =
            load(&MINIMAL.replace("\"127.0.0.0/8\"", "\"${HERALD_TEST_NOT_SET}\"")).unwrap_err();
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
}
