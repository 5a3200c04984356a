//! The `[sinks.<name>]` tables: which destination ([`SinkKind`]), the delivery
//! keys every sink shares ([`DeliveryConfig`]) and, for alert sinks, the alert
//! keys ([`alert::AlertConfig`]).
//!
//! One table holds all three, so it is split by key before each part is read
//! (serde's `flatten` cannot be combined with `deny_unknown_fields`). Which
//! sinks are alert sinks is decided once, by [`SinkKind::is_alert`]. This
//! module only reads and writes config; building the sinks is [`super::spawn_all`]'s job.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::queue::Overflow;
use super::webhook::WebhookBody;
use super::{alert, file, influxdb, loki, mqtt, nats, stdout, webhook};
use crate::buffer::BufferConfig;
use crate::route::MatchConfig;

/// The destination-specific part of a sink's config, chosen by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkKind {
    /// JSON lines in a file.
    File(file::FileConfig),
    /// JSON or readable lines on standard output.
    Stdout(stdout::StdoutConfig),
    /// Discards events (for benchmarks and tests).
    Null(NullConfig),
    /// Line protocol to InfluxDB 1.x or 2.x/3.x.
    Influxdb(influxdb::InfluxdbConfig),
    /// Grafana Loki's push API.
    Loki(loki::LokiConfig),
    /// Slack incoming webhook (alerts).
    Slack(alert::slack::SlackConfig),
    /// Microsoft Teams Workflows webhook (alerts).
    Teams(alert::teams::TeamsConfig),
    /// Any HTTP endpoint, one event JSON per request (alerts).
    Webhook(webhook::WebhookConfig),
    /// An MQTT broker (alerts and event streams).
    Mqtt(mqtt::MqttConfig),
    /// Email over SMTP (alerts).
    Email(alert::email::EmailConfig),
    /// A NATS JetStream stream (event streams for other systems to consume).
    Nats(nats::NatsConfig),
}

impl SinkKind {
    /// The `type` as written in config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Stdout(_) => "stdout",
            SinkKind::Null(_) => "null",
            SinkKind::Influxdb(_) => "influxdb",
            SinkKind::Loki(_) => "loki",
            SinkKind::Slack(_) => "slack",
            SinkKind::Teams(_) => "teams",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Mqtt(_) => "mqtt",
            SinkKind::Email(_) => "email",
            SinkKind::Nats(_) => "nats",
        }
    }

    /// The key and value of the URL an HTTP sink sends to: checked when the
    /// config is loaded, and its secret parts known to the redactor. This is
    /// the one list of HTTP URLs in the config.
    pub fn http_url(&self) -> Option<(&'static str, &str)> {
        match self {
            SinkKind::Influxdb(influx) => Some(("url", &influx.url)),
            SinkKind::Loki(loki) => Some(("url", &loki.url)),
            SinkKind::Slack(slack) => Some(("webhook_url", slack.webhook_url.expose())),
            SinkKind::Teams(teams) => Some(("webhook_url", teams.webhook_url.expose())),
            SinkKind::Webhook(webhook) => Some(("url", webhook.url.expose())),
            _ => None,
        }
    }

    /// Whether the sink sends alerts: one message per event under the rules of
    /// [`alert::AlertSink`] (de-duplication, rate limits, pacing, templates),
    /// taking the [`alert::AlertConfig`] keys. This is the one place that decides.
    pub fn is_alert(&self) -> bool {
        let body = match self {
            SinkKind::Webhook(webhook) => webhook.body,
            _ => WebhookBody::default(),
        };
        sends_alerts(self.type_name(), body)
    }

    /// Default `batch_max_events` and `flush_interval_ms` for this type: databases
    /// want big batches, consoles and files want lines soon, alerts go one at a
    /// time and at once.
    pub fn delivery_defaults(&self) -> (usize, u64) {
        match self {
            _ if self.is_alert() => (1, 0),
            SinkKind::Influxdb(_) | SinkKind::Loki(_) => (5000, 1000),
            SinkKind::Webhook(_) => (500, 1000),
            _ => (1000, 200),
        }
    }

    /// Defaults of an alert sink's keys that differ by type, written into the
    /// sink's tables before they are read.
    fn alert_defaults(&self, alert: &mut toml::Table, delivery: &mut toml::Table) {
        if let SinkKind::Mqtt(_) = self {
            // MQTT mostly carries event streams (as Butler SOS's did): no
            // suppression unless asked for, and retried until the broker is back.
            for key in ["rate_limit_window_s", "dedupe_window_s"] {
                alert.entry(key).or_insert_with(|| toml::Value::Integer(0));
            }
        } else {
            // An alert that cannot be delivered should reach the dead-letter
            // file within minutes, not wait for the destination forever.
            delivery
                .entry("max_retries")
                .or_insert_with(|| toml::Value::Integer(5));
        }
    }

    /// Messages per second an alert sink sends by default (0: unpaced): Slack
    /// and Teams rate-limit their webhooks to about one per second.
    pub fn default_pace(&self) -> f64 {
        match self {
            SinkKind::Slack(_) | SinkKind::Teams(_) => 1.0,
            _ => 0.0,
        }
    }
}

