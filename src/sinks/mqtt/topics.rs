//! Which topics an event is published on, and what each publish carries: the
//! presets that mimic Butler SOS and Butler, the `herald` preset, and topic
//! templates (minijinja over the event's JSON fields), with the checks a publish
//! topic must pass. No I/O: this only turns an event into (topic, payload) pairs.

use minijinja::Environment;
use serde::{Deserialize, Serialize};

use super::MqttConfig;
use crate::event::{Event, EventType, Field, TaskOutcome};

/// Longest MQTT topic, in bytes.
const TOPIC_MAX: usize = 65_535;

/// Topic layouts of existing tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Butler SOS: `qliksense/logevent[/<subsystem>]`, `qliksense/userevent[/...]`.
    ButlerSos,
    /// Butler: `qliksense/task_failure[_full]`, `qliksense/task_aborted[_full]`.
    Butler,
    /// `herald/<type>/<source>`.
    Herald,
}

impl Preset {
    /// The name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::ButlerSos => "butler-sos",
            Preset::Butler => "butler",
            Preset::Herald => "herald",
        }
    }

    /// The first topic level unless `base_topic` replaces it.
    fn default_base(self) -> &'static str {
        match self {
            Preset::ButlerSos | Preset::Butler => "qliksense",
            Preset::Herald => "herald",
        }
    }
}

/// What goes in a publish's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The event JSON.
    Json,
    /// The task name only (Butler's basic task topics).
    TaskName,
}

/// How topics are chosen.
#[derive(Debug)]
pub(super) enum Topics {
    Preset { preset: Preset, base: String },
    Template(Box<Environment<'static>>),
}

/// `System.Engine.Engine` → `system/engine/engine` (Butler SOS's subsystem topics);
/// wildcard characters become `_` so the result is always a valid topic.
pub fn topic_path(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '.' => '/',
            '+' | '#' | '\0' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Checks a topic a publish may use.
pub(super) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic.len() > TOPIC_MAX {
        return Err(format!("is {} bytes; MQTT allows {TOPIC_MAX}", topic.len()));
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(format!(
            "{topic:?} contains {c:?}, which a publish topic cannot have (wildcards are for subscriptions)"
        ));
    }
    Ok(())
}

/// The non-empty, trimmed lines of a rendered topic template, each checked.
pub(super) fn split_topics(rendered: &str) -> Result<Vec<String>, String> {
    rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| check_topic(line).map(|()| line.to_string()))
        .collect()
}

pub(super) fn topic_environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_filter("topic_path", |value: String| topic_path(&value));
    env.add_template_owned("topic", source.to_string())
        .map_err(|err| format!("does not compile: {err:#}"))?;
    Ok(env)
}

impl Topics {
    pub(super) fn new(config: &MqttConfig) -> Result<Topics, (&'static str, String)> {
        match &config.topic {
            Some(topic) => Ok(Topics::Template(Box::new(
                topic_environment(topic).map_err(|err| ("topic", err))?,
            ))),
            None => {
                let preset = config.preset.unwrap_or(Preset::Herald);
                Ok(Topics::Preset {
                    preset,
                    base: config
                        .base_topic
                        .clone()
                        .unwrap_or_else(|| preset.default_base().to_string()),
                })
            }
        }
    }

    /// The topics `event` goes to, with what each carries; empty: not published.
    pub(super) fn publications(&self, event: &Event) -> Result<Vec<(String, Payload)>, String> {
        match self {
            Topics::Preset { preset, base } => Ok(preset_topics(*preset, base, event)),
            Topics::Template(env) => {
                let context: serde_json::Value =
                    serde_json::from_str(&event.to_json()).unwrap_or_default();
                let rendered = env
                    .get_template("topic")
                    .and_then(|t| {
                        t.render(minijinja::value::Value::from(minijinja::value::Serde(
                            &context,
                        )))
                    })
                    .map_err(|err| format!("topic template failed: {err:#}"))?;
                let topics = split_topics(&rendered).map_err(|err| format!("topic {err}"))?;
                Ok(topics.into_iter().map(|t| (t, Payload::Json)).collect())
            }
        }
    }
}

