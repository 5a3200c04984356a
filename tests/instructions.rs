//! A regression guard on speed that is not a timing test: the instructions
//! herald executes per datagram to parse, categorise, route and encode the
//! fixture mix with the service config (`examples/instructions.rs`), counted
//! by callgrind, which is exact where the clock on a shared machine is not.
//!
//! The figure must stay under the ceiling in `tests/instructions.toml`. A
//! change that makes the hot path slower fails here; one that makes it much
//! faster is told (in the test's output) to lower the ceiling, so that the
//! guard follows the code down. The work itself is checked too: a change that
//! got cheaper by parsing or writing less fails.
//!
//! Needs `valgrind`: without it the test fails under CI and says "skipped"
//! elsewhere. It builds the example in the release profile on first use.
//!
//! `HERALD_INSTRUCTIONS_MIX=<file or directory>` counts another mix instead
//! and prints its figure without holding it to the ceiling, which is for the
//! fixtures: the benchmark's own mix, for one, which
//! `HERALD_BENCH_WRITE_MIX=<file> cargo bench --bench e2e` writes. The
//! figure is printed to standard error: run with `-- --nocapture` to see it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How far under the ceiling a figure may fall before the test asks for the
/// ceiling to come down.
const LOWER_THE_CEILING_BELOW: f64 = 0.85;

#[test]
fn parse_route_encode_stays_under_its_instruction_ceiling() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is needed for the instruction-count guard: apt-get install valgrind"
        );
        eprintln!("skipped: valgrind is not installed (apt-get install valgrind)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = build_example(root);
    let other_mix = std::env::var_os("HERALD_INSTRUCTIONS_MIX").map(PathBuf::from);
    let fixtures = other_mix
        .clone()
        .unwrap_or_else(|| root.join("fixtures/datagrams"));
    let config = root.join("packaging/herald.toml");
    // Ten rounds less one: what start-up and the first touch of each path cost
    // is in both and drops out.
    let (one, mix) = count(&example, &fixtures, &config, 1);
    let (eleven, again) = count(&example, &fixtures, &config, 11);
    assert_eq!(mix, again, "the same work in both runs");
    let datagrams = mix.datagrams;
    if let Some(other) = &other_mix {
        assert!(
            eleven > one && mix.events > 0,
            "callgrind counted nothing in `workload`, or no datagram of {} became an event",
            other.display()
        );
        eprintln!(
            "{:.0} instructions per datagram (parse + route + encode, {datagrams} datagrams of {}, \
             {} events, {:.0} bytes of JSON an event); not held to the ceiling, which is for the \
             fixtures",
            (eleven - one) as f64 / (10 * datagrams) as f64,
            other.display(),
            mix.events,
            mix.bytes as f64 / mix.events as f64,
        );
        return;
    }
    assert!(datagrams > 30, "only {datagrams} fixtures");
    // Every fixture that parses becomes an event the file sink takes, and its
    // JSON is written: fewer means the work changed, not its speed.
    assert!(
        mix.events * 10 >= datagrams * 7 && mix.bytes >= mix.events * 300,
        "only {} of {datagrams} fixtures became events ({} bytes of JSON)",
        mix.events,
        mix.bytes
    );
    assert!(
        eleven > one && one > 0,
        "callgrind counted nothing in `workload` ({one}, {eleven}): was it renamed or inlined?"
    );
    let per_datagram = (eleven - one) as f64 / (10 * datagrams) as f64;

    let ceiling_file = root.join("tests/instructions.toml");
    let text = std::fs::read_to_string(&ceiling_file).expect("tests/instructions.toml");
    let table: toml::Table = toml::from_str(&text).expect("tests/instructions.toml is TOML");
    let ceiling = table
        .get("per_datagram_ceiling")
        .and_then(toml::Value::as_integer)
        .expect("per_datagram_ceiling") as f64;
    eprintln!(
        "{per_datagram:.0} instructions per datagram (parse + route + encode, {datagrams} fixtures); ceiling {ceiling:.0}"
    );
    assert!(
        per_datagram <= ceiling,
        "{per_datagram:.0} instructions per datagram, above the ceiling of {ceiling:.0} in \
         tests/instructions.toml: the hot path got {:.1} % slower. Find what (valgrind \
         --tool=callgrind on examples/instructions.rs) before raising the ceiling.",
        (per_datagram / ceiling - 1.0) * 100.0
    );
    if per_datagram < ceiling * LOWER_THE_CEILING_BELOW {
        // Not a failure (a new compiler can do this too), but said where a
        // test run shows it.
        eprintln!(
            "note: {per_datagram:.0} instructions per datagram, well under the ceiling of \
             {ceiling:.0}: lower per_datagram_ceiling in tests/instructions.toml to about {:.0} \
             (5 % above this figure) so that the guard keeps what was won",
            per_datagram * 1.05
        );
    }
}

/// Builds `examples/instructions.rs` in the release profile; its path.
fn build_example(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--example",
            "instructions",
            "--message-format=json",
        ])
        .current_dir(root);
    let output = run(&mut command, "building examples/instructions.rs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "instructions"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo named the example's executable")
}

/// Runs `command` to its end; fails the test, with its error output, unless
/// it succeeded.
fn run(command: &mut Command, what: &str) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run it: {err}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What the example reports of its work: datagrams in the mix, events a sink
/// took and bytes of JSON, per round.
#[derive(Debug, PartialEq, Eq)]
struct Work {
    datagrams: usize,
    events: usize,
    bytes: usize,
}

/// Instructions callgrind counts inside `workload` for `rounds` rounds, and
/// the work done.
fn count(example: &Path, fixtures: &Path, config: &Path, rounds: usize) -> (u64, Work) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.path().display()))
        .arg("--toggle-collect=*instructions::workload*")
        .arg(example)
        .arg(fixtures)
        .arg(config)
        .arg(rounds.to_string());
    let output = run(&mut command, "callgrind");
    let printed: Vec<usize> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [datagrams, events, bytes] = printed[..] else {
        panic!("the example prints datagrams, events and bytes; it printed {printed:?}");
    };
    let profile = std::fs::read_to_string(out.path()).expect("callgrind's output");
    let total = profile
        .lines()
        .find_map(|line| {
            line.strip_prefix("summary: ")
                .or_else(|| line.strip_prefix("totals: "))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("callgrind's total");
    (
        total,
        Work {
            datagrams,
            events,
            bytes,
        },
    )
}
