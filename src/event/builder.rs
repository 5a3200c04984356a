//! [`EventBuilder`]: how the parser fills an [`Event`] field by field, appending
//! values to the event's text buffer and pointing the field spans into it, in
//! place (an [`Event::blank`] is where it starts).
//!
//! It checks nothing itself: which values are valid is the parser's call, made
//! with `commit`'s `valid` flag.

use std::net::SocketAddr;

use jiff::Timestamp;
use jiff::tz::Offset;

use super::{
    Event, EventTime, Field, LayoutName, Level, Span, Spans, TaskOutcome, TimeSource, field_bit,
};

impl Event {
    /// The event an [`EventBuilder`] starts from: no fields, its time the
    /// receive time; `capacity` is a hint for the text buffer (the
    /// datagram's length).
    pub fn blank(
        layout: LayoutName,
        sender: SocketAddr,
        received_at: Timestamp,
        capacity: usize,
    ) -> Event {
        Event {
            event_type: layout.event_type(),
            source: layout.source(),
            layout,
            level: None,
            outcome: None,
            time: EventTime {
                instant: received_at,
                offset: Offset::UTC,
            },
            time_source: TimeSource::Received,
            received_at,
            sender,
            truncated: false,
            categories: Vec::new(),
            tags: None,
            sequence: 0,
            tag: Span::default(),
            text: String::with_capacity(capacity),
            spans: Spans::new(),
            values: 0,
            raws: 0,
            escaped: u64::MAX,
        }
    }
}

/// Fills an [`Event`] field by field, in place; used by the parser.
#[derive(Debug)]
pub struct EventBuilder<'a> {
    event: &'a mut Event,
}

impl<'a> EventBuilder<'a> {
    /// Starts filling `event`, a [`Event::blank`].
    pub fn new(event: &'a mut Event) -> EventBuilder<'a> {
        EventBuilder { event }
    }

    /// The text buffer, for appending a value before [`EventBuilder::commit`].
    pub fn buffer(&mut self) -> &mut String {
        &mut self.event.text
    }

    /// The current end of the text buffer, to mark where a value starts.
    pub fn mark(&self) -> usize {
        self.event.text.len()
    }

    /// Records the text appended since `start` as `field`; `valid` false puts it
    /// under `raw_fields`. An empty value leaves the field absent.
    pub fn commit(&mut self, field: Field, start: usize, valid: bool) {
        self.commit_range(field, start, self.event.text.len(), valid);
    }

    /// Records text `start..end` of the buffer as `field`; `valid` false puts it
    /// under `raw_fields`. An empty value leaves the field absent.
    pub fn commit_range(&mut self, field: Field, start: usize, end: usize, valid: bool) {
        if end == start {
            return;
        }
        self.set_span(field, start, end, valid);
    }

    /// Points `field` at `start..end` of the buffer, as a valid value or a raw one.
    fn set_span(&mut self, field: Field, start: usize, end: usize, valid: bool) {
        let event = &mut *self.event;
        event.spans.set(
            field,
            Span {
                start: start as u32,
                end: end as u32,
            },
        );
        let bit = field_bit(field);
        let (value_bit, raw_bit) = if valid { (bit, 0) } else { (0, bit) };
        event.values = (event.values & !bit) | value_bit;
        event.raws = (event.raws & !bit) | raw_bit;
    }

    /// Records text `start..end` of the buffer as the tag.
    pub fn commit_tag(&mut self, start: usize, end: usize) {
        self.event.tag = Span {
            start: start as u32,
            end: end as u32,
        };
    }

    /// Sets a field to a fixed text (e.g. `activity`).
    pub fn set_static(&mut self, field: Field, value: &str) {
        let start = self.mark();
        self.event.text.push_str(value);
        self.commit(field, start, true);
    }

    /// Whether a field has a valid value.
    pub fn has(&self, field: Field) -> bool {
        self.event.values & field_bit(field) != 0
    }

    /// A field's value so far.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.event.get(field)
    }

    /// Points `field` at an existing part of the buffer (`start..end`).
    pub fn copy_range(&mut self, field: Field, start: usize, end: usize) {
        self.set_span(field, start, end, true);
    }

    /// The raw span of a valid field, as byte offsets into the buffer.
    pub fn range(&self, field: Field) -> Option<(usize, usize)> {
        let span = self.event.spans.get(field);
        self.has(field)
            .then_some((span.start as usize, span.end as usize))
    }

    /// Sets the level.
    pub fn level(&mut self, level: Option<Level>) {
        self.event.level = level;
    }

    /// Sets the task outcome.
    pub fn outcome(&mut self, outcome: TaskOutcome) {
        self.event.outcome = Some(outcome);
    }

    /// Sets the event time and where it came from.
    pub fn time(&mut self, time: EventTime, source: TimeSource) {
        self.event.time = time;
        self.event.time_source = source;
    }

    /// Marks the event as having a cut field.
    pub fn truncated(&mut self) {
        self.event.truncated = true;
    }

    /// Finishes the event, every value to be escaped in JSON (see
    /// [`EventBuilder::build_knowing_escapes`]). When the text buffer is much
    /// larger than the values kept (a long datagram whose text was cut, or a
    /// buffer sized for the whole datagram), the values are copied into a
    /// buffer of their own size, so a queued event holds only what the sinks
    /// need.
    pub fn build(self) {
        self.build_knowing_escapes(Some(&[]), 0);
    }

    /// [`EventBuilder::build`] for a parser that knows where the first
    /// `known` bytes of the text hold a quote, backslash or tab: at `found`,
    /// or, with `None`, at more places than [`MAX_ESCAPES`](super::MAX_ESCAPES).
    /// Values in those bytes that hold none of them are copied into JSON as
    /// they are; all others are escaped. Wrong positions would make invalid
    /// JSON, so this is for the crate's parser only (and checked in debug
    /// builds).
    pub(crate) fn build_knowing_escapes(self, found: Option<&[u32]>, known: usize) {
        // The parser appends only clean text (no control characters but tab),
        // and `found` must be exactly where the quotes, backslashes and tabs
        // are. Checked in debug builds for text of up to 4 KiB (every test
        // datagram but the deliberately long ones, which a check of every
        // character would slow below the rates their tests send at).
        #[cfg(debug_assertions)]
        if self.event.text.len() <= 4096 {
            let text = &self.event.text;
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\t'),
                "control characters in an event's text: {text:?}"
            );
            if let Some(found) = found {
                let actual = text.as_bytes()[..known]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &b)| matches!(b, b'"' | b'\\' | b'\t'))
                    .map(|(at, _)| at as u32);
                assert!(
                    actual.eq(found.iter().copied()),
                    "the escapes found are not those of the text: {found:?} in {text:?}"
                );
            }
        }
        // Before compacting: `found` are places in the text as it is.
        self.event.escaped = match found {
            Some(found) if found.len() <= super::MAX_ESCAPES => {
                self.event.escape_mask_knowing(found, known)
            }
            _ => u64::MAX,
        };
        let used = self.event.used_text_bytes();
        if self.event.text.capacity() > used.saturating_mul(2) + COMPACT_SLACK {
            self.event.compact(used);
        }
    }
}

/// Unused text-buffer bytes an event may keep without being compacted (the
/// separators and skipped fields of an ordinary datagram stay well under it).
const COMPACT_SLACK: usize = 1024;
