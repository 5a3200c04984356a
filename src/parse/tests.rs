//! Parser tests: every fixture against its expected event, the wire examples, and
//! the rules for recovering `;` inside text.

use std::path::Path;

use serde_json::Value;

use super::*;
use crate::event::{FieldKind, TimeSource};

fn parse(datagram: &[u8]) -> Result<Event, ParseError> {
    Parser::new(&ParseConfig::default()).unwrap().parse(
        datagram,
        "10.0.0.5:61000".parse().unwrap(),
        Timestamp::UNIX_EPOCH,
    )
}

fn json(event: &Event) -> Value {
    serde_json::from_str(&event.to_json()).unwrap()
}

/// Numbers compare by value (`2210.0` == `2210`), as the fixtures' README says.
fn normalise(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalise(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
        other => other,
    }
}

#[test]
fn every_fixture_parses_to_its_expected_event() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("datagrams")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("expected").join(format!("{name}.json"))).unwrap(),
        )
        .unwrap_or_else(|err| panic!("{name}: {err}"));
        let datagram = std::fs::read(&path).unwrap();
        let result = parse(&datagram);
        if let Some(reason) = expected.get("error").and_then(Value::as_str) {
            if reason == "oversized" {
                continue; // an ingest check, tested end to end
            }
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{name}: expected {reason}"));
            assert_eq!(err.reason(), reason, "{name}");
        } else {
            let event = result.unwrap_or_else(|err| panic!("{name}: {err}"));
            let mut got = json(&event);
            let object = got.as_object_mut().unwrap();
            object.remove("received_at");
            object.remove("sender");
            if object["time_source"] == "received" {
                object.remove("time");
            }
            assert_eq!(normalise(got), normalise(expected), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} fixtures checked");
}

#[test]
fn engine_message_with_semicolons_keeps_the_tail_in_place() {
    let event = parse(b"/qseow-engine/;1;20240519T120312.114+0200;2024-05-19 12:03:12,114;ERROR;h;S;U;a; b; c;;LAB;goran;;;;;;;e7af59a0-c243-480d-9571-08727551a66f").unwrap();
    assert_eq!(event.message(), Some("a; b; c"));
    assert_eq!(event.get(Field::UserId), Some("goran"));
    assert_eq!(
        event.get(Field::AppId),
        Some("e7af59a0-c243-480d-9571-08727551a66f")
    );
}

#[test]
fn proxy_exception_starts_at_the_dotnet_type_name() {
    let event = parse(b"/qseow-proxy/;88;20240519T101503.004+0200;2024-05-19 10:15:03,004;ERROR;h;System.Proxy;LAB\\svc;Connection was reset; retrying;System.IO.IOException: Unable to read; closed;;;;;;").unwrap();
    assert_eq!(event.message(), Some("Connection was reset; retrying"));
    assert_eq!(
        event.get(Field::ExceptionMessage),
        Some("System.IO.IOException: Unable to read; closed")
    );
    assert_eq!(event.get(Field::Command), None);
}

#[test]
fn without_an_exception_type_the_last_piece_is_the_exception() {
    let event = parse(b"/qseow-repository/;1;20240519T101503.004+0200;2024-05-19 10:15:03,004;WARN;h;S;U;a;b;c;;;;;;").unwrap();
    assert_eq!(event.message(), Some("a;b"));
    assert_eq!(event.get(Field::ExceptionMessage), Some("c"));
}

#[test]
fn task_name_with_a_semicolon_does_not_shift_the_guids() {
    let event = parse(b"/scheduler-task-failed/;h;Reload; nightly;Sales;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;Max retries; reached").unwrap();
    assert_eq!(event.get(Field::TaskName), Some("Reload; nightly"));
    assert_eq!(event.get(Field::AppName), Some("Sales"));
    assert_eq!(event.get(Field::UserFull), Some("LAB\\goran"));
    assert_eq!(event.message(), Some("Max retries; reached"));
    assert_eq!(
        event.get(Field::ExecutionId),
        Some("14a81bf5-f81c-4047-b1a1-193b0920de28")
    );
}

