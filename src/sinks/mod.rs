//! Sinks: where events go. One file per destination, each behind [`Sink`].
//!
//! A sink only implements delivery of a batch. Everything else (its queue and
//! overflow policy, batching, retries with backoff, metrics, health state, the
//! dead-letter file for what it gives up on, and draining at shutdown) is the
//! generic [`driver`]'s job, written once. Each `[sinks.<name>]` table has the
//! common keys of [`SinkConfig`] plus its type's own keys.

pub mod alert;
pub mod driver;
pub mod file;
pub mod influxdb;
pub mod isolate;
pub mod loki;
pub mod queue;
pub mod stdout;
pub mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Event;
use crate::route::MatchConfig;
use queue::Overflow;

/// A destination for events.
pub trait Sink: Send + 'static {
    /// Delivers a batch. On error nothing of the batch counts as delivered: the
    /// driver retries the whole batch or gives up on it.
    fn deliver(
        &mut self,
        batch: &[Arc<Event>],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes delivered events durable; called when the queue runs dry and at shutdown.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct SinkError {
    /// What went wrong, for logs and the dead-letter file.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// How long the destination asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// A partial failure: these events of the batch (index, reason) were refused
    /// for good and everything else was delivered. Only with `retryable == false`.
    pub rejected: Vec<(usize, String)>,
}

impl SinkError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            retryable: true,
            retry_after: None,
            status: None,
            rejected: Vec::new(),
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            retryable: false,
            retry_after: None,
            status: None,
            rejected: Vec::new(),
        }
    }

    /// Some events of the batch were refused for good; the rest were delivered.
    pub fn partial(message: impl Into<String>, rejected: Vec<(usize, String)>) -> SinkError {
        SinkError {
            rejected,
            ..SinkError::permanent(message)
        }
    }

    /// An I/O error (retryable: disks fill and free up, mounts come back).
    pub fn io(err: std::io::Error) -> SinkError {
        SinkError::retryable(err.to_string())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

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
    Webhook(alert::webhook::WebhookConfig),
    /// An MQTT broker (alerts and event streams).
    Mqtt(alert::mqtt::MqttConfig),
    /// Email over SMTP (alerts).
    Email(alert::email::EmailConfig),
}

