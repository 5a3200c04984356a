//! Sinks' `match` tables: which events a sink receives.

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventType, Field, Level, Source, TaskOutcome};

/// Conditions an event must meet to reach a sink. Every condition given must hold;
/// within a list, any entry may match. An empty table matches everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Event types, e.g. `["log", "task"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// Sources, e.g. `["engine", "scheduler"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// Exact levels, e.g. `["ERROR", "FATAL"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
    /// Lowest level accepted, e.g. `"WARN"`. Events without a level do not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<Level>,
    /// Sense host names (`%hostname`), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Prefixes of the subsystem (`%logger`), e.g. `"System.Scheduler"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsystem_prefixes: Vec<String>,
    /// Texts the message must contain (case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_contains: Vec<String>,
    /// Task outcomes, e.g. `["failed", "aborted"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<TaskOutcome>,
}

impl MatchConfig {
    /// Whether the table sets no condition (matches everything).
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.sources.is_empty()
            && self.levels.is_empty()
            && self.min_level.is_none()
            && self.hosts.is_empty()
            && self.subsystem_prefixes.is_empty()
            && self.message_contains.is_empty()
            && self.outcomes.is_empty()
    }
}

/// A compiled [`MatchConfig`].
#[derive(Debug, Clone)]
pub struct Matcher {
    types: Vec<EventType>,
    sources: Vec<Source>,
    levels: Vec<Level>,
    min_level: Option<Level>,
    hosts: Vec<String>,
    subsystem_prefixes: Vec<String>,
    message_contains: Vec<Finder<'static>>,
    outcomes: Vec<TaskOutcome>,
}

impl Matcher {
    /// Compiles a match table.
    pub fn new(config: &MatchConfig) -> Matcher {
        Matcher {
            types: config.types.clone(),
            sources: config.sources.clone(),
            levels: config.levels.clone(),
            min_level: config.min_level,
            hosts: config.hosts.clone(),
            subsystem_prefixes: config.subsystem_prefixes.clone(),
            message_contains: config
                .message_contains
                .iter()
                .map(|text| Finder::new(text.as_bytes()).into_owned())
                .collect(),
            outcomes: config.outcomes.clone(),
        }
    }

    /// Whether `event` meets every condition.
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.sources.is_empty() || self.sources.contains(&event.source))
            && (self.levels.is_empty() || event.level.is_some_and(|l| self.levels.contains(&l)))
            && self
                .min_level
                .is_none_or(|min| event.level.is_some_and(|l| l >= min))
            && (self.hosts.is_empty()
                || event
                    .host()
                    .is_some_and(|host| self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))))
            && (self.subsystem_prefixes.is_empty()
                || event.get(Field::Subsystem).is_some_and(|subsystem| {
                    self.subsystem_prefixes
                        .iter()
                        .any(|prefix| subsystem.starts_with(prefix.as_str()))
                }))
            && (self.message_contains.is_empty()
                || event.message().is_some_and(|message| {
                    self.message_contains
                        .iter()
                        .any(|finder| finder.find(message.as_bytes()).is_some())
                }))
            && (self.outcomes.is_empty()
                || event.outcome.is_some_and(|o| self.outcomes.contains(&o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::test_events::{PROXY_WARN, TASK_FAILED, event};

    fn matcher(toml: &str) -> Matcher {
        Matcher::new(&toml::from_str(toml).unwrap())
    }

    #[test]
    fn empty_match_accepts_everything() {
        assert!(matcher("").matches(&event(PROXY_WARN)));
    }

    #[test]
    fn every_condition_must_hold() {
        let proxy = event(PROXY_WARN);
        assert!(
            matcher(
                r#"types = ["log"]
sources = ["proxy"]
min_level = "WARN"
hosts = ["PRO2-WIN1"]
subsystem_prefixes = ["Audit.Proxy"]
message_contains = ["denied"]"#
            )
            .matches(&proxy)
        );
        assert!(!matcher(r#"min_level = "ERROR""#).matches(&proxy));
        assert!(!matcher(r#"levels = ["ERROR", "FATAL"]"#).matches(&proxy));
        assert!(!matcher(r#"message_contains = ["Denied"]"#).matches(&proxy));
        assert!(!matcher(r#"outcomes = ["failed"]"#).matches(&proxy));
    }

    #[test]
    fn task_outcome_matches_only_task_events() {
        let task = event(TASK_FAILED);
        assert!(matcher(r#"outcomes = ["failed", "aborted"]"#).matches(&task));
        assert!(!matcher(r#"outcomes = ["success"]"#).matches(&task));
    }
}
