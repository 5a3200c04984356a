//! The field layouts of every tag Sense sends: which slots, in which order,
//! which of them are free text and which take extra `;` first. Tables only:
//! choosing a layout for a datagram is `choose.rs`, filling an event from it
//! is `build.rs`.
//!
//! A [`Layout`] lists its slots left to right. Fixed slots hold exactly one
//! `;`-separated piece; free-text slots ([`Slot::Free`], [`Slot::MessageException`])
//! may hold more, because log4net does not escape `;` inside text.

use crate::event::{Field, LayoutName, TaskOutcome};

/// Most slots any layout has (qix-perf: 26).
pub const MAX_SLOTS: usize = 26;

/// One position in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The tag (always first).
    Tag,
    /// `%level`.
    Level,
    /// One piece holding `field`, validated by the field's kind.
    Fixed(Field),
    /// Like `Fixed`, but the event is rejected when it is not a GUID.
    Required(Field),
    /// Free text that may contain `;`.
    Free(Field),
    /// `%encodedmessage;%encodedexception`: two adjacent free-text fields.
    MessageException,
}

impl Slot {
    pub(super) const fn minimum_width(self) -> usize {
        match self {
            Slot::MessageException => 2,
            _ => 1,
        }
    }
}

/// The shape of one Sense format.
#[derive(Debug)]
pub struct Layout {
    /// Which layout this is; fixes the event's type and source.
    pub name: LayoutName,
    /// For task tags, the outcome the tag stands for.
    pub outcome: Option<TaskOutcome>,
    /// The slots, left to right.
    pub slots: &'static [Slot],
    /// Indexes into `slots` of the free-text slots, most likely to hold extra `;` first.
    pub free_priority: &'static [usize],
    /// Each slot's width when no free text holds a `;` (computed from `slots`).
    base_widths: [usize; MAX_SLOTS],
    /// Whether any slot is [`Slot::Required`] (computed from `slots`).
    pub(super) has_required: bool,
    /// Whether a slot holds the message (computed from `slots`).
    pub(super) has_message: bool,
}

impl Layout {
    const fn new(
        name: LayoutName,
        outcome: Option<TaskOutcome>,
        slots: &'static [Slot],
        free_priority: &'static [usize],
    ) -> Layout {
        let mut base_widths = [0; MAX_SLOTS];
        let mut has_required = false;
        let mut has_message = false;
        let mut i = 0;
        while i < slots.len() {
            base_widths[i] = slots[i].minimum_width();
            has_required |= matches!(slots[i], Slot::Required(_));
            has_message |= matches!(
                slots[i],
                Slot::Free(Field::Message) | Slot::MessageException
            );
            i += 1;
        }
        Layout {
            name,
            outcome,
            slots,
            free_priority,
            base_widths,
            has_required,
            has_message,
        }
    }
}

use Field as F;
use Slot::{Fixed, Free, Level, MessageException, Required, Tag};

const LOG_HEAD: [Slot; 8] = [
    Tag,
    Fixed(F::LogRow),
    Fixed(F::TsIso),
    Fixed(F::TsLocal),
    Level,
    Fixed(F::Host),
    Fixed(F::Subsystem),
    Fixed(F::WindowsUser),
];

const fn head_then<const N: usize, const M: usize>(tail: [Slot; M]) -> [Slot; N] {
    let mut out = [Tag; N];
    let mut i = 0;
    while i < 8 {
        out[i] = LOG_HEAD[i];
        i += 1;
    }
    while i < N {
        out[i] = tail[i - 8];
        i += 1;
    }
    out
}

static ENGINE: [Slot; 19] = head_then([
    Free(F::Message),
    Fixed(F::ProxySessionId),
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::EngineTs),
    Fixed(F::ProcessId),
    Fixed(F::EngineExeVersion),
    Fixed(F::ServerStarted),
    Fixed(F::EntryType),
    Fixed(F::SessionId),
    Fixed(F::AppId),
]);

