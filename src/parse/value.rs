//! Checks and readers for the values inside fields: GUIDs, numbers, both Sense
//! timestamp forms, .NET exception headers; and the text cleaning every field
//! goes through (lossy UTF-8, control characters removed, length caps).
//!
//! Everything here works on borrowed bytes and allocates nothing; the only
//! output is what [`push_clean`] and [`push_lowercase`] append to the event's own
//! buffer. Numbers, GUIDs and timestamps are checked by hand-written code,
//! each saying why; the nom grammar a number must agree with is in the tests.

use std::cell::Cell;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;

use super::grammar::Read;

/// Bytes in a GUID.
pub(super) const GUID_LEN: usize = 36;

/// Whether `bytes` is a GUID (`8-4-4-4-12` hex digits, either case).
///
/// Hand-written, not nom: a fixed shape checked branch-free over its 36 bytes,
/// which the compiler unrolls. The same check as nom combinators (`take`,
/// `verify`, `char` in a tuple, in check mode) took 55 ns a GUID in criterion
/// (`value/guid`), this 6 ns; parsing reads up to five GUIDs a datagram.
pub fn is_guid(bytes: &[u8]) -> bool {
    /// Where the dashes are.
    const DASH: [bool; GUID_LEN] = {
        let mut dash = [false; GUID_LEN];
        dash[8] = true;
        dash[13] = true;
        dash[18] = true;
        dash[23] = true;
        dash
    };
    let Ok(bytes) = <&[u8; GUID_LEN]>::try_from(bytes) else {
        return false;
    };
    bytes.iter().zip(DASH).fold(true, |ok, (&b, dash)| {
        let hex = (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 6);
        ok & ((dash & (b == b'-')) | (!dash & hex))
    })
}

/// A word with 0x80 in each byte where `word` has `byte`, and 0 in the others.
///
/// The classic zero-byte test, in its exact form: masking off each byte's top bit
/// before adding keeps carries from crossing into the next byte.
#[inline]
pub(super) fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Whether `bytes` is a JSON number in canonical form (what we can copy verbatim):
/// `-?(0|[1-9][0-9]*)`, followed (unless `integer_only`) by an optional
/// `.[0-9]+` and an optional `[eE][+-]?[0-9]+`.
///
/// Hand-written, not nom: one walk over the bytes. The same grammar as nom
/// combinators in check mode (kept in the tests as the definition this must
/// agree with) took about 100 instructions a number, and a qix-perf row has
/// ten numbers; a test compares the two on every string of up to six bytes
/// over the grammar's alphabet.
pub fn is_json_number(bytes: &[u8], integer_only: bool) -> bool {
    /// The digits at the start of `bytes`, and the rest.
    fn digits(bytes: &[u8]) -> (&[u8], &[u8]) {
        let count = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        bytes.split_at(count)
    }
    let unsigned = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let (integer, rest) = digits(unsigned);
    // No leading zeros: `0` alone, or a non-zero digit first.
    if integer.is_empty() || (integer[0] == b'0' && integer.len() > 1) {
        return false;
    }
    if integer_only {
        return rest.is_empty();
    }
    let rest = match rest {
        [b'.', after @ ..] => match digits(after) {
            ([], _) => return false,
            (_, rest) => rest,
        },
        _ => rest,
    };
    match rest {
        [] => true,
        [b'e' | b'E', after @ ..] => {
            let after = match after {
                [b'+' | b'-', signed @ ..] => signed,
                _ => after,
            };
            matches!(digits(after), ([_, ..], []))
        }
        _ => false,
    }
}

/// A timestamp read from a Sense field, with its offset when it carried one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseTimestamp {
    /// The wall-clock time as written.
    pub datetime: DateTime,
    /// The UTC offset, when the text had one (`%longIso8601date` does, `%date` does not).
    pub offset: Option<Offset>,
}

