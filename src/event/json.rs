//! The event's JSON: [`Event::write_json`] (the object every JSON-writing sink
//! writes, as `docs/EVENTS.md` describes it), JSON string escaping, and the
//! RFC 3339 timestamps it and the dead-letter file use.
//!
//! Everything here writes by hand into a byte buffer, without serde, because it
//! runs for every event. This file does not read JSON back.

use std::cell::Cell;
use std::net::SocketAddr;

use jiff::Timestamp;
use jiff::tz::Offset;

use super::{Event, Field, FieldKind, MAX_ESCAPES, Span, field_bit, fields_in};

/// The tag's bit in [`Event`]'s `escaped` mask (fields have the bits below).
const TAG_ESCAPED: u64 = 1 << 63;

impl Event {
    /// Appends the event as one JSON object (no trailing newline) to `out`.
    ///
    /// Names and the envelope's fixed values (type, source, level, ...) are
    /// written as they are: they are ASCII words that need no escaping (a test
    /// checks). Text from the datagram goes through [`json_string`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(self.event_type.as_str().as_bytes());
        out.extend_from_slice(b"\",\"source\":\"");
        out.extend_from_slice(self.source.as_str().as_bytes());
        out.extend_from_slice(b"\",\"tag\":");
        self.write_text(out, TAG_ESCAPED, self.tag());
        out.extend_from_slice(b",\"layout\":\"");
        out.extend_from_slice(self.layout.as_str().as_bytes());
        out.extend_from_slice(b"\",\"time\":\"");
        write_rfc3339(out, self.time.instant, self.time.offset, false);
        out.extend_from_slice(b"\",\"time_source\":\"");
        out.extend_from_slice(self.time_source.as_str().as_bytes());
        out.extend_from_slice(b"\",\"received_at\":\"");
        write_rfc3339(out, self.received_at, Offset::UTC, true);
        out.extend_from_slice(b"\",\"sender\":\"");
        // A socket address never needs escaping.
        write_socket_addr(out, self.sender);
        out.push(b'"');
        if let Some(host) = self.host() {
            Field::Host.write_json_key(out);
            self.write_text(out, field_bit(Field::Host), host);
        }
        if let Some(level) = self.level {
            out.extend_from_slice(b",\"level\":\"");
            out.extend_from_slice(level.as_str().as_bytes());
            out.push(b'"');
        }
        if let Some(outcome) = self.outcome {
            out.extend_from_slice(b",\"outcome\":\"");
            out.extend_from_slice(outcome.as_str().as_bytes());
            out.push(b'"');
        }
        // Host and level are written above; a level that is not a known level
        // is only ever stored raw.
        for field in fields_in(self.values & !(field_bit(Field::Host) | field_bit(Field::Level))) {
            let value = self.text_at(self.spans.get(field));
            field.write_json_key(out);
            match field.kind() {
                // The parser only stores numbers that are valid JSON.
                FieldKind::Integer | FieldKind::Decimal => {
                    out.extend_from_slice(value.as_bytes());
                }
                _ => self.write_text(out, field_bit(field), value),
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
        if self.raws != 0 {
            out.extend_from_slice(b",\"raw_fields\":{");
            let mut first = true;
            for field in fields_in(self.raws) {
                if !first {
                    out.push(b',');
                }
                first = false;
                // Field names are ASCII words that need no escaping.
                out.push(b'"');
                out.extend_from_slice(field.name().as_bytes());
                out.extend_from_slice(b"\":");
                self.write_text(out, field_bit(field), self.text_at(self.spans.get(field)));
            }
            out.push(b'}');
            out.extend_from_slice(b",\"malformed_fields\":[");
            for (i, field) in self.malformed_fields().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(field.name().as_bytes());
                out.push(b'"');
            }
            out.push(b']');
        }
        if self.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        out.push(b'}');
    }

    /// Which of the event's values may need escaping in JSON: the mask
    /// [`Event`]'s `escaped` holds, for text that may hold any character (an
    /// event read back from the disk buffer or from JSON). Text with a control
    /// character other than tab, or more than [`MAX_ESCAPES`] quotes,
    /// backslashes and tabs, escapes every value.
    pub(super) fn escape_mask(&self) -> u64 {
        let bytes = self.text.as_bytes();
        let controls = bytes.iter().fold(false, |any, &b| {
            any | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
        });
        if controls {
            return u64::MAX;
        }
        let mut found = [0u32; MAX_ESCAPES];
        let mut count = 0;
        for at in memchr::memchr3_iter(b'"', b'\\', b'\t', bytes) {
            let Some(slot) = found.get_mut(count) else {
                return u64::MAX;
            };
            *slot = at as u32;
            count += 1;
        }
        self.escape_mask_knowing(&found[..count], bytes.len())
    }

