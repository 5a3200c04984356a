//! The Loki push body (`{"streams":[...]}`, JSON) for a range of a batch: each
//! event's line (its JSON), timestamp and label values are computed once per
//! batch ([`Prepared`]), and a range's events are grouped into streams by label
//! values and sorted by time when its body is written.
//!
//! It writes into a buffer and sends nothing; gzip and the request are the sink's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::ser::{SerializeMap as _, SerializeSeq as _, SerializeTuple as _};
use serde::{Serialize, Serializer};

use super::{LokiConfig, LokiLabel};
use crate::event::{Event, prefetch};
use crate::sinks::influxdb::schema::timestamp_ns;

/// A batch made ready to send: each event's label values, timestamp and line.
pub(super) struct Prepared<'a> {
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
    pub(super) fn new(
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
        for event in prefetch::ahead(events) {
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
    pub(super) fn write_push(
        &self,
        out: &mut Vec<u8>,
        order: &mut Vec<usize>,
        range: Range<usize>,
    ) {
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
    use crate::sinks::loki::config_from as config;

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
}