/// The `type` names of alert sinks, which take the [`alert::AlertConfig`] keys.
pub const ALERT_TYPES: [&str; 5] = ["slack", "teams", "webhook", "mqtt", "email"];

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
        }
    }

    /// Default `batch_max_events` and `flush_interval_ms` for this type: databases
    /// want big batches, consoles and files want lines soon.
    pub fn delivery_defaults(&self) -> (usize, u64) {
        match self {
            SinkKind::Influxdb(_) | SinkKind::Loki(_) => (5000, 1000),
            SinkKind::Webhook(webhook) if webhook.body.batches() => (500, 1000),
            SinkKind::File(_) | SinkKind::Stdout(_) | SinkKind::Null(_) => (1000, 200),
            // One alert per delivery, sent at once.
            SinkKind::Slack(_)
            | SinkKind::Teams(_)
            | SinkKind::Webhook(_)
            | SinkKind::Mqtt(_)
            | SinkKind::Email(_) => (1, 0),
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
    /// Events the sink's queue holds.
    #[serde(default = "default_queue_events")]
    pub queue_events: usize,
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
    /// in the queue, so an outage loses nothing until the queue overflows (and
    /// then the overflow is counted). At shutdown a sink that is still down gets
    /// one more try per batch before its events go to the dead-letter file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First retry delay, doubled each retry (with jitter), in milliseconds.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

/// The keys of [`DeliveryConfig`], for splitting a sink table.
const DELIVERY_KEYS: [&str; 8] = [
    "match",
    "queue_events",
    "overflow",
    "batch_max_events",
    "flush_interval_ms",
    "max_retries",
    "retry_initial_ms",
    "retry_max_ms",
];

fn default_queue_events() -> usize {
    100_000
}

fn default_retry_initial_ms() -> u64 {
    500
}

fn default_retry_max_ms() -> u64 {
    30_000
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
        // serde's `flatten` does not work with `deny_unknown_fields`, so the table
        // is split by hand: the common keys go to DeliveryConfig, the rest to the
        // type's own struct, and each half rejects keys it does not know.
        let mut table = toml::Table::deserialize(deserializer)?;
        let mut common = toml::Table::new();
        for key in DELIVERY_KEYS {
            if let Some(value) = table.remove(key) {
                common.insert(key.to_string(), value);
            }
        }
        if !table.contains_key("type") {
            return Err(D::Error::custom(
                "missing `type`; set type = \"file\", \"stdout\", \"influxdb\", \"loki\", \"slack\", \"teams\", \"webhook\", \"mqtt\", \"email\" or \"null\"",
            ));
        }
        let type_name = table.get("type").and_then(toml::Value::as_str);
        // A webhook whose `body` batches (`array`, `ndjson`) forwards events
        // rather than alerts; an unknown `body` is left for its own error.
        let webhook_batches = type_name == Some("webhook")
            && table
                .get("body")
                .and_then(|body| alert::webhook::WebhookBody::deserialize(body.clone()).ok())
                .is_some_and(alert::webhook::WebhookBody::batches);
        let is_alert = type_name.is_some_and(|t| ALERT_TYPES.contains(&t)) && !webhook_batches;
        let mut alert_keys = toml::Table::new();
        if is_alert {
            for key in alert::ALERT_KEYS {
                if let Some(value) = table.remove(key) {
                    alert_keys.insert(key.to_string(), value);
                }
            }
            let type_name = table
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or("");
            if type_name == "mqtt" {
                // MQTT mostly carries event streams (as Butler SOS's did): no
                // suppression unless asked for, and retried until the broker is back.
                for key in ["rate_limit_window_s", "dedupe_window_s"] {
                    if !alert_keys.contains_key(key) {
                        alert_keys.insert(key.into(), toml::Value::Integer(0));
                    }
                }
            } else if !common.contains_key("max_retries") {
                // An alert that cannot be delivered should reach the dead-letter
                // file within minutes, not wait for the destination forever.
                common.insert("max_retries".into(), toml::Value::Integer(5));
            }
        }
        let kind = SinkKind::deserialize(toml::Value::Table(table)).map_err(|err| {
            let alert_keys = alert::ALERT_KEYS.map(|k| format!("`{k}`")).join(", ");
            let alert_note = if is_alert {
                format!(", and alert sinks take {alert_keys}")
            } else if webhook_batches
                && alert::ALERT_KEYS
                    .iter()
                    .any(|k| err.message().contains(&format!("unknown field `{k}`")))
            {
                format!(", and {alert_keys} apply only to a webhook with body = \"event\" (alerts)")
            } else {
                String::new()
            };
            D::Error::custom(format!(
                "{}; every sink also takes {}{alert_note}",
                err.message().trim_end(),
                DELIVERY_KEYS.map(|k| format!("`{k}`")).join(", ")
            ))
        })?;
        let alert = if is_alert {
            Some(
                alert::AlertConfig::deserialize(toml::Value::Table(alert_keys))
                    .map_err(|err| D::Error::custom(err.message().trim_end()))?,
            )
        } else {
            None
        };
        let (batch_max_events, flush_interval_ms) = kind.delivery_defaults();
        if !common.contains_key("batch_max_events") {
            common.insert(
                "batch_max_events".into(),
                toml::Value::Integer(batch_max_events as i64),
            );
        }
        if !common.contains_key("flush_interval_ms") {
            common.insert(
                "flush_interval_ms".into(),
                toml::Value::Integer(flush_interval_ms as i64),
            );
        }
        let delivery = DeliveryConfig::deserialize(toml::Value::Table(common))
            .map_err(|err| D::Error::custom(err.message().trim_end()))?;
        Ok(SinkConfig {
            kind,
            delivery,
            alert,
        })
    }
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

/// Connects to a sink's server, if it has one, and says whether it can be used:
/// `None` for sinks without a server (file, stdout, null).
pub async fn check_connection(kind: &SinkKind) -> Option<Result<String, String>> {
    match kind {
        SinkKind::Influxdb(config) => Some(influxdb::check_connection(config).await),
        SinkKind::Loki(config) => Some(loki::check_connection(config).await),
        SinkKind::Mqtt(config) => Some(alert::mqtt::check_connection(config).await),
        SinkKind::Email(config) => Some(alert::email::check_connection(config).await),
        SinkKind::File(_)
        | SinkKind::Stdout(_)
        | SinkKind::Null(_)
        | SinkKind::Slack(_)
        | SinkKind::Teams(_)
        | SinkKind::Webhook(_) => None,
    }
}

/// A sink that discards everything (benchmarks measure the pipeline with it).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    async fn deliver(&mut self, _batch: &[Arc<Event>]) -> Result<(), SinkError> {
        Ok(())
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
