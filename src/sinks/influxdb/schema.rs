//! How an event becomes an InfluxDB point, in herald's schema or in the one Butler
//! SOS and Butler write.
//!
//! Both schemas stamp the point with the event's own `time`. Sense timestamps have
//! millisecond precision; the sub-millisecond digits of the nanosecond timestamp
//! carry the event's sequence number (mod 10⁶), so two events with the same tags in
//! the same millisecond stay two points instead of overwriting each other. A batch
//! that is sent twice (after a retry) writes identical points, which InfluxDB
//! stores once.
//!
//! * `herald`: one measurement per event type (`log`, `qix_perf`, `session`,
//!   `connection`, `task`, `engine_reload_failed`). Tags are only bounded values:
//!   `source`, `host`, `level`, plus `subsystem` (log), `method`, `object_type`,
//!   `activity` and `layout` (qix_perf), `command` (session, connection), `outcome` (task),
//!   categories and static tags. Everything else (messages, ids, names, numbers)
//!   is a field.
//! * `butler-sos`: Butler SOS's `log_event` and `user_events` and Butler's
//!   `reload_task_failed`, `reload_task_success`, ... with their tag and field
//!   names, so existing dashboards keep working. Deliberate differences: point
//!   time is the event's time (Butler used receive time), `log_row` is a field,
//!   not a tag (it wraps at 9999 and multiplied series), and no field is written
//!   as the literal `"undefined"`.

use serde::{Deserialize, Serialize};

use super::line::Line;
use crate::event::{Event, EventType, Field, FieldKind, TaskOutcome};

/// Which measurement/tag/field names to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schema {
    /// herald's own: one measurement per event type, bounded tags.
    #[default]
    Herald,
    /// The names Butler SOS and Butler write.
    ButlerSos,
}

/// The InfluxDB write API in use (Butler SOS names one field differently on v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// InfluxDB 1.x `/write` with database and retention policy.
    #[default]
    V1,
    /// InfluxDB 2.x (and 3.x) `/api/v2/write` with org, bucket and token.
    V2,
}

/// The point's timestamp: the event's time in whole milliseconds, plus its
/// sequence number in the sub-millisecond digits.
pub fn timestamp_ns(event: &Event) -> i128 {
    let ns = event.time.instant.as_nanosecond();
    ns.div_euclid(1_000_000) * 1_000_000 + i128::from(event.sequence % 1_000_000)
}

/// Appends `event` as one line.
pub fn write(out: &mut Vec<u8>, event: &Event, schema: Schema, api: Api) {
    match schema {
        Schema::Herald => write_herald(out, event),
        Schema::ButlerSos => write_butler(out, event, api),
    }
}

/// Tags as (key, value), sorted by key before writing (InfluxDB's advice).
type Tags<'a> = Vec<(&'a str, &'a str)>;

fn extra_tags<'a>(event: &'a Event, tags: &mut Tags<'a>) {
    for (name, value) in &event.categories {
        tags.push((name, value));
    }
    if let Some(static_tags) = event.tags.as_deref() {
        for (name, value) in static_tags {
            tags.push((name, value));
        }
    }
}

fn start<'o>(out: &'o mut Vec<u8>, measurement: &str, mut tags: Tags<'_>) -> Line<'o> {
    tags.sort_by(|a, b| a.0.cmp(b.0));
    tags.dedup_by(|a, b| a.0 == b.0);
    let mut line = Line::new(out, measurement);
    for (key, value) in tags {
        line.tag(key, value);
    }
    line
}

/// Writes `field` with its kind's line-protocol type.
fn field(line: &mut Line<'_>, event: &Event, field: Field, key: &str) {
    let Some(value) = event.get(field) else {
        return;
    };
    match field.kind() {
        FieldKind::Integer => line.integer(key, value),
        FieldKind::Decimal => line.float(key, value),
        _ => line.string(key, value),
    };
}

