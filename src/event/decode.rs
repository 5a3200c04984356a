//! Reading an event back from its JSON ([`Event::from_json`]), for sending
//! dead-lettered events again: the inverse of [`Event::write_json`] as
//! `docs/EVENTS.md` describes the object.
//!
//! It reads the envelope (`type`, `source`, `tag`, `time` with its offset,
//! `time_source`, `received_at`, `sender`, `level`, `outcome`, `truncated`),
//! every field by its JSON name, `raw_fields`, `categories` and `tags`, so the
//! event it returns writes the same JSON again. A number field keeps its JSON
//! text as it was written (which is why it reads bytes, not a parsed
//! `serde_json::Value`, whose numbers forget their spelling); each field's kind
//! decides whether it must be a number or a string. Errors name the key that
//! is wrong.
//!
//! It does not accept what herald would not write: unknown or repeated keys, a
//! valid `level` field (an unknown level is only ever under `raw_fields`), a
//! number that is not in the form the parser keeps, a GUID field (other than
//! the GUID-or-text ones) that is not a GUID in lower case, a time field that
//! is not a log4net time. Times are kept to the
//! precision written (milliseconds) and `sequence`, which is not in the JSON, is
//! 0. It does not parse datagrams (that is [`crate::parse`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::Offset;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    Category, Event, EventTime, EventType, Field, FieldKind, LayoutName, Level, Source, Span,
    Spans, TaskOutcome, TimeSource, field_bit,
};
use crate::parse::value::{is_guid, is_json_number, timestamp};

/// The error of [`Event::from_json`] for an event too large to read.
pub(crate) const TOO_LARGE: &str = "the event is larger than 4 GiB";

/// How the error of [`Event::from_json`] starts when the text is not a JSON
/// object.
pub(crate) const NOT_AN_OBJECT: &str = "not a JSON object";

