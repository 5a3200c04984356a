//! The configuration file: [`Config`] assembles each stage's own config struct,
//! loads it from TOML and validates it.
//!
//! Every problem in a file is reported at once, in plain words, each with its
//! key, line and fix (`problems`). Validation is pure (no sockets, no DNS, no
//! files); `herald check` adds the checks that need the machine
//! (resolving allowlist host names). Every struct denies unknown keys, so a typo
//! stops start-up with the list of valid keys instead of being ignored.
//!
//! Loading also builds the config's [`Redactor`]: every secret's value and the
//! secret parts of every HTTP sink's URL. Validation messages and the effective
//! config (`herald check`) pass through it; the command installs it for every
//! other output ([`crate::redact`]).
//!
//! `expand` resolves `${VAR}` and `file:` references (once), `validate` holds
//! the checks, `paths` finds the file and resolves the relative paths in it
//! against its directory, and the section structs that belong to no stage
//! live here.

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

mod expand;
mod paths;
mod problems;
mod validate;

pub use paths::{ENV_VAR, NotFound, SYSTEM_PATH, config_dir, default_candidates, in_dir, locate};

use expand::expand_strings;
use problems::Problems;
pub use problems::{KeySegment, Problem};
pub(crate) use problems::{key_path, key_text};

/// Where herald looks first for its config when none is named (a checkout);
/// then [`SYSTEM_PATH`].
pub const DEFAULT_PATH: &str = "config/herald.toml";

/// Most sinks one herald can have (routing keeps a bit set per event).
pub const MAX_SINKS: usize = 64;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where herald keeps its state: each disk-buffered sink's buffer under
    /// `buffer/<sink>/`. Relative to the config file's directory, like every path.
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
    /// Batches waiting for a worker before new ones are dropped (each what a
    /// receive thread read in about a millisecond, at most 1,024 datagrams).
    #[serde(default = "default_queue_batches")]
    pub queue_batches: usize,
    /// Bytes of memory the batches waiting for a worker may hold, their
    /// buffers' spare room included, before new ones are dropped (the same
    /// drop, counted the same way, as a full `queue_batches`).
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
    /// The file is not valid TOML (which stops reading at the first mistake).
    #[error("invalid config file {}: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key and the valid keys).
        message: String,
    },
    /// Keys have values herald cannot use: every one found, each with its
    /// key, line and fix.
    #[error("invalid config file {}{}", .path.display(), problems_text(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in the order of the file.
        problems: Vec<Problem>,
    },
}

/// `, line 3: key: problem` for one problem; a count and one problem a line
/// for more.
fn problems_text(problems: &[Problem]) -> String {
    match problems {
        [one] if one.line.is_some() => format!(", {one}"),
        [one] => format!(": {one}"),
        many => {
            let mut text = format!(": {} problems", many.len());
            for problem in many {
                text.push_str("\n  ");
                text.push_str(&problem.to_string());
            }
            text
        }
    }
}

