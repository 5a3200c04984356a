//! The `loki` sink: events to Grafana Loki's push API (`/loki/api/v1/push`,
//! JSON body), one stream per distinct label set.
//!
//! Each event becomes one log entry: its line is the event's JSON (the same
//! object the `file` sink writes) and its timestamp is the event's own `time` in
//! nanoseconds, with the event's sequence number in the sub-millisecond digits
//! (as the `influxdb` sink does, see [`timestamp_ns`]) so that same-millisecond
//! events of one stream stay distinct. The stream labels come from a small,
//! bounded set chosen with `labels` (`type`, `source`, `level`, `host`, `outcome`,
//! `command`) plus fixed `static_labels`; a label the event has no value for is
//! left out of its stream. Entries are sorted by time within each stream.
//!
//! Bodies are gzipped unless `gzip = false`. Credentials are basic auth or a
//! bearer token; `tenant` sets `X-Scope-OrgID` for multi-tenant Loki.
//!
//! When Loki refuses a batch as bad data (400, e.g. "entry too far behind" or
//! "line too long"; or 413, body too large) the batch is split in halves and
//! each half sent again, down to single events, so only the events Loki really
//! cannot take go to the dead-letter file. Loki stores the valid entries of a
//! refused push and drops exact duplicates (same stream, time and line), so
//! sending an entry again does not duplicate it. Everything else (network errors,
//! 5xx, 429, 401/403/404) is retried by the driver, honouring `Retry-After`.
//!
//! This sink does not use Loki's protobuf/snappy encoding, structured metadata or
//! high-cardinality labels (ids, users, messages stay in the line, where LogQL's
//! `| json` reads them), and it does not check the connection at start-up.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::ser::{SerializeMap as _, SerializeSeq as _, SerializeTuple as _};
use serde::{Deserialize, Serialize, Serializer};

use super::influxdb::schema::timestamp_ns;
use super::transport;
use super::{Sink, SinkError};
use crate::event::{Event, Field, Level, TaskOutcome};
use crate::secret::Secret;

/// The push endpoint, appended to `url`.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Settings of a `loki` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Base URL, e.g. `http://127.0.0.1:3100`.
    pub url: String,
    /// Stream labels, from a bounded set: `type`, `source`, `level`, `host`,
    /// `outcome`, `command`. Default: `["type", "source", "level", "host"]`.
    #[serde(default = "default_labels")]
    pub labels: Vec<LokiLabel>,
    /// Static labels added to every stream, e.g. `{ job = "herald", env = "prod" }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub static_labels: std::collections::BTreeMap<String, String>,
    /// Tenant for multi-tenant Loki (`X-Scope-OrgID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Basic-auth user (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Bearer token (instead of basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Gzip request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust for `https` URLs. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// A label herald can put on a Loki stream; all have few distinct values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LokiLabel {
    /// The event type.
    Type,
    /// The Sense service.
    Source,
    /// The level.
    Level,
    /// The Sense host name.
    Host,
    /// The task outcome.
    Outcome,
    /// The session/connection command.
    Command,
}

impl LokiLabel {
    /// The label name on the stream (the same as in config).
    pub fn name(self) -> &'static str {
        match self {
            LokiLabel::Type => "type",
            LokiLabel::Source => "source",
            LokiLabel::Level => "level",
            LokiLabel::Host => "host",
            LokiLabel::Outcome => "outcome",
            LokiLabel::Command => "command",
        }
    }

    /// The label's value for `event`; `None` when the event has none (the label
    /// is then left off its stream).
    pub fn value(self, event: &Event) -> Option<&str> {
        match self {
            LokiLabel::Type => Some(event.event_type.as_str()),
            LokiLabel::Source => Some(event.source.as_str()),
            LokiLabel::Level => event.level.map(Level::as_str),
            LokiLabel::Host => event.host(),
            LokiLabel::Outcome => event.outcome.map(TaskOutcome::as_str),
            LokiLabel::Command => event.get(Field::Command),
        }
    }
}