    /// The `escaped` mask when the quotes, backslashes and tabs of the first
    /// `known` bytes of the text are at `found`, and nothing is known of the
    /// rest (where the parser appends derived values), and the text has no
    /// other control character: a value holding one of `found`, or reaching
    /// past `known`, may need escaping; every other is copied as it is.
    pub(super) fn escape_mask_knowing(&self, found: &[u32], known: usize) -> u64 {
        let known = known as u32;
        // `at` in `start..end`, as one unsigned comparison, for each place.
        let escaped = |span: Span| {
            let len = span.end.wrapping_sub(span.start);
            span.end > known || found.iter().any(|&at| at.wrapping_sub(span.start) < len)
        };
        let mut mask = if escaped(self.tag) { TAG_ESCAPED } else { 0 };
        for field in fields_in(self.values | self.raws) {
            if escaped(self.spans.get(field)) {
                mask |= field_bit(field);
            }
        }
        mask
    }

    /// Writes `value`, the text of the field (or tag) with `escaped` bit `bit`,
    /// as a JSON string: copied as it is unless it may need escaping.
    fn write_text(&self, out: &mut Vec<u8>, bit: u64, value: &str) {
        if self.escaped & bit == 0 {
            out.push(b'"');
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
        } else {
            json_string(out, value);
        }
    }

    /// The event as JSON with every value escaped, as all were before the
    /// escape mask: what the encoder's copies must match.
    #[cfg(test)]
    pub(crate) fn to_json_escaping_every_value(&self) -> String {
        let mut event = self.clone();
        event.escaped = u64::MAX;
        event.to_json()
    }

    /// The event as a JSON string (convenience for tests and low-volume sinks).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.text.len() + 256);
        self.write_json(&mut out);
        // write_json only ever appends valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
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

/// What a byte becomes inside a JSON string: 0 when it stays as it is, else the
/// character after the backslash (`u` for the `\u00XX` form).
static JSON_ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x7f] = b'u';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table
};

/// Whether `byte` needs escaping: what [`JSON_ESCAPE`] says, by comparisons
/// the compiler can vectorise (a test checks they agree).
fn needs_escape(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\') | (byte == 0x7f)
}

/// Where the first byte that needs escaping is in `bytes`, if any.
fn next_escape(bytes: &[u8]) -> Option<usize> {
    // Skip clean 16-byte blocks with a branch-free check the compiler vectorises
    // (most text has nothing to escape), then find the byte in the rest.
    let (blocks, _) = bytes.as_chunks::<16>();
    let clean_blocks = blocks
        .iter()
        .take_while(|block| !block.iter().fold(false, |any, &b| any | needs_escape(b)))
        .count();
    let from = clean_blocks * 16;
    bytes[from..]
        .iter()
        .position(|&b| JSON_ESCAPE[b as usize] != 0)
        .map(|i| from + i)
}

/// Writes a JSON string literal, escaping quotes, backslashes and control characters.
pub fn json_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = value.as_bytes();
    // Copy the runs between escapes whole.
    while let Some(at) = next_escape(rest) {
        let byte = rest[at];
        out.extend_from_slice(&rest[..at]);
        match JSON_ESCAPE[byte as usize] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xf) as usize],
            ]),
            letter => out.extend_from_slice(&[b'\\', letter]),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Writes a socket address as `Display` does (`1.2.3.4:5`, `[::1]:5`), with
/// hand-written digits for IPv4, the usual case.
fn write_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(out, u32::from(octet));
            }
            out.push(b':');
            write_decimal(out, u32::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            // IPv6 text form (zero compression, embedded IPv4, scope) is
            // intricate; leave it to the standard library.
            use std::io::Write as _;
            let _ = write!(out, "{addr}");
        }
    }
}

