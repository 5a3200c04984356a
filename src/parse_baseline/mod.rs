//! The parser as it was before it was written with nom, kept only so that
//! `cargo bench --bench parse --features bench-baseline` can measure both in one
//! run. Not used by herald.
//!
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
//! vector reused across datagrams); rejecting junk allocates nothing.
//! `tests/alloc.rs` counts this.
//!
//! It is also the hot path, so it reads each datagram in few passes: one to
//! find the `;`, one to check that the text is clean (valid UTF-8 without
//! control characters, the norm), then the checks on each fixed field. Clean
//! text is copied into the event's buffer whole, once, and every field points
//! into that copy; only text that needs cleaning is cleaned field by field.

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
    /// No host and no message: nothing but separators, or near enough.
    EmptyFields,
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
    /// A field that identifies the event (task or execution id) is not a GUID
    /// where extra `;` leave the split in doubt. (With the exact field count the
    /// value is kept, as text, and the event marked.)
    BadGuid {
        /// The field.
        field: Field,
    },
}

impl ParseError {
    /// Every reason label, for registering metrics up front.
    pub const REASONS: [&'static str; 6] = [
        "empty",
        "empty_fields",
        "unknown_tag",
        "too_few_fields",
        "too_many_fields",
        "bad_guid",
    ];

    /// The fixed label used in metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::EmptyFields => "empty_fields",
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
            ParseError::EmptyFields => f.write_str("no host and no message"),
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
        self.split(datagram);
        let (_, tag_end) = self.pieces[0];
        let layouts = Layout::for_tag(&datagram[..tag_end]).ok_or(ParseError::UnknownTag)?;
        let (layout, widths) = self.choose(layouts, datagram)?;
        if layout.is_empty(&widths, &self.pieces, datagram) {
            return Err(ParseError::EmptyFields);
        }

        // The event's one allocation: room for the datagram's text plus whatever
        // derived fields append, so the buffer never grows (unless cleaning
        // invalid UTF-8 makes the text longer).
        let capacity = datagram.len() + layout.derived_bytes(&widths, &self.pieces);
        let mut event = EventBuilder::new(layout.name, sender, received_at, capacity);
        // Clean text (the norm) is copied whole, once; fields then point into it.
        let clean = value::clean_text(datagram);
        if let Some(text) = clean {
            event.buffer().push_str(text);
        }
        let input = Input {
            bytes: datagram,
            mirrored: clean.is_some(),
        };