impl SenseTimestamp {
    /// The instant, when the timestamp has an offset and the instant is within
    /// [`Timestamp`]'s range. Equal to `offset.to_timestamp(datetime)`, computed
    /// with plain arithmetic.
    pub fn instant(&self) -> Option<Timestamp> {
        let offset = self.offset?;
        let dt = self.datetime;
        let days = days_from_civil(
            i64::from(dt.year()),
            i64::from(dt.month()),
            i64::from(dt.day()),
        );
        let seconds = days * 86_400
            + i64::from(dt.hour()) * 3600
            + i64::from(dt.minute()) * 60
            + i64::from(dt.second())
            - i64::from(offset.seconds());
        Timestamp::new(seconds, dt.subsec_nanosecond()).ok()
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Reads either Sense timestamp form, tolerating their common variants:
///
/// * `%longIso8601date`: `20211109T153726.028+0200` (also `-0500`, `+02:00`, `Z`);
/// * `%date`: `2021-11-09 15:37:26,028` (also `.` for `,`, `T` for the space, an offset).
///
/// Exactly: `YYYY-MM-DD[T ]hh:mm:ss`, or `YYYYMMDD[T ]hhmmss` (the compact
/// form); then optionally `[.,]` and 1 to 9 digits; then optionally `Z` or
/// `[+-]hh[:][mm]`; then nothing. Returns `None` for anything else, including
/// impossible dates and offsets beyond ±25:59:59.
///
/// Hand-written, not nom: the date and time by [`date_time`], the fraction and
/// the offset by [`fraction`] and [`offset`]. With the fraction and offset as
/// nom combinators (`preceded(one_of(".,"), digit1)`, `alt` of `Z` and a sign
/// with two-digit groups, under `all_consuming`), a timestamp took 603
/// instructions on average over the benchmark's datagram mix (callgrind), this
/// 401. The date and time of day are read once per second and form on each
/// thread: a timestamp whose first 19 (or 15) bytes are those read last
/// reads only its fraction and offset.
pub fn timestamp(bytes: &[u8]) -> Option<SenseTimestamp> {
    let compact = bytes.get(4).is_some_and(u8::is_ascii_digit);
    let (head, rest) = bytes.split_at_checked(if compact { 15 } else { 19 })?;
    let (date, [hour, minute, second]) = date_and_second(head, usize::from(compact))?;
    let (nanos, rest) = fraction(rest)?;
    let offset = match offset(rest)? {
        Some(seconds) => Some(Offset::from_seconds(seconds).ok()?),
        None => None,
    };
    let time = Time::new(hour, minute, second, nanos).ok()?;
    Some(SenseTimestamp {
        datetime: date.to_datetime(time),
        offset,
    })
}

/// A valid date and time of day to the second, and the text it was read
/// from as [`head_key`] gives it.
type DateAndSecond = ([u64; 3], Date, [i8; 3]);

thread_local! {
    /// The last valid date and second [`date_and_second`] read on this thread
    /// in each form (separated, compact). Sense writes both forms in most
    /// events, and events come in time order, so most reads find theirs here.
    static LAST_DATE_AND_SECOND: [Cell<Option<DateAndSecond>>; 2] =
        const { [Cell::new(None), Cell::new(None)] };
}

/// The date and the hour, minute and second `head` (the first 19 or 15 bytes
/// of a timestamp, `slot` 0 or 1) names, if it is a valid one; from this
/// thread's [`LAST_DATE_AND_SECOND`] when `head` is the text read last.
fn date_and_second(head: &[u8], slot: usize) -> Option<(Date, [i8; 3])> {
    let key = head_key(head);
    LAST_DATE_AND_SECOND.with(|last| {
        let last = &last[slot];
        if let Some((cached, date, time)) = last.get()
            && cached == key
        {
            return Some((date, time));
        }
        let (_, [year, month, day, hour, minute, second]) = date_time(head).ok()?;
        let date = Date::new(year as i16, month as i8, day as i8).ok()?;
        let time = [hour as i8, minute as i8, second as i8];
        Time::new(time[0], time[1], time[2], 0).ok()?;
        last.set(Some((key, date, time)));
        Some((date, time))
    })
}

/// Every byte of `head` (15 or 19 bytes) as three overlapping words: from
/// its start, its middle and its end. Heads of one length are equal exactly
/// when their keys are.
fn head_key(head: &[u8]) -> [u64; 3] {
    let word = |at: usize| {
        let mut bytes = [0; 8];
        if let Some(slice) = head.get(at..at + 8) {
            bytes.copy_from_slice(slice);
        }
        u64::from_le_bytes(bytes)
    };
    let len = head.len();
    [
        word(0),
        word((len / 2).saturating_sub(4)),
        word(len.saturating_sub(8)),
    ]
}

/// A fraction of a second, `[.,]` and 1 to 9 digits, if `bytes` starts with
/// one: its nanoseconds (0 without) and the bytes after it. `None` for a
/// separator without 1 to 9 digits after it.
fn fraction(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let [b'.' | b',', rest @ ..] = bytes else {
        return Some((0, bytes));
    };
    let count = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=9).contains(&count) {
        return None;
    }
    let value = rest[..count]
        .iter()
        .fold(0, |n, &d| n * 10 + i32::from(d - b'0'));
    Some((value * 10_i32.pow(9 - count as u32), &rest[count..]))
}

/// What may end a timestamp: nothing (no offset), `Z`, or `[+-]hh[:][mm]`,
/// as seconds east of UTC. `None` for anything else.
fn offset(bytes: &[u8]) -> Option<Option<i32>> {
    let (sign, rest) = match bytes {
        [] => return Some(None),
        [b'Z'] => return Some(Some(0)),
        [b'+', rest @ ..] => (1, rest),
        [b'-', rest @ ..] => (-1, rest),
        _ => return None,
    };
    let (hours, rest) = two_digits(rest)?;
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    let minutes = match rest {
        [] => 0,
        _ => match two_digits(rest)? {
            (minutes, []) => minutes,
            _ => return None,
        },
    };
    Some(Some(sign * (hours * 3600 + minutes * 60)))
}

/// Two ASCII digits at the start of `bytes` as a number, and the rest.
fn two_digits(bytes: &[u8]) -> Option<(i32, &[u8])> {
    match bytes {
        [tens, ones, rest @ ..] if tens.is_ascii_digit() && ones.is_ascii_digit() => {
            Some((i32::from(tens - b'0') * 10 + i32::from(ones - b'0'), rest))
        }
        _ => None,
    }
}

/// The date and time of day of a timestamp, `YYYY-MM-DD[T ]hh:mm:ss` or
/// `YYYYMMDD[T ]hhmmss`, as year, month, day, hour, minute and second.
///
/// Hand-written, not nom: the digits sit at fixed positions and are checked
/// together, in one pass. Written with nom combinators (a number parser per
/// part, the two forms as alternatives), a whole timestamp took 80 ns in
/// criterion (`value/timestamp_compact`), against 30 ns with this.
fn date_time(bytes: &[u8]) -> Read<'_, [i32; 6]> {
    // Where the 14 digits of `YYYYMMDDhhmmss` are, and what separates them.
    const COMPACT: [usize; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14];
    const SEPARATED: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let compact = bytes.get(4).is_some_and(u8::is_ascii_digit);
    let (head, rest) = bytes
        .split_at_checked(if compact { 15 } else { 19 })
        .ok_or(nom::Err::Error(()))?;
    let separators_ok = if compact {
        matches!(head[8], b'T' | b' ')
    } else {
        head[4] == b'-'
            && head[7] == b'-'
            && matches!(head[10], b'T' | b' ')
            && head[13] == b':'
            && head[16] == b':'
    };
    let mut digits = [0; 14];
    let mut digits_ok = true;
    for (digit, &at) in digits
        .iter_mut()
        .zip(if compact { &COMPACT } else { &SEPARATED })
    {
        digits_ok &= head[at].is_ascii_digit();
        *digit = i32::from(head[at].wrapping_sub(b'0'));
    }
    if !(separators_ok && digits_ok) {
        return Err(nom::Err::Error(()));
    }
    let number = |from: usize, to: usize| digits[from..to].iter().fold(0, |n, &d| n * 10 + d);
    Ok((
        rest,
        [
            number(0, 4),
            number(4, 6),
            number(6, 8),
            number(8, 10),
            number(10, 12),
            number(12, 14),
        ],
    ))
}