/// Writes `value` in decimal, without leading zeros.
fn write_decimal(out: &mut Vec<u8>, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Civil date (proleptic Gregorian year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `instant` in RFC 3339 with milliseconds, in `offset` (`Z` when `zulu`).
pub fn write_rfc3339(out: &mut Vec<u8>, instant: Timestamp, offset: Offset, zulu: bool) {
    // The civil time in `offset`, by arithmetic (what `offset.to_datetime`
    // gives, without its range bookkeeping): whole seconds rounded down, so
    // the sub-second part is never negative.
    let mut seconds = instant.as_second() + i64::from(offset.seconds());
    let mut nanos = instant.subsec_nanosecond();
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    // Built in a buffer of fixed size and appended whole, then cut back to
    // the bytes used: copies of fixed size need no call to a copy routine.
    let mut buf = [0u8; 32];
    buf[..24].copy_from_slice(&civil_second_cached(seconds, usize::from(zulu)));
    let millis = nanos as u32 / 1_000_000;
    buf[19] = b'.';
    buf[20] = b'0' + (millis / 100) as u8;
    buf[21] = b'0' + (millis / 10 % 10) as u8;
    buf[22] = b'0' + (millis % 10) as u8;
    let used = if zulu && offset == Offset::UTC {
        buf[23] = b'Z';
        24
    } else {
        let seconds = offset.seconds();
        let minutes = seconds.unsigned_abs() / 60;
        buf[23] = if seconds < 0 { b'-' } else { b'+' };
        put_digits(&mut buf[24..26], minutes / 60);
        buf[26] = b':';
        put_digits(&mut buf[27..29], minutes % 60);
        29
    };
    out.extend_from_slice(&buf);
    out.truncate(out.len() - (buf.len() - used));
}

thread_local! {
    /// The second each of [`civil_second_cached`]'s two callers (an event's
    /// own time, and the `Z` times such as `received_at`) formatted last on
    /// this thread, and its text. Events come in time order and a batch
    /// shares one receive time, so most calls find their second here.
    static LAST_SECOND: [Cell<(i64, [u8; 24])>; 2] = const {
        [Cell::new((i64::MIN, [0; 24])), Cell::new((i64::MIN, [0; 24]))]
    };
}

/// [`civil_second`], from this thread's [`LAST_SECOND`] slot `slot` when it
/// holds that second. (No instant jiff can hold is `i64::MIN` seconds, the
/// empty slot's mark.)
fn civil_second_cached(seconds: i64, slot: usize) -> [u8; 24] {
    LAST_SECOND.with(|last| {
        let last = &last[slot];
        let (cached, text) = last.get();
        if cached == seconds {
            return text;
        }
        let text = civil_second(seconds);
        last.set((seconds, text));
        text
    })
}

/// `YYYY-MM-DDThh:mm:ss` (the first 19 of its bytes) of `seconds` counted
/// from 1970-01-01 in civil time. Kept out of line, so that the compiler
/// copies the remembered text in whole words.
#[inline(never)]
fn civil_second(seconds: i64) -> [u8; 24] {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400) as u32;
    let mut text = [0u8; 24];
    put_digits(&mut text[0..4], year.clamp(0, 9999) as u32);
    text[4] = b'-';
    put_digits(&mut text[5..7], month);
    text[7] = b'-';
    put_digits(&mut text[8..10], day);
    text[10] = b'T';
    put_digits(&mut text[11..13], second_of_day / 3600);
    text[13] = b':';
    put_digits(&mut text[14..16], second_of_day / 60 % 60);
    text[16] = b':';
    put_digits(&mut text[17..19], second_of_day % 60);
    text
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
    use crate::event::{EventType, LayoutName};

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

    /// The formatting `write_rfc3339` replaced, through jiff's civil time.
    fn rfc3339_via_jiff(instant: Timestamp, offset: Offset, zulu: bool) -> String {
        let dt = offset.to_datetime(instant);
        let time = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
            dt.year().clamp(0, 9999),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        );
        if zulu && offset == Offset::UTC {
            return format!("{time}Z");
        }
        let seconds = offset.seconds();
        let minutes = seconds.unsigned_abs() / 60;
        let sign = if seconds < 0 { '-' } else { '+' };
        format!("{time}{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }

    #[test]
    fn rfc3339_agrees_with_jiff_across_the_whole_range() {
        let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
        let mut checked = 0;
        for i in 0..20_000_i64 {
            // Spread over the range, with leap days, day ends and negative
            // sub-second parts (before 1970) among them.
            let second = min + (max - min) / 20_000 * i + i % 86_400;
            let nanos = ((i * 7_919_993) % 2_000_000_000 - 1_000_000_000) as i32;
            let Ok(instant) = Timestamp::new(second, nanos) else {
                continue;
            };
            let offset = Offset::from_seconds((i * 9_173 % 187_199 - 93_599) as i32).unwrap();
            for (offset, zulu) in [(offset, false), (Offset::UTC, true), (Offset::UTC, false)] {
                assert_eq!(
                    rfc3339(instant, offset, zulu),
                    rfc3339_via_jiff(instant, offset, zulu),
                    "{instant:?} {offset:?}"
                );
            }
            checked += 1;
        }
        assert!(checked > 19_000);
        for instant in [Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH] {
            for offset in [Offset::MIN, Offset::MAX, Offset::UTC] {
                assert_eq!(
                    rfc3339(instant, offset, false),
                    rfc3339_via_jiff(instant, offset, false)
                );
            }
        }
    }

    #[test]
    fn rfc3339_of_instants_in_the_same_second_as_the_one_before() {
        // Runs of instants within one second, and back again, in two offsets
        // and as `Z`: the remembered second must never show through.
        let start: Timestamp = "2024-05-19T17:03:12.114Z".parse().unwrap();
        let east = Offset::from_seconds(3600).unwrap();
        let west = Offset::from_seconds(-5 * 3600 - 30 * 60).unwrap();
        for millis in [
            0,
            1,
            999,
            500,
            1000,
            1001,
            -1,
            86_400_000,
            0,
            999,
            -86_400_001,
        ] {
            let instant = start + jiff::SignedDuration::from_millis(millis);
            for (offset, zulu) in [
                (east, false),
                (Offset::UTC, true),
                (east, false),
                (west, false),
                (Offset::UTC, false),
                (Offset::UTC, true),
            ] {
                assert_eq!(
                    rfc3339(instant, offset, zulu),
                    rfc3339_via_jiff(instant, offset, zulu),
                    "{instant:?} {offset:?} {zulu}"
                );
            }
        }
    }

    /// The escaping `json_string` replaced, one byte at a time.
    fn json_string_byte_by_byte(value: &str) -> Vec<u8> {
        let mut out = vec![b'"'];
        for &byte in value.as_bytes() {
            match byte {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
                _ => out.push(byte),
            }
        }
        out.push(b'"');
        out
    }

    #[test]
    fn json_string_copies_text_between_escapes() {
        // Every byte that needs escaping, at every position of a long block.
        for special in ["\"", "\\", "\n", "\r", "\t", "\u{1}", "\u{1f}", "\u{7f}"] {
            for at in 0..40 {
                let text = format!("{}{special}{}é", "a".repeat(at), "b".repeat(40 - at));
                let mut out = Vec::new();
                json_string(&mut out, &text);
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, text);
                assert_eq!(out, json_string_byte_by_byte(&text), "{text:?}");
            }
        }
        let mut out = Vec::new();
        json_string(&mut out, "\u{7f}\u{0}");
        assert_eq!(out, br#""\u007f\u0000""#);
    }

    #[test]
    fn the_vectorised_check_agrees_with_the_escape_table() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                needs_escape(byte),
                JSON_ESCAPE[byte as usize] != 0,
                "{byte:#04x}"
            );
        }
    }

    #[test]
    fn values_copied_without_escaping_are_written_as_escaping_would() {
        // Every fixture event, its values copied as they are where the mask
        // allows, against the same event with every value escaped.
        let mut copied = 0;
        for (name, event) in crate::event::test_events() {
            assert_eq!(
                event.to_json(),
                event.to_json_escaping_every_value(),
                "{name}"
            );
            copied += (event.values & !event.escaped).count_ones();
        }
        assert!(
            copied > 300,
            "only {copied} fixture values were copied as they are"
        );
    }

    /// A test event filled by an [`EventBuilder`] that is still to finish it.
    struct Unfinished(Event);

    impl Unfinished {
        fn build(mut self) -> Event {
            crate::event::EventBuilder::new(&mut self.0).build();
            self.0
        }

        fn build_knowing_escapes(mut self, found: Option<&[u32]>, known: usize) -> Event {
            crate::event::EventBuilder::new(&mut self.0).build_knowing_escapes(found, known);
            self.0
        }
    }

    #[test]
    fn the_escape_mask_names_exactly_the_values_that_need_escaping() {
        use crate::event::EventBuilder;
        // An event with `text` and `fields`, not finished yet.
        let builder = |text: &str, fields: &[(Field, usize, usize)]| {
            let sender = "10.0.0.5:61000".parse().unwrap();
            let mut event = Event::blank(LayoutName::Proxy, sender, Timestamp::UNIX_EPOCH, 64);
            let mut builder = EventBuilder::new(&mut event);
            builder.buffer().push_str(text);
            builder.commit_tag(0, 3);
            for &(field, start, end) in fields {
                builder.commit_range(field, start, end, field != Field::Level);
            }
            Unfinished(event)
        };
        let searched = |text: &str, fields: &[(Field, usize, usize)]| {
            builder(text, fields).build().escape_mask()
        };
        // The tag, host, message, user id and a raw level.
        let fields = [
            (Field::Host, 3, 6),
            (Field::Message, 6, 11),
            (Field::UserId, 11, 15),
            (Field::Level, 15, 19),
        ];
        let text = "/t/h\\x\"msg\"user\tERR";
        let needed = field_bit(Field::Host) | field_bit(Field::Message) | field_bit(Field::Level);
        assert_eq!(searched(text, &fields), needed);
        // What the parser's scan found gives the same mask.
        let event = builder(text, &fields).build_knowing_escapes(Some(&[4, 6, 10, 15]), 19);
        assert_eq!(event.escaped, needed);
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["host"], "h\\x");
        assert_eq!(json["message"], "\"msg\"");
        assert_eq!(json["user_id"], "user");
        assert_eq!(json["raw_fields"]["level"], "\tERR");
        // A value past what the scan saw is escaped, found or not.
        let event = builder(text, &fields).build_knowing_escapes(Some(&[4, 6, 10]), 15);
        assert_eq!(event.escaped, needed);
        // Nothing known: everything is escaped.
        assert_eq!(builder(text, &fields).build().escaped & needed, needed);
        assert_ne!(
            builder(text, &fields).build().escaped & field_bit(Field::UserId),
            0
        );
        // A quote in the tag marks the tag; none anywhere marks nothing.
        assert_eq!(searched("/\"/hostmessageuser", &fields[..3]), TAG_ESCAPED);
        assert_eq!(searched("/t/hostmessageuser", &fields[..3]), 0);
        // Text with more bytes to escape than are kept, or with a control
        // character, escapes all.
        let crowded = format!("/t/{}", "\\".repeat(MAX_ESCAPES + 1));
        assert_eq!(searched(&crowded, &fields[..1]), u64::MAX);
        let mut event = builder(text, &fields).build();
        event.text = "/t/ab\u{1}cdefghijklmn".to_string();
        assert_eq!(event.escape_mask(), u64::MAX);
        event.text = "/t/ab\u{7f}cdefghijklmn".to_string();
        assert_eq!(event.escape_mask(), u64::MAX);
        event.text = "/t/ab\u{80}cdefghijklmn".to_string();
        assert_ne!(
            event.escape_mask(),
            u64::MAX,
            "U+0080 needs no escaping in JSON"
        );
        let many: Vec<u32> = (3..4 + MAX_ESCAPES as u32).collect();
        let event =
            builder(&crowded, &fields[..1]).build_knowing_escapes(Some(&many), crowded.len());
        assert_eq!(event.escaped, u64::MAX);
        assert_eq!(
            builder(text, &fields)
                .build_knowing_escapes(None, 19)
                .escaped,
            u64::MAX
        );
    }

    #[test]
    fn fixed_words_need_no_escaping() {
        let words = Field::ALL
            .iter()
            .map(|field| field.name())
            .chain(EventType::ALL.iter().map(|t| t.as_str()))
            .chain(["engine", "proxy", "repository", "scheduler"])
            .chain(["DEBUG", "INFO", "WARN", "ERROR", "FATAL"])
            .chain(["failed", "aborted", "success", "distribute"])
            .chain(["event", "event_local", "received"]);
        for word in words {
            let mut out = Vec::new();
            json_string(&mut out, word);
            assert_eq!(out, format!("\"{word}\"").as_bytes());
        }
        for &field in Field::ALL {
            let mut out = b"{}".to_vec();
            field.write_json_key(&mut out);
            assert_eq!(out, format!("{{}},\"{}\":", field.name()).as_bytes());
        }
    }

    #[test]
    fn socket_addresses_are_written_as_display_does() {
        for addr in [
            "10.0.0.5:61000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:9996",
            "[fe80::1%2]:61000",
            "[::ffff:10.0.0.5]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            write_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }
}