#[test]
fn scheduler_log_app_name_with_a_semicolon_is_recovered_by_shape() {
    let event = parse(b"/qseow-scheduler/;14;20211109T193744.331+0100;2021-11-09 19:37:44,331;WARN;h;S;U;msg;;LAB;goran;LAB\\goran;Reload of A;B;A;B;dec2a02a-1680-44ef-8dc2-e2bfb180af87;e7af59a0-c243-480d-9571-08727551a66f;4831c6a5-34f6-45bb-9d40-73a6e6992670").unwrap();
    assert_eq!(event.message(), Some("msg"));
    assert_eq!(event.get(Field::UserFull), Some("LAB\\goran"));
    assert_eq!(event.get(Field::TaskName), Some("Reload of A;B"));
    assert_eq!(event.get(Field::AppName), Some("A;B"));
}

#[test]
fn a_task_with_the_exact_field_count_keeps_an_id_that_is_no_guid() {
    let event = parse(b"/scheduler-reload-failed/;h;T;A;LAB\\u;nope;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;m").unwrap();
    assert_eq!(event.get(Field::TaskId), None);
    assert_eq!(event.raw(Field::TaskId), Some("nope"));
    assert_eq!(
        event.malformed_fields().collect::<Vec<_>>(),
        [Field::TaskId]
    );
    assert_eq!(event.message(), Some("m"));
    let value = json(&event);
    assert_eq!(value["malformed_fields"], serde_json::json!(["task_id"]));
}

#[test]
fn a_task_with_extra_semicolons_and_no_guid_task_id_is_rejected() {
    let err = parse(b"/scheduler-reload-failed/;h;T;A;LAB\\u;nope;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;m;n").unwrap_err();
    assert_eq!(
        err,
        ParseError::BadGuid {
            field: Field::TaskId
        }
    );
}

#[test]
fn with_extra_semicolons_the_split_that_keeps_the_ids_guids_is_taken() {
    // No split fits every shape (the time is no timestamp), but giving the
    // extra `;` to the task name keeps the task and execution ids GUIDs.
    let event = parse(b"/scheduler-reload-failed/;h;Task;x;App;LAB\\u;dec2a02a-1680-44ef-8dc2-e2bfb180af87;e7af59a0-c243-480d-9571-08727551a66f;ts;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;m").unwrap();
    assert_eq!(event.get(Field::TaskName), Some("Task;x"));
    assert_eq!(event.get(Field::AppName), Some("App"));
    assert_eq!(
        event.get(Field::TaskId),
        Some("dec2a02a-1680-44ef-8dc2-e2bfb180af87")
    );
    assert_eq!(
        event.malformed_fields().collect::<Vec<_>>(),
        [Field::TsLocal]
    );
}

#[test]
fn a_current_qix_perf_row_missing_a_field_is_not_read_as_the_older_layout() {
    // 25 pieces, as many as the older layout has, but its shapes do not fit it
    // (its RequestId would be "M", its AppId a number).
    let err = parse(b"/qseow-qix-perf/;1;20240519T143005.221+0200;2024-05-19 14:30:05,221;INFO;h;Q;LAB\\svc;0;LAB;u;2024-05-19T14:30:05.220+02:00;0;e7af59a0-c243-480d-9571-08727551a66f;1;M;1.0;1.0;0;0;0;7;o;1;2").unwrap_err();
    assert_eq!(
        err,
        ParseError::TooFewFields {
            expected: 26,
            got: 25
        }
    );
}

#[test]
fn a_qix_perf_row_without_a_host_is_kept_when_it_has_values() {
    let event = parse(b"/qseow-qix-perf/;1;20240519T143005.221+0200;2024-05-19 14:30:05,221;INFO;;Q;LAB\\svc;0;LAB;u;2024-05-19T14:30:05.220+02:00;0;e7af59a0-c243-480d-9571-08727551a66f;1;M;1.0;1.0;0;0;0;7;o;1;2;t").unwrap();
    assert_eq!(event.get(Field::Host), None);
    assert_eq!(event.get(Field::Method), Some("M"));
}

