//! The event: the one typed shape every sink sees (see `docs/EVENTS.md`).
//!
//! An [`Event`] owns one text buffer holding every string field back to back, plus a
//! fixed table of spans into it, so building an event costs one buffer however many
//! fields the datagram has. Field names and JSON encoding live here too, so every
//! sink writes the same object. This module does not parse datagrams (that is
//! [`crate::parse`]) and does not decide where events go (that is [`crate::route`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::Offset;
use serde::{Deserialize, Serialize};

/// What kind of Sense message an event came from; the JSON `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A log4net log event from a `/qseow-<service>/` appender.
    Log,
    /// A QIX engine performance row (`/qseow-qix-perf/`).
    QixPerf,
    /// A proxy session start/stop (`/qseow-proxy-session/`).
    Session,
    /// A proxy connection open/close (`/qseow-proxy-connection/`).
    Connection,
    /// A scheduler task outcome (`/scheduler-*`).
    Task,
    /// An engine reload failure (`/engine-reload-failed/`).
    EngineReloadFailed,
}

impl EventType {
    /// Every type, in a fixed order (used for metric handles).
    pub const ALL: [EventType; 6] = [
        EventType::Log,
        EventType::QixPerf,
        EventType::Session,
        EventType::Connection,
        EventType::Task,
        EventType::EngineReloadFailed,
    ];

    /// The JSON and metric-label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Log => "log",
            EventType::QixPerf => "qix_perf",
            EventType::Session => "session",
            EventType::Connection => "connection",
            EventType::Task => "task",
            EventType::EngineReloadFailed => "engine_reload_failed",
        }
    }
}

/// The Sense service an event came from; the JSON `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The QIX engine.
    Engine,
    /// The proxy service.
    Proxy,
    /// The repository service.
    Repository,
    /// The scheduler service.
    Scheduler,
}

impl Source {
    /// The JSON and metric-label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Engine => "engine",
            Source::Proxy => "proxy",
            Source::Repository => "repository",
            Source::Scheduler => "scheduler",
        }
    }
}

/// A log4net level, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN` (`WARNING` is read as this too).
    Warn,
    /// `ERROR`.
    Error,
    /// `FATAL`.
    Fatal,
}

impl Level {
    /// The upper-case spelling written to JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    /// Reads a level case-insensitively; `None` for anything else.
    pub fn parse(text: &[u8]) -> Option<Level> {
        const NAMES: [(&[u8], Level); 6] = [
            (b"DEBUG", Level::Debug),
            (b"INFO", Level::Info),
            (b"WARN", Level::Warn),
            (b"WARNING", Level::Warn),
            (b"ERROR", Level::Error),
            (b"FATAL", Level::Fatal),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|&(_, level)| level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a scheduler task ended, from the task event's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// `Max retries reached` and friends.
    Failed,
    /// `Execution State Change to Aborting`.
    Aborted,
    /// `Execution State Change to FinishedSuccess`.
    Success,
    /// A distribute task finished.
    Distribute,
}

impl TaskOutcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Failed => "failed",
            TaskOutcome::Aborted => "aborted",
            TaskOutcome::Success => "success",
            TaskOutcome::Distribute => "distribute",
        }
    }
}

/// Where an event's `time` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// `%longIso8601date`, which carries its own offset.
    Event,
    /// `%date` read in the sender's configured time zone.
    EventLocal,
    /// No usable event timestamp: the receive time.
    Received,
}

impl TimeSource {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Event => "event",
            TimeSource::EventLocal => "event_local",
            TimeSource::Received => "received",
        }
    }
}