fn default_labels() -> Vec<LokiLabel> {
    vec![
        LokiLabel::Type,
        LokiLabel::Source,
        LokiLabel::Level,
        LokiLabel::Host,
    ]
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Whether `name` is a valid Loki (Prometheus) label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

impl LokiConfig {
    /// Checks the keys; returns the key and the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = reqwest::Url::parse(&self.url).ok();
        if !url
            .as_ref()
            .is_some_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        {
            return Err((
                "url",
                format!(
                    "{:?} is not an http(s) URL; e.g. \"http://127.0.0.1:3100\"",
                    self.url
                ),
            ));
        }
        if self.base().ends_with(PUSH_PATH) {
            return Err((
                "url",
                format!(
                    "give Loki's base URL without {PUSH_PATH} (herald adds it), e.g. {:?}",
                    self.base().trim_end_matches(PUSH_PATH)
                ),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err((
                "username",
                "give both username and password, or neither".into(),
            ));
        }
        if self.bearer_token.is_some() && self.username.is_some() {
            return Err((
                "bearer_token",
                "use either basic auth (username and password) or bearer_token, not both".into(),
            ));
        }
        if self.tenant.as_deref().is_some_and(str::is_empty) {
            return Err((
                "tenant",
                "is empty; give the tenant ID (X-Scope-OrgID) or remove the key".into(),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms", "must be at least 1".into()));
        }
        if self.labels.is_empty() {
            return Err((
                "labels",
                "is empty; list some of \"type\", \"source\", \"level\", \"host\", \"outcome\", \"command\", \
                 e.g. labels = [\"type\", \"source\", \"level\", \"host\"]"
                    .into(),
            ));
        }
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(label) {
                return Err((
                    "labels",
                    format!("lists \"{}\" twice; list each label once", label.name()),
                ));
            }
        }
        // Loki refuses a stream without labels; `type` and `source` are the only
        // labels every event has.
        if !self
            .labels
            .iter()
            .any(|label| matches!(label, LokiLabel::Type | LokiLabel::Source))
            && self.static_labels.is_empty()
        {
            return Err((
                "labels",
                "some events would have no label at all, which Loki refuses; add \"type\" or \"source\" \
                 to labels, or set static_labels = { job = \"herald\" }"
                    .into(),
            ));
        }
        for (name, value) in &self.static_labels {
            if !valid_label_name(name) {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} is not a valid Loki label name; use letters, digits and `_`, \
                         not starting with a digit (e.g. \"sense_env\")"
                    ),
                ));
            }
            if name.starts_with("__") {
                return Err((
                    "static_labels",
                    format!("{name:?}: names starting with `__` are reserved by Loki; rename it"),
                ));
            }
            if self.labels.iter().any(|label| label.name() == name) {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} is also in labels, so a stream would have it twice; \
                         rename the static label or remove it from labels"
                    ),
                ));
            }
            if value.is_empty() {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} has an empty value, which Loki drops; give a value or remove it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An HTTP client with this sink's timeout and extra CAs.
    fn client(&self) -> Result<reqwest::Client, String> {
        transport::client(self.timeout_ms, self.tls_ca_file.as_deref())
    }

    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The push URL.
    fn push_url(&self) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&format!("{}{PUSH_PATH}", self.base()))
            .map_err(|err| format!("url {:?}: {err}", self.url))
    }

    /// Adds the tenant and the configured credentials to a request.
    fn authorise(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(tenant) = &self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            request = request.basic_auth(user, Some(password.expose()));
        } else if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        request
    }
}

/// Checks that Loki answers `/ready` and that the credentials and tenant are
/// accepted (an empty push). Returns a one-line summary, or what is wrong.
///
/// # Errors
///
/// A message naming the problem and how to fix it.
pub async fn check_connection(config: &LokiConfig) -> Result<String, String> {
    let client = config.client()?;
    let base = config.base();
    let unreachable = |err: reqwest::Error| {
        format!(
            "cannot reach Loki at {base}: {}; check url and that Loki is running",
            transport::network_error(&err).message
        )
    };
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = ready.status().as_u16();
    if status != 200 {
        let body = ready.text().await.unwrap_or_default();
        return Err(format!(
            "Loki at {base}/ready answered HTTP {status}: {}",
            body.trim()
        ));
    }
    let push = config
        .authorise(client.post(config.push_url()?))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"streams":[]}"#)
        .send()
        .await
        .map_err(unreachable)?;
    match push.status().as_u16() {
        200..=299 => Ok(format!("Loki at {base} is ready and accepts pushes")),
        401 | 403 => Err(format!(
            "Loki at {base} refused the credentials or tenant (HTTP {}); check username/password, bearer_token and tenant",
            push.status().as_u16()
        )),
        other => Err(format!(
            "Loki at {base} answered a test push with HTTP {other}: {}",
            push.text().await.unwrap_or_default().trim()
        )),
    }
}