#[test]
fn qix_perf_layouts_are_told_apart_by_count_and_shape() {
    let current = parse(b"/qseow-qix-perf/;1;20240519T143005.221+0200;2024-05-19 14:30:05,221;INFO;h;Q;LAB\\svc;0;LAB;u;2024-05-19T14:30:05.220+02:00;0;e7af59a0-c243-480d-9571-08727551a66f;1;M;1.0;1.0;0;0;0;7;o;1;2;t").unwrap();
    assert_eq!(current.layout, crate::event::LayoutName::QixPerf);
    // The older layout, 25 fields, with a `;` in AnyException: 26 pieces,
    // as many as the current layout has, but EngineTimestamp would be "M".
    let legacy = parse(b"/qseow-qix-perf/;1;20240519T143005.221+0200;2024-05-19 14:30:05,221;INFO;h;Q;0;LAB;u;0;M;1;;Ex: a; b;1.0;1.0;0;0;0;e7af59a0-c243-480d-9571-08727551a66f;o;1;2;t").unwrap();
    assert_eq!(legacy.layout, crate::event::LayoutName::QixPerfLegacy);
    assert_eq!(legacy.get(Field::AnyException), Some("Ex: a; b"));
    assert_eq!(legacy.get(Field::Method), Some("M"));
    assert_eq!(legacy.malformed_fields().count(), 0);
    // Neither fits 27 pieces; only the current layout may be guessed, and it
    // has no free text.
    let err = parse(
        b"/qseow-qix-perf/;1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26",
    )
    .unwrap_err();
    assert_eq!(
        err,
        ParseError::TooManyFields {
            expected: 26,
            got: 27
        }
    );
}

#[test]
fn a_datagram_of_separators_is_rejected() {
    for datagram in [
        &b"/qseow-engine/;;;;;;;;;;;;;;;;;;"[..],
        b"/scheduler-reload-failed/;;;;;;;;;;",
        b"/qseow-proxy-session/;;;;;;;",
        b"/qseow-qix-perf/;;;;;;;;;;;;;;;;;;;;;;;;;",
    ] {
        assert_eq!(parse(datagram).unwrap_err(), ParseError::EmptyFields);
    }
    // A host, or a message, is enough to keep the event.
    assert!(parse(b"/qseow-engine/;;;;;h;;;;;;;;;;;;;").is_ok());
    assert!(parse(b"/scheduler-reload-failed/;;;;;;;;;;Max retries reached").is_ok());
}

#[test]
fn null_and_empty_properties_are_absent() {
    let event = parse(b"/qseow-proxy-session/;h;Start session;(null);;AppAccess;(null);m").unwrap();
    let value = json(&event);
    for key in [
        "user_directory",
        "user_id",
        "user_full",
        "context",
        "app_id",
    ] {
        assert!(value.get(key).is_none(), "{key} should be absent");
    }
}

#[test]
fn task_time_uses_the_configured_zone_for_its_host() {
    let config = ParseConfig {
        time_zone: Some("UTC".into()),
        host_time_zones: [("PRO2-WIN1".to_string(), "Europe/Stockholm".to_string())].into(),
        ..ParseConfig::default()
    };
    let mut parser = Parser::new(&config).unwrap();
    let sender = "10.0.0.5:1".parse().unwrap();
    let datagram = b"/scheduler-reload-failed/;pro2-win1;T;A;LAB\\u;dec2a02a-1680-44ef-8dc2-e2bfb180af87;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;m";
    let event = parser
        .parse(datagram, sender, Timestamp::UNIX_EPOCH)
        .unwrap();
    let value = json(&event);
    assert_eq!(value["time"], "2021-02-16T09:24:59.099+01:00");
    assert_eq!(value["time_source"], "event_local");
    let other = datagram.replace_host(b"other-host");
    let value = json(&parser.parse(&other, sender, Timestamp::UNIX_EPOCH).unwrap());
    assert_eq!(value["time"], "2021-02-16T09:24:59.099+00:00");
}

