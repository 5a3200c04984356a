//! Parsing: one datagram's bytes to one typed [`Event`], or a counted [`ParseError`].
//!
//! Every Sense format is described by a [`layout::Layout`]: a list of slots read
//! from both ends. When a datagram has more `;` than its layout, the extra
//! separators belong to free-text fields (message, exception, task and app names);
//! the parser tries the possible assignments in a fixed priority order and keeps
//! the first one under which every fixed field has its expected shape (GUIDs stay
//! GUIDs, timestamps stay timestamps). See `docs/WIRE.md` for the rules.
//!
//! The parser is pure: no I/O, no logging, no metrics. It allocates one text
//! buffer per event and nothing else (the split positions live in a scratch
//! vector reused across datagrams). Rejecting junk allocates nothing.

pub mod layout;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventBuilder, EventTime, Field, FieldKind, Level, TimeSource};
use layout::{Layout, Slot};

/// How datagram text becomes event fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParseConfig {
    /// Longest message or exception text kept, in bytes; longer text is cut and
    /// the event marked `truncated`.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
    /// Longest value of any other field, in bytes.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// Time zone (IANA name such as `"Europe/Stockholm"`, or a fixed offset such as
    /// `"+01:00"`) in which to read `%date` timestamps, which carry no offset.
    /// Unset: such events are stamped with the receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Per-host time zones (keyed by the Sense `%hostname`, case-insensitive),
    /// overriding `time_zone`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_time_zones: BTreeMap<String, String>,
}

fn default_max_text_bytes() -> usize {
    16 * 1024
}

fn default_max_field_bytes() -> usize {
    1024
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            max_text_bytes: default_max_text_bytes(),
            max_field_bytes: default_max_field_bytes(),
            time_zone: None,
            host_time_zones: BTreeMap::new(),
        }
    }
}

/// A time zone name in config that is not known.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown time zone {name:?}; use an IANA name such as \"Europe/Stockholm\" \
     or a fixed offset such as \"+01:00\""
)]
pub struct UnknownTimeZone {
    /// The name as written.
    pub name: String,
}

/// Reads a time zone as written in config.
///
/// # Errors
///
/// When the name is neither a fixed offset nor a zone in the time zone database.
pub fn time_zone(name: &str) -> Result<TimeZone, UnknownTimeZone> {
    let unknown = || UnknownTimeZone {
        name: name.to_string(),
    };
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(TimeZone::UTC);
    }
    if let Some(ts) = value::timestamp(format!("2000-01-01 00:00:00{name}").as_bytes()) {
        return ts.offset.map(TimeZone::fixed).ok_or_else(unknown);
    }
    TimeZone::get(name).map_err(|_| unknown())
}

/// Why a datagram could not become an event. Small and `Copy`: rejecting junk
/// allocates nothing, and [`ParseError::reason`] is a fixed metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Zero bytes (after stripping a trailing newline).
    Empty,
    /// The first field is not a tag herald knows.
    UnknownTag,
    /// Fewer fields than the tag's layout has.
    TooFewFields {
        /// Fields the layout needs.
        expected: usize,
        /// Fields the datagram had.
        got: usize,
    },
    /// More fields than the layout can absorb (it has no free-text field).
    TooManyFields {
        /// Fields the layout has.
        expected: usize,
        /// Fields the datagram had.
        got: usize,
    },
    /// A field that identifies the event (task or execution id) is not a GUID.
    BadGuid {
        /// The field.
        field: Field,
    },
}

impl ParseError {
    /// Every reason label, for registering metrics up front.
    pub const REASONS: [&'static str; 5] = [
        "empty",
        "unknown_tag",
        "too_few_fields",
        "too_many_fields",
        "bad_guid",
    ];

