//! The event: the one typed shape every sink sees (see `docs/EVENTS.md`).
//!
//! An [`Event`] owns one text buffer holding every string field, plus a fixed
//! table of spans into it (`spans`: 16-bit offsets unless the text passes
//! 64 KiB), so building an event costs one buffer however many fields the
//! datagram has (the parser copies a clean datagram's text in whole and points
//! the spans into it). This file holds the types (the envelope's enums, the [`Field`]
//! table, [`Event`] and its accessors); the JSON writer every sink shares is in
//! `json`, reading that JSON back in `decode`, the compact encoding for
//! buffering events on disk in [`binary`], and [`EventBuilder`], with which the
//! parser fills an event, in `builder`. This module does not parse datagrams
//! (that is [`crate::parse`]) and does not decide where events go (that is
//! [`crate::route`]).

pub mod binary;
mod builder;
pub(crate) mod decode;
mod json;
pub mod prefetch;
mod spans;

pub use binary::{BINARY_VERSION, DecodeError};
pub use builder::EventBuilder;
pub use json::{json_string, rfc3339, write_rfc3339};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::Offset;
use serde::{Deserialize, Serialize};

use spans::{Span, Spans};

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
    /// Every source, in declaration order.
    pub const ALL: [Source; 4] = [
        Source::Engine,
        Source::Proxy,
        Source::Repository,
        Source::Scheduler,
    ];

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

/// Which known field layout a datagram was read with; the JSON `layout`.
///
/// A tag may have more than one: Sense sites run appender files of different
/// ages, and the parser picks the layout the field count and the fields'
/// shapes prove (`docs/WIRE.md` lists each with its source). The layout also
/// fixes the event's type and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayoutName {
    /// `/qseow-engine/`, 19 fields.
    Engine,
    /// `/qseow-proxy/`, 16 fields.
    Proxy,
    /// `/qseow-repository/`, 16 fields (the proxy's).
    Repository,
    /// `/qseow-scheduler/`, 18 fields.
    Scheduler,
    /// `/qseow-qix-perf/` as Butler SOS ships it today, 26 fields.
    QixPerf,
    /// `/qseow-qix-perf/` as older Butler SOS appender files send it, 25 fields
    /// (no `%user`, EngineTimestamp or Handle; RequestException and
    /// AnyException; another order).
    QixPerfLegacy,
    /// `/qseow-proxy-session/` (and `/proxy-session/`), 8 fields.
    Session,
    /// `/qseow-proxy-connection/` (and `/proxy-connection/`), 8 fields.
    Connection,
    /// Butler's `/scheduler-*` task tags, 11 fields.
    Task,
    /// `/engine-reload-failed/`, 9 fields.
    EngineReloadFailed,
}

impl LayoutName {
    /// Every layout, in a fixed order (the disk buffer stores the index).
    pub const ALL: [LayoutName; 10] = [
        LayoutName::Engine,
        LayoutName::Proxy,
        LayoutName::Repository,
        LayoutName::Scheduler,
        LayoutName::QixPerf,
        LayoutName::QixPerfLegacy,
        LayoutName::Session,
        LayoutName::Connection,
        LayoutName::Task,
        LayoutName::EngineReloadFailed,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LayoutName::Engine => "engine",
            LayoutName::Proxy => "proxy",
            LayoutName::Repository => "repository",
            LayoutName::Scheduler => "scheduler",
            LayoutName::QixPerf => "qix-perf",
            LayoutName::QixPerfLegacy => "qix-perf/legacy",
            LayoutName::Session => "session",
            LayoutName::Connection => "connection",
            LayoutName::Task => "task",
            LayoutName::EngineReloadFailed => "engine-reload-failed",
        }
    }

    /// Reads the JSON spelling.
    pub fn from_name(name: &str) -> Option<LayoutName> {
        LayoutName::ALL
            .into_iter()
            .find(|layout| layout.as_str() == name)
    }

    /// The type of the events read with this layout.
    pub fn event_type(self) -> EventType {
        match self {
            LayoutName::Engine
            | LayoutName::Proxy
            | LayoutName::Repository
            | LayoutName::Scheduler => EventType::Log,
            LayoutName::QixPerf | LayoutName::QixPerfLegacy => EventType::QixPerf,
            LayoutName::Session => EventType::Session,
            LayoutName::Connection => EventType::Connection,
            LayoutName::Task => EventType::Task,
            LayoutName::EngineReloadFailed => EventType::EngineReloadFailed,
        }
    }

    /// The source of the events read with this layout.
    pub fn source(self) -> Source {
        match self {
            LayoutName::Engine
            | LayoutName::QixPerf
            | LayoutName::QixPerfLegacy
            | LayoutName::EngineReloadFailed => Source::Engine,
            LayoutName::Proxy | LayoutName::Session | LayoutName::Connection => Source::Proxy,
            LayoutName::Repository => Source::Repository,
            LayoutName::Scheduler | LayoutName::Task => Source::Scheduler,
        }
    }

    /// The layout of an event of `event_type` and `source` recorded before
    /// events named theirs (each type and source had one layout then).
    pub fn before_layouts(event_type: EventType, source: Source) -> Option<LayoutName> {
        LayoutName::ALL.into_iter().find(|layout| {
            *layout != LayoutName::QixPerfLegacy
                && layout.event_type() == event_type
                && layout.source() == source
        })
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
    /// Every level, from least to most severe.
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

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
        // Sense writes them in capitals: an exact match first, as cheap as
        // it gets, then any case.
        NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .or_else(|| {
                NAMES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(text))
            })
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
    /// Every outcome, in declaration order.
    pub const ALL: [TaskOutcome; 4] = [
        TaskOutcome::Failed,
        TaskOutcome::Aborted,
        TaskOutcome::Success,
        TaskOutcome::Distribute,
    ];

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
    /// Every time source, in declaration order.
    pub const ALL: [TimeSource; 3] = [
        TimeSource::Event,
        TimeSource::EventLocal,
        TimeSource::Received,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Event => "event",
            TimeSource::EventLocal => "event_local",
            TimeSource::Received => "received",
        }
    }
}