/// Whether a piece of text starts like a .NET exception header
/// (`System.IO.IOException: ...`, `Exception`, `Qlik.Foo.BarException`).
pub fn starts_like_exception(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii_start();
    let name_len = trimmed
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'`' | b'+')))
        .unwrap_or(trimmed.len());
    let name = &trimmed[..name_len];
    let after = trimmed.get(name_len).copied();
    name.ends_with(b"Exception") && matches!(after, None | Some(b':' | b' ' | b'\t'))
}

/// Whether a byte string is absent in log4net's sense: empty or `(null)`.
pub fn is_absent(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes == b"(null)"
}

/// Whether a byte is printable ASCII or a tab: text that needs no cleaning.
fn is_plain(b: u8) -> bool {
    // One compare for 0x20..=0x7e (0x7f, DEL, is a control character).
    b.wrapping_sub(0x20) < 0x5f || b == b'\t'
}

/// `bytes` as text, when it is already clean: valid UTF-8 with no control
/// characters other than tab.
pub fn clean_text(bytes: &[u8]) -> Option<&str> {
    // Printable ASCII (the common case) needs no per-character work.
    // A non-short-circuiting fold, so the compiler can vectorise the scan.
    let plain = bytes.iter().fold(true, |plain, &b| plain & is_plain(b));
    let text = std::str::from_utf8(bytes).ok()?;
    (plain || !text.chars().any(is_removed)).then_some(text)
}

