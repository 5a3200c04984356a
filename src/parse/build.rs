//! Event building: one event from a datagram whose layout and split are
//! chosen. Called once per datagram, last. Each slot's pieces become a field,
//! checked against the field's kind (a value of the wrong shape is kept as raw
//! text, see `docs/EVENTS.md`), then the derived fields and the event's time.
//!
//! It allocates the event, in the `Arc` the pipeline shares with its sinks, so
//! that it is built where it stays, and its one text buffer; nothing else.
//! Clean text (the norm) is copied into that buffer whole, once, and every
//! field points into the copy; only text that needs cleaning is cleaned field
//! by field.

use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::event::{
    Event, EventBuilder, EventTime, EventType, Field, FieldKind, Level, TimeSource,
};

use super::choose::{Chosen, Times};
use super::layout::{Layout, MAX_SLOTS, Slot};
use super::scan::Scan;
use super::{Parser, value};

use Field as F;

impl Parser {
    /// Builds the event of `datagram` (without its trailing newline), read
    /// with the `chosen` layout and split (pieces in `self.pieces`); `scan`
    /// is what the grammar's pass over the bytes found. The event is built
    /// in place in the `Arc` the pipeline shares, not moved afterwards.
    pub(super) fn build(
        &self,
        datagram: &[u8],
        scan: &Scan,
        chosen: &Chosen,
        sender: SocketAddr,
        received_at: Timestamp,
    ) -> Arc<Event> {
        let (layout, widths) = (chosen.layout, &chosen.widths);
        // The event's text buffer: room for the datagram's text plus whatever
        // derived fields append, so the buffer never grows (unless cleaning
        // invalid UTF-8 makes the text longer).
        let capacity = datagram.len() + layout.derived_bytes(widths, &self.pieces);
        let mut shared = Arc::new(Event::blank(layout.name, sender, received_at, capacity));
        // Not shared yet: `make_mut` never clones here.
        let mut event = EventBuilder::new(Arc::make_mut(&mut shared));
        // Clean text (the norm) is copied whole, once; fields then point into
        // it. Plain ASCII, which the scan saw, is clean text with nothing to check.
        let clean = if scan.plain {
            // SAFETY: every byte is printable ASCII or a tab (the scan checked),
            // so the bytes are UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(datagram) })
        } else {
            value::clean_text(datagram)
        };
        if let Some(text) = clean {
            event.buffer().push_str(text);
        }
        let input = Input {
            bytes: datagram,
            mirrored: clean.is_some(),
            proven: chosen.proven,
            times_read: chosen.times.is_some(),
        };

        // Timestamps the layout choice read already, or none yet.
        let mut times = chosen.times.unwrap_or_default();
        for (slot, first, last) in layout.slot_pieces(widths) {
            match slot {
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
                _ => self.slot(&mut event, &mut times, slot, &input, first, last),
            }
        }
        if let Some(outcome) = layout.outcome {
            event.outcome(outcome);
        }
        derive_user_fields(&mut event);
        layout.derive(&mut event);
        self.stamp(&mut event, times);
        if input.mirrored {
            // The text starts with the datagram, whose escapes the scan found.
            event.build_knowing_escapes(scan.escapes(), datagram.len());
        } else {
            event.build();
        }
        shared
    }