/// Per-batch buffers, kept between batches so a steady flow allocates nothing.
#[derive(Debug, Default)]
struct Scratch {
    /// Every event's JSON, back to back.
    lines: Vec<u8>,
    /// Where each event's JSON starts in `lines` (plus the end, last).
    starts: Vec<usize>,
    /// Each event's timestamp in nanoseconds.
    times: Vec<i128>,
    /// Event indexes, sorted into streams for one request.
    order: Vec<usize>,
}

/// The `loki` sink.
#[derive(Debug)]
pub struct LokiSink {
    config: Arc<LokiConfig>,
    client: reqwest::Client,
    url: reqwest::Url,
    /// The JSON push body, reused.
    body: Vec<u8>,
    scratch: Scratch,
}

impl LokiSink {
    /// Builds the sink (no I/O).
    ///
    /// # Errors
    ///
    /// When the URL or the TLS settings are unusable.
    pub fn new(config: &LokiConfig) -> Result<LokiSink, String> {
        Ok(LokiSink {
            client: config.client()?,
            url: config.push_url()?,
            config: Arc::new(config.clone()),
            body: Vec::with_capacity(1 << 20),
            scratch: Scratch::default(),
        })
    }

    /// Posts the entries of events `range` of the prepared batch.
    async fn post(
        &mut self,
        batch: &Prepared<'_>,
        order: &mut Vec<usize>,
        range: Range<usize>,
    ) -> Result<(), SinkError> {
        self.body.clear();
        batch.write_push(&mut self.body, order, range);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        request = if self.config.gzip {
            request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(transport::gzip(&self.body))
        } else {
            request.body(self.body.clone())
        };
        let response = self
            .config
            .authorise(request)
            .send()
            .await
            .map_err(|err| transport::network_error(&err))?;
        transport::check(response).await.map(drop)
    }

    /// Sends `range`, splitting it on "bad data" answers to find the events Loki
    /// refuses; those are added to `rejected`.
    async fn post_isolating(
        &mut self,
        batch: &Prepared<'_>,
        order: &mut Vec<usize>,
        range: Range<usize>,
        rejected: &mut Vec<(usize, String)>,
    ) -> Result<(), SinkError> {
        let mut pending = vec![range];
        while let Some(range) = pending.pop() {
            match self.post(batch, order, range.clone()).await {
                Ok(()) => {}
                Err(err) if is_bad_data(&err) => {
                    if range.len() == 1 {
                        rejected.push((range.start, err.message));
                    } else {
                        let middle = range.start + range.len() / 2;
                        pending.push(middle..range.end);
                        pending.push(range.start..middle);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn deliver_with(
        &mut self,
        events: &[Arc<Event>],
        scratch: &mut Scratch,
    ) -> Result<(), SinkError> {
        let config = self.config.clone();
        let Scratch {
            lines,
            starts,
            times,
            order,
        } = scratch;
        let batch = Prepared::new(&config, events, lines, starts, times);
        let mut rejected = Vec::new();
        self.post_isolating(&batch, order, 0..events.len(), &mut rejected)
            .await?;
        if rejected.is_empty() {
            Ok(())
        } else {
            let first = rejected[0].1.clone();
            Err(SinkError::partial(
                format!(
                    "Loki refused {} of {} entries: {first}",
                    rejected.len(),
                    events.len()
                ),
                rejected,
            ))
        }
    }
}

/// Answers that mean "this data can never be written", as opposed to "not now".
fn is_bad_data(err: &SinkError) -> bool {
    matches!(err.status, Some(400 | 413))
}

impl Sink for LokiSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.deliver_with(batch, &mut scratch).await;
        self.scratch = scratch;
        result
    }
}

/// A batch made ready to send: each event's label values, timestamp and line.
struct Prepared<'a> {
    labels: &'a [LokiLabel],
    static_labels: &'a BTreeMap<String, String>,
    /// `labels.len()` values per event, in `labels` order.
    values: Vec<Option<&'a str>>,
    times: &'a [i128],
    lines: &'a [u8],
    starts: &'a [usize],
}

impl<'a> Prepared<'a> {
    /// Computes labels, timestamps and lines of `events` (the last two into the
    /// given buffers, which are cleared first).
    fn new(
        config: &'a LokiConfig,
        events: &'a [Arc<Event>],
        lines: &'a mut Vec<u8>,
        starts: &'a mut Vec<usize>,
        times: &'a mut Vec<i128>,
    ) -> Prepared<'a> {
        lines.clear();
        starts.clear();
        times.clear();
        let mut values = Vec::with_capacity(events.len() * config.labels.len());
        for event in events {
            starts.push(lines.len());
            event.write_json(lines);
            times.push(timestamp_ns(event));
            values.extend(config.labels.iter().map(|label| label.value(event)));
        }
        starts.push(lines.len());
        Prepared {
            labels: &config.labels,
            static_labels: &config.static_labels,
            values,
            times,
            lines,
            starts,
        }
    }

    /// The label values of event `index`.
    fn key(&self, index: usize) -> &[Option<&'a str>] {
        let width = self.labels.len();
        &self.values[index * width..(index + 1) * width]
    }

    /// The JSON line of event `index`.
    fn line(&self, index: usize) -> Cow<'_, str> {
        // `Event::write_json` only writes UTF-8, so this never copies.
        String::from_utf8_lossy(&self.lines[self.starts[index]..self.starts[index + 1]])
    }

