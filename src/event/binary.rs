//! A compact binary encoding of an [`Event`], for a disk buffer that keeps
//! events between the pipeline and a sink: [`Event::encode_binary`] and
//! [`Event::decode_binary`].
//!
//! The encoding keeps every part of the event, so a decoded event writes the
//! same JSON, byte for byte, and reads the same through every accessor. It is
//! written by hand (no serde) because it runs for every buffered event: the text
//! buffer goes in as one blob and spans as fixed-width integers.
//!
//! Format, all integers little-endian (`uN`/`iN`: N-bit), strings as a `u32`
//! byte length and their UTF-8 bytes:
//!
//! | part | encoding |
//! |---|---|
//! | version | `u8`, [`BINARY_VERSION`] (version 1, without the layout, is still read) |
//! | type, source | `u8` each: the index in [`EventType::ALL`], [`Source::ALL`] |
//! | level, outcome | `u8` each: 0 for none, else 1 + the index in [`Level::ALL`], [`TaskOutcome::ALL`] |
//! | time source | `u8`: the index in [`TimeSource::ALL`] |
//! | flags | `u8`: bit 0 truncated, bit 1 tags present; other bits 0 |
//! | layout | `u8`: the index in [`LayoutName::ALL`] (version 2 on; a version 1 event gets the one layout its type and source had then) |
//! | time | `i64` seconds, `i32` nanoseconds (as jiff splits the instant), `i32` offset seconds |
//! | received at | `i64` seconds, `i32` nanoseconds |
//! | sender | `u8` 4 then 4 address bytes and `u16` port; or `u8` 6 then 16 address bytes, `u16` port, `u32` flow info, `u32` scope id |
//! | sequence | `u64` |
//! | field masks | `u64` valid values, `u64` raw values (bit `f` is field `f` of [`Field::ALL`]) |
//! | tag | `u32` start, `u32` end, in the text |
//! | text | string |
//! | field spans | `u32` start, `u32` end for each field in either mask, in field order |
//! | categories | `u32` count, then name and value strings |
//! | tags | when the flag is set: `u32` count, then key and value strings, keys ascending |
//!
//! Spans of fields in neither mask are not written: nothing reads them, and an
//! event built by [`super::EventBuilder`] leaves them empty, as decoding does.
//!
//! Decoding checks everything it reads, so arbitrary bytes give a
//! [`DecodeError`], never a panic or an event that would write invalid JSON:
//! the version, enum indexes, flag bits, time ranges, that spans lie within the
//! text on character boundaries, that the masks name only existing fields and
//! no field twice, that valid numeric fields are JSON numbers, UTF-8, and that
//! nothing follows the event. It does not frame records (a buffer file stores
//! each encoding's length itself) and it does not share tag maps or category
//! strings between decoded events.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::Offset;

use super::{
    Event, EventTime, EventType, Field, FieldKind, LayoutName, Level, Source, Span, Spans,
    TaskOutcome, TimeSource, field_bit, fields_in,
};
use crate::parse::value::is_json_number;

/// The format version this build writes (the first byte). It reads this one
/// and [`BINARY_VERSION_1`].
pub const BINARY_VERSION: u8 = 2;

/// The format before events carried their layout.
const BINARY_VERSION_1: u8 = 1;

/// Flag bit: some field was cut to its cap.
const TRUNCATED: u8 = 1;
/// Flag bit: the event has a tag map (possibly empty).
const HAS_TAGS: u8 = 2;

/// Every field's bit.
const ALL_FIELDS: u64 = if Field::COUNT == 64 {
    u64::MAX
} else {
    (1 << Field::COUNT) - 1
};

/// The bytes of everything before the text whatever the event: version, seven
/// one-byte parts, two times, received at, sequence, masks, tag span, the
/// text's length (the sender is added apart).
const FIXED_LEN: usize = 1 + 7 + (8 + 4 + 4) + (8 + 4) + 8 + 16 + 8 + 4;