impl Event {
    /// Reads an event from the JSON object [`Event::write_json`] writes (as
    /// bytes, so that numbers keep their spelling); its `to_json()` is that
    /// JSON again. `sequence`, which the JSON does not hold, is 0. Unknown or
    /// repeated keys, and values of the wrong JSON type for their key, are
    /// refused.
    ///
    /// # Errors
    ///
    /// `key: why` for a key that is missing or wrong; a message without a
    /// key (`the event is larger than 4 GiB`) when the whole object is.
    pub fn from_json(json: &[u8]) -> Result<Event, String> {
        if u32::try_from(json.len()).is_err() {
            return Err(TOO_LARGE.into());
        }
        let members = serde_json::from_slice::<Members<'_>>(json)
            .map_err(|err| format!("{NOT_AN_OBJECT}: {err}"))?
            .0;
        let mut seen = HashSet::with_capacity(members.len());
        let mut text = String::with_capacity(json.len());
        let mut fields = Fields::default();
        let (mut event_type, mut source, mut tag, mut time) = (None, None, None, None);
        let (mut time_source, mut received_at, mut sender) = (None, None, None);
        let (mut level, mut outcome, mut truncated) = (None, None, false);
        let (mut categories, mut tags) = (Vec::new(), None);
        let (mut layout, mut malformed) = (None, None);
        for (key, value) in &members {
            let key = key.as_str();
            if !seen.insert(key) {
                return Err(format!("{key}: appears twice"));
            }
            match key {
                "type" => event_type = Some(one_of(key, value, &EventType::ALL, |t| t.as_str())?),
                "source" => source = Some(one_of(key, value, &Source::ALL, |s| s.as_str())?),
                "layout" => layout = Some(one_of(key, value, &LayoutName::ALL, |l| l.as_str())?),
                "malformed_fields" => {
                    malformed = Some(serde_json::from_str::<Vec<String>>(value.get()).map_err(
                        |_| format!("{key}: is not a list of field names: {}", value.get()),
                    )?);
                }
                "tag" => tag = Some(push(&mut text, &string(key, value)?)),
                "time" => time = Some(event_time(key, &string(key, value)?)?),
                "time_source" => {
                    time_source = Some(one_of(key, value, &TimeSource::ALL, |t| t.as_str())?);
                }
                "received_at" => {
                    let at = string(key, value)?;
                    received_at =
                        Some(at.parse::<Timestamp>().map_err(|err| {
                            format!("{key}: {at:?} is not an RFC 3339 time: {err}")
                        })?);
                }
                "sender" => {
                    let at = string(key, value)?;
                    sender = Some(at.parse::<SocketAddr>().map_err(|_| {
                        format!("{key}: {at:?} is not an address and port, e.g. \"10.0.0.5:61000\"")
                    })?);
                }
                "level" => level = Some(one_of(key, value, &Level::ALL, |l| l.as_str())?),
                "outcome" => outcome = Some(one_of(key, value, &TaskOutcome::ALL, |o| o.as_str())?),
                "truncated" => {
                    truncated = serde_json::from_str(value.get())
                        .map_err(|_| format!("{key}: {} is not true or false", value.get()))?;
                }
                "categories" => categories = category_list(key, value)?,
                "tags" => {
                    tags = Some(Arc::new(
                        serde_json::from_str::<BTreeMap<String, String>>(value.get()).map_err(
                            |_| format!("{key}: is not an object of strings: {}", value.get()),
                        )?,
                    ));
                }
                "raw_fields" => {
                    let raw = object(key, value)?;
                    for (name, value) in &raw {
                        let field = Field::from_name(name)
                            .ok_or_else(|| format!("raw_fields: {name:?} is not a field"))?;
                        let span = push(&mut text, &string(&format!("raw_fields.{name}"), value)?);
                        fields.set(field, span, false)?;
                    }
                }
                _ => {
                    let field = Field::from_name(key)
                        .filter(|&field| field != Field::Level)
                        .ok_or_else(|| format!("{key}: is not a key of an event"))?;
                    let span = match field.kind() {
                        FieldKind::Integer | FieldKind::Decimal => {
                            let number = value.get();
                            let integer = field.kind() == FieldKind::Integer;
                            if !is_json_number(number.as_bytes(), integer) {
                                let kind = if integer {
                                    "a whole number"
                                } else {
                                    "a number"
                                };
                                return Err(format!("{key}: {number} is not {kind}"));
                            }
                            push(&mut text, number)
                        }
                        // A GUID-or-text value that is not a GUID is cleaned
                        // and cut like text, which may leave any shape.
                        FieldKind::Text | FieldKind::GuidOrText => {
                            push(&mut text, &string(key, value)?)
                        }
                        FieldKind::Guid => {
                            let guid = string(key, value)?;
                            check_guid(key, &guid)?;
                            push(&mut text, &guid)
                        }
                        FieldKind::Timestamp => {
                            let time = string(key, value)?;
                            if timestamp(time.as_bytes()).is_none() {
                                return Err(format!(
                                    "{key}: {time:?} is not a log4net time like \
                                     \"2021-02-16 09:24:59,099\" or \
                                     \"2021-02-16T09:24:59.099+0100\" \
                                     (herald keeps any other value under raw_fields)"
                                ));
                            }
                            push(&mut text, &time)
                        }
                    };
                    fields.set(field, span, true)?;
                }
            }
        }
        let missing = |key: &str| format!("{key}: missing");
        let (instant, offset) = time.ok_or_else(|| missing("time"))?;
        let event_type = event_type.ok_or_else(|| missing("type"))?;
        let source = source.ok_or_else(|| missing("source"))?;
        // Events written before events named their layout had one per type
        // and source.
        let layout = match layout {
            Some(layout) if layout.event_type() != event_type || layout.source() != source => {
                return Err(format!(
                    "layout: {:?} is not a layout of {} events from {}",
                    layout.as_str(),
                    event_type.as_str(),
                    source.as_str()
                ));
            }
            Some(layout) => layout,
            None => LayoutName::before_layouts(event_type, source).ok_or_else(|| {
                format!(
                    "source: {} events do not come from {}",
                    event_type.as_str(),
                    source.as_str()
                )
            })?,
        };
        // `malformed_fields` names the keys of `raw_fields`; it is written from
        // them, so it must agree.
        if let Some(malformed) = malformed {
            let raw: Vec<&str> = Field::ALL
                .iter()
                .filter(|&&field| fields.raws & field_bit(field) != 0)
                .map(|field| field.name())
                .collect();
            if malformed != raw {
                return Err(format!(
                    "malformed_fields: {malformed:?} does not name the keys of raw_fields ({raw:?})"
                ));
            }
        }
        let mut event = Event {
            event_type,
            source,
            layout,
            level,
            outcome,
            time: EventTime { instant, offset },
            time_source: time_source.ok_or_else(|| missing("time_source"))?,
            received_at: received_at.ok_or_else(|| missing("received_at"))?,
            sender: sender.ok_or_else(|| missing("sender"))?,
            truncated,
            categories,
            tags,
            sequence: 0,
            tag: tag.ok_or_else(|| missing("tag"))?,
            escaped: u64::MAX,
            text,
            spans: fields.spans,
            values: fields.values,
            raws: fields.raws,
        };
        event.escaped = event.escape_mask();
        Ok(event)
    }
}