    /// Writes the push body for events `range`: their indexes are sorted into
    /// `order` by label values and then by time, so each run of equal label
    /// values is one stream with its entries in time order.
    fn write_push(&self, out: &mut Vec<u8>, order: &mut Vec<usize>, range: Range<usize>) {
        order.clear();
        order.extend(range);
        order.sort_unstable_by(|&a, &b| {
            self.key(a)
                .cmp(self.key(b))
                .then(self.times[a].cmp(&self.times[b]))
                .then(a.cmp(&b))
        });
        let push = Push { batch: self, order };
        // Serialising into a Vec cannot fail: every key is a string.
        let _ = serde_json::to_writer(out, &push);
    }
}

/// `{"streams":[...]}` for the events in `order`.
struct Push<'p, 'a> {
    batch: &'p Prepared<'a>,
    order: &'p [usize],
}

impl Serialize for Push<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("streams", &Streams(self))?;
        map.end()
    }
}

/// The `streams` array: one stream per run of equal label values in `order`.
struct Streams<'p, 'a>(&'p Push<'p, 'a>);

impl Serialize for Streams<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Push { batch, order } = *self.0;
        let mut seq = serializer.serialize_seq(None)?;
        for run in order.chunk_by(|&a, &b| batch.key(a) == batch.key(b)) {
            seq.serialize_element(&Stream { batch, run })?;
        }
        seq.end()
    }
}

/// One stream: `{"stream":{labels},"values":[[ns, line],...]}`.
struct Stream<'p, 'a> {
    batch: &'p Prepared<'a>,
    /// Indexes of the stream's events, in time order.
    run: &'p [usize],
}

impl Serialize for Stream<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("stream", &Labels(self))?;
        map.serialize_entry("values", &Values(self))?;
        map.end()
    }
}

/// A stream's labels: the configured ones the events have, then the static ones.
struct Labels<'s, 'p, 'a>(&'s Stream<'p, 'a>);

impl Serialize for Labels<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let batch = self.0.batch;
        let key = batch.key(self.0.run[0]);
        let dynamic = batch
            .labels
            .iter()
            .zip(key)
            .filter_map(|(label, value)| value.map(|value| (label.name(), value)));
        let fixed = batch
            .static_labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        serializer.collect_map(dynamic.chain(fixed))
    }
}

/// A stream's entries.
struct Values<'s, 'p, 'a>(&'s Stream<'p, 'a>);

impl Serialize for Values<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let batch = self.0.batch;
        let mut seq = serializer.serialize_seq(Some(self.0.run.len()))?;
        for &index in self.0.run {
            seq.serialize_element(&Entry { batch, index })?;
        }
        seq.end()
    }
}

/// One entry: `["<unix ns>", "<line>"]`.
struct Entry<'p, 'a> {
    batch: &'p Prepared<'a>,
    index: usize,
}

impl Serialize for Entry<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&Decimal(self.batch.times[self.index]))?;
        tuple.serialize_element(&self.batch.line(self.index))?;
        tuple.end()
    }
}

