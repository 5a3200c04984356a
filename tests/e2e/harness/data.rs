//! Test data: files of JSON lines, failed-task datagrams, the fixtures and
//! samples with their expected events, JSON comparison, base64 and a seeded PRNG.

use super::*;

/// Lines in a file (0 when it does not exist).
pub fn count_lines(path: &Path) -> usize {
    fs::read(path)
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// A file's complete JSON lines; a line that is not JSON fails the test.
pub fn read_json_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    whole_lines(&text)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: not JSON ({err}): {line}", path.display()))
        })
        .collect()
}

/// The complete lines of `text`: a writer may be in the middle of the last one.
pub fn whole_lines(text: &str) -> &str {
    &text[..text.rfind('\n').map_or(0, |end| end + 1)]
}

/// The task id the alert tests' failed-task datagrams carry.
pub const TASK: &str = "dec2a02a-1680-44ef-8dc2-e2bfb180af87";

/// Execution id number `n` of a task (a GUID ending in `n`).
pub fn execution(n: usize) -> String {
    format!("14a81bf5-f81c-4047-b1a1-{n:012x}")
}

/// A failed-task datagram (`/scheduler-reload-failed/`) for task `task_id` with
/// execution `execution_id`.
pub fn task_failure(task_name: &str, task_id: &str, execution_id: &str, message: &str) -> Vec<u8> {
    format!(
        "/scheduler-reload-failed/;pro2-win1;{task_name};Sales;LAB\\goran;{task_id};e7af59a0-c243-480d-9571-08727551a66f;2021-02-16 09:24:59,099;INFO;{execution_id};{message}"
    )
    .into_bytes()
}

/// A fixture: its name, datagram bytes and expected JSON.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File stem, e.g. `engine_error`.
    pub name: String,
    /// The datagram, byte for byte.
    pub datagram: Vec<u8>,
    /// `expected/<name>.json`.
    pub expected: Value,
}

impl Fixture {
    /// The reject reason, when the fixture must be rejected.
    pub fn error(&self) -> Option<&str> {
        self.expected.get("error").and_then(Value::as_str)
    }
}

/// Every fixture pair in `fixtures/`, sorted by name.
pub fn fixtures() -> Vec<Fixture> {
    let dir = repo_root().join("fixtures");
    let mut out = Vec::new();
    for entry in fs::read_dir(dir.join("datagrams")).expect("fixtures/datagrams") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("fixture name")
            .to_string();
        let expected_path = dir.join("expected").join(format!("{name}.json"));
        let expected: Value = serde_json::from_str(
            &fs::read_to_string(&expected_path)
                .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display())),
        )
        .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display()));
        out.push(Fixture {
            datagram: fs::read(&path).expect("read fixture"),
            name,
            expected,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The fixture named `name`.
pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// The twelve `herald send` samples in its order: fixture name, event type, tag.
pub const SAMPLES: [(&str, &str, &str); 12] = [
    ("engine_error", "log", "/qseow-engine/"),
    ("proxy_warn", "log", "/qseow-proxy/"),
    ("repository_warn", "log", "/qseow-repository/"),
    ("scheduler_warn", "log", "/qseow-scheduler/"),
    ("qix_perf_user", "qix_perf", "/qseow-qix-perf/"),
    ("session_start", "session", "/qseow-proxy-session/"),
    ("connection_open", "connection", "/qseow-proxy-connection/"),
    ("task_reload_failed", "task", "/scheduler-reload-failed/"),
    ("task_aborted", "task", "/scheduler-task-aborted/"),
    (
        "task_success_double_slash",
        "task",
        "/scheduler-task-success//",
    ),
    ("task_distribute", "task", "/scheduler-distribute/"),
    (
        "engine_reload_failed",
        "engine_reload_failed",
        "/engine-reload-failed/",
    ),
];

/// The datagrams of [`SAMPLES`], in order.
pub fn sample_datagrams() -> Vec<Vec<u8>> {
    SAMPLES
        .iter()
        .map(|(name, _, _)| fixture(name).datagram)
        .collect()
}

/// `actual` with `received_at` and `sender` removed, and `time` removed when
/// `time_source` is `received` (the fixtures README's normalisation).
pub fn normalise(actual: &Value) -> Value {
    let mut value = actual.clone();
    let object = value.as_object_mut().expect("event is a JSON object");
    object.remove("received_at");
    object.remove("sender");
    if object.get("time_source").and_then(Value::as_str) == Some("received") {
        object.remove("time");
    }
    value
}

/// Compares JSON values with numbers compared as `f64`; returns the first difference.
pub fn json_difference(path: &str, actual: &Value, expected: &Value) -> Option<String> {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            (a.as_f64() != e.as_f64()).then(|| format!("{path}: {a} != expected {e}"))
        }
        (Value::Object(a), Value::Object(e)) => {
            let a_keys: Vec<&String> = a.keys().collect();
            let e_keys: Vec<&String> = e.keys().collect();
            let mut a_sorted = a_keys.clone();
            let mut e_sorted = e_keys.clone();
            a_sorted.sort();
            e_sorted.sort();
            if a_sorted != e_sorted {
                let extra: Vec<_> = a_sorted.iter().filter(|k| !e.contains_key(**k)).collect();
                let missing: Vec<_> = e_sorted.iter().filter(|k| !a.contains_key(**k)).collect();
                return Some(format!(
                    "{path}: extra keys {extra:?}, missing keys {missing:?}"
                ));
            }
            e.iter()
                .find_map(|(k, ev)| json_difference(&format!("{path}.{k}"), &a[k], ev))
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Some(format!("{path}: {} items != expected {}", a.len(), e.len()));
            }
            a.iter()
                .zip(e)
                .enumerate()
                .find_map(|(i, (av, ev))| json_difference(&format!("{path}[{i}]"), av, ev))
        }
        _ => (actual != expected).then(|| format!("{path}: {actual} != expected {expected}")),
    }
}