fn write_herald(out: &mut Vec<u8>, event: &Event) {
    let mut tags: Tags<'_> = vec![("source", event.source.as_str())];
    if let Some(host) = event.host() {
        tags.push(("host", host));
    }
    if let Some(level) = event.level {
        tags.push(("level", level.as_str()));
    }
    if let Some(outcome) = event.outcome {
        tags.push(("outcome", outcome.as_str()));
    }
    // The one type with more than one layout: dashboards can tell the rows
    // of older appender files (which have no handle or engine timestamp).
    if event.event_type == EventType::QixPerf {
        tags.push(("layout", event.layout.as_str()));
    }
    let tag_fields: &[Field] = match event.event_type {
        EventType::Log => &[Field::Subsystem],
        EventType::QixPerf => &[Field::Method, Field::ObjectType, Field::Activity],
        EventType::Session | EventType::Connection => &[Field::Command],
        EventType::Task | EventType::EngineReloadFailed => &[],
    };
    for &tag_field in tag_fields {
        if let Some(value) = event.get(tag_field) {
            tags.push((tag_field.name(), value));
        }
    }
    extra_tags(event, &mut tags);
    let mut line = start(out, event.event_type.as_str(), tags);
    for &name in &Field::ALL[2..] {
        if !tag_fields.contains(&name) {
            field(&mut line, event, name, name.name());
        }
    }
    for &name in Field::ALL {
        if let Some(raw) = event.raw(name) {
            line.string(&format!("raw_{}", name.name()), raw);
        }
    }
    line.string("time_source", event.time_source.as_str());
    line.string("sender", &event.sender.to_string());
    line.finish(timestamp_ns(event));
}

fn write_butler(out: &mut Vec<u8>, event: &Event, api: Api) {
    let get = |f| event.get(f).unwrap_or("");
    let raw_event = event.to_json();
    match event.event_type {
        EventType::Log | EventType::QixPerf => {
            let source = format!(
                "qseow-{}",
                if event.event_type == EventType::QixPerf {
                    "qix-perf"
                } else {
                    event.source.as_str()
                }
            );
            let mut tags: Tags<'_> = vec![
                ("host", get(Field::Host)),
                ("level", event.level.map_or("", |l| l.as_str())),
                ("source", &source),
                ("subsystem", get(Field::Subsystem)),
                ("user_full", get(Field::UserFull)),
                ("user_directory", get(Field::UserDirectory)),
                ("user_id", get(Field::UserId)),
            ];
            let activity = match get(Field::Activity) {
                "system" => "non-user",
                other => other,
            };
            let proxy_session = match get(Field::ProxySessionId) {
                "" => "-1",
                other => other,
            };
            let tag_fields: &[Field] = match (event.event_type, event.source.as_str()) {
                (EventType::QixPerf, _) => &[
                    Field::Method,
                    Field::ObjectType,
                    Field::SessionId,
                    Field::AppId,
                    Field::AppName,
                    Field::ObjectId,
                ],
                (_, "engine") => &[
                    Field::WindowsUser,
                    Field::TaskId,
                    Field::TaskName,
                    Field::AppId,
                    Field::AppName,
                    Field::EngineExeVersion,
                ],
                (_, "scheduler") => &[Field::TaskId, Field::TaskName],
                _ => &[Field::ResultCode],
            };
            for &f in tag_fields {
                tags.push((f.name(), get(f)));
            }
            if event.event_type == EventType::QixPerf {
                tags.push(("proxy_session_id", proxy_session));
                tags.push(("event_activity_source", activity));
            }
            extra_tags(event, &mut tags);
            let mut line = start(out, "log_event", tags);
            let result_code_key = match api {
                Api::V1 => "result_code",
                Api::V2 => "result_code_field",
            };
            let fields: &[(Field, &str)] = match event.event_type {
                EventType::QixPerf => &[
                    (Field::AppId, "app_id"),
                    (Field::ProcessTime, "process_time"),
                    (Field::WorkTime, "work_time"),
                    (Field::LockTime, "lock_time"),
                    (Field::ValidateTime, "validate_time"),
                    (Field::TraverseTime, "traverse_time"),
                ],
                _ => &[
                    (Field::Message, "message"),
                    (Field::ExceptionMessage, "exception_message"),
                    (Field::Command, "command"),
                    (Field::Origin, "origin"),
                    (Field::Context, "context"),
                    (Field::SessionId, "session_id"),
                    (Field::AppName, "app_name"),
                    (Field::AppId, "app_id"),
                    (Field::ExecutionId, "execution_id"),
                ],
            };
            for &(f, key) in fields {
                field(&mut line, event, f, key);
            }
            if event.event_type == EventType::QixPerf {
                // Butler SOS wrote these as floats; keep the type so existing
                // databases accept the points.
                for f in [Field::Handle, Field::NetRam, Field::PeakRam] {
                    if let Some(value) = event.get(f) {
                        line.float(f.name(), value);
                    }
                }
            } else if let Some(code) = event.get(Field::ResultCode) {
                line.string(result_code_key, code);
            }
            field(&mut line, event, Field::LogRow, "log_row");
            line.string("raw_event", &raw_event);
            line.finish(timestamp_ns(event));
        }
        EventType::Session | EventType::Connection => {
            let mut tags: Tags<'_> = vec![
                ("host", get(Field::Host)),
                ("event_action", get(Field::Command)),
                ("userFull", get(Field::UserFull)),
                ("userDirectory", get(Field::UserDirectory)),
                ("userId", get(Field::UserId)),
                ("origin", get(Field::Origin)),
                ("appId", get(Field::AppId)),
            ];
            extra_tags(event, &mut tags);
            let mut line = start(out, "user_events", tags);
            field(&mut line, event, Field::UserFull, "userFull");
            field(&mut line, event, Field::UserId, "userId");
            field(&mut line, event, Field::AppId, "appId");
            line.string("raw_event", &raw_event);
            line.finish(timestamp_ns(event));
        }
        EventType::Task | EventType::EngineReloadFailed => {
            let measurement = task_measurement(event);
            let mut tags: Tags<'_> = vec![
                ("host", get(Field::Host)),
                ("user", get(Field::UserFull)),
                ("task_id", get(Field::TaskId)),
                ("task_name", get(Field::TaskName)),
                ("app_id", get(Field::AppId)),
                ("app_name", get(Field::AppName)),
                ("log_level", event.level.map_or("", |l| l.as_str())),
            ];
            extra_tags(event, &mut tags);
            let mut line = start(out, measurement, tags);
            field(&mut line, event, Field::TsLocal, "log_timestamp");
            field(&mut line, event, Field::ExecutionId, "execution_id");
            field(&mut line, event, Field::Message, "log_message");
            line.string("raw_event", &raw_event);
            line.finish(timestamp_ns(event));
        }
    }
}

