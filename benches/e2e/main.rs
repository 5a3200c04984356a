//! End-to-end throughput: the highest steady rate each receiver takes with zero
//! loss, in the same run on the same machine:
//!
//! * `drain`: a bare receiver (`recvmmsg` into a counter, herald's own socket
//!   code and options): receiving alone;
//! * `floor`: the drain writing, for every datagram, a line as long as herald's
//!   JSON for the mix with herald's own file writer and the file sink's
//!   defaults (batches of up to 1,000 lines, rotation, write-behind, a sync
//!   at most once a second): receiving and writing with nothing parsed or
//!   encoded;
//! * herald as shipped (`file`): the file sink with its default rotation, sync
//!   and queues, the headline; then one change each: `null` (nothing written),
//!   `file-no-rotation`, `file-disk` and `null-disk` (a disk buffer);
//!   `file-pair` and `null-pair`: two instances sharing the port
//!   (`ingest.reuse_port`), their CPU and memory summed;
//! * `rsyslog`: `rsyslogd` with `imudp` (large receive buffer) writing every
//!   message to a file, the C tool admins would otherwise pick.
//!
//! The sender is `herald send --file` in a process of its own, sending from 16
//! source ports in turn as the services of Sense nodes do. For each
//! receiver the rate is stepped over fixed-length runs until datagrams are lost
//! (received < sent, or the kernel dropped any) in two runs in a row, then
//! bisected the same way. A run starts once herald has delivered what earlier
//! runs left queued (a disk buffer can hold much more than one run's
//! settling time). Reported per
//! receiver: zero-loss rate and its ratio to the drain's, CPU % and CPU time per
//! datagram at that rate, the sender's CPU per datagram and the cores both
//! used, peak RSS, what is lost at twice that rate by cause, and for herald
//! the p50/p99 latency from receive to sink at half that rate; then herald as
//! shipped against its targets (rsyslog's rate, the drain's rate and CPU),
//! what the floor costs against the drain, and the CPU budget behind the
//! rates (receiver and sender share the machine's cores). The table goes to `BENCHMARKS.md` with the machine.
//!
//! Two more tables, each its own row key: `sense-rates` (herald as shipped
//! and rsyslog at 100 to 50,000 datagrams a second, CPU per datagram of the
//! whole process) and `bursts` (the drain, herald as shipped and rsyslog
//! taking a stream of 1,000 datagrams a second with a burst of 10,000 to
//! 20,000 sent into it as fast as the sender goes: what a receiver that rests
//! between reads at slow rates loses when a burst comes meanwhile).
//!
//! Run: `cargo bench --bench e2e` (needs `rsyslogd` from Debian's `rsyslog`;
//! without it the rsyslog row says so). `HERALD_BENCH_SECONDS` sets the run
//! length (default 3); `HERALD_BENCH_ONLY=drain,file,rsyslog` runs only those
//! rows and prints the report without writing `BENCHMARKS.md`;
//! `HERALD_BENCH_BINARY` measures another herald build with the same sender
//! (and prints the report only); `HERALD_BENCH_WRITE_MIX=<file>` only writes
//! the datagram mix to `<file>`, a datagram a line, for counting instructions
//! on it (see `tests/instructions.rs`).
//!
//! This file holds the datagram mix and the order of the rows; [`receivers`]
//! starts and reads each receiver, [`runs`] sends and steps the rate,
//! [`sense`] measures the two tables at Sense's own rates, [`report`] writes
//! the figures, and [`readings`] is what they read off `/proc`.

mod readings;
mod receivers;
mod report;
mod runs;
mod sense;

use std::fmt::Write as _;
use std::path::Path;

use herald::send::SAMPLES;

use receivers::Target;
use receivers::counted::{self, Counted};
use receivers::herald::{Herald, Pair, Setup};
use receivers::rsyslog::Rsyslog;
use report::Results;
use runs::{measure, run};

/// Where the hand-written study in `BENCHMARKS.md` starts; a run keeps it.
const STUDY_MARKER: &str =
    "<!-- Everything above is written by `cargo bench --bench e2e`; what follows is kept. -->";