/// Standard base64 (with or without padding) to bytes.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not a base64 character: {:?}", c as char),
        }
    }
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    assert_ne!(digits.len() % 4, 1, "truncated base64: {text}");
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A small seeded PRNG (xorshift64*), so random input is the same every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `range`.
    pub fn below(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + (self.next_u64() % (range.end - range.start) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

#[test]
fn harness_json_comparison_reports_keys_and_compares_numbers_by_value() {
    let expected = serde_json::json!({"a": 2210.0, "b": "x", "raw": {"c": "n/a"}});
    let same = serde_json::json!({"a": 2210, "b": "x", "raw": {"c": "n/a"}});
    assert_eq!(json_difference("", &same, &expected), None);
    let extra = serde_json::json!({"a": 2210, "b": "x", "raw": {"c": "n/a"}, "d": 1});
    assert!(
        json_difference("", &extra, &expected)
            .unwrap()
            .contains("extra keys [\"d\"]")
    );
    let missing = serde_json::json!({"a": 2210, "raw": {"c": "n/a"}});
    assert!(
        json_difference("", &missing, &expected)
            .unwrap()
            .contains("missing keys [\"b\"]")
    );
    let nested = serde_json::json!({"a": 2210, "b": "x", "raw": {"c": "n/b"}});
    assert!(
        json_difference("", &nested, &expected)
            .unwrap()
            .starts_with(".raw.c")
    );
    let number = serde_json::json!({"a": "2210", "b": "x", "raw": {"c": "n/a"}});
    assert!(json_difference("", &number, &expected).is_some());
    let event = serde_json::json!({"time": "t", "time_source": "received", "sender": "s", "received_at": "r"});
    assert_eq!(
        normalise(&event),
        serde_json::json!({"time_source": "received"})
    );
}

#[test]
fn harness_base64_decoder_round_trips_the_standard_vectors() {
    assert_eq!(base64_decode(""), b"");
    assert_eq!(base64_decode("Zg=="), b"f");
    assert_eq!(base64_decode("Zm8="), b"fo");
    assert_eq!(base64_decode("Zm9v"), b"foo");
    assert_eq!(base64_decode("//4A"), b"\xff\xfe\x00");
    assert_eq!(base64_decode("L2p1bmsvO/8iCg=="), b"/junk/;\xff\"\n");
}

/// The smallest valid config: one listener, loopback allowed, one file sink
/// (`events.jsonl`), for tests of the config itself.
pub const MINIMAL_CONFIG: &str = r#"
[ingest]
listen = ["127.0.0.1:9996"]
allow = ["127.0.0.0/8"]

[sinks.events]
type = "file"
path = "events.jsonl"
"#;