    /// The fixed label used in metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::UnknownTag => "unknown_tag",
            ParseError::TooFewFields { .. } => "too_few_fields",
            ParseError::TooManyFields { .. } => "too_many_fields",
            ParseError::BadGuid { .. } => "bad_guid",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty datagram"),
            ParseError::UnknownTag => f.write_str("unknown tag"),
            ParseError::TooFewFields { expected, got } => {
                write!(f, "too few fields: {got}, this tag needs {expected}")
            }
            ParseError::TooManyFields { expected, got } => {
                write!(f, "too many fields: {got}, this tag has {expected}")
            }
            ParseError::BadGuid { field } => write!(f, "{} is not a GUID", field.name()),
        }
    }
}

impl std::error::Error for ParseError {}

/// A reusable parser: holds the compiled config and a scratch buffer.
#[derive(Debug, Clone)]
pub struct Parser {
    max_text_bytes: usize,
    max_field_bytes: usize,
    default_zone: Option<TimeZone>,
    host_zones: Vec<(String, TimeZone)>,
    pieces: Vec<(usize, usize)>,
}

impl Parser {
    /// Builds a parser from its config.
    ///
    /// # Errors
    ///
    /// When a configured time zone is unknown.
    pub fn new(config: &ParseConfig) -> Result<Parser, UnknownTimeZone> {
        Ok(Parser {
            max_text_bytes: config.max_text_bytes,
            max_field_bytes: config.max_field_bytes,
            default_zone: config.time_zone.as_deref().map(time_zone).transpose()?,
            host_zones: config
                .host_time_zones
                .iter()
                .map(|(host, zone)| Ok((host.clone(), time_zone(zone)?)))
                .collect::<Result<_, _>>()?,
            pieces: Vec::with_capacity(32),
        })
    }

    /// Parses one datagram received from `sender` at `received_at`.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the datagram is not a Sense event.
    pub fn parse(
        &mut self,
        datagram: &[u8],
        sender: SocketAddr,
        received_at: Timestamp,
    ) -> Result<Event, ParseError> {
        let datagram = strip_newline(datagram);
        if datagram.is_empty() {
            return Err(ParseError::Empty);
        }
        let tag_end = memchr::memchr(b';', datagram).unwrap_or(datagram.len());
        let layout = Layout::for_tag(&datagram[..tag_end]).ok_or(ParseError::UnknownTag)?;

        self.pieces.clear();
        let mut start = 0;
        for end in memchr::memchr_iter(b';', datagram) {
            self.pieces.push((start, end));
            start = end + 1;
        }
        self.pieces.push((start, datagram.len()));

        let widths = self.assign(layout, datagram)?;
        let mut event = EventBuilder::new(
            layout.event_type,
            layout.source,
            sender,
            received_at,
            datagram.len() + 16,
        );
        let mut piece = 0;
        for (slot, &width) in layout.slots.iter().zip(widths.iter()) {
            let (first, last) = (piece, piece + width - 1);
            piece += width;
            match *slot {
                Slot::MessageException => {
                    let split = exception_start(datagram, &self.pieces[first..=last]);
                    self.text(
                        &mut event,
                        Field::Message,
                        datagram,
                        first,
                        first + split - 1,
                    );
                    self.text(
                        &mut event,
                        Field::ExceptionMessage,
                        datagram,
                        first + split,
                        last,
                    );
                }
                _ => self.slot(&mut event, *slot, datagram, first, last)?,
            }
        }
        if let Some(outcome) = layout.outcome {
            event.outcome(outcome);
        }
        derive_user_fields(&mut event);
        layout.derive(&mut event);
        self.stamp(&mut event);
        Ok(event.build())
    }