/// Settings of the `null` sink (there are none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

/// How a sink's queue and delivery behave; the same keys for every sink type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Which events the sink receives; absent: all.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "MatchConfig::is_empty"
    )]
    pub match_: MatchConfig,
    /// Where queued events wait: `{ type = "memory" }` (the default) or
    /// `{ type = "disk", max_bytes = ..., sync_interval_ms = ... }`.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Events the memory buffer holds (for a disk buffer: events that wait in
    /// memory while the disk refuses writes).
    #[serde(default = "default_queue_events")]
    pub queue_events: usize,
    /// Bytes of events the memory buffer holds (whichever of `queue_events`
    /// and `queue_bytes` is reached first makes the buffer full).
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
    /// What a full queue does: `drop_oldest`, `drop_newest` or `block`.
    #[serde(default)]
    pub overflow: Overflow,
    /// Most events delivered in one batch (default depends on the type).
    pub batch_max_events: usize,
    /// Longest an event waits for its batch to fill, in milliseconds (default
    /// depends on the type).
    pub flush_interval_ms: u64,
    /// Retries of a failed batch before its events go to the dead-letter file.
    /// Unset (the default): keep retrying while the sink is down; new events wait
    /// in the buffer, so an outage loses nothing until the buffer overflows (and
    /// then the overflow is counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First retry delay, doubled each retry (with jitter), in milliseconds.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Longest wait a destination's `Retry-After` may ask for, in milliseconds.
    #[serde(default = "default_retry_after_max_ms")]
    pub retry_after_max_ms: u64,
}

/// The keys of [`DeliveryConfig`], for splitting a sink table.
const DELIVERY_KEYS: [&str; 11] = [
    "match",
    "buffer",
    "queue_events",
    "queue_bytes",
    "overflow",
    "batch_max_events",
    "flush_interval_ms",
    "max_retries",
    "retry_initial_ms",
    "retry_max_ms",
    "retry_after_max_ms",
];

fn default_queue_events() -> usize {
    100_000
}

fn default_queue_bytes() -> u64 {
    128 * 1024 * 1024
}

fn default_retry_initial_ms() -> u64 {
    500
}

fn default_retry_max_ms() -> u64 {
    30_000
}

fn default_retry_after_max_ms() -> u64 {
    300_000
}

/// One `[sinks.<name>]` table: a type-specific part and the common delivery keys.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// `type` and its keys.
    pub kind: SinkKind,
    /// Common keys.
    pub delivery: DeliveryConfig,
    /// Alert keys (alert sinks only).
    pub alert: Option<alert::AlertConfig>,
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        SinkConfig::from_table(table).map_err(|err| {
            let key = crate::config::key_text(&err.path);
            if key.is_empty() {
                D::Error::custom(err.message)
            } else {
                D::Error::custom(format!("{key}: {}", err.message))
            }
        })
    }
}

/// Why a sink table cannot be read: where in the table, and the message.
#[derive(Debug, Clone)]
pub struct SinkTableError {
    /// The key within the sink's table (empty: the table as a whole).
    pub path: Vec<crate::config::KeySegment>,
    /// What is wrong (serde's words; the config loader puts them plainly).
    pub message: String,
}

impl SinkTableError {
    fn whole(message: impl Into<String>) -> SinkTableError {
        SinkTableError {
            path: Vec::new(),
            message: message.into(),
        }
    }
}

/// Reads one part of a sink table, keeping the key an error is at.
fn read_part<T: serde::de::DeserializeOwned>(part: toml::Table) -> Result<T, SinkTableError> {
    serde_path_to_error::deserialize(toml::Value::Table(part)).map_err(|err| SinkTableError {
        path: crate::config::key_path(err.path()),
        message: err.inner().message().trim_end().to_string(),
    })
}