/// Declares [`Field`] with its JSON name and value kind in one table.
macro_rules! fields {
    ($($variant:ident => $name:literal, $kind:ident;)*) => {
        /// A named field of an event, beyond the envelope. The order here is the
        /// order fields are written in JSON.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)] // each variant is documented by its JSON name
        pub enum Field { $($variant,)* }

        impl Field {
            /// Every field, in JSON order.
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];
            /// How many fields there are.
            pub const COUNT: usize = Field::ALL.len();

            /// The JSON key.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            /// How the parser validates the field's value.
            pub fn kind(self) -> FieldKind {
                match self { $(Field::$variant => FieldKind::$kind,)* }
            }

            /// Looks a field up by its JSON key.
            pub fn from_name(name: &str) -> Option<Field> {
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    Host => "host", Text;
    Level => "level", Text;
    LogRow => "log_row", Integer;
    TsIso => "ts_iso", Text;
    TsLocal => "ts_local", Text;
    Subsystem => "subsystem", Text;
    WindowsUser => "windows_user", Text;
    TaskName => "task_name", Text;
    AppName => "app_name", Text;
    Command => "command", Text;
    UserFull => "user_full", Text;
    UserDirectory => "user_directory", Text;
    UserId => "user_id", Text;
    ResultCode => "result_code", Text;
    Origin => "origin", Text;
    Context => "context", Text;
    ProxySessionId => "proxy_session_id", GuidOrText;
    EngineTs => "engine_ts", Text;
    ProcessId => "process_id", Guid;
    EngineExeVersion => "engine_exe_version", Text;
    ServerStarted => "server_started", Text;
    EntryType => "entry_type", Text;
    SessionId => "session_id", GuidOrText;
    TaskId => "task_id", Guid;
    AppId => "app_id", Guid;
    ExecutionId => "execution_id", Guid;
    RequestId => "request_id", Integer;
    Method => "method", Text;
    ProcessTime => "process_time", Decimal;
    WorkTime => "work_time", Decimal;
    LockTime => "lock_time", Decimal;
    ValidateTime => "validate_time", Decimal;
    TraverseTime => "traverse_time", Decimal;
    Handle => "handle", Integer;
    ObjectId => "object_id", Text;
    NetRam => "net_ram", Integer;
    PeakRam => "peak_ram", Integer;
    ObjectType => "object_type", Text;
    Activity => "activity", Text;
    UserAgent => "user_agent", Text;
    Message => "message", Text;
    ExceptionMessage => "exception_message", Text;
}

/// How a field's value is checked and encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text, written as a JSON string.
    Text,
    /// A GUID, lower-cased; anything else is kept in `raw_fields`.
    Guid,
    /// Lower-cased when GUID-shaped, else kept as text (e.g. `0`).
    GuidOrText,
    /// A whole number, written as a JSON number; anything else goes to `raw_fields`.
    Integer,
    /// A decimal number, written as a JSON number; anything else goes to `raw_fields`.
    Decimal,
}

/// Where a field's value sits in the event's text buffer, and how to read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
    state: SpanState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum SpanState {
    #[default]
    Absent,
    /// A valid value (text, or a number whose text is valid JSON).
    Value,
    /// A value that failed its kind's check; written under `raw_fields`.
    Raw,
}

/// A category set by a categorisation rule: `name = value`, both from config.
pub type Category = (Arc<str>, Arc<str>);

/// Static tags from config, shared by every event.
pub type StaticTags = Arc<BTreeMap<String, String>>;

/// An event's own time with the UTC offset it was expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// The instant.
    pub instant: Timestamp,
    /// The offset to display it in.
    pub offset: Offset,
}

/// One parsed Sense event. Build it with [`EventBuilder`] (done by the parser).
#[derive(Debug, Clone)]
pub struct Event {
    /// The JSON `type`.
    pub event_type: EventType,
    /// The JSON `source`.
    pub source: Source,
    /// The level, when the format has one and it is a known level.
    pub level: Option<Level>,
    /// For task events, how the task ended.
    pub outcome: Option<TaskOutcome>,
    /// The event's own time (see `time_source`).
    pub time: EventTime,
    /// Where `time` came from.
    pub time_source: TimeSource,
    /// When herald read the datagram.
    pub received_at: Timestamp,
    /// The datagram's sender.
    pub sender: SocketAddr,
    /// Whether some field was cut to its length cap.
    pub truncated: bool,
    /// Categories from the categorisation rules.
    pub categories: Vec<Category>,
    /// Static tags from config.
    pub tags: Option<StaticTags>,
    /// A number unique among the events of one herald run (set by the pipeline);
    /// sinks that key points by time use it to keep same-millisecond events apart.
    pub sequence: u64,
    tag: Span,
    text: String,
    spans: [Span; Field::COUNT],
}

impl Event {
    /// The tag exactly as received, e.g. `/qseow-proxy/`.
    pub fn tag(&self) -> &str {
        &self.text[self.tag.start as usize..self.tag.end as usize]
    }

    /// A field's valid value, or `None` when it is absent or went to `raw_fields`.
    pub fn get(&self, field: Field) -> Option<&str> {
        let span = self.spans[field as usize];
        (span.state == SpanState::Value).then(|| &self.text[span.start as usize..span.end as usize])
    }

    /// A field's value that failed its kind's check (kept under `raw_fields`).
    pub fn raw(&self, field: Field) -> Option<&str> {
        let span = self.spans[field as usize];
        (span.state == SpanState::Raw).then(|| &self.text[span.start as usize..span.end as usize])
    }

    /// The host name from the datagram.
    pub fn host(&self) -> Option<&str> {
        self.get(Field::Host)
    }

    /// The free-text message, when the format has one.
    pub fn message(&self) -> Option<&str> {
        self.get(Field::Message)
    }