static PROXY: [Slot; 15] = head_then([
    MessageException,
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::Command),
    Fixed(F::ResultCode),
    Fixed(F::Origin),
    Fixed(F::Context),
]);

static SCHEDULER: [Slot; 17] = head_then([
    MessageException,
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::UserFull),
    Free(F::TaskName),
    Free(F::AppName),
    Fixed(F::TaskId),
    Fixed(F::AppId),
    Fixed(F::ExecutionId),
]);

static QIX_PERF: [Slot; 26] = head_then([
    Fixed(F::ProxySessionId),
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::EngineTs),
    Fixed(F::SessionId),
    Fixed(F::AppId),
    Fixed(F::RequestId),
    Fixed(F::Method),
    Fixed(F::ProcessTime),
    Fixed(F::WorkTime),
    Fixed(F::LockTime),
    Fixed(F::ValidateTime),
    Fixed(F::TraverseTime),
    Fixed(F::Handle),
    Fixed(F::ObjectId),
    Fixed(F::NetRam),
    Fixed(F::PeakRam),
    Fixed(F::ObjectType),
]);

/// The qix-perf layout of older Butler SOS appender files (its
/// `docs/log_appenders/engine/LocalLogConfig.xml` in earlier revisions): no
/// `%user`, EngineTimestamp or Handle; RequestException and AnyException,
/// which may hold `;`; another order.
static QIX_PERF_LEGACY: [Slot; 25] = [
    Tag,
    Fixed(F::LogRow),
    Fixed(F::TsIso),
    Fixed(F::TsLocal),
    Level,
    Fixed(F::Host),
    Fixed(F::Subsystem),
    Fixed(F::ProxySessionId),
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::SessionId),
    Fixed(F::Method),
    Fixed(F::RequestId),
    Free(F::RequestException),
    Free(F::AnyException),
    Fixed(F::ProcessTime),
    Fixed(F::WorkTime),
    Fixed(F::LockTime),
    Fixed(F::ValidateTime),
    Fixed(F::TraverseTime),
    Fixed(F::AppId),
    Fixed(F::ObjectId),
    Fixed(F::NetRam),
    Fixed(F::PeakRam),
    Fixed(F::ObjectType),
];

static USER_EVENT: [Slot; 8] = [
    Tag,
    Fixed(F::Host),
    Fixed(F::Command),
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::Origin),
    Fixed(F::Context),
    Free(F::Message),
];

static TASK: [Slot; 11] = [
    Tag,
    Fixed(F::Host),
    Free(F::TaskName),
    Free(F::AppName),
    Fixed(F::UserFull),
    Required(F::TaskId),
    Fixed(F::AppId),
    Fixed(F::TsLocal),
    Level,
    Required(F::ExecutionId),
    Free(F::Message),
];

static ENGINE_RELOAD_FAILED: [Slot; 9] = [
    Tag,
    Fixed(F::Host),
    Fixed(F::AppId),
    Fixed(F::SessionId),
    Fixed(F::UserDirectory),
    Fixed(F::UserId),
    Fixed(F::TsLocal),
    Level,
    Free(F::Message),
];

const fn task(outcome: TaskOutcome) -> Layout {
    // The message is last and most often holds a `;`; then the task name.
    Layout::new(LayoutName::Task, Some(outcome), &TASK, &[10, 2, 3])
}

static LAYOUT_ENGINE: Layout = Layout::new(LayoutName::Engine, None, &ENGINE, &[8]);
static LAYOUT_PROXY: Layout = Layout::new(LayoutName::Proxy, None, &PROXY, &[8]);
static LAYOUT_REPOSITORY: Layout = Layout::new(LayoutName::Repository, None, &PROXY, &[8]);
static LAYOUT_SCHEDULER: Layout =
    Layout::new(LayoutName::Scheduler, None, &SCHEDULER, &[8, 12, 13]);