    /// Fills one fixed or free slot from pieces `first..=last`.
    fn slot(
        &self,
        event: &mut EventBuilder<'_>,
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
        event: &mut EventBuilder<'_>,
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
                let proven = input.proven && field.kind() == FieldKind::Guid;
                if proven || value::is_guid(bytes) {
                    let (start, end) = self.put_lowercase(event, input, start, end);
                    event.commit_range(field, start, end, true);
                } else {
                    let valid = field.kind() == FieldKind::GuidOrText;
                    self.value(event, field, input, start, end, valid);
                }
            }
            FieldKind::Timestamp => {
                let slot = match field {
                    Field::TsIso => &mut times.iso,
                    _ => &mut times.local,
                };
                if !input.times_read {
                    *slot = value::timestamp(bytes);
                }
                // A timestamp the field cap would cut is no longer one: kept
                // under raw_fields (the event's time still comes from it whole).
                let valid = slot.is_some() && end - start <= self.max_field_bytes;
                self.value(event, field, input, start, end, valid);
            }
            FieldKind::Integer | FieldKind::Decimal => {
                let integer = field.kind() == FieldKind::Integer;
                let trimmed = bytes.trim_ascii();
                if input.proven || value::is_json_number(trimmed, integer) {
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
        event: &mut EventBuilder<'_>,
        field: Field,
        input: &Input,
        start: usize,
        end: usize,
        valid: bool,
    ) {
        self.store(
            event,
            field,
            input,
            (start, end),
            self.max_field_bytes,
            valid,
        );
    }

    /// Stores free text spanning pieces `first..=last` (semicolons included).
    fn text(
        &self,
        event: &mut EventBuilder<'_>,
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
        self.store(event, field, input, (start, end), self.max_text_bytes, true);
    }

    /// Puts datagram bytes `start..end` into the event as `field`, cut to
    /// `cap` (and the event marked truncated if it was). Always inlined: as a
    /// call it cost 1.2 % more instructions per datagram (11,528 against
    /// 11,395 in `tests/instructions.rs`).
    #[inline(always)]
    fn store(
        &self,
        event: &mut EventBuilder<'_>,
        field: Field,
        input: &Input,
        (start, end): (usize, usize),
        cap: usize,
        valid: bool,
    ) {
        let (start, end, cut) = self.put(event, input, start, end, cap);
        if cut {
            event.truncated();
        }
        event.commit_range(field, start, end, valid);
    }

    /// Puts datagram bytes `start..end` into the event's text as clean text cut
    /// to at most `cap` bytes; says where in the text it sits and whether it was cut.
    fn put(
        &self,
        event: &mut EventBuilder<'_>,
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
        event: &mut EventBuilder<'_>,
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
    fn stamp(&self, event: &mut EventBuilder<'_>, times: Times) {
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

impl Layout {
    /// Most bytes that derived fields may add to an event's text beyond the
    /// datagram's own, under `widths`: `user_full` built from the directory and
    /// id pieces (plus the `\`), qix-perf `activity`, and a user event's `app_id`
    /// copied (lower-cased) out of its Context.
    fn derived_bytes(&self, widths: &[usize; MAX_SLOTS], pieces: &[(usize, usize)]) -> usize {
        let mut bytes = match self.name.event_type() {
            EventType::QixPerf => "system".len(),
            EventType::Session | EventType::Connection => value::GUID_LEN,
            _ => 0,
        };
        for (slot, first, _) in self.slot_pieces(widths) {
            if let Slot::Fixed(F::UserDirectory | F::UserId) = slot {
                let (start, end) = pieces[first];
                bytes += end - start + 1;
            }
        }
        bytes
    }

    /// Fills fields derived from others (qix-perf activity, user-event app id and
    /// user agent).
    fn derive(&self, event: &mut EventBuilder<'_>) {
        match self.name.event_type() {
            EventType::QixPerf => {
                let activity = match event.get(F::ProxySessionId) {
                    Some("0") => Some("system"),
                    Some(_) => Some("user"),
                    None => None,
                };
                if let Some(activity) = activity {
                    event.set_static(F::Activity, activity);
                }
            }
            EventType::Session | EventType::Connection => {
                derive_app_id(event);
                derive_user_agent(event);
            }
            _ => {}
        }
    }
}

/// The datagram being parsed, and how its values reach the event's text.
struct Input<'a> {
    /// The datagram, without its trailing newline.
    bytes: &'a [u8],
    /// Whether the datagram was clean text and was copied whole into the event's
    /// text first, so that its byte offsets are the text's and a value is stored
    /// by pointing at it. Otherwise each value is cleaned and appended.
    mirrored: bool,
    /// Whether choosing the layout checked every fixed field's shape: then
    /// numbers and GUIDs are known good and not checked again.
    proven: bool,
    /// Whether choosing the layout read the timestamps (they are in the
    /// `Times` it handed over).
    times_read: bool,
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
fn derive_user_fields(event: &mut EventBuilder<'_>) {
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

/// Where `needle` (not empty) first occurs in `haystack`.
///
/// For the short texts searched here, finding the needle's first byte with
/// `memchr` and comparing the rest beats building a substring searcher per call.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memchr_iter(needle[0], haystack).find(|&at| haystack[at..].starts_with(needle))
}

/// `app_id` from a Context such as `/app/<guid>?reloaduri=...` or `app/<guid>`.
fn derive_app_id(event: &mut EventBuilder<'_>) {
    let Some((start, end)) = event.range(F::Context) else {
        return;
    };
    let context = &event.buffer()[start..end];
    // `/app/<guid>` anywhere, or `app/<guid>` at the start (as Butler SOS's
    // docs write it).
    let guid_start = if context.starts_with("app/") {
        "app/".len()
    } else {
        let Some(at) = find(context.as_bytes(), b"/app/") else {
            return;
        };
        at + "/app/".len()
    };
    let Some(candidate) = context.as_bytes().get(guid_start..guid_start + 36) else {
        return;
    };
    let boundary_ok = matches!(
        context.as_bytes().get(guid_start + 36),
        None | Some(b'?' | b'/' | b'#')
    );
    if value::is_guid(candidate) && boundary_ok {
        let mut guid = [0u8; 36];
        guid.copy_from_slice(candidate);
        let mark = event.mark();
        value::push_lowercase(event.buffer(), &guid);
        event.commit(F::AppId, mark, true);
    }
}

/// `user_agent`: the text after `UserAgent:` in the message, without its quotes.
fn derive_user_agent(event: &mut EventBuilder<'_>) {
    let Some((start, _)) = event.range(F::Message) else {
        return;
    };
    let Some(message) = event.get(F::Message) else {
        return;
    };
    let Some(at) = find(message.as_bytes(), b"UserAgent:") else {
        return;
    };
    let after = &message[at + "UserAgent:".len()..];
    let trimmed = after.trim();
    let unquoted = trimmed
        .strip_prefix('\'')
        .map(|rest| rest.strip_suffix('\'').unwrap_or(rest))
        .unwrap_or(trimmed)
        .trim();
    if unquoted.is_empty() {
        return;
    }
    let ua_start = start + (unquoted.as_ptr() as usize - message.as_ptr() as usize);
    let ua_end = ua_start + unquoted.len();
    event.copy_range(F::UserAgent, ua_start, ua_end);
}
