//! Sinks' `match` tables: which events a sink receives. Categorisation rules
//! use the same table to say which events a rule applies to.

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use super::pattern::{NamePattern, UserPattern};
use crate::event::{Event, EventType, Field, Level, Source, TaskOutcome};
use crate::parse::value::is_guid;

/// Conditions an event must meet to reach a sink. Every condition given must hold;
/// within a list, any entry may match. An empty table matches everything.
///
/// Names (`task_names`, `app_names`, `users`, `exclude_users`, `methods`,
/// `object_types`) are exact or globs (`*`, `?`) and compare without regard
/// to case; an event without the field does not match (except for
/// `exclude_users`, which only ever removes events).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Task IDs (GUIDs, as the QMC shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<String>,
    /// Task names, exact or glob, e.g. `["Finance*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_names: Vec<String>,
    /// App IDs (GUIDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_ids: Vec<String>,
    /// App names, exact or glob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_names: Vec<String>,
    /// Users: `DIRECTORY\userid`, or `userid` in any directory; globs allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Users whose events never match, in the form of `users`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_users: Vec<String>,
    /// qix-perf engine methods, e.g. `["Doc::DoReload*", "Global::OpenApp"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// qix-perf object types, e.g. `["linechart", "table"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_types: Vec<String>,
    /// Events this table leaves out: a table of its own, e.g.
    /// `{ app_names = ["TEST - *"] }`; an event it matches does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Box<MatchConfig>>,
}

impl MatchConfig {
    /// Whether the table sets no condition (matches everything).
    pub fn is_empty(&self) -> bool {
        *self == MatchConfig::default()
    }

    /// What is wrong with the table: each problem with the key under the
    /// table it concerns (`task_ids[0]`) and the fix.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, ids, names) in [
            ("task_ids", &self.task_ids, "task_names"),
            ("app_ids", &self.app_ids, "app_names"),
        ] {
            for (i, id) in ids.iter().enumerate() {
                if !is_guid(id.as_bytes()) {
                    problems.push((
                        format!("{key}[{i}]"),
                        format!(
                            "{id:?} is not an ID; IDs are GUIDs such as dec2a02a-1680-44ef-8dc2-e2bfb180af87 \
                             (the QMC shows them); to match by name use {names}"
                        ),
                    ));
                }
            }
        }
        for (key, names) in [
            ("hosts", &self.hosts),
            ("subsystem_prefixes", &self.subsystem_prefixes),
            ("message_contains", &self.message_contains),
            ("task_names", &self.task_names),
            ("app_names", &self.app_names),
            ("users", &self.users),
            ("exclude_users", &self.exclude_users),
            ("methods", &self.methods),
            ("object_types", &self.object_types),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    problems.push((
                        format!("{key}[{i}]"),
                        "is empty; remove it, or use \"*\" for any value".into(),
                    ));
                }
            }
        }
        match self.exclude.as_deref() {
            Some(exclude) if exclude.is_empty() => problems.push((
                "exclude".into(),
                "is empty, so it would leave out every event; give it a condition or remove it"
                    .into(),
            )),
            Some(exclude) => problems.extend(
                exclude
                    .problems()
                    .into_iter()
                    .map(|(key, problem)| (format!("exclude.{key}"), problem)),
            ),
            None => {}
        }
        problems
    }
}

/// A compiled [`MatchConfig`].
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Whether the table is empty: every event matches.
    everything: bool,
    types: Vec<EventType>,
    sources: Vec<Source>,
    levels: Vec<Level>,
    min_level: Option<Level>,
    hosts: Vec<String>,
    subsystem_prefixes: Vec<String>,
    message_contains: Vec<Finder<'static>>,
    outcomes: Vec<TaskOutcome>,
    /// Lower case, as events carry them.
    task_ids: Vec<String>,
    task_names: Vec<NamePattern>,
    /// Lower case, as events carry them.
    app_ids: Vec<String>,
    app_names: Vec<NamePattern>,
    users: Vec<UserPattern>,
    exclude_users: Vec<UserPattern>,
    methods: Vec<NamePattern>,
    object_types: Vec<NamePattern>,
    exclude: Option<Box<Matcher>>,
}