/// The field table being filled: spans and the two masks.
struct Fields {
    spans: Spans,
    values: u64,
    raws: u64,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            spans: Spans::new(),
            values: 0,
            raws: 0,
        }
    }
}

impl Fields {
    /// Records `field` at `span`, as a valid value or a raw one.
    fn set(&mut self, field: Field, span: Span, valid: bool) -> Result<(), String> {
        let bit = field_bit(field);
        if (self.values | self.raws) & bit != 0 {
            return Err(format!(
                "{}: is both a field and under raw_fields",
                field.name()
            ));
        }
        self.spans.set(field, span);
        if valid {
            self.values |= bit;
        } else {
            self.raws |= bit;
        }
        Ok(())
    }
}

/// Appends `value` to the text; returns where it sits (the length was checked
/// to fit a `u32` up front: the text is never longer than the JSON).
fn push(text: &mut String, value: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(value);
    Span {
        start,
        end: text.len() as u32,
    }
}

/// A JSON string's value.
fn string(key: &str, value: &RawValue) -> Result<String, String> {
    serde_json::from_str(value.get()).map_err(|_| format!("{key}: {} is not a string", value.get()))
}

/// A GUID field's value as herald writes it: a GUID in lower case (the parser
/// lower-cases them, and keeps anything else under `raw_fields`).
fn check_guid(key: &str, value: &str) -> Result<(), String> {
    let problem = if !is_guid(value.as_bytes()) {
        "is not a GUID (herald keeps any other value under raw_fields)"
    } else if value.bytes().any(|b| b.is_ascii_uppercase()) {
        "is a GUID in upper case (herald writes them in lower case)"
    } else {
        return Ok(());
    };
    Err(format!("{key}: {value:?} {problem}"))
}

/// The variant of `table` whose `name` is the JSON string `value`.
fn one_of<T: Copy>(
    key: &str,
    value: &RawValue,
    table: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    let text = string(key, value)?;
    table
        .iter()
        .copied()
        .find(|&variant| name(variant) == text)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|&variant| name(variant)).collect();
            format!("{key}: {text:?} is not one of {}", names.join(", "))
        })
}

/// `time`: an RFC 3339 time with a numeric offset (`+hh:mm`, or `Z` for UTC).
fn event_time(key: &str, text: &str) -> Result<(Timestamp, Offset), String> {
    let problem = || format!("{key}: {text:?} is not an RFC 3339 time with an offset");
    let instant = text.parse::<Timestamp>().map_err(|_| problem())?;
    if text.ends_with(['Z', 'z']) {
        return Ok((instant, Offset::UTC));
    }
    let offset = match text.as_bytes() {
        [.., sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let digit = |b: &u8| i32::from(b - b'0');
            let minutes = (digit(h1) * 10 + digit(h2)) * 60 + digit(m1) * 10 + digit(m2);
            let seconds = if *sign == b'-' { -minutes } else { minutes } * 60;
            Offset::from_seconds(seconds).map_err(|_| problem())?
        }
        _ => return Err(problem()),
    };
    Ok((instant, offset))
}

/// `categories`: name → value, in the object's order (the order rules set them).
fn category_list(key: &str, value: &RawValue) -> Result<Vec<Category>, String> {
    object(key, value)?
        .iter()
        .map(|(name, value)| {
            let value = string(&format!("{key}.{name}"), value)?;
            Ok((Arc::from(name.as_str()), Arc::from(value)))
        })
        .collect()
}

/// A JSON object's members, in order.
fn object<'a>(key: &str, value: &'a RawValue) -> Result<Vec<(String, &'a RawValue)>, String> {
    serde_json::from_str::<Members<'a>>(value.get())
        .map(|members| members.0)
        .map_err(|_| format!("{key}: {} is not an object", value.get()))
}