/// Room for the longest `,"key":` of a field (a longer one fails to compile).
const KEY_ROOM: usize = 32;

/// `key` padded with spaces to [`KEY_ROOM`] bytes.
const fn padded_key(key: &str) -> [u8; KEY_ROOM] {
    let bytes = key.as_bytes();
    assert!(
        bytes.len() <= KEY_ROOM,
        "a field's JSON key is longer than KEY_ROOM"
    );
    let mut padded = [b' '; KEY_ROOM];
    let mut i = 0;
    while i < bytes.len() {
        padded[i] = bytes[i];
        i += 1;
    }
    padded
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

            /// Appends `,"key":` to `out` (keys never need escaping): a copy
            /// of fixed size, the key padded to [`KEY_ROOM`] bytes, cut back
            /// to the key's length, which needs no call to a copy of variable
            /// length.
            fn write_json_key(self, out: &mut Vec<u8>) {
                const KEYS: [([u8; KEY_ROOM], usize); Field::COUNT] = [$(
                    (padded_key(concat!(",\"", $name, "\":")), concat!(",\"", $name, "\":").len()),
                )*];
                let (key, len) = &KEYS[self as usize];
                out.extend_from_slice(key);
                out.truncate(out.len() - (KEY_ROOM - len));
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
    TsIso => "ts_iso", Timestamp;
    TsLocal => "ts_local", Timestamp;
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
    // Added after the disk buffer's format fixed the bits above: new fields
    // go last, so buffered events keep their meaning.
    RequestException => "request_exception", Text;
    AnyException => "any_exception", Text;
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
    /// A log4net timestamp (`%longIso8601date` or `%date`), written as it came;
    /// anything else goes to `raw_fields`.
    Timestamp,
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
    /// The field layout the datagram was read with; the JSON `layout`.
    pub layout: LayoutName,
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
    spans: Spans,
    /// Bit `f` set: field `f` has a valid value (text, or a number whose text is
    /// valid JSON) at `spans[f]`. The encoder visits only these fields.
    values: u64,
    /// Bit `f` set: field `f` has a value that failed its kind's check at
    /// `spans[f]`; written under `raw_fields`. A field is in at most one mask;
    /// in neither, it is absent.
    raws: u64,
    /// Bit `f` set: field `f`'s value may need escaping in a JSON string (bit
    /// 63: the tag's); the encoder copies every other value as it is. Set
    /// wherever an event is made: by the builder from what the parser's scan
    /// found, by [`Event::escape_mask`] for an event read back.
    escaped: u64,
}

/// How many bytes that JSON must escape an event's text may hold for the
/// encoder to still copy the values without them as they are; text with
/// more has every value escaped.
pub const MAX_ESCAPES: usize = 8;

// The field masks have one bit per field (and `escaped` one more, the tag's).
const _: () = assert!(Field::COUNT < 64);

/// The bit of `field` in [`Event`]'s field masks.
fn field_bit(field: Field) -> u64 {
    1 << field as u32
}

/// The fields whose bits are set in `mask`, in field order; visits only the
/// set bits (an event has a dozen or so of the 44 fields).
fn fields_in(mask: u64) -> impl Iterator<Item = Field> {
    let mut rest = mask & ((1 << Field::COUNT) - 1);
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let field = Field::ALL[rest.trailing_zeros() as usize];
            rest &= rest - 1;
            field
        })
    })
}

impl Event {
    /// The tag exactly as received, e.g. `/qseow-proxy/`.
    pub fn tag(&self) -> &str {
        self.text_at(self.tag)
    }

    /// A field's valid value, or `None` when it is absent or went to `raw_fields`.
    pub fn get(&self, field: Field) -> Option<&str> {
        (self.values & field_bit(field) != 0).then(|| self.text_at(self.spans.get(field)))
    }