impl Matcher {
    /// Compiles a match table.
    pub fn new(config: &MatchConfig) -> Matcher {
        let names = |list: &[String]| list.iter().map(|n| NamePattern::new(n)).collect();
        let users = |list: &[String]| list.iter().map(|u| UserPattern::new(u)).collect();
        let ids = |list: &[String]| list.iter().map(|id| id.to_ascii_lowercase()).collect();
        Matcher {
            everything: config.is_empty(),
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
            task_ids: ids(&config.task_ids),
            task_names: names(&config.task_names),
            app_ids: ids(&config.app_ids),
            app_names: names(&config.app_names),
            users: users(&config.users),
            exclude_users: users(&config.exclude_users),
            methods: names(&config.methods),
            object_types: names(&config.object_types),
            exclude: config
                .exclude
                .as_deref()
                .map(|exclude| Box::new(Matcher::new(exclude))),
        }
    }

    /// Whether `event` meets every condition.
    pub fn matches(&self, event: &Event) -> bool {
        if self.everything {
            return true;
        }
        let user = |patterns: &[UserPattern]| {
            let (full, id) = (event.get(Field::UserFull), event.get(Field::UserId));
            patterns.iter().any(|p| p.matches(full, id))
        };
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.sources.is_empty() || self.sources.contains(&event.source))
            && (self.levels.is_empty() || event.level.is_some_and(|l| self.levels.contains(&l)))
            && self
                .min_level
                .is_none_or(|min| event.level.is_some_and(|l| l >= min))
            && any(&self.hosts, event.host(), |h, host| {
                h.eq_ignore_ascii_case(host)
            })
            && any(
                &self.subsystem_prefixes,
                event.get(Field::Subsystem),
                |prefix, subsystem| subsystem.starts_with(prefix.as_str()),
            )
            && any(
                &self.message_contains,
                event.message(),
                |finder, message| finder.find(message.as_bytes()).is_some(),
            )
            && (self.outcomes.is_empty()
                || event.outcome.is_some_and(|o| self.outcomes.contains(&o)))
            && any(&self.task_ids, event.get(Field::TaskId), |id, value| {
                id == value
            })
            && any(
                &self.task_names,
                event.get(Field::TaskName),
                NamePattern::matches,
            )
            && any(&self.app_ids, event.get(Field::AppId), |id, value| {
                id == value
            })
            && any(
                &self.app_names,
                event.get(Field::AppName),
                NamePattern::matches,
            )
            && any(
                &self.methods,
                event.get(Field::Method),
                NamePattern::matches,
            )
            && any(
                &self.object_types,
                event.get(Field::ObjectType),
                NamePattern::matches,
            )
            && (self.users.is_empty() || user(&self.users))
            && (self.exclude_users.is_empty() || !user(&self.exclude_users))
            && self
                .exclude
                .as_ref()
                .is_none_or(|exclude| !exclude.matches(event))
    }
}