/// A JSON object's members in document order, values left as JSON text
/// (a map type would sort the keys or parse the numbers).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{fixture_datagrams, test_events};

    #[test]
    fn every_fixture_event_reads_back_to_the_same_json() {
        let events = test_events();
        assert!(events.len() >= 25, "only {} events", events.len());
        for (name, event) in &events {
            let json = event.to_json();
            let back =
                Event::from_json(json.as_bytes()).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(back.to_json(), json, "{name}");
            assert_eq!(back.sequence, 0);
            assert_eq!(back.tag(), event.tag(), "{name}");
            for &field in Field::ALL {
                assert_eq!(back.get(field), event.get(field), "{name} {field:?}");
                assert_eq!(back.raw(field), event.raw(field), "{name} {field:?}");
            }
        }
    }

    /// The first fixture event's JSON with `key` set to `value` (JSON text), or
    /// removed when `value` is `None`.
    fn with(key: &str, value: Option<&str>) -> Result<Event, String> {
        let (_, event) = &test_events()[0];
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.to_json()).unwrap();
        match value {
            Some(value) => object.insert(key.into(), serde_json::from_str(value).unwrap()),
            None => object.remove(key),
        };
        Event::from_json(serde_json::to_string(&object).unwrap().as_bytes())
    }

    fn error(key: &str, value: Option<&str>) -> String {
        with(key, value)
            .err()
            .unwrap_or_else(|| panic!("{key} = {value:?} was accepted"))
    }

    #[test]
    fn errors_name_the_key() {
        for key in [
            "type",
            "source",
            "tag",
            "time",
            "time_source",
            "received_at",
            "sender",
        ] {
            assert_eq!(error(key, None), format!("{key}: missing"));
        }
        // The key set, its JSON value, and the start of the error.
        let cases = [
            (
                "type",
                "\"metric\"",
                "type: \"metric\" is not one of log, qix_perf, session, connection, task, engine_reload_failed",
            ),
            ("tag", "7", "tag: 7 is not a string"),
            ("time", "\"yesterday\"", "time: \"yesterday\""),
            ("time", "\"2024-05-19T12:03:12.114+0200\"", "time: "),
            ("received_at", "\"noon\"", "received_at: "),
            ("sender", "\"somewhere\"", "sender: "),
            ("level", "\"VERBOSE\"", "level: \"VERBOSE\""),
            ("truncated", "\"yes\"", "truncated: "),
            ("log_row", "\"12\"", "log_row: \"12\" is not a whole number"),
            ("log_row", "1.5", "log_row: 1.5 is not a whole number"),
            (
                "process_time",
                "\"fast\"",
                "process_time: \"fast\" is not a number",
            ),
            ("message", "1", "message: 1 is not a string"),
            (
                "task_id",
                "\"reload-7\"",
                "task_id: \"reload-7\" is not a GUID (herald keeps",
            ),
            (
                "app_id",
                "\"E7AF59A0-C243-480D-9571-08727551A66F\"",
                "app_id: \"E7AF59A0-C243-480D-9571-08727551A66F\" is a GUID in upper case",
            ),
            (
                "ts_iso",
                "\"yesterday\"",
                "ts_iso: \"yesterday\" is not a log4net time",
            ),
            (
                "ts_local",
                "\"2021-02-30 09:24:59,099\"",
                "ts_local: \"2021-02-30 09:24:59,099\" is not a log4net time",
            ),
            ("colour", "\"red\"", "colour: is not a key of an event"),
            ("categories", "{\"a\": 1}", "categories.a: "),
            ("categories", "[]", "categories: "),
            ("tags", "{\"a\": 1}", "tags: "),
            (
                "raw_fields",
                "{\"colour\": \"red\"}",
                "raw_fields: \"colour\" is not a field",
            ),
            (
                "raw_fields",
                "{\"host\": \"x\"}",
                "host: is both a field and under raw_fields",
            ),
        ];
        for (key, value, expected) in cases {
            let message = error(key, Some(value));
            assert!(message.starts_with(expected), "{key} = {value}: {message}");
        }
        for json in [&b"[1]"[..], b"{", b""] {
            let message = Event::from_json(json).unwrap_err();
            assert!(message.starts_with("not a JSON object"), "{message}");
        }
    }

    #[test]
    fn guid_and_time_fields_take_what_herald_writes() {
        for (key, value) in [
            ("task_id", "dec2a02a-1680-44ef-8dc2-e2bfb180af87"),
            ("session_id", "0"),
            ("session_id", "DEC2A02A-1680-44EF-8DC2-E2BFB180AF87"),
            ("proxy_session_id", "not a session"),
            ("ts_iso", "2021-02-16T09:24:59.099+0100"),
            ("ts_local", "2021-02-16 09:24:59,099"),
        ] {
            // The first fixture keeps some fields under raw_fields: without them.
            let (_, fixture) = &test_events()[0];
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&fixture.to_json()).unwrap();
            object.remove("raw_fields");
            object.remove("malformed_fields");
            object.insert(key.into(), value.into());
            let json = serde_json::to_string(&object).unwrap();
            let event = Event::from_json(json.as_bytes())
                .unwrap_or_else(|err| panic!("{key} = {value:?}: {err}"));
            let field = Field::from_name(key).unwrap();
            assert_eq!(event.get(field), Some(value), "{key}");
            let again = Event::from_json(event.to_json().as_bytes()).unwrap();
            assert_eq!(again.to_json(), event.to_json(), "{key}");
        }
    }

    #[test]
    fn events_with_values_cut_to_a_small_field_cap_read_back() {
        let datagrams = fixture_datagrams();
        let sender = "10.0.0.5:61000".parse().unwrap();
        let received_at = "2026-11-23T08:00:00Z".parse().unwrap();
        for cap in [1, 8, 16, 23, 35, 36, 37] {
            let config = crate::parse::ParseConfig {
                max_field_bytes: cap,
                ..crate::parse::ParseConfig::default()
            };
            let mut parser = crate::parse::Parser::new(&config).unwrap();
            for (_, datagram) in &datagrams {
                let Ok(event) = parser.parse(datagram, sender, received_at) else {
                    continue;
                };
                let json = event.to_json();
                let back = Event::from_json(json.as_bytes())
                    .unwrap_or_else(|err| panic!("cap {cap}: {err}\n{json}"));
                assert_eq!(back.to_json(), json, "cap {cap}");
            }
        }
    }

    #[test]
    fn layout_and_malformed_fields_are_read_and_checked() {
        // The first fixture is a qix-perf event with malformed fields.
        let event = with("layout", None).unwrap();
        assert_eq!(
            event.layout,
            LayoutName::QixPerf,
            "events from before layouts"
        );
        let event = with("layout", Some("\"qix-perf/legacy\"")).unwrap();
        assert_eq!(event.layout, LayoutName::QixPerfLegacy);
        assert!(
            error("layout", Some("\"task\""))
                .starts_with("layout: \"task\" is not a layout of qix_perf events"),
            "{}",
            error("layout", Some("\"task\""))
        );
        assert!(error("layout", Some("\"qix-perf/2031\"")).starts_with("layout:"));
        assert!(with("malformed_fields", None).is_ok());
        assert!(
            error("malformed_fields", Some("[\"host\"]"))
                .starts_with("malformed_fields: [\"host\"] does not name the keys of raw_fields")
        );
    }

    #[test]
    fn a_repeated_key_is_refused() {
        let (_, event) = &test_events()[0];
        let json = event.to_json();
        let twice = format!("{},\"tag\":\"x\"}}", &json[..json.len() - 1]);
        assert_eq!(
            Event::from_json(twice.as_bytes()).unwrap_err(),
            "tag: appears twice"
        );
    }

    #[test]
    fn numbers_keep_their_spelling_and_times_their_offset() {
        // Appended as text: a parsed JSON value would forget the spelling.
        let events = test_events();
        let (_, event) = events
            .iter()
            .find(|(name, _)| name == "engine_error")
            .expect("the engine_error fixture");
        assert_eq!(event.get(Field::ProcessTime), None);
        let json = event.to_json();
        let json = format!("{},\"process_time\":0.0010}}", &json[..json.len() - 1]);
        let event = Event::from_json(json.as_bytes()).unwrap();
        assert_eq!(event.get(Field::ProcessTime), Some("0.0010"));
        assert!(event.to_json().contains(",\"process_time\":0.0010,"));
        let event = with("time", Some("\"2024-05-19T12:03:12.114-05:30\"")).unwrap();
        assert_eq!(event.time.offset.seconds(), -(5 * 3600 + 30 * 60));
        assert!(
            event
                .to_json()
                .contains("\"time\":\"2024-05-19T12:03:12.114-05:30\"")
        );
        let event = with("time", Some("\"2024-05-19T17:33:12.114Z\"")).unwrap();
        assert_eq!(event.time.offset, Offset::UTC);
    }
}