/// Appends `bytes` to `buf` as clean text and returns whether it had to be cut.
///
/// Invalid UTF-8 becomes U+FFFD, control characters other than tab are removed, and
/// the appended text is cut (on a character boundary) to at most `cap` bytes.
pub fn push_clean(buf: &mut String, bytes: &[u8], cap: usize) -> bool {
    let start = buf.len();
    match clean_text(bytes) {
        Some(text) => buf.push_str(text),
        None => {
            for chunk in bytes.utf8_chunks() {
                buf.extend(chunk.valid().chars().filter(|&c| !is_removed(c)));
                if !chunk.invalid().is_empty() {
                    buf.push(char::REPLACEMENT_CHARACTER);
                }
            }
        }
    }
    let full = buf.len();
    let end = capped_end(buf.as_bytes(), start, full, cap);
    buf.truncate(end);
    end < full
}

/// Where text `start..end` of `text` (UTF-8) ends once cut to at most `cap`
/// bytes on a character boundary (`end` itself when it fits).
pub(super) fn capped_end(text: &[u8], start: usize, end: usize, cap: usize) -> usize {
    if end - start <= cap {
        return end;
    }
    let mut cut = start + cap;
    // A character starts at any byte that is not a continuation byte (0b10xx_xxxx).
    while cut > start && text[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    cut
}

fn is_removed(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// Appends an ASCII value (a GUID or a number), lower-cased. Non-ASCII input is
/// replaced lossily; callers pass values already checked to be ASCII.
pub fn push_lowercase(buf: &mut String, bytes: &[u8]) {
    let start = buf.len();
    match std::str::from_utf8(bytes) {
        Ok(text) => buf.push_str(text),
        Err(_) => buf.push_str(&String::from_utf8_lossy(bytes)),
    }
    buf[start..].make_ascii_lowercase();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_accepts_both_cases_and_rejects_near_misses() {
        assert!(is_guid(b"e7af59a0-c243-480d-9571-08727551a66f"));
        assert!(is_guid(b"E7AF59A0-C243-480D-9571-08727551A66F"));
        assert!(!is_guid(b"e7af59a0-c243-480d-9571-08727551a66"));
        assert!(!is_guid(b"e7af59a0c243-480d-9571-08727551a66f0"));
        assert!(!is_guid(b"g7af59a0-c243-480d-9571-08727551a66f"));
        assert!(!is_guid(b""));
        assert!(!is_guid(b"e7af59a0-c243-480d-9571_08727551a66f"));
        assert!(!is_guid(b"e7af59a0-c243-480d-9571-08727551a66g"));
        assert!(!is_guid(b"e7af59a0-c243-480d-9571-08727551a6-f"));
        assert!(!is_guid(b"e7af59a0-c243-480d-9571-08727551a66\xc3"));
    }

    /// The grammar [`is_json_number`] implements, as nom combinators in check
    /// mode: the definition it must agree with.
    fn is_json_number_nom(bytes: &[u8], integer_only: bool) -> bool {
        use nom::character::{char, digit1, one_of};
        use nom::combinator::{all_consuming, opt, verify};
        use nom::{Check, Complete, OutputM, Parser};

        fn matches_all<'a>(parser: impl Parser<&'a [u8], Error = ()>, bytes: &'a [u8]) -> bool {
            all_consuming(parser)
                .process::<OutputM<Check, Check, Complete>>(bytes)
                .is_ok()
        }
        let integer = || {
            (
                opt(char('-')),
                verify(digit1(), |digits: &[u8]| {
                    digits == b"0" || digits[0] != b'0'
                }),
            )
        };
        if integer_only {
            return matches_all(integer(), bytes);
        }
        let fraction = opt((char('.'), digit1()));
        let exponent = opt((one_of("eE"), opt(one_of("+-")), digit1()));
        matches_all((integer(), fraction, exponent), bytes)
    }

    #[test]
    fn json_numbers_agree_with_the_nom_grammar_on_every_short_string() {
        const ALPHABET: &[u8] = b"0159-+.eE x";
        let mut checked = 0;
        let mut text = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                text.clear();
                for _ in 0..len {
                    text.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                for integer_only in [true, false] {
                    assert_eq!(
                        is_json_number(&text, integer_only),
                        is_json_number_nom(&text, integer_only),
                        "{:?}, integer only: {integer_only}",
                        String::from_utf8_lossy(&text)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 3_000_000, "{checked}");
    }

    #[test]
    fn json_numbers_are_strict() {
        assert!(is_json_number(b"2210.0", false));
        assert!(is_json_number(b"-1", true));
        assert!(is_json_number(b"0", true));
        assert!(is_json_number(b"1e5", false));
        assert!(!is_json_number(b"1.5", true));
        assert!(!is_json_number(b"007", true));
        assert!(!is_json_number(b"+5", false));
        assert!(!is_json_number(b"NaN", false));
        assert!(!is_json_number(b"1.", false));
        assert!(!is_json_number(b"", false));
        assert!(is_json_number(b"-0.5E-3", false));
        assert!(is_json_number(b"0e0", false));
        assert!(!is_json_number(b"-", false));
        assert!(!is_json_number(b"1e", false));
        assert!(!is_json_number(b"1e+", false));
        assert!(!is_json_number(b".5", false));
        assert!(!is_json_number(b"1.5.5", false));
        assert!(!is_json_number(b"--1", true));
        assert!(!is_json_number(b"1 ", true));
    }

    #[test]
    fn compact_timestamp_keeps_its_offset() {
        let ts = timestamp(b"20211109T153726.028+0200").unwrap();
        assert_eq!(ts.datetime.to_string(), "2021-11-09T15:37:26.028");
        assert_eq!(ts.offset, Some(Offset::from_seconds(7200).unwrap()));
    }

    #[test]
    fn negative_and_colon_offsets_and_zulu_are_read() {
        let minus = timestamp(b"20240519T120312.114-0500").unwrap();
        assert_eq!(minus.offset, Some(Offset::from_seconds(-18000).unwrap()));
        let colon = timestamp(b"2024-05-19T12:03:12.113+02:00").unwrap();
        assert_eq!(colon.offset, Some(Offset::from_seconds(7200).unwrap()));
        let zulu = timestamp(b"2026-01-01T10:20:30Z").unwrap();
        assert_eq!(zulu.offset, Some(Offset::UTC));
    }

    #[test]
    fn local_timestamp_has_no_offset() {
        let ts = timestamp(b"2021-02-16 09:24:59,099").unwrap();
        assert_eq!(ts.datetime.to_string(), "2021-02-16T09:24:59.099");
        assert_eq!(ts.offset, None);
    }

    #[test]
    fn impossible_dates_are_rejected() {
        assert_eq!(timestamp(b"2021-02-30 09:24:59,099"), None);
        assert_eq!(timestamp(b"20211309T153726.028+0200"), None);
        assert_eq!(timestamp(b"20211109T153726.028+0200x"), None);
        assert_eq!(timestamp(b"yesterday"), None);
    }

    #[test]
    fn timestamp_variants_are_read() {
        for (text, offset) in [
            ("20211109T153726+0200", Some(7200)),
            ("20211109 153726.028", None),
            ("2021-11-09T15:37:26", None),
            ("2021-11-09 15:37:26.1+02:", Some(7200)),
            ("2021-11-09 15:37:26.123456789Z", Some(0)),
            ("2024-02-29 00:00:00", None),
            ("2021-11-09 15:37:26+0230", Some(9000)),
            ("2021-11-09 15:37:26-25:59", Some(-93_540)),
            ("2021-11-09 15:37:26+0099", Some(5940)),
        ] {
            let ts = timestamp(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(ts.offset.map(|o| o.seconds()), offset, "{text}");
        }
        let ts = timestamp(b"20211109T153726.5").unwrap();
        assert_eq!(ts.datetime.subsec_nanosecond(), 500_000_000);
    }

    #[test]
    fn head_keys_differ_when_any_byte_differs() {
        for head in [&b"2021-11-09 15:37:26"[..], &b"20211109T153726"[..]] {
            for at in 0..head.len() {
                let mut other = head.to_vec();
                other[at] ^= 1;
                assert_ne!(head_key(head), head_key(&other), "byte {at} of {head:?}");
            }
            let copy = head.to_vec();
            assert_eq!(head_key(head), head_key(&copy));
        }
    }

    #[test]
    fn timestamps_read_in_a_row_agree_with_each_read_alone() {
        // Repeats, the same second with other fractions and offsets, the
        // other form, other separators, and invalid ones in between: what
        // this thread remembers of the timestamp before must never show.
        let texts = [
            "2021-11-09 15:37:26,099",
            "2021-11-09 15:37:26,100",
            "20211109T153726.028+0200",
            "2021-11-09 15:37:26",
            "2021-11-09T15:37:26.5Z",
            "20211109T153726.029+0100",
            "20211109 153726.029",
            "2021-11-09 15:37:26+2600",
            "2021-11-09 15:37:26.",
            "2021-11-09 15:37:27,000",
            "2021-11-09 15:37:26,099",
            "2021-02-30 09:24:59,099",
            "2021-02-28 09:24:59,099",
            "20211109T153760.028+0200",
            "20211109T153726.028+0200",
            "2021-11-09 15:37:26,099x",
            "2021-11-09 15:37:26,099",
        ];
        let forget = || LAST_DATE_AND_SECOND.with(|last| last.iter().for_each(|c| c.set(None)));
        let alone: Vec<_> = texts
            .iter()
            .map(|text| {
                forget();
                timestamp(text.as_bytes())
            })
            .collect();
        forget();
        for _ in 0..2 {
            for (text, expected) in texts.iter().zip(&alone) {
                assert_eq!(timestamp(text.as_bytes()), *expected, "{text}");
            }
        }
        assert!(alone.iter().filter(|t| t.is_some()).count() > 10);
    }

    #[test]
    fn timestamp_near_misses_are_rejected() {
        for text in [
            "2021-11-09 15:37:26.",
            "2021-11-09 15:37:26.1234567890",
            "2021-11-09 15:37:26+0",
            "2021-11-09 15:37:26+02:3",
            "2021-11-09 15:37:26+023",
            "2021-11-09 15:37:26+02:300",
            "2021-11-09 15:37:60",
            "2021-11-09 24:00:00",
            "2023-02-29 00:00:00",
            "2021-11-09 15:37:26+2600",
            "2021-11-0915:37:26",
            "2021-11-09 15:37",
            "20211109T15:37:26",
            "2021-11-09x15:37:26",
            "2021-11-09 15:37:26z",
            "2021-11-09 15:37:26 ",
            "2021-1-09 15:37:26",
            "",
        ] {
            assert_eq!(timestamp(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn instant_agrees_with_jiff() {
        for text in [
            "20211109T153726.028+0200",
            "00000101T000000.001-2559",
            "19691231T235959.999+0000",
            "99991230T220000.999999999Z",
            "99991231T235959.999-0100",
            "99991231T235959.999+2559",
            "2024-02-29 12:00:00+05:45",
        ] {
            let ts = timestamp(text.as_bytes()).unwrap();
            let offset = ts.offset.unwrap();
            assert_eq!(
                ts.instant(),
                offset.to_timestamp(ts.datetime).ok(),
                "{text}"
            );
        }
        // Out of range: the instant would be after jiff's maximum.
        assert_eq!(timestamp(b"99991231T235959-0100").unwrap().instant(), None);
        assert_eq!(timestamp(b"2021-11-09 15:37:26").unwrap().instant(), None);
    }

    #[test]
    fn exception_headers_are_recognised() {
        assert!(starts_like_exception(
            b"System.IO.IOException: Unable to read"
        ));
        assert!(starts_like_exception(b" Exception"));
        assert!(!starts_like_exception(b" retrying"));
        assert!(!starts_like_exception(b"ExceptionalThing happened"));
    }

    #[test]
    fn clean_text_replaces_invalid_utf8_and_drops_controls() {
        let mut buf = String::new();
        assert!(!push_clean(&mut buf, b"a\tb\x07c\r\nd\xff\xfee", 100));
        assert_eq!(buf, "a\tbcd\u{fffd}\u{fffd}e");
    }

    #[test]
    fn clean_text_cuts_on_a_char_boundary() {
        let mut buf = String::from("x");
        assert!(push_clean(&mut buf, "åäö".as_bytes(), 3));
        assert_eq!(buf, "xå");
    }
}
