//! Small nom parsers and checks for the values inside fields: GUIDs, numbers,
//! both Sense timestamp forms, .NET exception headers; and the text cleaning every
//! field goes through (lossy UTF-8, control characters removed, length caps).
//!
//! Everything here works on borrowed bytes and allocates nothing; the only
//! output is what [`push_clean`] appends to the event's own buffer.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while_m_n, take_while1};
use nom::character::complete::one_of;
use nom::combinator::{all_consuming, opt};
use nom::{IResult, Parser};

/// Whether `bytes` is a GUID (`8-4-4-4-12` hex digits, either case).
pub fn is_guid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether `bytes` is a JSON number in canonical form (what we can copy verbatim).
pub fn is_json_number(bytes: &[u8], integer_only: bool) -> bool {
    fn digits(input: &[u8]) -> IResult<&[u8], &[u8]> {
        take_while1(|b: u8| b.is_ascii_digit()).parse(input)
    }
    fn nonzero_int(input: &[u8]) -> IResult<&[u8], &[u8]> {
        let (rest, _) = one_of("123456789").parse(input)?;
        let (rest, _) = opt(digits).parse(rest)?;
        Ok((rest, &input[..input.len() - rest.len()]))
    }
    let int_part = alt((tag(&b"0"[..]), nonzero_int));
    let parsed: IResult<&[u8], _> = if integer_only {
        all_consuming((opt(tag(&b"-"[..])), int_part))
            .parse(bytes)
            .map(|(r, _)| (r, ()))
    } else {
        all_consuming((
            opt(tag(&b"-"[..])),
            int_part,
            opt((tag(&b"."[..]), digits)),
            opt((one_of("eE"), opt(one_of("+-")), digits)),
        ))
        .parse(bytes)
        .map(|(r, _)| (r, ()))
    };
    parsed.is_ok()
}

/// A timestamp read from a Sense field, with its offset when it carried one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseTimestamp {
    /// The wall-clock time as written.
    pub datetime: DateTime,
    /// The UTC offset, when the text had one (`%longIso8601date` does, `%date` does not).
    pub offset: Option<Offset>,
}

/// Reads either Sense timestamp form, tolerating their common variants:
///
/// * `%longIso8601date`: `20211109T153726.028+0200` (also `-0500`, `+02:00`, `Z`);
/// * `%date`: `2021-11-09 15:37:26,028` (also `.` for `,`, `T` for the space, an offset).
///
/// Returns `None` for anything else, including impossible dates.
pub fn timestamp(bytes: &[u8]) -> Option<SenseTimestamp> {
    fn num(n: usize) -> impl Fn(&[u8]) -> IResult<&[u8], i32> {
        move |input| {
            let (rest, digits) = take_while_m_n(n, n, |b: u8| b.is_ascii_digit()).parse(input)?;
            let value = digits
                .iter()
                .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
            Ok((rest, value))
        }
    }
    fn sep<'a>(options: &'static str, compact: bool) -> impl Fn(&'a [u8]) -> IResult<&'a [u8], ()> {
        move |input| {
            if compact {
                Ok((input, ()))
            } else {
                one_of(options).parse(input).map(|(rest, _)| (rest, ()))
            }
        }
    }
    fn fraction(input: &[u8]) -> IResult<&[u8], i32> {
        let (rest, _) = one_of(".,").parse(input)?;
        let (rest, digits) = take_while_m_n(1, 9, |b: u8| b.is_ascii_digit()).parse(rest)?;
        let nanos = digits
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(9)
            .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
        Ok((rest, nanos))
    }
    fn offset(input: &[u8]) -> IResult<&[u8], i32> {
        alt((
            |i| tag(&b"Z"[..]).parse(i).map(|(r, _)| (r, 0)),
            |i| {
                let (r, sign) = one_of("+-").parse(i)?;
                let (r, hours) = num(2)(r)?;
                let (r, _) = opt(tag(&b":"[..])).parse(r)?;
                let (r, minutes) = opt(num(2)).parse(r)?;
                let total = hours * 3600 + minutes.unwrap_or(0) * 60;
                Ok((r, if sign == '-' { -total } else { total }))
            },
        ))
        .parse(input)
    }

    let compact = bytes.get(4).is_some_and(u8::is_ascii_digit);
    let (_, (year, _, month, _, day, _, hour, _, minute, _, second, nanos, offset)) =
        all_consuming((
            num(4),
            sep("-", compact),
            num(2),
            sep("-", compact),
            num(2),
            one_of("T "),
            num(2),
            sep(":", compact),
            num(2),
            sep(":", compact),
            num(2),
            opt(fraction),
            opt(offset),
        ))
        .parse(bytes)
        .ok()?;
    let date = Date::new(year as i16, month as i8, day as i8).ok()?;
    let time = Time::new(hour as i8, minute as i8, second as i8, nanos.unwrap_or(0)).ok()?;
    let offset = match offset {
        Some(seconds) => Some(Offset::from_seconds(seconds).ok()?),
        None => None,
    };
    Some(SenseTimestamp {
        datetime: date.to_datetime(time),
        offset,
    })
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

/// Appends `bytes` to `buf` as clean text and returns whether it had to be cut.
///
/// Invalid UTF-8 becomes U+FFFD, control characters other than tab are removed, and
/// the appended text is cut (on a character boundary) to at most `cap` bytes.
pub fn push_clean(buf: &mut String, bytes: &[u8], cap: usize) -> bool {
    let start = buf.len();
    // Printable ASCII (the common case) needs no per-character work.
    // A non-short-circuiting fold, so the compiler can vectorise the scan.
    let printable_ascii = !bytes.iter().fold(false, |bad, &b| {
        bad | (b.wrapping_sub(0x20) >= 0x5f && b != b'\t')
    });
    match std::str::from_utf8(bytes) {
        Ok(text) if printable_ascii || !text.chars().any(is_removed) => buf.push_str(text),
        _ => {
            for chunk in bytes.utf8_chunks() {
                buf.extend(chunk.valid().chars().filter(|&c| !is_removed(c)));
                if !chunk.invalid().is_empty() {
                    buf.push(char::REPLACEMENT_CHARACTER);
                }
            }
        }
    }
    if buf.len() - start <= cap {
        return false;
    }
    let mut end = start + cap;
    while !buf.is_char_boundary(end) {
        end -= 1;
    }
    buf.truncate(end);
    true
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