    /// Appends the event as one JSON object (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json_key_str(out, "type", self.event_type.as_str(), true);
        json_key_str(out, "source", self.source.as_str(), false);
        json_key_str(out, "tag", self.tag(), false);
        out.extend_from_slice(b",\"time\":\"");
        write_rfc3339(out, self.time.instant, self.time.offset, false);
        out.push(b'"');
        json_key_str(out, "time_source", self.time_source.as_str(), false);
        out.extend_from_slice(b",\"received_at\":\"");
        write_rfc3339(out, self.received_at, Offset::UTC, true);
        out.push(b'"');
        out.extend_from_slice(b",\"sender\":\"");
        // A socket address never needs escaping.
        use std::io::Write as _;
        let _ = write!(out, "{}", self.sender);
        out.push(b'"');
        if let Some(host) = self.host() {
            json_key_str(out, "host", host, false);
        }
        if let Some(level) = self.level {
            json_key_str(out, "level", level.as_str(), false);
        }
        if let Some(outcome) = self.outcome {
            json_key_str(out, "outcome", outcome.as_str(), false);
        }
        let any_raw = self.spans.iter().any(|span| span.state == SpanState::Raw);
        // Host and level are written above; a level that is not a known level
        // is only ever stored raw.
        for &field in &Field::ALL[2..] {
            let span = self.spans[field as usize];
            match span.state {
                SpanState::Absent | SpanState::Raw => {}
                SpanState::Value => {
                    let value = &self.text[span.start as usize..span.end as usize];
                    match field.kind() {
                        FieldKind::Integer | FieldKind::Decimal => {
                            out.push(b',');
                            json_string(out, field.name());
                            out.push(b':');
                            out.extend_from_slice(value.as_bytes());
                        }
                        _ => json_key_str(out, field.name(), value, false),
                    }
                }
            }
        }
        if !self.categories.is_empty() {
            out.extend_from_slice(b",\"categories\":{");
            for (i, (name, value)) in self.categories.iter().enumerate() {
                json_key_str(out, name, value, i == 0);
            }
            out.push(b'}');
        }
        if let Some(tags) = self.tags.as_deref().filter(|tags| !tags.is_empty()) {
            out.extend_from_slice(b",\"tags\":{");
            for (i, (name, value)) in tags.iter().enumerate() {
                json_key_str(out, name, value, i == 0);
            }
            out.push(b'}');
        }
        if any_raw {
            out.extend_from_slice(b",\"raw_fields\":{");
            let mut first = true;
            for &field in Field::ALL {
                if let Some(value) = self.raw(field) {
                    json_key_str(out, field.name(), value, first);
                    first = false;
                }
            }
            out.push(b'}');
        }
        if self.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        out.push(b'}');
    }

    /// The event as a JSON string (convenience for tests and low-volume sinks).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.text.len() + 256);
        self.write_json(&mut out);
        // write_json only ever appends valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Builds an [`Event`] field by field; used by the parser.
#[derive(Debug)]
pub struct EventBuilder {
    event: Event,
}

impl EventBuilder {
    /// Starts an event; `capacity` is a hint for the text buffer (the datagram's length).
    pub fn new(
        event_type: EventType,
        source: Source,
        sender: SocketAddr,
        received_at: Timestamp,
        capacity: usize,
    ) -> EventBuilder {
        EventBuilder {
            event: Event {
                event_type,
                source,
                level: None,
                outcome: None,
                time: EventTime {
                    instant: received_at,
                    offset: Offset::UTC,
                },
                time_source: TimeSource::Received,
                received_at,
                sender,
                truncated: false,
                categories: Vec::new(),
                tags: None,
                sequence: 0,
                tag: Span::default(),
                text: String::with_capacity(capacity),
                spans: [Span::default(); Field::COUNT],
            },
        }
    }

    /// The text buffer, for appending a value before [`EventBuilder::commit`].
    pub fn buffer(&mut self) -> &mut String {
        &mut self.event.text
    }

    /// The current end of the text buffer, to mark where a value starts.
    pub fn mark(&self) -> usize {
        self.event.text.len()
    }

    /// Records the text appended since `start` as `field`; `valid` false puts it
    /// under `raw_fields`. An empty value leaves the field absent.
    pub fn commit(&mut self, field: Field, start: usize, valid: bool) {
        let end = self.event.text.len();
        if end == start {
            return;
        }
        self.event.spans[field as usize] = Span {
            start: start as u32,
            end: end as u32,
            state: if valid {
                SpanState::Value
            } else {
                SpanState::Raw
            },
        };
    }

    /// Records the text appended since `start` as the tag.
    pub fn commit_tag(&mut self, start: usize) {
        self.event.tag = Span {
            start: start as u32,
            end: self.event.text.len() as u32,
            state: SpanState::Value,
        };
    }

