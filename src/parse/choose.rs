//! Layout choice: which of a tag's layouts a datagram is, and how many of its
//! `;`-separated pieces each slot takes. Called once per datagram, after the
//! grammar split it and before the event is built.
//!
//! When a datagram has more `;` than its layout, the extra separators belong to
//! free-text fields (message, exception, task and app names); the candidates are
//! tried in a fixed priority order and the first under which every fixed field
//! has its expected shape is kept (GUIDs stay GUIDs, timestamps stay
//! timestamps), preferring, among splits of a task and app name, one where the
//! task name ends with the app name. See `docs/WIRE.md` for the rules and the
//! order in which a tag's layouts are tried. Pure: no I/O, no allocation.

use crate::event::{Field, FieldKind};

use super::layout::{Layout, MAX_SLOTS, Slot};
use super::{ParseError, Parser, value};

use Field as F;

/// Candidate assignments tried before giving up on shape checks.
const MAX_CANDIDATES: usize = 600;

/// An event's timestamps, for its `time`: read when its layout is chosen
/// (when that checks the shapes) or while its fields are stored.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Times {
    /// `%longIso8601date`, when it is a timestamp.
    pub(super) iso: Option<value::SenseTimestamp>,
    /// `%date`, when it is a timestamp.
    pub(super) local: Option<value::SenseTimestamp>,
}

/// How many pieces each slot of a layout takes.
type Widths = [usize; MAX_SLOTS];

/// The layout a datagram was found to be, and its split.
#[derive(Debug)]
pub(super) struct Chosen {
    /// The layout.
    pub(super) layout: &'static Layout,
    /// How many pieces each of its slots takes.
    pub(super) widths: [usize; MAX_SLOTS],
    /// Whether every fixed field's shape was checked on the way (so building
    /// the event need not check numbers and GUIDs again).
    pub(super) proven: bool,
    /// The timestamps read on the way, when they were.
    pub(super) times: Option<Times>,
}

impl Chosen {
    fn new(layout: &'static Layout, widths: [usize; MAX_SLOTS], proven: bool) -> Chosen {
        Chosen {
            layout,
            widths,
            proven,
            times: None,
        }
    }
}