trait ReplaceHost {
    fn replace_host(&self, host: &[u8]) -> Vec<u8>;
}

impl ReplaceHost for [u8] {
    fn replace_host(&self, host: &[u8]) -> Vec<u8> {
        let text =
            String::from_utf8_lossy(self).replacen("pro2-win1", &String::from_utf8_lossy(host), 1);
        text.into_bytes()
    }
}

#[test]
fn without_a_zone_local_time_falls_back_to_receive_time() {
    let event = parse(b"/scheduler-reload-failed/;h;T;A;LAB\\u;dec2a02a-1680-44ef-8dc2-e2bfb180af87;;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;m").unwrap();
    assert_eq!(event.time_source, TimeSource::Received);
    assert_eq!(event.time.instant, Timestamp::UNIX_EPOCH);
}

#[test]
fn bad_compact_timestamp_falls_back_to_receive_time() {
    let event = parse(b"/qseow-engine/;1;yesterday;;ERROR;h;S;U;m;;;;;;;;;;").unwrap();
    assert_eq!(event.time_source, TimeSource::Received);
    assert_eq!(event.get(Field::TsIso), None);
    assert_eq!(event.raw(Field::TsIso), Some("yesterday"));
    assert_eq!(event.malformed_fields().collect::<Vec<_>>(), [Field::TsIso]);
}