static LAYOUT_QIX_PERF: Layout = Layout::new(LayoutName::QixPerf, None, &QIX_PERF, &[]);
// AnyException is the likelier of the two to hold a `;`.
static LAYOUT_QIX_PERF_LEGACY: Layout =
    Layout::new(LayoutName::QixPerfLegacy, None, &QIX_PERF_LEGACY, &[14, 13]);
static LAYOUT_SESSION: Layout = Layout::new(LayoutName::Session, None, &USER_EVENT, &[7]);
static LAYOUT_CONNECTION: Layout = Layout::new(LayoutName::Connection, None, &USER_EVENT, &[7]);
static LAYOUT_TASK_FAILED: Layout = task(TaskOutcome::Failed);
static LAYOUT_TASK_ABORTED: Layout = task(TaskOutcome::Aborted);
static LAYOUT_TASK_SUCCESS: Layout = task(TaskOutcome::Success);
static LAYOUT_TASK_DISTRIBUTE: Layout = task(TaskOutcome::Distribute);
static LAYOUT_ENGINE_RELOAD_FAILED: Layout = Layout::new(
    LayoutName::EngineReloadFailed,
    None,
    &ENGINE_RELOAD_FAILED,
    &[8],
);

/// Every tag herald accepts (matched case-insensitively) and its layouts, the
/// one Butler SOS and Butler ship today first.
pub static TAGS: [(&str, &[&Layout]); 19] = [
    ("/qseow-engine/", &[&LAYOUT_ENGINE]),
    ("/qseow-proxy/", &[&LAYOUT_PROXY]),
    ("/qseow-repository/", &[&LAYOUT_REPOSITORY]),
    ("/qseow-scheduler/", &[&LAYOUT_SCHEDULER]),
    (
        "/qseow-qix-perf/",
        &[&LAYOUT_QIX_PERF, &LAYOUT_QIX_PERF_LEGACY],
    ),
    ("/qseow-proxy-session/", &[&LAYOUT_SESSION]),
    ("/qseow-proxy-connection/", &[&LAYOUT_CONNECTION]),
    // Butler's user-audit sample appender uses these, without `qseow-`.
    ("/proxy-session/", &[&LAYOUT_SESSION]),
    ("/proxy-connection/", &[&LAYOUT_CONNECTION]),
    ("/scheduler-reload-failed/", &[&LAYOUT_TASK_FAILED]),
    ("/scheduler-task-failed/", &[&LAYOUT_TASK_FAILED]),
    ("/scheduler-reloadtask-failed/", &[&LAYOUT_TASK_FAILED]),
    ("/scheduler-reload-aborted/", &[&LAYOUT_TASK_ABORTED]),
    ("/scheduler-task-aborted/", &[&LAYOUT_TASK_ABORTED]),
    ("/scheduler-reloadtask-success/", &[&LAYOUT_TASK_SUCCESS]),
    ("/scheduler-task-success/", &[&LAYOUT_TASK_SUCCESS]),
    // The appender file Butler ships has this typo, so real senders use it.
    ("/scheduler-task-success//", &[&LAYOUT_TASK_SUCCESS]),
    ("/scheduler-distribute/", &[&LAYOUT_TASK_DISTRIBUTE]),
    ("/engine-reload-failed/", &[&LAYOUT_ENGINE_RELOAD_FAILED]),
];