/// Butler's measurement for a task event. Butler asked the repository for the task
/// type; a datagram only tells whether an app is involved, so app tasks are
/// reload tasks and the others are written as external-program tasks.
fn task_measurement(event: &Event) -> &'static str {
    if event.event_type == EventType::EngineReloadFailed {
        return "engine_reload_failed";
    }
    let app = event.get(Field::AppId).is_some();
    match (event.outcome, app) {
        (Some(TaskOutcome::Failed), true) => "reload_task_failed",
        (Some(TaskOutcome::Failed), false) => "external_program_task_failed",
        (Some(TaskOutcome::Success), true) => "reload_task_success",
        (Some(TaskOutcome::Success), false) => "external_program_task_success",
        (Some(TaskOutcome::Aborted), _) => "reload_task_aborted",
        (Some(TaskOutcome::Distribute), _) => "distribute_task_finished",
        (None, _) => "task_event",
    }
}

/// Every measurement each schema can write (for docs and the dashboard test).
pub const MEASUREMENTS: &[(&str, &[&str])] = &[
    (
        "herald",
        &[
            "log",
            "qix_perf",
            "session",
            "connection",
            "task",
            "engine_reload_failed",
        ],
    ),
    (
        "butler-sos",
        &[
            "log_event",
            "user_events",
            "reload_task_failed",
            "reload_task_success",
            "reload_task_aborted",
            "external_program_task_failed",
            "external_program_task_success",
            "distribute_task_finished",
            "engine_reload_failed",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseConfig, Parser};
    use crate::send::SAMPLES;

    fn event(kind: &str) -> Event {
        let mut event = crate::send::sample_event(kind);
        event.sequence = 7;
        event
    }

    fn line(kind: &str, schema: Schema, api: Api) -> String {
        let mut out = Vec::new();
        write(&mut out, &event(kind), schema, api);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn herald_schema_puts_only_bounded_values_in_tags() {
        let text = line("engine", Schema::Herald, Api::V1);
        let (head, rest) = text.split_once(' ').unwrap();
        assert_eq!(
            head,
            "log,host=pro2-win1,level=ERROR,source=engine,subsystem=System.Engine.Engine"
        );
        assert!(rest.contains("message=\"Document e7af59a0"), "{rest}");
        assert!(rest.contains("log_row=4711i"), "{rest}");
        assert!(
            rest.contains("app_id=\"e7af59a0-c243-480d-9571-08727551a66f\""),
            "{rest}"
        );
        assert!(text.ends_with(" 1716112992114000007\n"), "{text}");
    }

    #[test]
    fn herald_schema_types_qix_perf_numbers() {
        let text = line("qix-perf", Schema::Herald, Api::V1);
        assert!(text.starts_with("qix_perf,activity=user,host=pro2-win1,layout=qix-perf,level=INFO,method=GenericObject::GetLayout,object_type=barchart,source=engine "), "{text}");
        assert!(text.contains("process_time=15.3,"), "{text}");
        assert!(text.contains("net_ram="), "{text}");
    }

    #[test]
    fn butler_schema_writes_butler_names() {
        let task = line("task-failed", Schema::ButlerSos, Api::V1);
        assert!(task.starts_with("reload_task_failed,app_id=e7af59a0-c243-480d-9571-08727551a66f,app_name=Test\\ failing\\ reloads\\ 2,host=pro2-win1,log_level=INFO,task_id=dec2a02a-1680-44ef-8dc2-e2bfb180af87,task_name=Manually\\ triggered\\ reload\\ of\\ Test\\ failing\\ reloads\\ 2,user=LAB\\goran "), "{task}");
        assert!(
            task.contains("log_message=\"Max retries reached\""),
            "{task}"
        );
        assert!(
            task.contains("log_timestamp=\"2021-02-16 09:24:59,099\""),
            "{task}"
        );
        let proxy = line("proxy", Schema::ButlerSos, Api::V2);
        assert!(
            proxy.starts_with(
                "log_event,host=pro2-win1,level=WARN,result_code=401,source=qseow-proxy,"
            ),
            "{proxy}"
        );
        assert!(proxy.contains("result_code_field=\"401\""), "{proxy}");
        let session = line("session", Schema::ButlerSos, Api::V1);
        assert!(session.starts_with("user_events,event_action=Start\\ session,host=pro2-win1,origin=AppAccess,userDirectory=LAB,userFull=LAB\\goran,userId=goran "), "{session}");
        let success = line("task-success", Schema::ButlerSos, Api::V1);
        assert!(
            success.starts_with("external_program_task_success,"),
            "{success}"
        );
    }

    #[test]
    fn butler_qix_perf_marks_scheduled_work_as_non_user() {
        let sample = b"/qseow-qix-perf/;3322;20240519T020000.050+0200;2024-05-19 02:00:00,050;INFO;pro2-win1;QixPerformance.Engine.Engine;LAB\\qlikservice;0;INTERNAL;sa_scheduler;2024-05-19T02:00:00.049+02:00;0;e7af59a0-c243-480d-9571-08727551a66f;18;Global::OpenApp;2210.0;2190.5;3.1;0.0;0.0;-1;<Unknown>;52428800;73400320;<Unknown>";
        let event = Parser::new(&ParseConfig::default())
            .unwrap()
            .parse(
                sample,
                "10.0.0.5:1".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        let mut out = Vec::new();
        write(&mut out, &event, Schema::ButlerSos, Api::V1);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("event_activity_source=non-user"), "{text}");
        assert!(text.contains("proxy_session_id=0"), "{text}");
        assert!(text.contains("net_ram=52428800,"), "{text}");
    }

    #[test]
    fn every_measurement_written_is_listed() {
        for schema in [Schema::Herald, Schema::ButlerSos] {
            let listed = MEASUREMENTS
                .iter()
                .find(|(name, _)| {
                    *name
                        == if schema == Schema::Herald {
                            "herald"
                        } else {
                            "butler-sos"
                        }
                })
                .unwrap()
                .1;
            for sample in SAMPLES {
                let text = line(sample.kind, schema, Api::V1);
                let measurement = text.split([',', ' ']).next().unwrap();
                assert!(listed.contains(&measurement), "{measurement}");
            }
        }
    }

    #[test]
    fn same_millisecond_events_get_distinct_timestamps() {
        let mut a = event("engine");
        let mut b = a.clone();
        a.sequence = 1;
        b.sequence = 2;
        assert_ne!(timestamp_ns(&a), timestamp_ns(&b));
        assert_eq!(
            timestamp_ns(&a) / 1_000_000,
            a.time.instant.as_millisecond() as i128
        );
    }
}
