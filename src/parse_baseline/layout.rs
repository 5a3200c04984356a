//! The field layout of every tag Sense sends, and how extra `;` are assigned.
//!
//! A [`Layout`] lists its slots left to right. Fixed slots hold exactly one
//! `;`-separated piece; free-text slots ([`Slot::Free`], [`Slot::MessageException`])
//! may hold more, because log4net does not escape `;` inside text. The extra pieces
//! are handed to the free slots in the layout's priority order, and a candidate
//! assignment is kept only if every fixed slot then has its expected shape.

use crate::event::{EventBuilder, EventType, Field, FieldKind, LayoutName, TaskOutcome};

use super::ParseError;
use super::value;

/// Most slots any layout has (qix-perf: 26).
pub const MAX_SLOTS: usize = 26;

/// Bytes in a GUID.
const GUID_LEN: usize = 36;

/// Candidate assignments tried before giving up on shape checks.
const MAX_CANDIDATES: usize = 600;

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
    const fn minimum_width(self) -> usize {
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
    has_required: bool,
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
        let mut i = 0;
        while i < slots.len() {
            base_widths[i] = slots[i].minimum_width();
            has_required |= matches!(slots[i], Slot::Required(_));
            i += 1;
        }
        Layout {
            name,
            outcome,
            slots,
            free_priority,
            base_widths,
            has_required,
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
        TAGS.iter()
            .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(tag))
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

    /// Most bytes that derived fields may add to an event's text beyond the
    /// datagram's own, under `widths`: `user_full` built from the directory and
    /// id pieces (plus the `\`), qix-perf `activity`, and a user event's `app_id`
    /// copied (lower-cased) out of its Context.
    pub fn derived_bytes(&self, widths: &[usize; MAX_SLOTS], pieces: &[(usize, usize)]) -> usize {
        let mut bytes = match self.name.event_type() {
            EventType::QixPerf => "system".len(),
            EventType::Session | EventType::Connection => GUID_LEN,
            _ => 0,
        };
        let mut piece = 0;
        for (slot, &width) in self.slots.iter().zip(widths) {
            if let Slot::Fixed(F::UserDirectory | F::UserId) = slot {
                let (start, end) = pieces[piece];
                bytes += end - start + 1;
            }
            piece += width;
        }
        bytes
    }

    /// Calls `try_widths` with each way of giving `extra` pieces to the free slots,
    /// highest-priority slot getting the most first, until it returns `true`.
    pub fn candidates(
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

    /// Whether every fixed slot has its expected shape under `widths`.
    pub fn fits(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> bool {
        let mut piece = 0;
        for (slot, &width) in self.slots.iter().zip(widths) {
            let (start, end) = pieces[piece];
            piece += width;
            let bytes = &datagram[start..end];
            let fits = match *slot {
                Slot::Required(_) => value::is_guid(bytes),
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
    pub fn is_empty(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> bool {
        let mut piece = 0;
        for (slot, &width) in self.slots.iter().zip(widths) {
            let (start, end) = (pieces[piece].0, pieces[piece + width - 1].1);
            piece += width;
            let holds_text = matches!(
                *slot,
                Slot::Fixed(F::Host) | Slot::Free(F::Message) | Slot::MessageException
            );
            if holds_text && !value::is_absent(&datagram[start..end]) {
                return false;
            }
        }
        true
    }

    /// Whether the layout has both a free task name and a free app name.
    pub fn has_name_pair(&self) -> bool {
        self.slot_index(Slot::Free(F::TaskName)).is_some()
            && self.slot_index(Slot::Free(F::AppName)).is_some()
    }

    fn slot_index(&self, slot: Slot) -> Option<usize> {
        self.slots.iter().position(|&s| s == slot)
    }

    /// Whether, under `widths`, the task name ends with the (non-empty) app name.
    pub fn names_agree(
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
    pub fn check_required(
        &self,
        widths: &[usize; MAX_SLOTS],
        pieces: &[(usize, usize)],
        datagram: &[u8],
    ) -> Result<(), ParseError> {
        if !self.has_required {
            return Ok(());
        }
        let mut piece = 0;
        for (slot, &width) in self.slots.iter().zip(widths) {
            let (start, end) = pieces[piece];
            piece += width;
            if let Slot::Required(field) = *slot
                && !value::is_guid(&datagram[start..end])
            {
                return Err(ParseError::BadGuid { field });
            }
        }
        Ok(())
    }

    /// Fills fields derived from others (qix-perf activity, user-event app id and
    /// user agent).
    pub fn derive(&self, event: &mut EventBuilder) {
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

/// Where `needle` (not empty) first occurs in `haystack`.
///
/// For the short texts searched here, finding the needle's first byte with
/// `memchr` and comparing the rest beats building a substring searcher per call.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memchr_iter(needle[0], haystack).find(|&at| haystack[at..].starts_with(needle))
}

/// `app_id` from a Context such as `/app/<guid>?reloaduri=...` or `app/<guid>`.
fn derive_app_id(event: &mut EventBuilder) {
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
fn derive_user_agent(event: &mut EventBuilder) {
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
