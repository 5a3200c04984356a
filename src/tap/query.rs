//! A tap's request as a URL query: the keys of a `match` table, each value
//! its own `key=value` pair (`types=task&outcomes=failed&task_names=Finance*`),
//! plus `limit` (events a second). Singular keys (`type`, `host`,
//! `task_name`, ...) are accepted too, for URLs typed by hand.
//!
//! [`encode`] writes what [`decode`] reads, so `herald tap` and the status
//! page ask for exactly the table the user gave.

use percent_encoding::{percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

use super::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::redact::COMPONENT;
use crate::route::MatchConfig;

/// What a tap asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TapQuery {
    /// Which events.
    pub filter: MatchConfig,
    /// Events a second, at most.
    pub limit: u32,
}

/// Most `key=value` pairs a tap's query may have: every value is checked
/// against every event the workers route, so many would slow them down.
pub const MAX_VALUES: usize = 64;

/// The `match` keys that take one value rather than a list.
const SINGLE: [&str; 1] = ["min_level"];

/// Reads a query string (without the `?`).
///
/// # Errors
///
/// A message naming what is wrong: an unknown key, a value that is not one
/// of the key's values, a bad limit, an ID that is no GUID.
pub fn decode(query: &str) -> Result<TapQuery, String> {
    let mut table = Map::new();
    let mut limit = DEFAULT_LIMIT;
    let pairs = query.split('&').filter(|pair| !pair.is_empty()).count();
    if pairs > MAX_VALUES {
        return Err(format!(
            "{pairs} filter values; a tap takes at most {MAX_VALUES} (each is checked against every event)"
        ));
    }
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode_component(key)?, decode_component(value)?);
        if key == "limit" {
            limit = value
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| format!("limit: {value:?} is not a number from 1 to {MAX_LIMIT}"))?;
            continue;
        }
        let key = plural(&key);
        if SINGLE.contains(&key.as_str()) {
            table.insert(key, Value::String(value));
        } else {
            if let Value::Array(values) =
                table.entry(key).or_insert_with(|| Value::Array(Vec::new()))
            {
                values.push(Value::String(value));
            }
        }
    }
    let filter: MatchConfig = serde_json::from_value(Value::Object(table)).map_err(|err| {
        // serde's text names the value and, for unknown keys, the keys there are.
        format!("{err}")
    })?;
    if let Some((key, problem)) = filter.problems().into_iter().next() {
        return Err(format!("{key}: {problem}"));
    }
    Ok(TapQuery { filter, limit })
}

/// Reads `key`/`value` pairs as [`decode`] reads a query string.
///
/// # Errors
///
/// As [`decode`].
pub fn from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a String)>,
) -> Result<TapQuery, String> {
    let query: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value)))
        .collect();
    decode(&query.join("&"))
}

/// Writes a query string (without the `?`) that [`decode`] reads back.
pub fn encode(query: &TapQuery) -> String {
    let mut pairs = Vec::new();
    if let Ok(Value::Object(table)) = serde_json::to_value(&query.filter) {
        for (key, value) in table {
            let values = match value {
                Value::Array(values) => values,
                other => vec![other],
            };
            for value in values {
                if let Value::String(value) = value {
                    pairs.push(format!(
                        "{}={}",
                        encode_component(&key),
                        encode_component(&value)
                    ));
                }
            }
        }
    }
    pairs.push(format!("limit={}", query.limit));
    pairs.join("&")
}

/// The `match` key for a key given in the singular (`type` → `types`).
fn plural(key: &str) -> String {
    match key {
        "type" | "source" | "level" | "host" | "outcome" | "task_id" | "task_name" | "app_id"
        | "app_name" | "user" | "exclude_user" | "method" | "object_type" => format!("{key}s"),
        "subsystem" | "subsystem_prefix" => "subsystem_prefixes".into(),
        "message" => "message_contains".into(),
        other => other.into(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// Undoes percent-encoding (and `+` for a space, as forms send it).
fn decode_component(text: &str) -> Result<String, String> {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Level, TaskOutcome};

    #[test]
    fn a_query_reads_into_a_match_table() {
        let query = decode(
            "type=task&outcome=failed&outcomes=aborted&task_name=Finance%20*&user=LAB%5Cgoran&min_level=WARN&limit=20",
        )
        .unwrap();
        assert_eq!(query.limit, 20);
        assert_eq!(query.filter.types, [EventType::Task]);
        assert_eq!(
            query.filter.outcomes,
            [TaskOutcome::Failed, TaskOutcome::Aborted]
        );
        assert_eq!(query.filter.task_names, ["Finance *"]);
        assert_eq!(query.filter.users, ["LAB\\goran"]);
        assert_eq!(query.filter.min_level, Some(Level::Warn));
        assert_eq!(decode("").unwrap().limit, DEFAULT_LIMIT);
        assert!(decode("").unwrap().filter.is_empty());
        assert_eq!(
            decode("message=a+b").unwrap().filter.message_contains,
            ["a b"]
        );
    }

    #[test]
    fn encode_writes_what_decode_reads() {
        let query = TapQuery {
            filter: MatchConfig {
                types: vec![EventType::Task, EventType::Log],
                task_names: vec!["Finance & Co = 100% ünïcode, \"quoted\"".into()],
                users: vec!["LAB\\svc_*".into()],
                min_level: Some(Level::Error),
                ..MatchConfig::default()
            },
            limit: 7,
        };
        let text = encode(&query);
        assert!(text.is_ascii(), "{text}");
        assert_eq!(decode(&text).unwrap(), query);
    }

    #[test]
    fn mistakes_are_named() {
        let err = decode("type=tsk").unwrap_err();
        assert!(err.contains("tsk") && err.contains("task"), "{err}");
        let err = decode("colour=red").unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = decode("limit=0").unwrap_err();
        assert!(err.starts_with("limit:"), "{err}");
        let err = decode("limit=5000").unwrap_err();
        assert!(err.contains("1000"), "{err}");
        let err = decode("task_id=abc").unwrap_err();
        assert!(err.starts_with("task_ids[0]:"), "{err}");
        let many = vec!["host=x"; MAX_VALUES + 1].join("&");
        assert!(decode(&many).unwrap_err().contains("at most 64"));
        let err = decode("host=%ff").unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }
}