#[test]
fn long_message_is_cut_and_flagged() {
    let config = ParseConfig {
        max_text_bytes: 10,
        ..ParseConfig::default()
    };
    let mut parser = Parser::new(&config).unwrap();
    let event = parser
        .parse(
            b"/qseow-proxy-session/;h;Start session;LAB;u;o;c;0123456789ABCDEF",
            "10.0.0.5:1".parse().unwrap(),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(event.message(), Some("0123456789"));
    assert!(event.truncated);
    assert!(event.to_json().ends_with(",\"truncated\":true}"));
}

#[test]
fn an_event_cut_from_a_long_datagram_keeps_only_what_it_uses() {
    // A 60 KB message cut to the default 16 KiB: the queued event must not
    // hold the whole datagram.
    let fixture = include_str!("../../fixtures/datagrams/engine_error.txt").trim_end();
    let long = "x".repeat(60_000);
    let datagram = fixture.replace("could not be opened: file not found", &long);
    let event = parse(datagram.as_bytes()).unwrap();
    assert!(event.truncated);
    assert_eq!(event.message().map(str::len), Some(16 * 1024));
    assert!(
        event.memory_bytes() < 16 * 1024 + 4096,
        "{} bytes",
        event.memory_bytes()
    );
    // What the event says is unchanged by keeping less: it reads like the
    // event of a datagram whose message was that long to begin with.
    let exact = parse(datagram.replace(&long, &long[..16 * 1024]).as_bytes()).unwrap();
    let mut expected = json(&exact);
    expected["truncated"] = Value::Bool(true);
    assert_eq!(json(&event), expected);
}

#[test]
fn unknown_level_is_kept_raw() {
    let event =
        parse(b"/qseow-engine/;1;20240519T120312.114+0200;;VERBOSE;h;S;U;m;;;;;;;;;;").unwrap();
    assert_eq!(event.level, None);
    assert_eq!(json(&event)["raw_fields"]["level"], "VERBOSE");
}

#[test]
fn junk_is_rejected_with_a_reason() {
    assert_eq!(parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b"\r\n").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b"hello world").unwrap_err(), ParseError::UnknownTag);
    assert_eq!(
        parse(b"/qseow-engine/;1;2").unwrap_err(),
        ParseError::TooFewFields {
            expected: 19,
            got: 3
        }
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::event::Level;
    use layout::{Layout, Slot, TAGS};

    /// Every layout, with one of its tags.
    static ALL_LAYOUTS: std::sync::LazyLock<Vec<(&'static str, &'static Layout)>> =
        std::sync::LazyLock::new(|| {
            let mut all: Vec<(&str, &Layout)> = Vec::new();
            for (tag, layouts) in &TAGS {
                for layout in *layouts {
                    if !all.iter().any(|(_, seen)| std::ptr::eq(*seen, *layout)) {
                        all.push((tag, layout));
                    }
                }
            }
            all
        });

    /// A datagram and the values it was built from.
    struct Built {
        datagram: String,
        level: Option<Level>,
        fields: Vec<(Field, String)>,
    }

    /// A small generator for the fixed values (their shapes are the point,
    /// not their variety).
    struct Values(u64);

    impl Values {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn guid(&mut self) -> String {
            let a = self.next();
            let b = self.next();
            format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                b >> 52,
                b & 0xffff_ffff_ffff
            )
        }

        fn word(&mut self) -> String {
            const WORDS: [&str; 6] = ["pro2-win1", "Engine", "GetLayout", "x7Yz", "hub", "LAB"];
            WORDS[(self.next() % 6) as usize].to_string()
        }

        /// A value of `field`'s shape, never empty.
        fn value(&mut self, field: Field) -> String {
            match field {
                Field::UserFull => format!("{}\\{}", self.word(), self.word()),
                Field::TsIso => "20240519T120312.114+0200".into(),
                Field::TsLocal => "2024-05-19 12:03:12,114".into(),
                Field::EngineTs | Field::ServerStarted => "2024-05-19T12:03:12.113+02:00".into(),
                _ => match field.kind() {
                    FieldKind::Guid => self.guid(),
                    FieldKind::GuidOrText if self.next().is_multiple_of(2) => "0".into(),
                    FieldKind::GuidOrText => self.guid(),
                    FieldKind::Integer => (self.next() % 100_000).to_string(),
                    FieldKind::Decimal => format!("{}.{}", self.next() % 5000, self.next() % 10),
                    FieldKind::Timestamp => "2024-05-19 12:03:12,114".into(),
                    FieldKind::Text => self.word(),
                },
            }
        }
    }

    /// The datagram of `layout` with generated fixed values and the `free`
    /// texts in its free slots; `;` stay only in the chosen slot.
    fn build(
        tag: &str,
        layout: &Layout,
        free: &[String],
        semicolons_in: usize,
        seed: u64,
    ) -> Built {
        let mut values = Values(seed | 1);
        // The slots that may hold extra `;` without doubt: the first to take
        // them, and a task name.
        let free_slots: Vec<usize> = layout
            .free_priority
            .iter()
            .copied()
            .filter(|&slot| {
                slot == layout.free_priority[0] || layout.slots[slot] == Slot::Free(Field::TaskName)
            })
            .collect();
        let chosen = free_slots
            .get(semicolons_in % free_slots.len().max(1))
            .copied();
        let mut texts = free.iter();
        let mut text_for = |slot: usize| {
            let text = texts.next().cloned().unwrap_or_default();
            if Some(slot) == chosen {
                // Empty pieces next to a `;` could sit on either side of it.
                let pieces: Vec<&str> = text
                    .split(';')
                    .map(str::trim)
                    .filter(|piece| !piece.is_empty())
                    .collect();
                pieces.join(";")
            } else {
                text.replace(';', " ").trim().to_string()
            }
        };
        let mut pieces = vec![tag.to_string()];
        let mut level = None;
        let mut fields = Vec::new();
        for (index, slot) in layout.slots.iter().enumerate() {
            match *slot {
                Slot::Tag => {}
                Slot::Level => {
                    let levels = [Level::Info, Level::Warn, Level::Error];
                    let picked = levels[(values.next() % 3) as usize];
                    level = Some(picked);
                    pieces.push(picked.as_str().to_string());
                }
                Slot::Fixed(field) | Slot::Required(field) => {
                    let value = values.value(field);
                    pieces.push(value.clone());
                    fields.push((field, value));
                }
                Slot::Free(field) => {
                    let text = text_for(index);
                    pieces.push(text.clone());
                    fields.push((field, text));
                }
                Slot::MessageException => {
                    // The exception holds no `;` and starts like no .NET type.
                    let message = text_for(index);
                    let exception = text_for(usize::MAX).replace(';', " ");
                    pieces.push(message.clone());
                    pieces.push(exception.clone());
                    fields.push((Field::Message, message));
                    fields.push((Field::ExceptionMessage, exception));
                }
            }
        }
        Built {
            datagram: pieces.join(";"),
            level,
            fields,
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_fields_behind_a_known_tag_never_panic(
            tag in proptest::sample::select(layout::TAGS.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
            fields in proptest::collection::vec("[^;]{0,12}", 0..40),
        ) {
            let datagram = format!("{tag};{}", fields.join(";"));
            if let Ok(event) = parse(datagram.as_bytes()) {
                let value: Value = serde_json::from_str(&event.to_json()).unwrap();
                prop_assert!(value.is_object());
            }
        }

        /// A datagram built from a known layout, with arbitrary free text
        /// (`;` included) in the one free slot the rules let hold extra `;`
        /// without doubt (the first to take them, or a task name), parses
        /// back to the layout and every value it was built from.
        #[test]
        fn a_datagram_built_from_a_layout_parses_back_to_its_fields(
            which in 0..ALL_LAYOUTS.len(),
            free in proptest::collection::vec("[a-zA-Z0-9 ';:]{0,24}", 3),
            semicolons_in in 0..2usize,
            seed in any::<u64>(),
        ) {
            let (tag, layout) = ALL_LAYOUTS[which];
            let built = build(tag, layout, &free, semicolons_in, seed);
            let event = parse(built.datagram.as_bytes())
                .map_err(|err| TestCaseError::fail(format!("{err}: {}", built.datagram)))?;
            prop_assert_eq!(event.layout, layout.name, "{}", &built.datagram);
            prop_assert_eq!(event.tag(), tag);
            prop_assert_eq!(event.level, built.level, "{}", &built.datagram);
            for (field, value) in &built.fields {
                let expected = (!value.is_empty()).then_some(value.as_str());
                prop_assert_eq!(event.get(*field), expected, "{:?} in {}", field, &built.datagram);
            }
            prop_assert_eq!(event.malformed_fields().count(), 0, "{}", &built.datagram);
        }

        /// Values the encoder copies as they are (no byte to escape, as the
        /// parser's scan found) are written exactly as escaping every value
        /// writes them, whatever quotes, backslashes, tabs and non-ASCII text
        /// the fields hold and wherever they fall in the datagram: in
        /// datagrams of every layout, and in arbitrary fields behind a tag.
        #[test]
        fn values_copied_as_they_are_are_written_as_escaping_writes_them(
            which in 0..ALL_LAYOUTS.len(),
            free in proptest::collection::vec("[a-z ;é]{0,8}[\"\\\\\t]?[a-z é]{0,8}", 3),
            semicolons_in in 0..2usize,
            seed in any::<u64>(),
            tag in proptest::sample::select(layout::TAGS.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
            fields in proptest::collection::vec("[ -~\t\"\\\\é]{0,20}", 0..40),
        ) {
            let (layout_tag, layout) = ALL_LAYOUTS[which];
            let built = build(layout_tag, layout, &free, semicolons_in, seed);
            let event = parse(built.datagram.as_bytes())
                .map_err(|err| TestCaseError::fail(format!("{err}: {}", built.datagram)))?;
            prop_assert_eq!(event.to_json(), event.to_json_escaping_every_value(), "{}", &built.datagram);
            let datagram = format!("{tag};{}", fields.join(";"));
            if let Ok(event) = parse(datagram.as_bytes()) {
                prop_assert_eq!(event.to_json(), event.to_json_escaping_every_value(), "{}", &datagram);
            }
        }

        #[test]
        fn every_event_is_valid_json(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut datagram = b"/qseow-proxy-session/;h;Start session;LAB;u;o;/app/".to_vec();
            datagram.extend_from_slice(&bytes);
            if let Ok(event) = parse(&datagram) {
                prop_assert!(serde_json::from_str::<Value>(&event.to_json()).is_ok());
            }
        }
    }
}