/// A number written as a JSON string of its decimal digits, without allocating.
struct Decimal(i128);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn config(text: &str) -> LokiConfig {
        toml::from_str(text).unwrap()
    }

    fn event(kind: &str, sequence: u64) -> Arc<Event> {
        let mut event = crate::send::sample_event(kind);
        event.sequence = sequence;
        Arc::new(event)
    }

    /// The push body for `events` under `config`, parsed.
    fn push(config: &LokiConfig, events: &[Arc<Event>]) -> Value {
        let (mut lines, mut starts, mut times) = (Vec::new(), Vec::new(), Vec::new());
        let batch = Prepared::new(config, events, &mut lines, &mut starts, &mut times);
        let mut out = Vec::new();
        batch.write_push(&mut out, &mut Vec::new(), 0..events.len());
        serde_json::from_slice(&out).unwrap()
    }

    fn entry(event: &Event) -> Value {
        json!([timestamp_ns(event).to_string(), event.to_json()])
    }

    #[test]
    fn events_with_the_same_labels_share_a_stream_in_time_order() {
        let c = config("url = \"http://loki:3100\"\nlabels = [\"type\", \"source\"]");
        // Two proxy events with the same time: the sequence orders them.
        let late = event("proxy", 9);
        let early = event("proxy", 3);
        let engine = event("engine", 1);
        let body = push(&c, &[late.clone(), engine.clone(), early.clone()]);
        assert_eq!(
            body,
            json!({"streams": [
                {"stream": {"type": "log", "source": "engine"}, "values": [entry(&engine)]},
                {"stream": {"type": "log", "source": "proxy"}, "values": [entry(&early), entry(&late)]},
            ]})
        );
    }

    #[test]
    fn entries_are_the_event_json_at_the_event_time_in_nanoseconds() {
        let c = config("url = \"http://loki:3100\"");
        let engine = event("engine", 1_000_007);
        let body = push(&c, std::slice::from_ref(&engine));
        let value = &body["streams"][0]["values"][0];
        // 2024-05-19T12:03:12.114+02:00, sequence mod 10⁶ in the sub-ms digits.
        assert_eq!(value[0], "1716112992114000007");
        assert_eq!(value[1].as_str().unwrap(), engine.to_json());
        assert_eq!(value.as_array().unwrap().len(), 2);
    }

    #[test]
    fn labels_follow_the_config_and_missing_values_are_left_out() {
        let c = config(
            "url = \"http://loki:3100\"\nlabels = [\"type\", \"level\", \"host\", \"outcome\", \"command\"]\n\
             static_labels = { job = \"herald\", env = \"prod\" }",
        );
        let body = push(&c, &[event("session", 1), event("task-failed", 2)]);
        let streams: Vec<&Value> = body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["stream"])
            .collect();
        assert_eq!(
            streams,
            [
                // Sessions have no level and no outcome; label values sort
                // absent first, then by value.
                &json!({"type": "session", "host": "pro2-win1", "command": "Start session", "env": "prod", "job": "herald"}),
                &json!({"type": "task", "level": "INFO", "host": "pro2-win1", "outcome": "failed", "env": "prod", "job": "herald"}),
            ]
        );
    }

    #[test]
    fn the_default_labels_are_type_source_level_and_host() {
        let c = config("url = \"http://loki:3100\"");
        let body = push(&c, &[event("engine", 1)]);
        assert_eq!(
            body["streams"][0]["stream"],
            json!({"type": "log", "source": "engine", "level": "ERROR", "host": "pro2-win1"})
        );
    }

    #[test]
    fn a_range_sends_only_its_events() {
        let c = config("url = \"http://loki:3100\"\nlabels = [\"type\"]");
        let events = [event("engine", 1), event("proxy", 2), event("session", 3)];
        let (mut lines, mut starts, mut times) = (Vec::new(), Vec::new(), Vec::new());
        let batch = Prepared::new(&c, &events, &mut lines, &mut starts, &mut times);
        let mut out = Vec::new();
        batch.write_push(&mut out, &mut Vec::new(), 1..3);
        let body: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            body,
            json!({"streams": [
                {"stream": {"type": "log"}, "values": [entry(&events[1])]},
                {"stream": {"type": "session"}, "values": [entry(&events[2])]},
            ]})
        );
    }

    #[test]
    fn the_push_url_is_under_the_base_url() {
        assert_eq!(
            config("url = \"https://logs.example.com/\"")
                .push_url()
                .unwrap()
                .as_str(),
            "https://logs.example.com/loki/api/v1/push"
        );
        assert_eq!(
            config("url = \"http://gw:8080/tenant-a\"")
                .push_url()
                .unwrap()
                .as_str(),
            "http://gw:8080/tenant-a/loki/api/v1/push"
        );
    }

    #[test]
    fn a_valid_config_passes() {
        let c = config(
            "url = \"https://loki:3100\"\ntenant = \"sense\"\nusername = \"u\"\npassword = \"p\"\n\
             static_labels = { job = \"herald\", _env2 = \"x\" }",
        );
        assert_eq!(c.validate(), Ok(()));
        let c = config(
            "url = \"http://loki\"\nbearer_token = \"t\"\nlabels = [\"level\"]\nstatic_labels = { job = \"h\" }",
        );
        assert_eq!(c.validate(), Ok(()));
    }

    /// The key and message of the first problem.
    fn problem(text: &str) -> (&'static str, String) {
        config(text).validate().unwrap_err()
    }

    #[test]
    fn validation_names_the_key_and_the_fix() {
        let (key, message) = problem("url = \"loki:3100\"");
        assert_eq!(key, "url");
        assert!(message.contains("http://127.0.0.1:3100"), "{message}");
        let (key, message) = problem("url = \"ftp://loki\"");
        assert_eq!(key, "url", "{message}");
        let (key, message) = problem("url = \"http://loki:3100/loki/api/v1/push\"");
        assert_eq!(key, "url");
        assert!(message.contains("\"http://loki:3100\""), "{message}");

        let (key, message) = problem("url = \"http://loki\"\nusername = \"u\"");
        assert_eq!(key, "username");
        assert!(message.contains("both username and password"), "{message}");
        assert_eq!(
            problem("url = \"http://loki\"\npassword = \"p\"").0,
            "username"
        );
        let (key, message) = problem(
            "url = \"http://loki\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"",
        );
        assert_eq!(key, "bearer_token");
        assert!(message.contains("not both"), "{message}");
        assert_eq!(problem("url = \"http://loki\"\ntenant = \"\"").0, "tenant");
    }

    #[test]
    fn validation_checks_labels() {
        let (key, message) = problem("url = \"http://loki\"\nlabels = []");
        assert_eq!(key, "labels");
        assert!(message.contains("labels = [\"type\""), "{message}");
        let (key, message) =
            problem("url = \"http://loki\"\nlabels = [\"type\", \"host\", \"host\"]");
        assert_eq!(key, "labels");
        assert!(message.contains("\"host\" twice"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nlabels = [\"level\", \"host\"]");
        assert_eq!(key, "labels");
        assert!(message.contains("static_labels"), "{message}");
        assert!(toml::from_str::<LokiConfig>("url = \"x\"\nlabels = [\"user\"]").is_err());
    }

    #[test]
    fn validation_checks_static_label_names_and_values() {
        for name in ["\"9lives\"", "\"sense-env\"", "\"\"", "\"é\""] {
            let (key, message) = problem(&format!(
                "url = \"http://loki\"\nstatic_labels = {{ {name} = \"x\" }}"
            ));
            assert_eq!(key, "static_labels", "{name}");
            assert!(message.contains("not a valid Loki label name"), "{message}");
        }
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { __name = \"x\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("reserved"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { host = \"x\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("also in labels"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { job = \"\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("empty value"), "{message}");
    }

    #[test]
    fn label_names_follow_loki_rules() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("_x9"));
        assert!(valid_label_name("Env_2"));
        assert!(!valid_label_name(""));
        assert!(!valid_label_name("2x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name("a.b"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = config(
            "url = \"http://loki\"\nusername = \"u\"\npassword = \"hunter2\"\nbearer_token = \"tok3n\"",
        );
        let shown = format!("{c:?}{}", toml::to_string(&c).unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn the_sink_builds_and_posts_to_the_push_path() {
        let sink = LokiSink::new(&config("url = \"http://127.0.0.1:3100/\"")).unwrap();
        assert_eq!(sink.url.as_str(), "http://127.0.0.1:3100/loki/api/v1/push");
    }
}
