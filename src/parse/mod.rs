//! Parsing: one datagram's bytes to one typed [`Event`], or a counted [`ParseError`].
//!
//! A datagram goes through three steps, each in its own file and each called
//! once:
//!
//! 1. `grammar.rs`: the tag (nom) and the `;`-separated pieces, found by one
//!    pass over the bytes (`scan.rs`) that also notes what the later steps
//!    would otherwise read the text again for;
//! 2. `choose.rs`: which of the tag's [`layout::Layout`]s the datagram proves,
//!    and which pieces each slot takes (extra `;` belong to free text:
//!    messages, exceptions, task and app names);
//! 3. `build.rs`: the event, each field checked by the value readers of
//!    `value.rs` (unless choosing the layout checked it already), then the
//!    derived fields and the time.
//!
//! `layout.rs` holds the tables. See `docs/WIRE.md` for the rules.
//!
//! The parser is pure: no I/O, no logging, no metrics. It allocates one text
//! buffer per event and nothing else (the split positions live in a scratch
//! vector reused across datagrams); rejecting junk allocates nothing.
//! `tests/alloc.rs` counts this. It is also the hot path: a reader that nom
//! could not match in speed is hand-written, one small function whose doc
//! comment gives the measurement.

mod build;
mod choose;
mod grammar;
pub mod layout;
mod scan;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::event::{Event, Field};

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

    /// Parses one datagram received from `sender` at `received_at`: its
    /// grammar (tag and pieces), then the layout it proves, then the event.
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
        // Not shared yet: taken out of the `Arc`, not cloned.
        self.parse_shared(datagram, sender, received_at)
            .map(Arc::unwrap_or_clone)
    }

    /// [`Parser::parse`], the event built in place in the `Arc` the
    /// pipeline shares with its sinks (not shared yet: `Arc::make_mut`
    /// gives it back to change without a copy).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the datagram is not a Sense event.
    pub fn parse_shared(
        &mut self,
        datagram: &[u8],
        sender: SocketAddr,
        received_at: Timestamp,
    ) -> Result<Arc<Event>, ParseError> {
        let (datagram, layouts, scan) = grammar::read(datagram, &mut self.pieces)?;
        let chosen = self.choose(layouts, datagram)?;
        if chosen
            .layout
            .is_empty(&chosen.widths, &self.pieces, datagram)
        {
            return Err(ParseError::EmptyFields);
        }
        Ok(self.build(datagram, &scan, &chosen, sender, received_at))
    }
}

#[cfg(test)]
mod tests;