    /// Decides how many pieces each slot takes.
    fn assign(
        &self,
        layout: &Layout,
        datagram: &[u8],
    ) -> Result<[usize; layout::MAX_SLOTS], ParseError> {
        let minimum = layout.minimum_pieces();
        let got = self.pieces.len();
        if got < minimum {
            return Err(ParseError::TooFewFields {
                expected: minimum,
                got,
            });
        }
        let extra = got - minimum;
        if extra > 0 && layout.free_priority.is_empty() {
            return Err(ParseError::TooManyFields {
                expected: minimum,
                got,
            });
        }
        if extra == 0 {
            let widths = layout.base_widths();
            layout.check_required(&widths, &self.pieces, datagram)?;
            return Ok(widths);
        }
        let mut first_candidate = None;
        let mut found: Option<[usize; layout::MAX_SLOTS]> = None;
        layout.candidates(extra, |widths| {
            first_candidate.get_or_insert(*widths);
            if !layout.fits(widths, &self.pieces, datagram) {
                return false;
            }
            match found {
                // Among fitting splits that differ only in how the task and app
                // names share their pieces, prefer one where the task name ends
                // with the app name ("Reload of Sales" / "Sales").
                Some(first)
                    if first[layout.free_priority[0]] == widths[layout.free_priority[0]] =>
                {
                    if layout.names_agree(widths, &self.pieces, datagram) {
                        found = Some(*widths);
                        return true;
                    }
                    false
                }
                Some(_) => true,
                None => {
                    found = Some(*widths);
                    !layout.has_name_pair() || layout.names_agree(widths, &self.pieces, datagram)
                }
            }
        });
        let widths = found
            .or(first_candidate)
            .unwrap_or_else(|| layout.base_widths());
        layout.check_required(&widths, &self.pieces, datagram)?;
        Ok(widths)
    }

    /// Fills one fixed or free slot from pieces `first..=last`.
    fn slot(
        &self,
        event: &mut EventBuilder,
        slot: Slot,
        datagram: &[u8],
        first: usize,
        last: usize,
    ) -> Result<(), ParseError> {
        let bytes = span(datagram, &self.pieces, first, last);
        match slot {
            Slot::Tag => {
                let start = event.mark();
                value::push_clean(event.buffer(), bytes, self.max_field_bytes);
                event.commit_tag(start);
            }
            Slot::Level => {
                if !value::is_absent(bytes) {
                    match Level::parse(bytes.trim_ascii()) {
                        Some(level) => event.level(Some(level)),
                        None => self.value(event, Field::Level, bytes, false),
                    }
                }
            }
            Slot::Fixed(field) | Slot::Required(field) => self.field(event, field, bytes),
            Slot::Free(field) => self.text(event, field, datagram, first, last),
            Slot::MessageException => unreachable!("handled by the caller"),
        }
        Ok(())
    }

    /// Stores a typed field, checking its kind.
    fn field(&self, event: &mut EventBuilder, field: Field, bytes: &[u8]) {
        if value::is_absent(bytes) {
            return;
        }
        match field.kind() {
            FieldKind::Text => self.value(event, field, bytes, true),
            FieldKind::Guid | FieldKind::GuidOrText => {
                if value::is_guid(bytes) {
                    let start = event.mark();
                    value::push_lowercase(event.buffer(), bytes);
                    event.commit(field, start, true);
                } else {
                    let valid = field.kind() == FieldKind::GuidOrText;
                    self.value(event, field, bytes, valid);
                }
            }
            FieldKind::Integer | FieldKind::Decimal => {
                let integer = field.kind() == FieldKind::Integer;
                let trimmed = bytes.trim_ascii();
                if value::is_json_number(trimmed, integer) {
                    let start = event.mark();
                    // A JSON number is ASCII; lower-casing only touches an `E`.
                    value::push_lowercase(event.buffer(), trimmed);
                    event.commit(field, start, true);
                } else {
                    self.value(event, field, bytes, false);
                }
            }
        }
    }

    /// Stores cleaned text, capped at the field cap.
    fn value(&self, event: &mut EventBuilder, field: Field, bytes: &[u8], valid: bool) {
        let start = event.mark();
        if value::push_clean(event.buffer(), bytes, self.max_field_bytes) {
            event.truncated();
        }
        event.commit(field, start, valid);
    }