impl Config {
    /// Reads and validates the config file at `path`. Relative paths in it
    /// (and in its `file:` references) resolve against its directory.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path, Some(&config_dir(path)))
    }

    /// Parses and validates config text; `path` is only used in messages.
    /// Relative paths are left as written (they resolve against the current
    /// directory); [`Config::load`] resolves them against the file's directory.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, path, None)
    }

    /// [`Config::from_toml`], with relative paths and `file:` references
    /// resolved against `dir` (before validation, which reads some files).
    fn parse(text: &str, path: &Path, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: toml::Table = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_string(),
        })?;
        let mut problems = Problems::new(text);
        let table = problems.expand(&raw, |table| expand_strings(table, "", dir));
        let (config, secrets) = crate::secret::collect(|| read_config(table, &mut problems));
        let invalid = |problems: Problems, redactor: &Redactor| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: problems.finish(|message| redactor.redact(message).into_owned()),
        };
        let Some(mut config) = config else {
            let redactor = Config::redactor_for(&secrets, &[]).unwrap_or_default();
            return Err(invalid(problems, &redactor));
        };
        if let Some(dir) = dir {
            config.resolve_paths(dir);
        }
        match config.build_redactor(&secrets) {
            Ok(redactor) => config.redactor = Arc::new(redactor),
            Err(problem) => problems.add_text("sinks", problem),
        }
        for (key, problem) in config.validate() {
            problems.add_text(&key, problem);
        }
        if !problems.is_empty() {
            return Err(invalid(problems, &config.redactor));
        }
        Ok(config)
    }

    /// The redactor for the values `secrets` (every [`crate::secret::Secret`]
    /// read) and the URL of every HTTP sink.
    fn build_redactor(&self, secrets: &[String]) -> Result<Redactor, String> {
        let urls: Vec<&str> = self
            .sinks
            .values()
            .filter_map(|sink| sink.kind.http_url().map(|(_, url)| url))
            .collect();
        Config::redactor_for(secrets, &urls)
    }

    /// The redactor for secret values and (not secret as a whole) URLs.
    fn redactor_for(secrets: &[String], urls: &[&str]) -> Result<Redactor, String> {
        let mut builder = Redactor::builder();
        for value in secrets {
            builder.secret(value);
        }
        for url in urls {
            builder.url(url);
        }
        builder.build()
    }

    /// Redacts `other`'s secrets too (a reload keeps the running config's
    /// parts and takes the new one's: both sets of secrets can show up).
    pub fn redact_secrets_of(&mut self, other: &Config) {
        if let Ok(both) = self.redactor.with(&other.redactor) {
            self.redactor = Arc::new(both);
        }
    }

    /// What removes this config's secrets from output; the command installs it
    /// with [`crate::redact::install`].
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone()
    }

    /// The effective config (defaults filled in) as TOML, for `herald check`:
    /// secrets as `<redacted>`, URLs with their secret parts redacted.
    pub fn to_toml(&self) -> String {
        let text = toml::to_string_pretty(self)
            .unwrap_or_else(|err| format!("# cannot show the config: {err}\n"));
        self.redactor.redact(&text).into_owned()
    }
}

/// Reads the expanded config table, noting every problem: the sinks one by
/// one (each problem at its `sinks.<name>.<key>`), then the rest. `None`
/// when the rest cannot be read at all.
fn read_config(mut table: toml::Table, problems: &mut Problems) -> Option<Config> {
    let sink_tables = match table.remove("sinks") {
        None => toml::Table::new(),
        Some(toml::Value::Table(sinks)) => sinks,
        Some(other) => {
            problems.add(
                vec![KeySegment::Key("sinks".into())],
                format!(
                    "expected a table of sinks, like [sinks.events], found {}",
                    other.type_str()
                ),
            );
            toml::Table::new()
        }
    };
    let mut sinks = BTreeMap::new();
    for (name, value) in sink_tables {
        let prefix = [
            KeySegment::Key("sinks".into()),
            KeySegment::Key(name.clone()),
        ];
        let toml::Value::Table(sink_table) = value else {
            problems.add(
                prefix.to_vec(),
                format!(
                    "expected a table, like [sinks.{name}] with type = \"file\", found {}",
                    value.type_str()
                ),
            );
            continue;
        };
        let sink = problems.read_with(sink_table, &prefix, |table| {
            SinkConfig::from_table(table).map_err(|err| (err.path, err.message))
        });
        if let Some(sink) = sink {
            sinks.insert(name, sink);
        }
    }
    let mut config: Config = problems.read(table, &[])?;
    config.sinks = sinks;
    Some(config)
}

/// The smallest byte budget a queue may have: room for a few of the largest
/// datagrams.
pub const MIN_QUEUE_BYTES: u64 = 1024 * 1024;

/// The fix for an empty or unusable allowlist.
pub const EMPTY_ALLOWLIST: &str = "the allowlist is empty, so herald would accept no datagram. \
List your Qlik Sense nodes, e.g. allow = [\"10.1.0.0/24\", \"sense-node1.corp.local\"]; \
to accept every sender (not recommended) write allow = [\"0.0.0.0/0\", \"::/0\"]";

#[cfg(test)]
mod tests;
