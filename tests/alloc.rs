//! Allocation counts on the hot path: parsing a datagram allocates exactly two
//! buffers (the shared event and its text), rejecting one allocates nothing, and routing and
//! JSON encoding into a buffer that is large enough allocate nothing.
//!
//! A counting global allocator wraps the system allocator. Counts are kept per
//! thread, and each check counts only inside a window on its own thread, so the
//! test harness running tests in parallel does not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use herald::event::{Event, EventType, Level, Source, TaskOutcome};
use herald::parse::{ParseConfig, ParseError, Parser};
use herald::route::{
    CategoriseConfig, Categoriser, FilterConfig, FilterKind, MatchConfig, Matcher, RuleConfig,
    Verdict,
};
use herald::send::SAMPLES;

/// Counts every allocation and reallocation made by the current thread.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the slot may be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A buffer that grows counts as another allocation.
        count_one();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the allocations it made on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

fn sender() -> SocketAddr {
    "10.0.0.5:61000".parse().unwrap()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_763_884_800).unwrap()
}

/// Parses every sample once so that the parser's scratch space has its size.
fn warmed_up(config: &ParseConfig) -> Parser {
    let mut parser = Parser::new(config).unwrap();
    for sample in SAMPLES {
        parser.parse(sample.datagram, sender(), now()).unwrap();
    }
    parser
}

/// Parses `datagram` as the pipeline does, into the shared event, and returns
/// it with the allocations parsing made (the event is dropped outside the
/// count; dropping never allocates anyway).
fn parse_counted(parser: &mut Parser, datagram: &[u8]) -> (Result<Arc<Event>, ParseError>, usize) {
    allocations(|| parser.parse_shared(datagram, sender(), now()))
}

#[test]
fn parsing_a_sample_allocates_only_the_shared_event_and_its_text() {
    for config in [
        ParseConfig::default(),
        // `%date` read in a configured zone goes through the time zone code.
        ParseConfig {
            time_zone: Some("Europe/Stockholm".into()),
            host_time_zones: [("sense-sched1".to_string(), "+05:30".to_string())].into(),
            ..ParseConfig::default()
        },
    ] {
        let mut parser = warmed_up(&config);
        for sample in SAMPLES {
            let (event, count) = parse_counted(&mut parser, sample.datagram);
            assert!(event.is_ok(), "{}", sample.kind);
            assert_eq!(count, 2, "{}: allocations while parsing", sample.kind);
        }
    }
}

#[test]
fn parsing_a_clean_fixture_allocates_only_the_shared_event_and_its_text() {
    let mut parser = warmed_up(&ParseConfig::default());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datagrams");
    let mut checked = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let datagram = std::fs::read(&path).unwrap();
        // Text that needs cleaning (invalid UTF-8 becomes the 3-byte U+FFFD) may
        // outgrow the buffer sized from the datagram; that growth is a
        // reallocation of the same buffer, and such datagrams are not counted.
        let clean = std::str::from_utf8(&datagram)
            .is_ok_and(|text| !text.trim_end().chars().any(|c| c.is_control() && c != '\t'));
        let (event, count) = parse_counted(&mut parser, &datagram);
        let name = path.file_name().unwrap().to_string_lossy();
        match event {
            Ok(_) if clean => {
                assert_eq!(count, 2, "{name}: allocations while parsing");
                checked += 1;
            }
            Ok(_) => assert!(count >= 2, "{name}"),
            Err(err) => assert_eq!(count, 0, "{name}: rejected as {err}, yet allocated"),
        }
    }
    assert!(checked >= 20, "only {checked} clean fixtures");
}

#[test]
fn rejecting_a_datagram_allocates_nothing() {
    let mut parser = warmed_up(&ParseConfig::default());
    let rejects: [(&[u8], &str); 7] = [
        (b"", "empty"),
        (b"\r\n", "empty"),
        (b"/qseow-printing/;1;2;3", "unknown_tag"),
        (b"/qseow-proxy/;87;20240519T101502.331+0200;WARN", "too_few_fields"),
        (
            b"/qseow-qix-perf/;1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26",
            "too_many_fields",
        ),
        (
            b"/scheduler-task-failed/;h;T;A;LAB\\u;not-a-guid;;2024-05-19 04:05:30,118;INFO;c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f;m;n",
            "bad_guid",
        ),
        (b"/qseow-engine/;;;;;;;;;;;;;;;;;;", "empty_fields"),
    ];
    for (datagram, reason) in rejects {
        let (result, count) = parse_counted(&mut parser, datagram);
        assert_eq!(result.err().map(|err| err.reason()), Some(reason));
        assert_eq!(count, 0, "{reason}: allocations while rejecting");
    }
}

