//! The `stdout` sink: one line per event, as JSON or as a readable summary.
//!
//! The readable form is for people watching a console:
//! `2024-05-19T12:03:12.114+02:00 ERROR log/engine pro2-win1 System.Engine.Engine: Document ...`.
//! Logs go to standard error, so the two never mix.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Sink, SinkError};
use crate::event::{Event, EventType, Field, prefetch, write_rfc3339};

/// Settings of a `stdout` sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `text` (readable, the default) or `json` (EVENTS.md lines).
    #[serde(default)]
    pub format: StdoutFormat,
}

/// How events are written to standard output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `stdout` sink.
#[derive(Debug)]
pub struct StdoutSink {
    format: StdoutFormat,
    buffer: Vec<u8>,
}

impl StdoutSink {
    /// A sink writing in `config.format`.
    pub fn new(config: &StdoutConfig) -> StdoutSink {
        StdoutSink {
            format: config.format,
            buffer: Vec::with_capacity(16 * 1024),
        }
    }
}

impl Sink for StdoutSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        self.buffer.clear();
        for event in prefetch::ahead(batch) {
            match self.format {
                StdoutFormat::Json => event.write_json(&mut self.buffer),
                StdoutFormat::Text => write_text(&mut self.buffer, event),
            }
            self.buffer.push(b'\n');
        }
        let buffer = &self.buffer;
        tokio::task::block_in_place(|| {
            let mut out = std::io::stdout().lock();
            out.write_all(buffer).and_then(|()| out.flush())
        })
        .map_err(SinkError::io)
    }
}

/// Writes the readable one-line form of `event`.
pub fn write_text(out: &mut Vec<u8>, event: &Event) {
    write_rfc3339(out, event.time.instant, event.time.offset, false);
    let level = event.level.map_or("-", |level| level.as_str());
    let get = |field| event.get(field).unwrap_or("-");
    let _ = write!(
        out,
        " {level:<5} {}/{} {}",
        event.event_type.as_str(),
        event.source.as_str(),
        get(Field::Host)
    );
    let _ = match event.event_type {
        EventType::Log => write!(out, " {}: {}", get(Field::Subsystem), get(Field::Message)),
        EventType::QixPerf => write!(
            out,
            " {} {} {}ms app {} user {}",
            get(Field::Method),
            get(Field::ObjectType),
            get(Field::ProcessTime),
            get(Field::AppId),
            get(Field::UserFull)
        ),
        EventType::Session | EventType::Connection => write!(
            out,
            " {} {} {}",
            get(Field::Command),
            get(Field::UserFull),
            get(Field::Context)
        ),
        EventType::Task => write!(
            out,
            " task {}: {} (app {}) execution {}: {}",
            event.outcome.map_or("-", |o| o.as_str()),
            get(Field::TaskName),
            get(Field::AppName),
            get(Field::ExecutionId),
            get(Field::Message)
        ),
        EventType::EngineReloadFailed => write!(
            out,
            " reload failed app {} user {}: {}",
            get(Field::AppId),
            get(Field::UserFull),
            get(Field::Message)
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseConfig, Parser};

    #[test]
    fn text_line_summarises_a_failed_task() {
        let datagram = b"/scheduler-reload-failed/;pro2-win1;Reload of Sales;Sales;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;Max retries reached";
        let event = Parser::new(&ParseConfig::default())
            .unwrap()
            .parse(
                datagram,
                "10.0.0.5:61000".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        let mut out = Vec::new();
        write_text(&mut out, &event);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000+00:00 INFO  task/scheduler pro2-win1 task failed: Reload of Sales (app Sales) execution 14a81bf5-f81c-4047-b1a1-193b0920de28: Max retries reached"
        );
    }
}