    /// A field's value that failed its kind's check (kept under `raw_fields`).
    pub fn raw(&self, field: Field) -> Option<&str> {
        (self.raws & field_bit(field) != 0).then(|| self.text_at(self.spans.get(field)))
    }

    /// The fields whose values failed their kind's check (the JSON
    /// `malformed_fields`), in field order.
    pub fn malformed_fields(&self) -> impl Iterator<Item = Field> + use<> {
        fields_in(self.raws)
    }

    fn text_at(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    /// The spans in use: the tag's and every field's that has a value.
    fn spans_in_use(&self) -> impl Iterator<Item = Span> + '_ {
        std::iter::once(self.tag)
            .chain(fields_in(self.values | self.raws).map(|field| self.spans.get(field)))
    }

    /// Bytes of text the event's values use (a value shared by two fields
    /// counts twice).
    fn used_text_bytes(&self) -> usize {
        self.spans_in_use()
            .map(|span| (span.end - span.start) as usize)
            .sum()
    }

    /// Copies the values into a text buffer of `used` bytes and points the
    /// spans into it.
    fn compact(&mut self, used: usize) {
        let mut text = String::with_capacity(used);
        let moved = |span: Span, text: &mut String| {
            let start = text.len();
            text.push_str(&self.text[span.start as usize..span.end as usize]);
            Span {
                start: start as u32,
                end: text.len() as u32,
            }
        };
        let tag = moved(self.tag, &mut text);
        let mut spans = Spans::new();
        for field in fields_in(self.values | self.raws) {
            spans.set(field, moved(self.spans.get(field), &mut text));
        }
        self.tag = tag;
        self.spans = spans;
        self.text = text;
    }

    /// About how much memory the event holds, in bytes: what queue byte
    /// budgets count.
    pub fn memory_bytes(&self) -> usize {
        // The Arc the pipeline shares it in adds two counters.
        std::mem::size_of::<Event>()
            + 2 * std::mem::size_of::<usize>()
            + self.text.capacity()
            + self.spans.heap_bytes()
            + self.categories.capacity() * std::mem::size_of::<Category>()
    }

    /// The host name from the datagram.
    pub fn host(&self) -> Option<&str> {
        self.get(Field::Host)
    }

    /// The free-text message, when the format has one.
    pub fn message(&self) -> Option<&str> {
        self.get(Field::Message)
    }
}

/// Every fixture datagram (`fixtures/datagrams`), with its path, in path
/// order.
#[cfg(test)]
pub(crate) fn fixture_datagrams() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datagrams");
    let mut paths: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let datagram = std::fs::read(&path).unwrap();
            (path, datagram)
        })
        .collect()
}

/// Every fixture datagram that parses, as an event with categories, tags, a
/// sequence number and a sender and receive time of its own (one in four from
/// an IPv6 address), named by its fixture: what the encoders' round-trip tests
/// run over.
#[cfg(test)]
pub(crate) fn test_events() -> Vec<(String, Event)> {
    static EVENTS: std::sync::OnceLock<Vec<(String, Event)>> = std::sync::OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let mut parser =
                crate::parse::Parser::new(&crate::parse::ParseConfig::default()).unwrap();
            let tags: StaticTags = Arc::new(BTreeMap::from([
                ("env".to_string(), "prod \"eu\"".to_string()),
                ("site".to_string(), "Göteborg".to_string()),
            ]));
            let mut events = Vec::new();
            for (i, (path, datagram)) in fixture_datagrams().iter().enumerate() {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let sender: SocketAddr = if i % 4 == 3 {
                    format!("[fe80::1:{i}%3]:{}", 50_000 + i).parse().unwrap()
                } else {
                    format!("10.0.{i}.5:{}", 61_000 + i).parse().unwrap()
                };
                let received_at = Timestamp::new(1_779_523_200 + i as i64, 123_456_789).unwrap();
                let Ok(mut event) = parser.parse(datagram, sender, received_at) else {
                    continue;
                };
                event.sequence = 1_000_003 * i as u64;
                event.categories = vec![
                    (Arc::from("team"), Arc::from("bi\tnight")),
                    (Arc::from("app"), Arc::from(name.as_str())),
                ];
                // Some with no tags, some with an empty map, most with tags.
                event.tags = match i % 5 {
                    0 => None,
                    1 => Some(Arc::new(BTreeMap::new())),
                    _ => Some(tags.clone()),
                };
                events.push((name, event));
            }
            events
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_tables_list_every_variant_in_declaration_order() {
        for (i, value) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(value as usize, i);
        }
        for (i, value) in Source::ALL.into_iter().enumerate() {
            assert_eq!(value as usize, i);
        }
        for (i, value) in Level::ALL.into_iter().enumerate() {
            assert_eq!(value as usize, i);
        }
        for (i, value) in TaskOutcome::ALL.into_iter().enumerate() {
            assert_eq!(value as usize, i);
        }
        for (i, value) in TimeSource::ALL.into_iter().enumerate() {
            assert_eq!(value as usize, i);
        }
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
