//! Checks and readers for the values inside fields: GUIDs, numbers, both Sense
//! timestamp forms, .NET exception headers; and the text cleaning every field
//! goes through (lossy UTF-8, control characters removed, length caps).
//!
//! Everything here works on borrowed bytes and allocates nothing; the only
//! output is what [`push_clean`] and [`push_lowercase`] append to the event's own
//! buffer. The readers are hand-written byte scanners: they run several times
//! per datagram, so they avoid parser-combinator overhead and read fixed
//! positions where the format has them.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;

/// Whether `bytes` is a GUID (`8-4-4-4-12` hex digits, either case).
pub fn is_guid(bytes: &[u8]) -> bool {
    /// Where the dashes are.
    const DASH: [bool; 36] = {
        let mut dash = [false; 36];
        dash[8] = true;
        dash[13] = true;
        dash[18] = true;
        dash[23] = true;
        dash
    };
    let Ok(bytes) = <&[u8; 36]>::try_from(bytes) else {
        return false;
    };
    // Branch-free over a fixed length, which the compiler unrolls: several times
    // cheaper than an early-exit loop that branches on the position.
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

/// How many ASCII digits `bytes` starts with.
fn leading_digits(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len())
}

/// `bytes` without its leading run of ASCII digits, when there is at least one.
fn skip_digits(bytes: &[u8]) -> Option<&[u8]> {
    match leading_digits(bytes) {
        0 => None,
        n => Some(&bytes[n..]),
    }
}

/// Whether `bytes` is a JSON number in canonical form (what we can copy verbatim):
/// `-?(0|[1-9][0-9]*)`, followed (unless `integer_only`) by an optional
/// `.[0-9]+` and an optional `[eE][+-]?[0-9]+`.
pub fn is_json_number(bytes: &[u8], integer_only: bool) -> bool {
    let unsigned = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let int_len = leading_digits(unsigned);
    // No leading zeros: `0` alone, or a non-zero digit first.
    if int_len == 0 || (unsigned[0] == b'0' && int_len > 1) {
        return false;
    }
    let rest = &unsigned[int_len..];
    if integer_only {
        return rest.is_empty();
    }
    let rest = match rest.strip_prefix(b".") {
        Some(fraction) => match skip_digits(fraction) {
            Some(rest) => rest,
            None => return false,
        },
        None => rest,
    };
    let rest = match rest {
        [b'e' | b'E', exponent @ ..] => {
            let exponent = match exponent {
                [b'+' | b'-', digits @ ..] => digits,
                _ => exponent,
            };
            match skip_digits(exponent) {
                Some(rest) => rest,
                None => return false,
            }
        }
        _ => rest,
    };
    rest.is_empty()
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
/// Exactly: `YYYY-MM-DD[T ]hh:mm:ss`, with no `-` or `:` at all when the fifth
/// byte is a digit (the compact form); then optionally `[.,]` and 1 to 9 digits;
/// then optionally `Z` or `[+-]hh[:][mm]`; then nothing. Returns `None` for
/// anything else, including impossible dates and offsets beyond ±25:59:59.
pub fn timestamp(bytes: &[u8]) -> Option<SenseTimestamp> {
    // The date and time of day sit at fixed positions: where the 14 digits of
    // `YYYYMMDDhhmmss` are, and what separates them.
    const COMPACT: [usize; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14];
    const SEPARATED: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let compact = bytes.get(4).is_some_and(u8::is_ascii_digit);
    let (head, mut rest) = bytes.split_at_checked(if compact { 15 } else { 19 })?;
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
        return None;
    }
    let number = |from: usize, to: usize| digits[from..to].iter().fold(0, |n, &d| n * 10 + d);

    let mut nanos = 0;
    if let [b'.' | b',', fraction @ ..] = rest {
        let count = leading_digits(fraction).min(9);
        if count == 0 {
            return None;
        }
        let value = fraction[..count]
            .iter()
            .fold(0, |n, &d| n * 10 + i32::from(d - b'0'));
        nanos = value * 10_i32.pow(9 - count as u32);
        rest = &fraction[count..];
    }
    let offset = match rest {
        [] => None,
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), hh @ ..] => {
            let (hours, minutes) = match hh {
                [h1, h2] => (two_digits(*h1, *h2)?, 0),
                [h1, h2, b':'] => (two_digits(*h1, *h2)?, 0),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => {
                    (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?)
                }
                _ => return None,
            };
            let total = hours * 3600 + minutes * 60;
            Some(if *sign == b'-' { -total } else { total })
        }
        _ => return None,
    };

    let date = Date::new(number(0, 4) as i16, number(4, 6) as i8, number(6, 8) as i8).ok()?;
    let time = Time::new(
        number(8, 10) as i8,
        number(10, 12) as i8,
        number(12, 14) as i8,
        nanos,
    )
    .ok()?;
    let offset = match offset {
        Some(seconds) => Some(Offset::from_seconds(seconds).ok()?),
        None => None,
    };
    Some(SenseTimestamp {
        datetime: date.to_datetime(time),
        offset,
    })
}

/// Two ASCII digits as a number.
fn two_digits(tens: u8, ones: u8) -> Option<i32> {
    (tens.is_ascii_digit() && ones.is_ascii_digit())
        .then(|| i32::from(tens - b'0') * 10 + i32::from(ones - b'0'))
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