    /// Sets a field to a fixed text (e.g. `activity`).
    pub fn set_static(&mut self, field: Field, value: &str) {
        let start = self.mark();
        self.event.text.push_str(value);
        self.commit(field, start, true);
    }

    /// Whether a field has a valid value.
    pub fn has(&self, field: Field) -> bool {
        self.event.spans[field as usize].state == SpanState::Value
    }

    /// A field's value so far.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.event.get(field)
    }

    /// Points `field` at an existing part of the buffer (`start..end`).
    pub fn copy_range(&mut self, field: Field, start: usize, end: usize) {
        self.event.spans[field as usize] = Span {
            start: start as u32,
            end: end as u32,
            state: SpanState::Value,
        };
    }

    /// The raw span of a valid field, as byte offsets into the buffer.
    pub fn range(&self, field: Field) -> Option<(usize, usize)> {
        let span = self.event.spans[field as usize];
        (span.state == SpanState::Value).then_some((span.start as usize, span.end as usize))
    }

    /// Sets the level.
    pub fn level(&mut self, level: Option<Level>) {
        self.event.level = level;
    }

    /// Sets the task outcome.
    pub fn outcome(&mut self, outcome: TaskOutcome) {
        self.event.outcome = Some(outcome);
    }

    /// Sets the event time and where it came from.
    pub fn time(&mut self, time: EventTime, source: TimeSource) {
        self.event.time = time;
        self.event.time_source = source;
    }

    /// Marks the event as having a cut field.
    pub fn truncated(&mut self) {
        self.event.truncated = true;
    }

    /// Finishes the event.
    pub fn build(self) -> Event {
        self.event
    }
}

/// Writes `,"key":"value"` (no comma when `first`), escaping both.
fn json_key_str(out: &mut Vec<u8>, key: &str, value: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    json_string(out, key);
    out.push(b':');
    json_string(out, value);
}

/// Writes a JSON string literal, escaping quotes, backslashes and control characters.
pub fn json_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `instant` in RFC 3339 with milliseconds, in `offset` (`Z` when `zulu`).
pub fn write_rfc3339(out: &mut Vec<u8>, instant: Timestamp, offset: Offset, zulu: bool) {
    let dt = offset.to_datetime(instant);
    let mut buf = [0u8; 29];
    let year = dt.year().clamp(0, 9999) as u32;
    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], dt.month() as u32);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], dt.day() as u32);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], dt.hour() as u32);
    buf[13] = b':';
    put_digits(&mut buf[14..16], dt.minute() as u32);
    buf[16] = b':';
    put_digits(&mut buf[17..19], dt.second() as u32);
    buf[19] = b'.';
    put_digits(&mut buf[20..23], dt.millisecond() as u32);
    if zulu && offset == Offset::UTC {
        out.extend_from_slice(&buf[..23]);
        out.push(b'Z');
        return;
    }
    let seconds = offset.seconds();
    buf[23] = if seconds < 0 { b'-' } else { b'+' };
    let minutes = seconds.unsigned_abs() / 60;
    put_digits(&mut buf[24..26], minutes / 60);
    buf[26] = b':';
    put_digits(&mut buf[27..29], minutes % 60);
    out.extend_from_slice(&buf);
}

fn put_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Formats an instant as RFC 3339 (for logs and dead letters).
pub fn rfc3339(instant: Timestamp, offset: Offset, zulu: bool) -> String {
    let mut out = Vec::with_capacity(29);
    write_rfc3339(&mut out, instant, offset, zulu);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}e😀");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001e😀""#);
    }

    #[test]
    fn rfc3339_writes_negative_offsets_with_a_colon() {
        let instant: Timestamp = "2024-05-19T17:03:12.114Z".parse().unwrap();
        let offset = Offset::from_seconds(-5 * 3600).unwrap();
        assert_eq!(
            rfc3339(instant, offset, false),
            "2024-05-19T12:03:12.114-05:00"
        );
        assert_eq!(
            rfc3339(instant, Offset::UTC, true),
            "2024-05-19T17:03:12.114Z"
        );
        assert_eq!(
            rfc3339(instant, Offset::UTC, false),
            "2024-05-19T17:03:12.114+00:00"
        );
    }

    #[test]
    fn level_parses_case_insensitively_and_orders_by_severity() {
        assert_eq!(Level::parse(b"warn"), Some(Level::Warn));
        assert_eq!(Level::parse(b"Warning"), Some(Level::Warn));
        assert_eq!(Level::parse(b"VERBOSE"), None);
        assert!(Level::Fatal > Level::Error && Level::Error > Level::Warn);
    }

    #[test]
    fn field_names_round_trip() {
        for &field in Field::ALL {
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
    }
}