/// The datagram mix: every sample kind plus long messages, 200–700 bytes.
fn datagram_mix() -> Vec<Vec<u8>> {
    let mut mix: Vec<Vec<u8>> = SAMPLES.iter().map(|s| s.datagram.to_vec()).collect();
    let padding = " Additional details: the engine could not open the document because the file share did not answer in time;";
    for (kind, target_len) in [
        ("engine", 680),
        ("scheduler", 620),
        ("proxy", 520),
        ("engine-reload-failed", 400),
    ] {
        let base = SAMPLES
            .iter()
            .find(|s| s.kind == kind)
            .expect("sample")
            .datagram;
        let text = String::from_utf8_lossy(base).into_owned();
        // Lengthen the free-text message (the field after the 8th `;` for log
        // events, the last field for the others) without touching other fields.
        let fields: Vec<&str> = text.split(';').collect();
        let index = if kind == "engine-reload-failed" {
            fields.len() - 1
        } else {
            8
        };
        let mut long: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        while long.join(";").len() < target_len {
            long[index].push_str(padding);
        }
        // Cut the message, not the datagram: the fields after it (ids,
        // timestamps) stay whole, as Sense sends them.
        let length = target_len.max(text.len());
        let over = long.join(";").len() - length;
        let message = &mut long[index];
        message.truncate(message.len() - over);
        let joined = long.join(";");
        assert_eq!(joined.len(), length);
        mix.push(joined.into_bytes());
    }
    for datagram in &mut mix {
        if datagram.len() < 200 {
            // The shortest sample: pad its message to the 200-byte floor.
            while datagram.len() < 200 {
                datagram.extend_from_slice(b" (retry)");
            }
        }
    }
    mix
}

/// How many times in a row each datagram of the mix is sent.
pub(crate) const MIX_RUN: usize = 8;