/// A list condition: holds when the list is empty, or when the event has the
/// value and some entry accepts it.
fn any<T>(list: &[T], value: Option<&str>, accepts: impl Fn(&T, &str) -> bool) -> bool {
    list.is_empty() || value.is_some_and(|value| list.iter().any(|entry| accepts(entry, value)))
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

    #[test]
    fn tasks_and_apps_match_by_id_or_by_name() {
        let task = crate::send::sample_event("task-failed");
        let log = crate::send::sample_event("scheduler");
        for event in [&task, &log] {
            for table in [
                r#"task_ids = ["DEC2A02A-1680-44EF-8DC2-E2BFB180AF87"]"#,
                r#"task_names = ["*test failing*"]"#,
                r#"app_ids = ["e7af59a0-c243-480d-9571-08727551a66f"]"#,
                r#"app_names = ["Test failing reloads ?", "Finance*"]"#,
            ] {
                assert!(matcher(table).matches(event), "{table}");
            }
            for table in [
                r#"task_ids = ["00000000-1680-44ef-8dc2-e2bfb180af87"]"#,
                r#"task_names = ["Finance*"]"#,
                r#"app_names = ["Test failing reloads"]"#,
            ] {
                assert!(!matcher(table).matches(event), "{table}");
            }
        }
        // An event without the field does not match a condition on it.
        assert!(!matcher(r#"task_names = ["*"]"#).matches(&event(PROXY_WARN)));
    }

    #[test]
    fn users_are_included_and_excluded() {
        let task = crate::send::sample_event("task-failed");
        let proxy = event(PROXY_WARN);
        assert!(matcher(r#"users = ["lab\\GORAN"]"#).matches(&task));
        assert!(matcher(r#"users = ["goran"]"#).matches(&task));
        assert!(!matcher(r#"users = ["goran"]"#).matches(&proxy));
        assert!(matcher(r#"users = ["jdoe", "goran"]"#).matches(&proxy));
        // Excluding a user keeps everyone else, and events without a user.
        assert!(!matcher(r#"exclude_users = ["LAB\\goran"]"#).matches(&task));
        assert!(matcher(r#"exclude_users = ["LAB\\goran"]"#).matches(&proxy));
        let engine = event(include_bytes!(
            "../../fixtures/datagrams/engine_null_properties.txt"
        ));
        assert!(engine.get(Field::UserId).is_none());
        assert!(matcher(r#"exclude_users = ["*"]"#).matches(&engine));
        assert!(!matcher(r#"users = ["*"]"#).matches(&engine));
        assert!(
            !matcher(
                r#"users = ["LAB\\*"]
exclude_users = ["goran"]"#
            )
            .matches(&task)
        );
    }

    #[test]
    fn qix_perf_events_match_by_method_and_object_type() {
        let perf = crate::send::sample_event("qix-perf");
        assert!(matcher(r#"methods = ["GenericObject::*"]"#).matches(&perf));
        assert!(matcher(r#"methods = ["genericobject::getlayout"]"#).matches(&perf));
        assert!(!matcher(r#"methods = ["Doc::*"]"#).matches(&perf));
        assert!(matcher(r#"object_types = ["barchart", "linechart"]"#).matches(&perf));
        assert!(!matcher(r#"object_types = ["linechart"]"#).matches(&perf));
        assert!(
            matcher(
                r#"types = ["qix_perf"]
methods = ["GenericObject::GetLayout"]
object_types = ["bar*"]
users = ["LAB\\goran"]
app_ids = ["e7af59a0-c243-480d-9571-08727551a66f"]"#
            )
            .matches(&perf)
        );
        assert!(!matcher(r#"methods = ["*"]"#).matches(&event(TASK_FAILED)));
    }

    #[test]
    fn an_exclude_table_leaves_out_what_it_matches() {
        let task = crate::send::sample_event("task-failed");
        let alerts = r#"types = ["task"]
outcomes = ["failed"]
exclude = { app_names = ["TEST - *"] }"#;
        assert!(matcher(alerts).matches(&task));
        let alerts = alerts.replace("TEST - *", "Test failing*");
        assert!(!matcher(&alerts).matches(&task));
        // Conditions within the exclude table must all hold to leave out.
        let both = r#"exclude = { app_names = ["Test failing*"], hosts = ["other"] }"#;
        assert!(matcher(both).matches(&task));
        let config: MatchConfig = toml::from_str("exclude = {}").unwrap();
        assert_eq!(config.problems()[0].0, "exclude");
        let config: MatchConfig = toml::from_str(r#"exclude = { task_ids = ["x"] }"#).unwrap();
        assert_eq!(config.problems()[0].0, "exclude.task_ids[0]");
    }

    #[test]
    fn an_empty_table_is_empty_and_any_condition_makes_it_not() {
        assert!(MatchConfig::default().is_empty());
        for table in [
            r#"task_ids = ["dec2a02a-1680-44ef-8dc2-e2bfb180af87"]"#,
            r#"exclude_users = ["x"]"#,
            r#"object_types = ["x"]"#,
            r#"outcomes = ["failed"]"#,
        ] {
            let config: MatchConfig = toml::from_str(table).unwrap();
            assert!(!config.is_empty(), "{table}");
        }
    }
}