/// The sink types, as written in `type`.
const SINK_TYPES: [&str; 11] = [
    "file", "stdout", "influxdb", "loki", "slack", "teams", "webhook", "mqtt", "email", "nats",
    "null",
];

impl SinkConfig {
    /// Reads a `[sinks.<name>]` table. serde's `flatten` does not work with
    /// `deny_unknown_fields`, so the table is split by hand: the common keys go
    /// to [`DeliveryConfig`], the alert keys to [`alert::AlertConfig`], the
    /// rest to the type's own struct, and each part rejects keys it does not
    /// know. The type's struct is read directly (not through the tagged
    /// [`SinkKind`]), so an error inside it keeps its key.
    ///
    /// # Errors
    ///
    /// The first problem, with the key it is at.
    pub fn from_table(mut table: toml::Table) -> Result<SinkConfig, SinkTableError> {
        let mut common = take_keys(&mut table, &DELIVERY_KEYS);
        let mut alert_keys = take_keys(&mut table, &alert::ALERT_KEYS);
        let type_error = |message: String| SinkTableError {
            path: vec![crate::config::KeySegment::Key("type".into())],
            message,
        };
        let type_name = match table.remove("type") {
            None => {
                return Err(SinkTableError::whole(format!(
                    "missing `type`; set type = {}",
                    quoted_or(&SINK_TYPES)
                )));
            }
            Some(toml::Value::String(name)) => name,
            Some(other) => {
                return Err(type_error(format!(
                    "expected one of {}, found {}",
                    quoted_or(&SINK_TYPES),
                    other
                )));
            }
        };
        // An unknown `body` is left for the webhook's own error.
        let body = table
            .get("body")
            .and_then(|body| WebhookBody::deserialize(body.clone()).ok())
            .unwrap_or_default();
        let kind = match type_name.as_str() {
            "file" => read_part(table).map(SinkKind::File),
            "stdout" => read_part(table).map(SinkKind::Stdout),
            "null" => read_part(table).map(SinkKind::Null),
            "influxdb" => read_part(table).map(SinkKind::Influxdb),
            "loki" => read_part(table).map(SinkKind::Loki),
            "slack" => read_part(table).map(SinkKind::Slack),
            "teams" => read_part(table).map(SinkKind::Teams),
            "webhook" => read_part(table).map(SinkKind::Webhook),
            "mqtt" => read_part(table).map(SinkKind::Mqtt),
            "email" => read_part(table).map(SinkKind::Email),
            "nats" => read_part(table).map(SinkKind::Nats),
            other => {
                return Err(type_error(format!(
                    "unknown sink type {other:?}; use {}",
                    quoted_or(&SINK_TYPES)
                )));
            }
        };
        let kind = kind.map_err(|mut err| {
            if err.message.starts_with("unknown field") {
                let alert_note = if sends_alerts(&type_name, body) {
                    format!(", and alert sinks take {}", listed(&alert::ALERT_KEYS))
                } else {
                    String::new()
                };
                err.message = format!(
                    "{}; every sink also takes {}{alert_note}",
                    err.message,
                    listed(&DELIVERY_KEYS),
                );
            }
            err
        })?;
        let alert = if kind.is_alert() {
            kind.alert_defaults(&mut alert_keys, &mut common);
            Some(read_part::<alert::AlertConfig>(alert_keys)?)
        } else if let Some(key) = alert_keys.keys().next() {
            let why = match &kind {
                SinkKind::Webhook(_) => {
                    "it applies only to a webhook with body = \"event\" (alerts)".to_string()
                }
                other => format!("a `{}` sink sends no alerts", other.type_name()),
            };
            return Err(SinkTableError {
                path: vec![crate::config::KeySegment::Key(key.clone())],
                message: format!(
                    "unknown field `{key}`: {why}; alert sinks (slack, teams, mqtt, email, and webhook with body = \"event\") take {}",
                    listed(&alert::ALERT_KEYS)
                ),
            });
        } else {
            None
        };
        let (batch_max_events, flush_interval_ms) = kind.delivery_defaults();
        common
            .entry("batch_max_events")
            .or_insert_with(|| toml::Value::Integer(batch_max_events as i64));
        common
            .entry("flush_interval_ms")
            .or_insert_with(|| toml::Value::Integer(flush_interval_ms as i64));
        let delivery = read_part::<DeliveryConfig>(common)?;
        Ok(SinkConfig {
            kind,
            delivery,
            alert,
        })
    }
}