/// Source ports the sender sends from in turn.
pub(crate) const SENDER_SOCKETS: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if counted::run_as_receiver(&args[1..]) {
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        // cargo test/bench --list probes: nothing to list.
        return;
    }
    let seconds: f64 = std::env::var("HERALD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // `HERALD_BENCH_ONLY=drain,file,rsyslog` runs only those rows (for
    // profiling); BENCHMARKS.md is written only by a run of every row.
    let only: Option<Vec<String>> = std::env::var("HERALD_BENCH_ONLY")
        .ok()
        .map(|list| list.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |row: &str| {
        only.as_ref()
            .is_none_or(|only| only.iter().any(|o| o == row))
    };
    let datagrams = datagram_mix();
    if let Some(path) = std::env::var_os("HERALD_BENCH_WRITE_MIX") {
        // The mix as it is sent (each datagram `MIX_RUN` times in a row, so
        // the parser's caches hit as often), a datagram a line, for
        // `examples/instructions` (see `tests/instructions.rs`); nothing is
        // measured.
        let lines: Vec<&[u8]> = datagrams
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.as_slice(), MIX_RUN))
            .collect();
        std::fs::write(&path, lines.join(&b'\n')).expect("write the mix");
        return;
    }
    let lengths: Vec<usize> = datagrams.iter().map(Vec::len).collect();
    let mut log = String::new();
    let mut outcomes = Vec::new();

    let dir = tempfile::tempdir().expect("temp dir");
    // The mix as `herald send --file` reads it: one datagram per line, each
    // kind eight times in a row so that the sender can hand runs of equal
    // length to the kernel as one segmented send (it could not otherwise
    // outrun the receivers it measures on two cores).
    let mix = dir.path().join("mix.txt");
    let lines: Vec<&[u8]> = datagrams
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.as_slice(), MIX_RUN))
        .collect();
    std::fs::write(&mix, lines.join(&b'\n')).expect("write the mix");
    if wanted("drain") {
        let drain = Counted::drain(dir.path());
        outcomes.push(measure(&drain, &mix, seconds, &mut log));
    }
    let line_bytes = counted::json_line_bytes(&datagrams);
    if wanted("floor") {
        let floor = Counted::floor(dir.path(), line_bytes);
        outcomes.push(measure(&floor, &mix, seconds, &mut log));
    }
    let setups = [
        ("file", Setup::File),
        ("null", Setup::Null),
        ("file-no-rotation", Setup::FileNoRotation),
        ("file-disk", Setup::FileDisk),
        ("null-disk", Setup::NullDisk),
    ];
    for (row, setup) in setups {
        if wanted(row) {
            let herald = Herald::start(setup);
            outcomes.push(measure(&herald, &mix, seconds, &mut log));
        }
    }
    // Two instances sharing the port (docs/SCALING.md).
    for (row, setup) in [("file-pair", Setup::File), ("null-pair", Setup::Null)] {
        if wanted(row) {
            let pair = Pair::start(setup);
            outcomes.push(measure(&pair, &mix, seconds, &mut log));
        }
    }
    // Memory at a steady 100k events/s with the shipped defaults, in a fresh
    // process.
    let steady_rss = wanted("file").then(|| {
        let herald = Herald::start(Setup::File);
        let _ = run(&herald, &mix, 100_000.0, seconds.max(5.0));
        let rss = herald
            .pids()
            .into_iter()
            .map(readings::peak_rss_mib)
            .sum::<f64>();
        let _ = writeln!(
            log,
            "{}: peak RSS {rss:.1} MiB after a steady 100000/s run",
            Setup::File.label()
        );
        rss
    });
    // CPU at the rates a Sense site sends, herald as shipped and rsyslog.
    let sense = if wanted("sense-rates") {
        let herald = Herald::start(Setup::File);
        let herald_us = sense::sense_rates(&herald, &mix, &mut log);
        drop(herald);
        let rsyslog_us =
            Rsyslog::start().map(|rsyslog| sense::sense_rates(&rsyslog, &mix, &mut log));
        sense::sense_table(&herald_us, rsyslog_us.as_deref())
    } else {
        String::new()
    };
    // Bursts into a slow stream: the drain, herald as shipped and rsyslog.
    let bursts = if wanted("bursts") {
        let mut columns: Vec<(&str, Option<Vec<Vec<u64>>>)> = Vec::new();
        let mut fastest = 0.0f64;
        let mut measure_bursts = |target: &dyn Target, log: &mut String| {
            let (lost, rate) = sense::bursts(target, &mix, log);
            fastest = fastest.max(rate);
            lost
        };
        let drain = Counted::drain(dir.path());
        columns.push(("drain", Some(measure_bursts(&drain, &mut log))));
        drop(drain);
        let herald = Herald::start(Setup::File);
        columns.push(("herald as shipped", Some(measure_bursts(&herald, &mut log))));
        drop(herald);
        let rsyslog = Rsyslog::start().map(|rsyslog| measure_bursts(&rsyslog, &mut log));
        columns.push(("rsyslog", rsyslog));
        sense::bursts_table(&columns, fastest)
    } else {
        String::new()
    };
    let mut rsyslog_missing = false;
    if wanted("rsyslog") {
        match Rsyslog::start() {
            Some(rsyslog) => outcomes.push(measure(&rsyslog, &mix, seconds, &mut log)),
            None => rsyslog_missing = true,
        }
    }
    let report = report::render(&Results {
        outcomes,
        rsyslog_missing,
        steady_rss,
        sense,
        bursts,
        log,
        seconds,
        kinds: datagrams.len(),
        shortest: lengths.iter().copied().min().unwrap_or(0),
        longest: lengths.iter().copied().max().unwrap_or(0),
        line_bytes,
    });
    if only.is_some() || std::env::var_os("HERALD_BENCH_BINARY").is_some() {
        println!("{report}");
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    // The study below the marker is written by hand; a run replaces only the
    // figures above it.
    let study = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.find(STUDY_MARKER).map(|at| text[at..].to_string()))
        .unwrap_or_default();
    std::fs::write(&path, format!("{report}\n{study}")).expect("write BENCHMARKS.md");
    println!("{report}");
}