/// Why bytes are not an encoded event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside `part`.
    #[error("the encoded event ends inside its {0}")]
    Truncated(&'static str),
    /// The first byte is not a version this build reads.
    #[error("unknown encoding version {0} (this build reads {BINARY_VERSION})")]
    Version(u8),
    /// An enum index or flag byte that means nothing.
    #[error("invalid {part} byte {value}")]
    BadTag {
        /// What the byte was meant to be.
        part: &'static str,
        /// The byte.
        value: u8,
    },
    /// A time or offset outside the supported range.
    #[error("{0} is out of range")]
    BadTime(&'static str),
    /// A span that does not lie within the text on character boundaries.
    #[error("the span of {0} is not within the text")]
    BadSpan(&'static str),
    /// A mask bit for no field, or a field in both masks.
    #[error("the field masks are inconsistent")]
    BadMasks,
    /// A valid numeric field whose text is not a JSON number.
    #[error("{0} is not a number")]
    BadNumber(&'static str),
    /// Text that is not UTF-8.
    #[error("the {0} is not UTF-8")]
    Utf8(&'static str),
    /// Tag keys repeated or out of order.
    #[error("the tag keys are not in ascending order")]
    TagOrder,
    /// Bytes after the event.
    #[error("{0} bytes follow the encoded event")]
    TrailingBytes(usize),
}

impl Event {
    /// Appends the event's binary encoding (see [`binary`](crate::event::binary)
    /// for the format) to `out`.
    pub fn encode_binary(&self, out: &mut Vec<u8>) {
        let present = self.values | self.raws;
        let strings: usize = self
            .categories
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
            + self.tags.as_deref().map_or(0, |tags| {
                4 + tags
                    .iter()
                    .map(|(key, value)| 8 + key.len() + value.len())
                    .sum::<usize>()
            });
        out.reserve(
            FIXED_LEN + 45 + self.text.len() + 8 * present.count_ones() as usize + 4 + strings,
        );
        let flags = u8::from(self.truncated) * TRUNCATED + u8::from(self.tags.is_some()) * HAS_TAGS;
        out.extend_from_slice(&[
            BINARY_VERSION,
            self.event_type as u8,
            self.source as u8,
            self.level.map_or(0, |level| level as u8 + 1),
            self.outcome.map_or(0, |outcome| outcome as u8 + 1),
            self.time_source as u8,
            flags,
            self.layout as u8,
        ]);
        put_instant(out, self.time.instant);
        out.extend_from_slice(&self.time.offset.seconds().to_le_bytes());
        put_instant(out, self.received_at);
        match self.sender {
            SocketAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.ip().octets());
                out.extend_from_slice(&v4.port().to_le_bytes());
            }
            SocketAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.ip().octets());
                out.extend_from_slice(&v6.port().to_le_bytes());
                out.extend_from_slice(&v6.flowinfo().to_le_bytes());
                out.extend_from_slice(&v6.scope_id().to_le_bytes());
            }
        }
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.values.to_le_bytes());
        out.extend_from_slice(&self.raws.to_le_bytes());
        put_span(out, self.tag);
        put_str(out, &self.text);
        let mut rest = present;
        while rest != 0 {
            put_span(
                out,
                self.spans.get(Field::ALL[rest.trailing_zeros() as usize]),
            );
            rest &= rest - 1;
        }
        put_len(out, self.categories.len());
        for (name, value) in &self.categories {
            put_str(out, name);
            put_str(out, value);
        }
        if let Some(tags) = &self.tags {
            put_len(out, tags.len());
            for (key, value) in tags.iter() {
                put_str(out, key);
                put_str(out, value);
            }
        }
    }

    /// Reads an event written by [`Event::encode_binary`]; `bytes` must hold
    /// exactly one.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying what is wrong, for any bytes that are not an
    /// event this version wrote.
    pub fn decode_binary(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut input = Reader { rest: bytes };
        let version = input.u8("version")?;
        if version != BINARY_VERSION && version != BINARY_VERSION_1 {
            return Err(DecodeError::Version(version));
        }
        let event_type = *pick(&EventType::ALL, "type", input.u8("type")?)?;
        let source = *pick(&Source::ALL, "source", input.u8("source")?)?;
        let level = optional(&Level::ALL, "level", input.u8("level")?)?;
        let outcome = optional(&TaskOutcome::ALL, "outcome", input.u8("outcome")?)?;
        let time_source = *pick(&TimeSource::ALL, "time source", input.u8("time source")?)?;
        let flags = input.u8("flags")?;
        if flags & !(TRUNCATED | HAS_TAGS) != 0 {
            return Err(DecodeError::BadTag {
                part: "flags",
                value: flags,
            });
        }
        let layout = if version == BINARY_VERSION_1 {
            LayoutName::before_layouts(event_type, source).ok_or(DecodeError::BadTag {
                part: "source",
                value: source as u8,
            })?
        } else {
            let index = input.u8("layout")?;
            let layout = *pick(&LayoutName::ALL, "layout", index)?;
            if layout.event_type() != event_type || layout.source() != source {
                return Err(DecodeError::BadTag {
                    part: "layout",
                    value: index,
                });
            }
            layout
        };
        let instant = input.instant("time")?;
        let offset = Offset::from_seconds(input.i32("time")?)
            .map_err(|_| DecodeError::BadTime("time offset"))?;
        let received_at = input.instant("received at")?;
        let sender = input.sender()?;
        let sequence = input.u64("sequence")?;
        let values = input.u64("field masks")?;
        let raws = input.u64("field masks")?;
        if (values | raws) & !ALL_FIELDS != 0 || values & raws != 0 {
            return Err(DecodeError::BadMasks);
        }
        let tag = input.span("tag")?;
        let text = input.str("text")?;
        let text_span = |span: Span, part| {
            (span.start <= span.end
                && text.is_char_boundary(span.start as usize)
                && text.is_char_boundary(span.end as usize))
            .then_some(span)
            .ok_or(DecodeError::BadSpan(part))
        };
        let tag = text_span(tag, "the tag")?;
        let mut spans = Spans::new();
        for field in fields_in(values | raws) {
            let span = text_span(input.span(field.name())?, field.name())?;
            let number = match field.kind() {
                FieldKind::Integer => Some(true),
                FieldKind::Decimal => Some(false),
                _ => None,
            };
            if let Some(integer) = number
                && values & field_bit(field) != 0
                && !is_json_number(
                    &text.as_bytes()[span.start as usize..span.end as usize],
                    integer,
                )
            {
                return Err(DecodeError::BadNumber(field.name()));
            }
            spans.set(field, span);
        }
        let count = input.len("categories")?;
        // Each category takes at least 8 bytes, which bounds the allocation.
        let mut categories = Vec::with_capacity(count.min(input.rest.len() / 8));
        for _ in 0..count {
            let name: Arc<str> = input.str("categories")?.into();
            let value: Arc<str> = input.str("categories")?.into();
            categories.push((name, value));
        }
        let tags = if flags & HAS_TAGS != 0 {
            let mut tags = BTreeMap::new();
            for _ in 0..input.len("tags")? {
                let key = input.str("tags")?;
                let value = input.str("tags")?;
                if tags.last_key_value().is_some_and(|(last, _)| last >= &key) {
                    return Err(DecodeError::TagOrder);
                }
                tags.insert(key, value);
            }
            Some(Arc::new(tags))
        } else {
            None
        };
        if !input.rest.is_empty() {
            return Err(DecodeError::TrailingBytes(input.rest.len()));
        }
        let mut event = Event {
            event_type,
            source,
            layout,
            level,
            outcome,
            time: EventTime { instant, offset },
            time_source,
            received_at,
            sender,
            truncated: flags & TRUNCATED != 0,
            categories,
            tags,
            sequence,
            tag,
            escaped: u64::MAX,
            text,
            spans,
            values,
            raws,
        };
        event.escaped = event.escape_mask();
        Ok(event)
    }
}

