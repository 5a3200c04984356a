//! Where each field's value sits in an event's text: the event's span table.
//!
//! The table has a slot for every [`Field`]. An event's text is almost always
//! far shorter than 64 KiB (a datagram is at most that, and most are a few
//! hundred bytes), so the table keeps each span as two `u16` offsets, inline:
//! 184 bytes for the 44 fields where `u32` offsets took 352, so the event is
//! 360 bytes instead of 528 and a queue's byte budget holds more of them.
//! Text of 64 KiB or more (a log line read from an appender file, a datagram
//! whose invalid UTF-8 was widened) moves the table to `u32` offsets on the
//! heap the first time a span does not fit.
//!
//! This module does not know which fields have values (the event's masks say
//! that) or what the text holds.

use super::Field;

/// Where a value sits in the event's text buffer: bytes `start..end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

/// A span per field; a slot whose field has no value holds anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Spans {
    /// Every span ends before 64 KiB: two `u16` offsets a field, inline.
    Short([[u16; 2]; Field::COUNT]),
    /// Some span reached past 64 KiB.
    Long(Box<[Span; Field::COUNT]>),
}

impl Spans {
    /// A table whose spans are all empty.
    pub(super) fn new() -> Spans {
        Spans::Short([[0; 2]; Field::COUNT])
    }

    /// The span of `field`.
    #[inline]
    pub(super) fn get(&self, field: Field) -> Span {
        match self {
            Spans::Short(short) => {
                let [start, end] = short[field as usize];
                Span {
                    start: start.into(),
                    end: end.into(),
                }
            }
            Spans::Long(long) => long[field as usize],
        }
    }

    /// Points `field` at `span`, moving the table to the heap if the span
    /// does not fit in 16 bits.
    #[inline]
    pub(super) fn set(&mut self, field: Field, span: Span) {
        match self {
            Spans::Short(short) => match (u16::try_from(span.start), u16::try_from(span.end)) {
                (Ok(start), Ok(end)) => short[field as usize] = [start, end],
                _ => self.lengthen()[field as usize] = span,
            },
            Spans::Long(long) => long[field as usize] = span,
        }
    }

    /// Moves a short table to the heap as `u32` spans; returns it.
    #[cold]
    fn lengthen(&mut self) -> &mut [Span; Field::COUNT] {
        if let Spans::Short(short) = self {
            let long = short.map(|[start, end]| Span {
                start: start.into(),
                end: end.into(),
            });
            *self = Spans::Long(Box::new(long));
        }
        match self {
            Spans::Long(long) => long,
            Spans::Short(_) => unreachable!("lengthened just above"),
        }
    }

    /// Bytes the table holds on the heap (none while it is short).
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Spans::Short(_) => 0,
            Spans::Long(_) => std::mem::size_of::<[Span; Field::COUNT]>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    #[test]
    fn short_spans_stay_inline() {
        let mut spans = Spans::new();
        spans.set(Field::Host, span(3, 10));
        spans.set(Field::Message, span(10, u16::MAX.into()));
        assert!(matches!(spans, Spans::Short(_)));
        assert_eq!(spans.get(Field::Host), span(3, 10));
        assert_eq!(spans.get(Field::Message), span(10, 65_535));
        assert_eq!(spans.get(Field::Level), Span::default());
        assert_eq!(spans.heap_bytes(), 0);
    }

    #[test]
    fn a_span_past_64_kib_moves_the_table_to_the_heap_and_keeps_the_rest() {
        let mut spans = Spans::new();
        spans.set(Field::Host, span(3, 10));
        spans.set(Field::Message, span(10, 70_000));
        assert!(matches!(spans, Spans::Long(_)));
        assert_eq!(spans.get(Field::Host), span(3, 10));
        assert_eq!(spans.get(Field::Message), span(10, 70_000));
        spans.set(Field::Level, span(65_536, 65_540));
        assert_eq!(spans.get(Field::Level), span(65_536, 65_540));
        assert_eq!(spans.heap_bytes(), 352);
    }

    #[test]
    fn an_event_with_text_past_64_kib_keeps_every_value() {
        let events = crate::event::test_events();
        let (_, engine) = events
            .iter()
            .find(|(_, event)| event.message().is_some() && event.host().is_some())
            .expect("a fixture with a host and a message");
        let mut json: serde_json::Value = serde_json::from_str(&engine.to_json()).unwrap();
        let long = "x".repeat(70_000);
        json["message"] = long.clone().into();
        // Keys after the message in the text land past 64 KiB.
        let event = crate::event::Event::from_json(json.to_string().as_bytes()).unwrap();
        assert!(matches!(event.spans, Spans::Long(_)));
        assert!(event.message() == Some(long.as_str()));
        assert_eq!(event.host(), engine.host());
        let written: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert!(written == json, "the JSON differs from what was read");
        let mut binary = Vec::new();
        event.encode_binary(&mut binary);
        let back = crate::event::Event::decode_binary(&binary).unwrap();
        assert!(
            back.to_json() == event.to_json(),
            "the disk encoding changed it"
        );
        assert!(event.memory_bytes() > long.len() + 352);
    }

    #[test]
    fn the_table_is_half_the_size_of_u32_spans() {
        assert!(std::mem::size_of::<Spans>() <= 184);
    }
}