impl Parser {
    /// Picks the layout of a tag's `layouts` (the current one first) that the
    /// datagram proves, and how many pieces each of its slots takes:
    ///
    /// 1. one whose field count is exact and whose fixed fields all have their
    ///    shapes;
    /// 2. one whose free text takes the extra pieces with every fixed field
    ///    in shape;
    /// 3. the current layout, when its field count is exact: there is no doubt
    ///    where each value goes, so values of the wrong shape are kept as text
    ///    and the event is marked (`malformed_fields`), never rejected;
    /// 4. the current layout, when its free text can take the extra pieces,
    ///    split the likeliest way under which the task and execution ids are
    ///    GUIDs; when no split makes them GUIDs, where each value belongs is a
    ///    guess, and an alert must not go out with the wrong task: rejected.
    ///
    /// Otherwise the error is the current layout's.
    pub(super) fn choose(
        &self,
        layouts: &'static [&'static Layout],
        datagram: &[u8],
    ) -> Result<Chosen, ParseError> {
        let got = self.pieces.len();
        let exact = |layout: &Layout| layout.minimum_pieces() == got;
        let absorbs =
            |layout: &Layout| got > layout.minimum_pieces() && !layout.free_priority.is_empty();
        // With one layout, an exact count is that layout whatever the shapes
        // (step 3), so the shape check is only for tags with several.
        let checked = layouts.len() > 1;
        let mut times = Times::default();
        if let Some(layout) = layouts.iter().find(|layout| {
            exact(layout)
                && (!checked || {
                    times = Times::default();
                    layout.fits(&layout.base_widths(), &self.pieces, datagram, &mut times)
                })
        }) {
            let mut chosen = Chosen::new(layout, layout.base_widths(), checked);
            if checked {
                chosen.times = Some(times);
            }
            return Ok(chosen);
        }
        let mut likeliest = None;
        for layout in layouts.iter().filter(|layout| absorbs(layout)) {
            let (fitting, first) = self.assign(layout, got - layout.minimum_pieces(), datagram);
            if let Some((widths, times)) = fitting {
                let mut chosen = Chosen::new(layout, widths, true);
                chosen.times = Some(times);
                return Ok(chosen);
            }
            // Only the current layout is taken on a guess; another must be
            // proven by the shapes.
            if let Some(widths) = first
                && std::ptr::eq(*layout, layouts[0])
            {
                likeliest = Some((*layout, widths));
            }
        }
        // Read leniently, with values out of shape kept as text: only the
        // current layout. Another with the same count but shapes that do not
        // fit is no evidence (a current row missing a field is not an older
        // row).
        if exact(layouts[0]) {
            return Ok(Chosen::new(layouts[0], layouts[0].base_widths(), false));
        }
        if let Some((layout, widths)) = likeliest {
            layout.check_required(&widths, &self.pieces, datagram)?;
            return Ok(Chosen::new(layout, widths, false));
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
    /// with the timestamps read on the way, and the likeliest split (the first
    /// tried under which the required ids are GUIDs, else the first tried).
    fn assign(
        &self,
        layout: &Layout,
        extra: usize,
        datagram: &[u8],
    ) -> (Option<(Widths, Times)>, Option<Widths>) {
        let mut first_candidate = None;
        let mut ids_are_guids = None;
        let mut found: Option<(Widths, Times)> = None;
        layout.candidates(extra, |widths| {
            first_candidate.get_or_insert(*widths);
            if ids_are_guids.is_none()
                && layout.has_required
                && layout
                    .check_required(widths, &self.pieces, datagram)
                    .is_ok()
            {
                ids_are_guids = Some(*widths);
            }
            let mut times = Times::default();
            if !layout.fits(widths, &self.pieces, datagram, &mut times) {
                return false;
            }
            match found {
                // Among fitting splits that differ only in how the task and app
                // names share their pieces, prefer one where the task name ends
                // with the app name ("Reload of Sales" / "Sales").
                Some((first, _))
                    if first[layout.free_priority[0]] == widths[layout.free_priority[0]] =>
                {
                    if layout.names_agree(widths, &self.pieces, datagram) {
                        found = Some((*widths, times));
                        return true;
                    }
                    false
                }
                Some(_) => true,
                None => {
                    found = Some((*widths, times));
                    !layout.has_name_pair() || layout.names_agree(widths, &self.pieces, datagram)
                }
            }
        });
        (found, ids_are_guids.or(first_candidate))
    }
}

impl Layout {
    /// Calls `try_widths` with each way of giving `extra` pieces to the free slots,
    /// highest-priority slot getting the most first, until it returns `true`.
    pub(super) fn candidates(
        &self,
        extra: usize,
        mut try_widths: impl FnMut(&[usize; MAX_SLOTS]) -> bool,
    ) {
        let base = self.base_widths();
        let mut tried = 0;
        let mut give = |shares: &[usize]| {
            let mut widths = base;
            for (&slot, &share) in self.free_priority.iter().zip(shares) {
                widths[slot] += share;
            }
            tried += 1;
            try_widths(&widths) || tried >= MAX_CANDIDATES
        };
        match self.free_priority.len() {
            0 => {
                give(&[]);
            }
            1 => {
                give(&[extra]);
            }
            2 => {
                for first in (0..=extra).rev() {
                    if give(&[first, extra - first]) {
                        return;
                    }
                }
            }
            _ => {
                for first in (0..=extra).rev() {
                    for second in (0..=extra - first).rev() {
                        if give(&[first, second, extra - first - second]) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether every fixed slot has its expected shape under `widths`; the
    /// timestamps it reads on the way go to `times`.
    fn fits(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
        times: &mut Times,
    ) -> bool {
        for (slot, first, _) in self.slot_pieces(widths) {
            let (start, end) = pieces[first];
            let bytes = &datagram[start..end];
            let fits = match slot {
                Slot::Required(_) => value::is_guid(bytes),
                Slot::Fixed(field @ (F::TsIso | F::TsLocal)) => {
                    let read = (!value::is_absent(bytes))
                        .then(|| value::timestamp(bytes))
                        .flatten();
                    if field == F::TsIso {
                        times.iso = read;
                    } else {
                        times.local = read;
                    }
                    read.is_some() || value::is_absent(bytes)
                }
                Slot::Fixed(field) => fixed_shape_fits(field, bytes),
                Slot::Level => {
                    value::is_absent(bytes)
                        || crate::event::Level::parse(bytes.trim_ascii()).is_some()
                }
                Slot::Tag | Slot::Free(_) | Slot::MessageException => true,
            };
            if !fits {
                return false;
            }
        }
        true
    }

    /// Whether, under `widths`, the datagram has neither a host nor a message
    /// (nothing but separators, or near enough): not an event worth keeping.
    /// A layout without a message (qix-perf) is empty only when every value
    /// is.
    pub(super) fn is_empty(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> bool {
        for (slot, first, last) in self.slot_pieces(widths) {
            let (start, end) = (pieces[first].0, pieces[last].1);
            let counts = match slot {
                Slot::Tag => false,
                Slot::Fixed(F::Host) | Slot::Free(F::Message) | Slot::MessageException => true,
                _ => !self.has_message,
            };
            if counts && !value::is_absent(&datagram[start..end]) {
                return false;
            }
        }
        true
    }

    /// Whether the layout has both a free task name and a free app name.
    fn has_name_pair(&self) -> bool {
        self.slot_index(Slot::Free(F::TaskName)).is_some()
            && self.slot_index(Slot::Free(F::AppName)).is_some()
    }

    fn slot_index(&self, slot: Slot) -> Option<usize> {
        self.slots.iter().position(|&s| s == slot)
    }

    /// Whether, under `widths`, the task name ends with the (non-empty) app name.
    fn names_agree(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> bool {
        let (Some(task), Some(app)) = (
            self.slot_index(Slot::Free(F::TaskName)),
            self.slot_index(Slot::Free(F::AppName)),
        ) else {
            return false;
        };
        let text = |slot: usize| {
            let first: usize = widths[..slot].iter().sum();
            let last = first + widths[slot] - 1;
            &datagram[pieces[first].0..pieces[last].1]
        };
        let app_name = text(app);
        !app_name.is_empty() && text(task).ends_with(app_name)
    }

    /// Rejects the datagram when a required GUID is missing or malformed.
    fn check_required(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> Result<(), ParseError> {
        if !self.has_required {
            return Ok(());
        }
        for (slot, first, _) in self.slot_pieces(widths) {
            let (start, end) = pieces[first];
            if let Slot::Required(field) = slot
                && !value::is_guid(&datagram[start..end])
            {
                return Err(ParseError::BadGuid { field });
            }
        }
        Ok(())
    }
}

/// The shape a fixed field must have for a layout, or an assignment of extra
/// `;`, to be taken as proven.
fn fixed_shape_fits(field: Field, bytes: &[u8]) -> bool {
    if value::is_absent(bytes) {
        return true;
    }
    match field {
        // A full user name is `DIR\id`.
        F::UserFull => bytes.contains(&b'\\'),
        // The engine's own timestamp, ISO 8601 with a colon offset.
        F::EngineTs => value::timestamp(bytes).is_some(),
        _ => match field.kind() {
            FieldKind::Guid => value::is_guid(bytes),
            FieldKind::Timestamp => value::timestamp(bytes).is_some(),
            FieldKind::Integer => value::is_json_number(bytes.trim_ascii(), true),
            FieldKind::Decimal => value::is_json_number(bytes.trim_ascii(), false),
            FieldKind::Text | FieldKind::GuidOrText => true,
        },
    }
}