fn put_instant(out: &mut Vec<u8>, instant: Timestamp) {
    out.extend_from_slice(&instant.as_second().to_le_bytes());
    out.extend_from_slice(&instant.subsec_nanosecond().to_le_bytes());
}

fn put_span(out: &mut Vec<u8>, span: Span) {
    out.extend_from_slice(&span.start.to_le_bytes());
    out.extend_from_slice(&span.end.to_le_bytes());
}

/// A length or count, as `u32` (spans are `u32`, so the text fits; so do
/// strings from config and category lists).
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// `table[index]`, or the error naming `part`.
fn pick<'t, T>(table: &'t [T], part: &'static str, index: u8) -> Result<&'t T, DecodeError> {
    table
        .get(usize::from(index))
        .ok_or(DecodeError::BadTag { part, value: index })
}

/// 0: none; else `table[index - 1]`.
fn optional<T: Copy>(table: &[T], part: &'static str, index: u8) -> Result<Option<T>, DecodeError> {
    match index.checked_sub(1) {
        None => Ok(None),
        Some(at) => table
            .get(usize::from(at))
            .map(|value| Some(*value))
            .ok_or(DecodeError::BadTag { part, value: index }),
    }
}

/// Reads the encoding front to back; each read names the part it is for, to
/// say where the bytes ran out.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, part: &'static str) -> Result<&'a [u8], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated(part))?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, part: &'static str) -> Result<[u8; N], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated(part))?;
        self.rest = rest;
        Ok(*taken)
    }

    fn u8(&mut self, part: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(part).map(|[byte]| byte)
    }

    fn u16(&mut self, part: &'static str) -> Result<u16, DecodeError> {
        self.array(part).map(u16::from_le_bytes)
    }

    fn u32(&mut self, part: &'static str) -> Result<u32, DecodeError> {
        self.array(part).map(u32::from_le_bytes)
    }

    fn i32(&mut self, part: &'static str) -> Result<i32, DecodeError> {
        self.array(part).map(i32::from_le_bytes)
    }

    fn u64(&mut self, part: &'static str) -> Result<u64, DecodeError> {
        self.array(part).map(u64::from_le_bytes)
    }

    fn len(&mut self, part: &'static str) -> Result<usize, DecodeError> {
        self.u32(part).map(|len| len as usize)
    }

    fn instant(&mut self, part: &'static str) -> Result<Timestamp, DecodeError> {
        let seconds = self.array(part).map(i64::from_le_bytes)?;
        let nanos = self.i32(part)?;
        Timestamp::new(seconds, nanos).map_err(|_| DecodeError::BadTime(part))
    }

    fn span(&mut self, part: &'static str) -> Result<Span, DecodeError> {
        Ok(Span {
            start: self.u32(part)?,
            end: self.u32(part)?,
        })
    }

    fn str(&mut self, part: &'static str) -> Result<String, DecodeError> {
        let len = self.len(part)?;
        let bytes = self.take(len, part)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(part))
    }

    fn sender(&mut self) -> Result<SocketAddr, DecodeError> {
        const PART: &str = "sender";
        match self.u8(PART)? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>(PART)?);
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, self.u16(PART)?)))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>(PART)?);
                let port = self.u16(PART)?;
                let flowinfo = self.u32(PART)?;
                let scope_id = self.u32(PART)?;
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    ip, port, flowinfo, scope_id,
                )))
            }
            value => Err(DecodeError::BadTag { part: PART, value }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::test_events;

    fn encode(event: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        event.encode_binary(&mut out);
        out
    }

    /// Every part of two events, compared (an [`Event`] has no `PartialEq`:
    /// spans of absent fields are not part of it).
    fn assert_same(a: &Event, b: &Event, name: &str) {
        assert_eq!(a.to_json(), b.to_json(), "{name}");
        assert_eq!(
            (
                a.event_type,
                a.source,
                a.level,
                a.outcome,
                a.time,
                a.time_source
            ),
            (
                b.event_type,
                b.source,
                b.level,
                b.outcome,
                b.time,
                b.time_source
            ),
            "{name}"
        );
        assert_eq!(
            (a.received_at, a.sender, a.truncated, a.sequence),
            (b.received_at, b.sender, b.truncated, b.sequence),
            "{name}"
        );
        assert_eq!(a.categories, b.categories, "{name}");
        assert_eq!(a.tags, b.tags, "{name}");
        assert_eq!(
            (a.tag, &a.text, a.values, a.raws),
            (b.tag, &b.text, b.values, b.raws),
            "{name}"
        );
        for &field in Field::ALL {
            if (a.values | a.raws) & field_bit(field) != 0 {
                assert_eq!(a.spans.get(field), b.spans.get(field), "{name} {field:?}");
            }
        }
    }

    #[test]
    fn every_fixture_event_round_trips_exactly() {
        let events = test_events();
        assert!(events.len() >= 25, "only {} events", events.len());
        for (name, event) in &events {
            let bytes = encode(event);
            let back = Event::decode_binary(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_same(event, &back, name);
            assert_eq!(encode(&back), bytes, "{name}");
        }
    }

    #[test]
    fn encoding_appends() {
        let (_, event) = &test_events()[0];
        let mut out = b"head".to_vec();
        event.encode_binary(&mut out);
        assert_eq!(&out[..4], b"head");
        assert_eq!(out[4..], encode(event));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (name, event) in test_events() {
            let bytes = encode(&event);
            for len in 0..bytes.len() {
                let err = Event::decode_binary(&bytes[..len]).err();
                assert!(
                    matches!(err, Some(DecodeError::Truncated(_))),
                    "{name} cut at {len}: {err:?}"
                );
            }
        }
    }

    /// A fixture event's encoding with `change` applied to its bytes.
    fn decode_changed(change: impl FnOnce(&mut Vec<u8>)) -> Result<Event, DecodeError> {
        let (_, event) = &test_events()[0];
        let mut bytes = encode(event);
        change(&mut bytes);
        Event::decode_binary(&bytes)
    }

    /// Where the text's length is: at the end of the fixed part, after an IPv4
    /// sender (7 bytes).
    fn text_at(event: &Event) -> usize {
        assert!(event.sender.is_ipv4());
        FIXED_LEN + 7 - 4
    }

    #[test]
    fn version_1_events_get_the_layout_their_type_and_source_had() {
        for (name, event) in test_events() {
            let mut bytes = encode(&event);
            // Version 1 had no layout byte, after the seven one-byte parts.
            bytes[0] = BINARY_VERSION_1;
            bytes.remove(7);
            let decoded =
                Event::decode_binary(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
            let expected = match event.layout {
                LayoutName::QixPerfLegacy => LayoutName::QixPerf,
                layout => layout,
            };
            assert_eq!(decoded.layout, expected, "{name}");
        }
    }

    #[test]
    fn a_layout_of_another_type_is_refused() {
        let (_, event) = test_events()
            .into_iter()
            .find(|(_, event)| event.layout == LayoutName::QixPerf)
            .expect("a qix-perf fixture");
        let mut bytes = encode(&event);
        bytes[7] = LayoutName::Task as u8;
        assert_eq!(
            Event::decode_binary(&bytes).err(),
            Some(DecodeError::BadTag {
                part: "layout",
                value: LayoutName::Task as u8
            })
        );
    }

    #[test]
    fn bad_values_are_named() {
        let (_, event) = &test_events()[0];
        assert_eq!(
            decode_changed(|b| b[0] = 3).err(),
            Some(DecodeError::Version(3))
        );
        assert_eq!(
            decode_changed(|b| b[1] = 6).err(),
            Some(DecodeError::BadTag {
                part: "type",
                value: 6
            })
        );
        assert_eq!(
            decode_changed(|b| b[3] = 6).err(),
            Some(DecodeError::BadTag {
                part: "level",
                value: 6
            })
        );
        assert_eq!(
            decode_changed(|b| b[6] = 4).err(),
            Some(DecodeError::BadTag {
                part: "flags",
                value: 4
            })
        );
        assert_eq!(
            decode_changed(|b| b.push(0)).err(),
            Some(DecodeError::TrailingBytes(1))
        );
        // The time's seconds, past jiff's range.
        assert_eq!(
            decode_changed(|b| b[8..16].copy_from_slice(&i64::MAX.to_le_bytes())).err(),
            Some(DecodeError::BadTime("time"))
        );
        // The offset, past 26 hours.
        assert_eq!(
            decode_changed(|b| b[20..24].copy_from_slice(&(100_000_i32).to_le_bytes())).err(),
            Some(DecodeError::BadTime("time offset"))
        );
        let text = text_at(event);
        let masks = text - 8 - 16;
        // A bit past the last field.
        assert_eq!(
            decode_changed(|b| b[masks + 7] |= 0x80).err(),
            Some(DecodeError::BadMasks)
        );
        // A field in both masks.
        assert_eq!(
            decode_changed(|b| {
                let values: [u8; 8] = b[masks..masks + 8].try_into().unwrap();
                b[masks + 8..masks + 16].copy_from_slice(&values);
            })
            .err(),
            Some(DecodeError::BadMasks)
        );
        // The tag's end past the text.
        assert_eq!(
            decode_changed(|b| b[text - 4..text].copy_from_slice(&u32::MAX.to_le_bytes())).err(),
            Some(DecodeError::BadSpan("the tag"))
        );
        // Text that is not UTF-8.
        assert_eq!(
            decode_changed(|b| b[text + 4] = 0xff).err(),
            Some(DecodeError::Utf8("text"))
        );
    }

    #[test]
    fn spans_must_fall_on_character_boundaries() {
        let (_, event) = test_events()
            .into_iter()
            .find(|(_, e)| e.text.chars().any(|c| c.len_utf8() > 1) && e.sender.is_ipv4())
            .expect("a fixture with non-ASCII text");
        let inside = event
            .text
            .char_indices()
            .find(|(_, c)| c.len_utf8() > 1)
            .unwrap()
            .0
            + 1;
        let mut bytes = encode(&event);
        let text = text_at(&event);
        bytes[text - 8..text - 4].copy_from_slice(&(inside as u32).to_le_bytes());
        bytes[text - 4..text].copy_from_slice(&(inside as u32).to_le_bytes());
        assert_eq!(
            Event::decode_binary(&bytes).err(),
            Some(DecodeError::BadSpan("the tag"))
        );
    }

    #[test]
    fn numbers_must_be_json_numbers() {
        let (name, event) = test_events()
            .into_iter()
            .find(|(_, e)| e.get(Field::LogRow).is_some() && e.sender.is_ipv4())
            .expect("a fixture with a log row");
        let mut bytes = encode(&event);
        let span = event.spans.get(Field::LogRow);
        let at = text_at(&event) + 4 + span.start as usize;
        bytes[at] = b'x';
        assert_eq!(
            Event::decode_binary(&bytes).err(),
            Some(DecodeError::BadNumber("log_row")),
            "{name}"
        );
    }

    #[test]
    fn out_of_order_tags_are_refused() {
        let mut event = test_events().remove(0).1;
        event.categories.clear();
        event.tags = Some(Arc::new(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ])));
        let mut bytes = encode(&event);
        // The tags end `1 a 1 1 1 b 1 2`, each 1 a `u32`: swap the keys' letters.
        let end = bytes.len();
        let (a, b) = (end - 16, end - 6);
        assert_eq!((bytes[a], bytes[b]), (b'a', b'b'));
        bytes.swap(a, b);
        assert_eq!(
            Event::decode_binary(&bytes).err(),
            Some(DecodeError::TagOrder)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Event::decode_binary(&bytes);
        }

        #[test]
        fn corrupted_encodings_never_panic(
            index in 0_usize..40,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let events = test_events();
            let (_, event) = &events[index % events.len()];
            let mut bytes = encode(event);
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok(back) = Event::decode_binary(&bytes) {
                // What decodes must still write JSON.
                let json = back.to_json();
                prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{}", json);
            }
        }
    }
}