#[test]
fn routing_and_categorising_allocate_nothing() {
    let mut parser = warmed_up(&ParseConfig::default());
    let mut events: Vec<Event> = SAMPLES
        .iter()
        .map(|sample| parser.parse(sample.datagram, sender(), now()).unwrap())
        .collect();

    let matchers: Vec<Matcher> = [
        MatchConfig::default(),
        MatchConfig {
            types: vec![EventType::Log, EventType::Task],
            min_level: Some(Level::Warn),
            hosts: vec!["PRO2-WIN1".into()],
            subsystem_prefixes: vec!["System.".into()],
            message_contains: vec!["failed".into()],
            ..MatchConfig::default()
        },
        MatchConfig {
            levels: vec![Level::Error],
            sources: vec![Source::Scheduler, Source::Engine],
            outcomes: vec![TaskOutcome::Failed],
            ..MatchConfig::default()
        },
        MatchConfig {
            task_ids: vec!["DEC2A02A-1680-44EF-8DC2-E2BFB180AF87".into()],
            task_names: vec!["*Test*".into()],
            app_names: vec!["Test failing reloads ?".into(), "Försäljning".into()],
            users: vec!["LAB\\*".into()],
            exclude_users: vec!["sa_*".into()],
            exclude: Some(Box::new(MatchConfig {
                app_names: vec!["TEST - *".into()],
                ..MatchConfig::default()
            })),
            ..MatchConfig::default()
        },
        MatchConfig {
            methods: vec!["GenericObject::*".into()],
            object_types: vec!["bar?hart".into()],
            app_ids: vec!["e7af59a0-c243-480d-9571-08727551a66f".into()],
            ..MatchConfig::default()
        },
    ]
    .iter()
    .map(Matcher::new)
    .collect();

    let rule = |kind, value: &str| RuleConfig {
        description: String::new(),
        types: Vec::new(),
        levels: Vec::new(),
        filters: vec![FilterConfig {
            kind,
            value: value.into(),
        }],
        match_: MatchConfig {
            exclude_users: vec!["nobody".into()],
            ..MatchConfig::default()
        },
        action: Default::default(),
        categories: [("qs_log_category".to_string(), "never".to_string())].into(),
    };
    let categoriser = Categoriser::new(&CategoriseConfig {
        rules: vec![
            rule(FilterKind::StartsWith, "No message starts like this"),
            rule(FilterKind::EndsWith, "no message ends like this"),
            rule(FilterKind::Contains, "no message contains this"),
            rule(FilterKind::Regex, r"^\d{40}$"),
        ],
        default_categories: Default::default(),
    })
    .unwrap();
    // The regex engine fills its per-thread cache on first use.
    for event in &mut events {
        categoriser.apply(event);
    }

    let mut matched = 0;
    for event in &mut events {
        let (hits, count) = allocations(|| {
            matchers
                .iter()
                .filter(|matcher| matcher.matches(event))
                .count()
        });
        assert_eq!(count, 0, "{}: allocations while matching", event.tag());
        matched += hits;
        let (verdict, count) = allocations(|| categoriser.apply(event));
        assert_eq!(verdict, Verdict::Keep);
        assert!(event.categories.is_empty());
        assert_eq!(count, 0, "{}: allocations while categorising", event.tag());
    }
    // The empty table matches all; the others match some: both paths are taken.
    assert!(
        matched > events.len() && matched < 3 * events.len(),
        "{matched}"
    );
}

#[test]
fn encoding_into_a_large_enough_buffer_allocates_nothing() {
    let mut parser = warmed_up(&ParseConfig::default());
    let v6: SocketAddr = "[fe80::1%2]:61000".parse().unwrap();
    let mut out = Vec::with_capacity(64 * 1024);
    for sample in SAMPLES {
        for from in [sender(), v6] {
            let event = parser.parse(sample.datagram, from, now()).unwrap();
            out.clear();
            let ((), count) = allocations(|| event.write_json(&mut out));
            assert_eq!(count, 0, "{}: allocations while encoding", sample.kind);
            assert!(out.starts_with(b"{") && out.ends_with(b"}"));
        }
    }
}