impl Layout {
    /// The layouts of a tag, matched case-insensitively, the current one first.
    pub fn for_tag(tag: &[u8]) -> Option<&'static [&'static Layout]> {
        // Appender files write the tags in lower case, so an exact match is
        // tried first: comparing in any case cost about 240 instructions
        // for the engine's tag (callgrind), the exact match a few dozen.
        TAGS.iter()
            .find(|(name, _)| name.as_bytes() == tag)
            .or_else(|| {
                TAGS.iter()
                    .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(tag))
            })
            .map(|&(_, layouts)| layouts)
    }

    /// Pieces the layout has when no free-text field contains `;`.
    pub fn minimum_pieces(&self) -> usize {
        self.base_widths.iter().sum()
    }

    /// Each slot's width when there are no extra pieces.
    pub fn base_widths(&self) -> [usize; MAX_SLOTS] {
        self.base_widths
    }

    /// Each slot with the first and last of the pieces it takes under
    /// `widths`: the one way every step walks a datagram's slots.
    pub(super) fn slot_pieces<'a>(
        &'a self,
        widths: &'a [usize; MAX_SLOTS],
    ) -> impl Iterator<Item = (Slot, usize, usize)> + 'a {
        self.slots
            .iter()
            .zip(widths)
            .scan(0, |piece, (&slot, &width)| {
                let first = *piece;
                *piece += width;
                Some((slot, first, first + width - 1))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_has_the_documented_field_count() {
        let expected: [(&str, &[usize]); 12] = [
            ("/qseow-engine/", &[19]),
            ("/qseow-proxy/", &[16]),
            ("/qseow-repository/", &[16]),
            ("/qseow-scheduler/", &[18]),
            ("/qseow-qix-perf/", &[26, 25]),
            ("/qseow-proxy-session/", &[8]),
            ("/qseow-proxy-connection/", &[8]),
            ("/proxy-session/", &[8]),
            ("/proxy-connection/", &[8]),
            ("/scheduler-reload-failed/", &[11]),
            ("/scheduler-task-success//", &[11]),
            ("/engine-reload-failed/", &[9]),
        ];
        for (tag, counts) in expected {
            let layouts = Layout::for_tag(tag.as_bytes()).unwrap();
            let got: Vec<usize> = layouts.iter().map(|l| l.minimum_pieces()).collect();
            assert_eq!(got, counts, "{tag}");
        }
    }

    #[test]
    fn free_priorities_point_at_free_slots() {
        for (tag, layouts) in &TAGS {
            for layout in *layouts {
                assert!(layout.slots.len() <= MAX_SLOTS);
                assert!(layout.free_priority.len() <= 3, "{tag}");
                for &index in layout.free_priority {
                    assert!(
                        matches!(layout.slots[index], Slot::Free(_) | Slot::MessageException),
                        "{tag}: slot {index} is not free text"
                    );
                }
                let free = layout
                    .slots
                    .iter()
                    .filter(|slot| matches!(slot, Slot::Free(_) | Slot::MessageException))
                    .count();
                assert_eq!(free, layout.free_priority.len(), "{tag}");
            }
        }
    }

    #[test]
    fn the_layouts_of_a_tag_make_events_of_one_type() {
        for (tag, layouts) in &TAGS {
            let first = layouts[0].name;
            for layout in *layouts {
                assert_eq!(layout.name.event_type(), first.event_type(), "{tag}");
                assert_eq!(layout.name.source(), first.source(), "{tag}");
            }
        }
    }

    #[test]
    fn tags_match_case_insensitively() {
        assert!(Layout::for_tag(b"/QSEOW-ENGINE/").is_some());
        assert!(Layout::for_tag(b"/Scheduler-Task-Success//").is_some());
        assert!(Layout::for_tag(b"/qseow-printing/").is_none());
        assert!(Layout::for_tag(b"/qseow-engine").is_none());
        assert!(Layout::for_tag(b"").is_none());
    }

    #[test]
    fn candidates_give_extra_pieces_to_the_first_priority_first() {
        let layout = Layout::for_tag(b"/scheduler-task-failed/").unwrap()[0];
        let mut seen = Vec::new();
        layout.candidates(1, |widths| {
            seen.push((widths[10], widths[2], widths[3]));
            false
        });
        assert_eq!(seen, vec![(2, 1, 1), (1, 2, 1), (1, 1, 2)]);
    }
}