/// `"a", "b" or "c"`: values as a message offers them.
fn quoted_or(values: &[&str]) -> String {
    match values.split_last() {
        Some((last, [])) => format!("{last:?}"),
        Some((last, rest)) => format!(
            "{} or {last:?}",
            rest.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    }
}

/// Whether a sink of type `type_name` (a webhook with `body`) sends alerts;
/// [`SinkKind::is_alert`] asks this, and so does a table whose type's own keys
/// are wrong (to list the alert keys in the message).
fn sends_alerts(type_name: &str, body: WebhookBody) -> bool {
    match type_name {
        "slack" | "teams" | "mqtt" | "email" => true,
        "webhook" => !body.batches(),
        _ => false,
    }
}

/// `a`, `b`, `c`: keys as a message lists them.
fn listed(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves `keys` out of `table` into a table of their own.
fn take_keys(table: &mut toml::Table, keys: &[&str]) -> toml::Table {
    keys.iter()
        .filter_map(|&key| Some((key.to_string(), table.remove(key)?)))
        .collect()
}

impl Serialize for SinkConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        use serde::ser::SerializeMap as _;
        let mut kind = toml::Table::try_from(&self.kind).map_err(S::Error::custom)?;
        let mut common = toml::Table::try_from(&self.delivery).map_err(S::Error::custom)?;
        if let Some(alert) = &self.alert {
            common.extend(toml::Table::try_from(alert).map_err(S::Error::custom)?);
        }
        // `type` first, then the type's keys, then the common ones.
        let type_name = kind.remove("type");
        let mut map = serializer.serialize_map(None)?;
        if let Some(type_name) = type_name {
            map.serialize_entry("type", &type_name)?;
        }
        for (key, value) in kind.iter().chain(common.iter()) {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_table_splits_into_kind_and_delivery() {
        let config: SinkConfig = toml::from_str(
            r#"
type = "file"
path = "data/events.jsonl"
queue_events = 10
overflow = "drop_newest"
match = { types = ["task"] }
"#,
        )
        .unwrap();
        assert!(matches!(config.kind, SinkKind::File(_)));
        assert_eq!(config.delivery.queue_events, 10);
        assert_eq!(config.delivery.overflow, Overflow::DropNewest);
        assert_eq!(config.delivery.batch_max_events, 1000);
    }

    #[test]
    fn a_misspelled_sink_key_lists_the_valid_ones() {
        let err = toml::from_str::<SinkConfig>("type = \"file\"\npaht = \"x\"").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown field `paht`"), "{message}");
        assert!(message.contains("`path`"), "{message}");
        assert!(message.contains("`queue_events`"), "{message}");
    }

    #[test]
    fn an_unknown_sink_type_is_named() {
        let err = toml::from_str::<SinkConfig>("type = \"kafka\"").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn a_batching_webhook_is_not_an_alert_sink_and_batches_by_default() {
        let config: SinkConfig = toml::from_str(
            "type = \"webhook\"\nurl = \"https://collector.example/in\"\nbody = \"ndjson\"",
        )
        .unwrap();
        assert!(config.alert.is_none());
        assert_eq!(config.delivery.batch_max_events, 500);
        assert_eq!(config.delivery.flush_interval_ms, 1000);
        assert_eq!(
            config.delivery.max_retries, None,
            "retried until the collector is back"
        );
        let alerting: SinkConfig =
            toml::from_str("type = \"webhook\"\nurl = \"https://hooks.example/x\"").unwrap();
        assert!(alerting.alert.is_some());
        assert_eq!(alerting.delivery.batch_max_events, 1);
    }

    #[test]
    fn alert_keys_on_a_batching_webhook_say_they_need_body_event() {
        let err = toml::from_str::<SinkConfig>(
            "type = \"webhook\"\nurl = \"https://collector.example/in\"\nbody = \"array\"\ndedupe_window_s = 60",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("unknown field `dedupe_window_s`"),
            "{message}"
        );
        assert!(message.contains("body = \"event\""), "{message}");
        let err = toml::from_str::<SinkConfig>("type = \"webhook\"\nbody = \"array\"").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("missing field `url`"), "{message}");
        assert!(
            !message.contains("dedupe_window_s"),
            "no alert note for another mistake: {message}"
        );
    }

    #[test]
    fn sink_config_serializes_back_to_one_table() {
        let config: SinkConfig = toml::from_str("type = \"stdout\"").unwrap();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("type = \"stdout\""), "{text}");
        assert!(text.contains("queue_events = 100000"), "{text}");
    }
}