    /// Stores free text spanning pieces `first..=last` (semicolons included).
    fn text(
        &self,
        event: &mut EventBuilder,
        field: Field,
        datagram: &[u8],
        first: usize,
        last: usize,
    ) {
        if first > last {
            return;
        }
        let bytes = span(datagram, &self.pieces, first, last);
        if value::is_absent(bytes) {
            return;
        }
        let start = event.mark();
        if value::push_clean(event.buffer(), bytes, self.max_text_bytes) {
            event.truncated();
        }
        event.commit(field, start, true);
    }

    /// Sets `time` from the best timestamp the event has.
    fn stamp(&self, event: &mut EventBuilder) {
        let read = |field| {
            event
                .get(field)
                .and_then(|text| value::timestamp(text.as_bytes()))
        };
        let iso = read(Field::TsIso);
        // %date is only needed when %longIso8601date is missing or has no offset.
        let local = match iso {
            Some(ts) if ts.offset.is_some() => None,
            _ => read(Field::TsLocal),
        };
        for ts in [iso, local].into_iter().flatten() {
            if let Some(offset) = ts.offset
                && let Ok(instant) = offset.to_timestamp(ts.datetime)
            {
                event.time(EventTime { instant, offset }, TimeSource::Event);
                return;
            }
        }
        let Some(local) = iso.or(local) else { return };
        let Some(zone) = self.zone_for(event.get(Field::Host)) else {
            return;
        };
        if let Ok(zoned) = local.datetime.to_zoned(zone.clone()) {
            let time = EventTime {
                instant: zoned.timestamp(),
                offset: zoned.offset(),
            };
            event.time(time, TimeSource::EventLocal);
        }
    }

    fn zone_for(&self, host: Option<&str>) -> Option<&TimeZone> {
        host.and_then(|host| {
            self.host_zones
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(host))
                .map(|(_, zone)| zone)
        })
        .or(self.default_zone.as_ref())
    }
}

/// Strips one trailing `\r\n` or `\n` (added by test tools such as `nc`).
fn strip_newline(datagram: &[u8]) -> &[u8] {
    let datagram = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    datagram.strip_suffix(b"\r").unwrap_or(datagram)
}

/// The bytes of pieces `first..=last`, including the separators between them.
fn span<'a>(datagram: &'a [u8], pieces: &[(usize, usize)], first: usize, last: usize) -> &'a [u8] {
    &datagram[pieces[first].0..pieces[last].1]
}

/// Where the exception starts within a message+exception group of pieces
/// (index into `group`, at least 1): at the first piece after the first that looks
/// like a .NET exception header, else at the last piece.
fn exception_start(datagram: &[u8], group: &[(usize, usize)]) -> usize {
    group
        .iter()
        .enumerate()
        .skip(1)
        .find(|&(_, &(start, end))| value::starts_like_exception(&datagram[start..end]))
        .map_or(group.len() - 1, |(i, _)| i)
}

/// Fills `user_full` from directory and id, or splits `user_full` into them.
fn derive_user_fields(event: &mut EventBuilder) {
    let has_dir = event.has(Field::UserDirectory);
    let has_id = event.has(Field::UserId);
    if let Some((start, end)) = event.range(Field::UserFull) {
        if has_dir || has_id {
            return;
        }
        let full = &event.get(Field::UserFull).unwrap_or_default();
        if let Some(backslash) = full.find('\\') {
            let split = start + backslash;
            if split > start {
                event.copy_range(Field::UserDirectory, start, split);
            }
            if split + 1 < end {
                event.copy_range(Field::UserId, split + 1, end);
            }
        }
    } else if has_dir && has_id {
        let (dir_start, dir_end) = event.range(Field::UserDirectory).unwrap_or_default();
        let (id_start, id_end) = event.range(Field::UserId).unwrap_or_default();
        let start = event.mark();
        let buffer = event.buffer();
        buffer.extend_from_within(dir_start..dir_end);
        buffer.push('\\');
        buffer.extend_from_within(id_start..id_end);
        event.commit(Field::UserFull, start, true);
    }
}

#[cfg(test)]
mod tests;
