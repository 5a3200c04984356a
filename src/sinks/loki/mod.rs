//! The `loki` sink: events to Grafana Loki's push API (`/loki/api/v1/push`,
//! JSON body), one stream per distinct label set.
//!
//! Each event becomes one log entry: its line is the event's JSON (the same
//! object the `file` sink writes) and its timestamp is the event's own `time` in
//! nanoseconds, with the event's sequence number in the sub-millisecond digits
//! (as the `influxdb` sink does, see
//! [`timestamp_ns`](crate::sinks::influxdb::schema::timestamp_ns)) so that same-millisecond
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
//! This file holds the sink and its bisecting delivery; `config` has the keys
//! and their validation, `push` writes the push body, and `check` the
//! `herald check --connect` probe.
//!
//! This sink does not use Loki's protobuf/snappy encoding, structured metadata or
//! high-cardinality labels (ids, users, messages stay in the line, where LogQL's
//! `| json` reads them), and it does not check the connection at start-up.

mod check;
mod config;
mod push;

use std::ops::Range;
use std::sync::Arc;

use super::isolate::{self, PostRange, Refusals};
use super::transport;
use super::{Sink, SinkError};
use crate::event::Event;
pub use check::check_connection;
pub use config::{LokiConfig, LokiLabel, PUSH_PATH};
use push::Prepared;

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
        let mut posting = Posting {
            sink: self,
            batch: &batch,
            order,
        };
        isolate::deliver(&REFUSALS, events.len(), &mut posting).await
    }
}

/// A prepared batch being posted, range by range.
struct Posting<'p, 'a> {
    sink: &'p mut LokiSink,
    batch: &'p Prepared<'a>,
    /// Event indexes sorted into streams, reused for each request.
    order: &'p mut Vec<usize>,
}

impl PostRange for Posting<'_, '_> {
    async fn post(&mut self, range: Range<usize>) -> Result<(), SinkError> {
        self.sink.post(self.batch, self.order, range).await
    }
}

/// What Loki refuses as bad data, never to be stored: an entry it cannot take
/// (400: too old, line too long, ...) or a body too large (413).
const REFUSALS: Refusals = Refusals {
    destination: "Loki",
    items: "entries",
    bad_data: &[400, 413],
};

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

/// A config from TOML text, for tests.
#[cfg(test)]
fn config_from(text: &str) -> LokiConfig {
    toml::from_str(text).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_builds_and_posts_to_the_push_path() {
        let sink = LokiSink::new(&config_from("url = \"http://127.0.0.1:3100/\"")).unwrap();
        assert_eq!(sink.url.as_str(), "http://127.0.0.1:3100/loki/api/v1/push");
    }
}