/// A preset's topics for `event` (see the module docs).
fn preset_topics(preset: Preset, base: &str, event: &Event) -> Vec<(String, Payload)> {
    match preset {
        Preset::Herald => vec![(
            format!(
                "{base}/{}/{}",
                event.event_type.as_str(),
                event.source.as_str()
            ),
            Payload::Json,
        )],
        Preset::ButlerSos => match event.event_type {
            EventType::Log | EventType::QixPerf => {
                let mut topics = vec![(format!("{base}/logevent"), Payload::Json)];
                if let Some(subsystem) = event.get(Field::Subsystem).filter(|s| !s.is_empty()) {
                    topics.push((
                        format!("{base}/logevent/{}", topic_path(subsystem)),
                        Payload::Json,
                    ));
                }
                topics
            }
            EventType::Session | EventType::Connection => {
                let mut topics = vec![(format!("{base}/userevent"), Payload::Json)];
                let command = event.get(Field::Command).unwrap_or_default();
                let by_command = [
                    ("Start session", "session/start"),
                    ("Stop session", "session/stop"),
                    ("Open connection", "connection/open"),
                    ("Close connection", "connection/close"),
                ]
                .into_iter()
                .find(|(name, _)| command.eq_ignore_ascii_case(name));
                if let Some((_, path)) = by_command {
                    topics.push((format!("{base}/userevent/{path}"), Payload::Json));
                }
                topics
            }
            EventType::Task | EventType::EngineReloadFailed => Vec::new(),
        },
        Preset::Butler => match (event.event_type, event.outcome) {
            (EventType::Task, Some(outcome)) => {
                let name = match outcome {
                    TaskOutcome::Failed => "task_failure",
                    TaskOutcome::Aborted => "task_aborted",
                    TaskOutcome::Success => "task_success",
                    TaskOutcome::Distribute => "task_distribute",
                };
                vec![
                    (format!("{base}/{name}"), Payload::TaskName),
                    (format!("{base}/{name}_full"), Payload::Json),
                ]
            }
            _ => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, event, names, topics};
    use super::*;

    #[test]
    fn herald_preset_is_type_and_source_under_the_base_topic() {
        let c = config("preset = \"herald\"\nbase_topic = \"prod/sense\"");
        assert_eq!(names(&c, "qix-perf"), ["prod/sense/qix_perf/engine"]);
        assert_eq!(names(&c, "task-failed"), ["prod/sense/task/scheduler"]);
        assert_eq!(names(&c, "session"), ["prod/sense/session/proxy"]);
    }

    #[test]
    fn butler_sos_preset_publishes_log_events_to_base_and_subsystem_topics() {
        let c = config("preset = \"butler-sos\"");
        assert_eq!(
            names(&c, "engine"),
            [
                "qliksense/logevent",
                "qliksense/logevent/system/engine/engine"
            ]
        );
        let scheduler = names(&c, "scheduler");
        assert_eq!(scheduler[0], "qliksense/logevent");
        assert!(
            scheduler[1].starts_with("qliksense/logevent/system/scheduler/"),
            "{scheduler:?}"
        );
        assert_eq!(names(&c, "qix-perf").len(), 2);
        assert!(
            topics(&c, "engine")
                .iter()
                .all(|(_, payload)| *payload == Payload::Json)
        );
    }

    #[test]
    fn butler_sos_preset_publishes_user_events_by_command() {
        let c = config("preset = \"butler-sos\"");
        assert_eq!(
            names(&c, "session"),
            ["qliksense/userevent", "qliksense/userevent/session/start"]
        );
        assert_eq!(
            names(&c, "connection"),
            ["qliksense/userevent", "qliksense/userevent/connection/open"]
        );
        let based = config("preset = \"butler-sos\"\nbase_topic = \"site1\"");
        assert_eq!(
            names(&based, "session"),
            ["site1/userevent", "site1/userevent/session/start"]
        );
    }

    #[test]
    fn butler_sos_preset_has_no_topic_for_task_events() {
        let c = config("preset = \"butler-sos\"");
        assert!(names(&c, "task-failed").is_empty());
        assert!(names(&c, "engine-reload-failed").is_empty());
    }

    #[test]
    fn butler_preset_publishes_the_task_name_and_the_full_event_like_butler() {
        let c = config("preset = \"butler\"");
        assert_eq!(
            topics(&c, "task-failed"),
            [
                ("qliksense/task_failure".to_string(), Payload::TaskName),
                ("qliksense/task_failure_full".to_string(), Payload::Json),
            ]
        );
        assert_eq!(
            names(&c, "task-aborted"),
            ["qliksense/task_aborted", "qliksense/task_aborted_full"]
        );
        assert_eq!(
            names(&c, "task-success"),
            ["qliksense/task_success", "qliksense/task_success_full"]
        );
        assert_eq!(
            names(&c, "task-distribute"),
            [
                "qliksense/task_distribute",
                "qliksense/task_distribute_full"
            ]
        );
        assert!(names(&c, "engine").is_empty());
        assert!(names(&c, "session").is_empty());
    }

    #[test]
    fn a_topic_template_renders_event_fields_and_one_topic_per_line() {
        let c = config("topic = \"sense/{{ type }}/{{ host }}\"");
        assert_eq!(names(&c, "engine"), ["sense/log/pro2-win1"]);
        let c = config(
            "topic = \"\"\"\nsense/all\n{% if subsystem %}sense/{{ subsystem | topic_path }}{% endif %}\n\"\"\"",
        );
        assert_eq!(
            names(&c, "engine"),
            ["sense/all", "sense/system/engine/engine"]
        );
        assert_eq!(names(&c, "task-failed"), ["sense/all"]);
        let only_tasks =
            config("topic = \"{% if type == 'task' %}alerts/{{ outcome }}{% endif %}\"");
        assert_eq!(names(&only_tasks, "task-failed"), ["alerts/failed"]);
        assert!(names(&only_tasks, "engine").is_empty());
    }

    #[test]
    fn a_template_that_renders_a_wildcard_is_refused() {
        let c = config("topic = \"sense/{{ 'a+b' }}/{{ type }}\"");
        c.validate().unwrap();
        let err = Topics::new(&c)
            .unwrap()
            .publications(&event("engine"))
            .unwrap_err();
        assert!(err.contains("'+'"), "{err}");
    }

    #[test]
    fn topic_path_lower_cases_and_turns_dots_into_levels() {
        assert_eq!(
            topic_path("System.Scheduler.Scheduler.Slave.Tasks.ReloadTask"),
            "system/scheduler/scheduler/slave/tasks/reloadtask"
        );
        assert_eq!(topic_path("A+B#C"), "a_b_c");
    }
}