        let mut times = Times::default();
        let mut piece = 0;
        for (slot, &width) in layout.slots.iter().zip(widths.iter()) {
            let (first, last) = (piece, piece + width - 1);
            piece += width;
            match *slot {
                Slot::MessageException => {
                    let split = exception_start(datagram, &self.pieces[first..=last]);
                    self.text(&mut event, Field::Message, &input, first, first + split - 1);
                    self.text(
                        &mut event,
                        Field::ExceptionMessage,
                        &input,
                        first + split,
                        last,
                    );
                }
                _ => self.slot(&mut event, &mut times, *slot, &input, first, last),
            }
        }
        if let Some(outcome) = layout.outcome {
            event.outcome(outcome);
        }
        derive_user_fields(&mut event);
        layout.derive(&mut event);
        self.stamp(&mut event, times);
        Ok(event.build())
    }

    /// Splits `datagram` at every `;` into `self.pieces` (start and end of each
    /// piece, separators excluded).
    fn split(&mut self, datagram: &[u8]) {
        self.pieces.clear();
        let mut start = 0;
        // Eight bytes at a time: a word without a `;` costs a few instructions,
        // and the separators in a word are visited by their bits.
        let (words, tail) = datagram.as_chunks::<8>();
        for (i, word) in words.iter().enumerate() {
            let mut found = value::bytes_equal(u64::from_le_bytes(*word), b';');
            while found != 0 {
                let end = i * 8 + (found.trailing_zeros() / 8) as usize;
                self.pieces.push((start, end));
                start = end + 1;
                found &= found - 1;
            }
        }
        let tail_start = words.len() * 8;
        for (i, &b) in tail.iter().enumerate() {
            if b == b';' {
                self.pieces.push((start, tail_start + i));
                start = tail_start + i + 1;
            }
        }
        self.pieces.push((start, datagram.len()));
    }

    /// Picks the layout of a tag's `layouts` (the current one first) that the
    /// datagram proves, and how many pieces each of its slots takes:
    ///
    /// 1. one whose field count is exact and whose fixed fields all have their
    ///    shapes;
    /// 2. one whose free text takes the extra pieces with every fixed field
    ///    in shape;
    /// 3. one whose field count is exact: there is no doubt where each value
    ///    goes, so values of the wrong shape are kept as text and the event is
    ///    marked (`malformed_fields`), never rejected;
    /// 4. the current layout, when its free text can take the extra pieces,
    ///    split the likeliest way, unless a task or execution id is then no
    ///    GUID: with extra `;` and ids out of shape, where each value belongs
    ///    is a guess, and an alert must not go out with the wrong task.
    ///
    /// Otherwise the error is the current layout's.
    fn choose(
        &self,
        layouts: &'static [&'static Layout],
        datagram: &[u8],
    ) -> Result<(&'static Layout, [usize; layout::MAX_SLOTS]), ParseError> {
        let got = self.pieces.len();
        let exact = |layout: &Layout| layout.minimum_pieces() == got;
        let absorbs =
            |layout: &Layout| got > layout.minimum_pieces() && !layout.free_priority.is_empty();
        // With one layout, an exact count is that layout whatever the shapes
        // (step 3), so the shape check is only for tags with several.
        if let Some(layout) = layouts.iter().find(|layout| {
            exact(layout)
                && (layouts.len() == 1
                    || layout.fits(&layout.base_widths(), &self.pieces, datagram))
        }) {
            return Ok((layout, layout.base_widths()));
        }
        let mut likeliest = None;
        for layout in layouts.iter().filter(|layout| absorbs(layout)) {
            let (fitting, first) = self.assign(layout, got - layout.minimum_pieces(), datagram);
            if let Some(widths) = fitting {
                return Ok((layout, widths));
            }
            // Only the current layout is taken on a guess; another must be
            // proven by the shapes.
            if let Some(widths) = first
                && std::ptr::eq(*layout, layouts[0])
            {
                likeliest = Some((*layout, widths));
            }
        }
        if let Some(layout) = layouts.iter().find(|layout| exact(layout)) {
            return Ok((layout, layout.base_widths()));
        }
        if let Some((layout, widths)) = likeliest {
            layout.check_required(&widths, &self.pieces, datagram)?;
            return Ok((layout, widths));
        }
        let minimum = layouts[0].minimum_pieces();
        Err(if got < minimum {
            ParseError::TooFewFields {
                expected: minimum,
                got,
            }
        } else {
            ParseError::TooManyFields {
                expected: minimum,
                got,
            }
        })
    }

    /// How `layout`'s free text takes `extra` more pieces than the layout has
    /// slots: the split under which every fixed field has its shape, if any,
    /// and the likeliest split (the first tried).
    fn assign(
        &self,
        layout: &Layout,
        extra: usize,
        datagram: &[u8],
    ) -> (
        Option<[usize; layout::MAX_SLOTS]>,
        Option<[usize; layout::MAX_SLOTS]>,
    ) {
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
        (found, first_candidate)
    }

    /// Fills one fixed or free slot from pieces `first..=last`.
    fn slot(
        &self,
        event: &mut EventBuilder,
        times: &mut Times,
        slot: Slot,
        input: &Input,
        first: usize,
        last: usize,
    ) {
        let (start, end) = (self.pieces[first].0, self.pieces[last].1);
        let bytes = &input.bytes[start..end];
        match slot {
            Slot::Tag => {
                // The tag is not a field: cutting it (possible only with a field cap
                // shorter than the tag) does not set `truncated`.
                let (start, end, _cut) = self.put(event, input, start, end, self.max_field_bytes);
                event.commit_tag(start, end);
            }
            Slot::Level => {
                if !value::is_absent(bytes) {
                    match Level::parse(bytes.trim_ascii()) {
                        Some(level) => event.level(Some(level)),
                        None => self.value(event, Field::Level, input, start, end, false),
                    }
                }
            }
            Slot::Fixed(field) | Slot::Required(field) => {
                self.field(event, times, field, input, start, end);
            }
            Slot::Free(field) => self.text(event, field, input, first, last),
            Slot::MessageException => unreachable!("handled by the caller"),
        }
    }

    /// Stores a typed field from datagram bytes `start..end`, checking its kind
    /// (a timestamp read on the way is kept in `times`).
    fn field(
        &self,
        event: &mut EventBuilder,
        times: &mut Times,
        field: Field,
        input: &Input,
        start: usize,
        end: usize,
    ) {
        let bytes = &input.bytes[start..end];
        if value::is_absent(bytes) {
            return;
        }
        match field.kind() {
            FieldKind::Text => self.value(event, field, input, start, end, true),
            FieldKind::Guid | FieldKind::GuidOrText => {
                if value::is_guid(bytes) {
                    let (start, end) = self.put_lowercase(event, input, start, end);
                    event.commit_range(field, start, end, true);
                } else {
                    let valid = field.kind() == FieldKind::GuidOrText;
                    self.value(event, field, input, start, end, valid);
                }
            }
            FieldKind::Timestamp => {
                let read = value::timestamp(bytes);
                match field {
                    Field::TsIso => times.iso = read,
                    _ => times.local = read,
                }
                self.value(event, field, input, start, end, read.is_some());
            }
            FieldKind::Integer | FieldKind::Decimal => {
                let integer = field.kind() == FieldKind::Integer;
                let trimmed = bytes.trim_ascii();
                if value::is_json_number(trimmed, integer) {
                    let lead = bytes.len() - bytes.trim_ascii_start().len();
                    let number_start = start + lead;
                    // A JSON number is ASCII; lower-casing only touches an `E`.
                    let (start, end) = self.put_lowercase(
                        event,
                        input,
                        number_start,
                        number_start + trimmed.len(),
                    );
                    event.commit_range(field, start, end, true);
                } else {
                    self.value(event, field, input, start, end, false);
                }
            }
        }
    }

    /// Stores cleaned text, capped at the field cap.
    fn value(
        &self,
        event: &mut EventBuilder,
        field: Field,
        input: &Input,
        start: usize,
        end: usize,
        valid: bool,
    ) {
        let (start, end, cut) = self.put(event, input, start, end, self.max_field_bytes);
        if cut {
            event.truncated();
        }
        event.commit_range(field, start, end, valid);
    }

    /// Stores free text spanning pieces `first..=last` (semicolons included).
    fn text(
        &self,
        event: &mut EventBuilder,
        field: Field,
        input: &Input,
        first: usize,
        last: usize,
    ) {
        if first > last {
            return;
        }
        let (start, end) = (self.pieces[first].0, self.pieces[last].1);
        if value::is_absent(&input.bytes[start..end]) {
            return;
        }
        let (start, end, cut) = self.put(event, input, start, end, self.max_text_bytes);
        if cut {
            event.truncated();
        }
        event.commit_range(field, start, end, true);
    }

    /// Puts datagram bytes `start..end` into the event's text as clean text cut
    /// to at most `cap` bytes; says where in the text it sits and whether it was cut.
    fn put(
        &self,
        event: &mut EventBuilder,
        input: &Input,
        start: usize,
        end: usize,
        cap: usize,
    ) -> (usize, usize, bool) {
        if input.mirrored {
            let cut_end = value::capped_end(input.bytes, start, end, cap);
            (start, cut_end, cut_end < end)
        } else {
            let mark = event.mark();
            let cut = value::push_clean(event.buffer(), &input.bytes[start..end], cap);
            (mark, event.mark(), cut)
        }
    }

    /// Like [`Parser::put`] for an ASCII value (a GUID or a number), lower-cased
    /// and never cut.
    fn put_lowercase(
        &self,
        event: &mut EventBuilder,
        input: &Input,
        start: usize,
        end: usize,
    ) -> (usize, usize) {
        if input.mirrored {
            // Values are mostly lower case already: a read-only scan (which
            // vectorises) is cheaper than rewriting them.
            let bytes = &input.bytes[start..end];
            if bytes
                .iter()
                .fold(false, |upper, b| upper | b.is_ascii_uppercase())
            {
                event.buffer()[start..end].make_ascii_lowercase();
            }
            (start, end)
        } else {
            let mark = event.mark();
            value::push_lowercase(event.buffer(), &input.bytes[start..end]);
            (mark, event.mark())
        }
    }

    /// Sets `time` from the best timestamp the event has: `%longIso8601date`
    /// with its offset, else `%date` with one, else either read in the
    /// sender's zone.
    fn stamp(&self, event: &mut EventBuilder, times: Times) {
        let Times { iso, local } = times;
        for ts in [iso, local].into_iter().flatten() {
            if let Some(offset) = ts.offset
                && let Some(instant) = ts.instant()
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

/// The timestamps read while storing an event's fields, for its `time`.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    /// `%longIso8601date`, when it is a timestamp.
    iso: Option<value::SenseTimestamp>,
    /// `%date`, when it is a timestamp.
    local: Option<value::SenseTimestamp>,
}

/// The datagram being parsed, and how its values reach the event's text.
struct Input<'a> {
    /// The datagram, without its trailing newline.
    bytes: &'a [u8],
    /// Whether the datagram was clean text and was copied whole into the event's
    /// text first, so that its byte offsets are the text's and a value is stored
    /// by pointing at it. Otherwise each value is cleaned and appended.
    mirrored: bool,
}

/// Strips one trailing `\r\n` or `\n` (added by test tools such as `nc`).
fn strip_newline(datagram: &[u8]) -> &[u8] {
    let datagram = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    datagram.strip_suffix(b"\r").unwrap_or(datagram)
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
