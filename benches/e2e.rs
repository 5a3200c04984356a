//! End-to-end throughput: the highest steady rate each receiver takes with zero
//! loss, in the same run on the same machine:
//!
//! * `drain`: a bare receiver (`recvmmsg` into a counter, herald's own socket
//!   code and options): receiving alone;
//! * `floor`: the drain writing, for every datagram, a line as long as herald's
//!   JSON for the mix through the page cache as herald's file sink writes
//!   (one `write` a read, write-behind, a sync every second, a new file every
//!   100 MiB): receiving and writing with no parsing or encoding, what any
//!   receiver that writes this JSON to a file costs at least;
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
//! shipped against its targets (rsyslog's rate, the drain's rate and CPU) and
//! the CPU budget behind the rates (receiver and sender share the machine's
//! cores). The table goes to `BENCHMARKS.md` with the machine.
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
//! (and prints the report only).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::send::SAMPLES;

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 here).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the processes have used together.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// Bytes the processes have caused to be written, together.
fn written_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| written_bytes(pid)).sum()
}

/// Bytes a process has caused to be written to storage (its page-cache writes
/// as they reach the disk layer), from `/proc/<pid>/io`.
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Peak resident set size of a process, in MiB.
/// The rates of the "Sense rates" table: what a Qlik Sense site sends, from
/// a quiet one to a busy one in a burst.
const SENSE_RATES: [f64; 4] = [100.0, 1_000.0, 10_000.0, 50_000.0];

/// Seconds of sending at each of [`SENSE_RATES`].
const SENSE_SECONDS: f64 = 5.0;

/// Nanoseconds every thread of `pids` has run (`/proc/<pid>/task/*/schedstat`):
/// at 100 datagrams a second a receiver runs tens of milliseconds a run,
/// finer than the clock ticks of `/proc/<pid>/stat`.
fn run_time_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU per datagram (µs) of `target`'s whole process at each of
/// [`SENSE_RATES`]: its run time over the sending and half a second after.
fn sense_rates(target: &dyn Target, mix: &Path, log: &mut String) -> Vec<f64> {
    SENSE_RATES
        .iter()
        .map(|&rate| {
            let before = run_time_ns(&target.pids());
            let sent = send_from_process(mix, target.port(), rate, SENSE_SECONDS);
            std::thread::sleep(Duration::from_millis(500));
            let ran = run_time_ns(&target.pids()).saturating_sub(before);
            let per_datagram = ran as f64 / 1000.0 / sent.sent.max(1) as f64;
            let _ = writeln!(
                log,
                "{}: Sense rate {rate:.0}/s sent {} ran {:.1} ms: {per_datagram:.1} µs per datagram",
                target.name(),
                sent.sent,
                ran as f64 / 1e6
            );
            per_datagram
        })
        .collect()
}

/// The "bursts" table: a stream at a rate a Sense site sends, and into it
/// bursts of these sizes, sent as fast as the sender goes.
const BURST_STREAM_RATE: f64 = 1_000.0;
const BURST_SIZES: [u64; 3] = [10_000, 15_000, 20_000];
/// Tries of each burst (the machine is shared: one try proves little).
const BURST_TRIES: usize = 3;
/// How long the stream runs, and when into it the burst is sent.
const BURST_STREAM: Duration = Duration::from_millis(3000);
const BURST_AT: Duration = Duration::from_millis(1500);

/// What `target` lost of a stream at [`BURST_STREAM_RATE`] for
/// [`BURST_STREAM`] with a burst of `size` datagrams [`BURST_AT`] into it,
/// sent as fast as the sender goes: a receiver that rests between reads at
/// slow rates must not let a burst overflow its receive buffer meanwhile.
/// Returns the datagrams lost and the burst's rate.
fn burst(target: &dyn Target, mix: &Path, size: u64, log: &mut String) -> (u64, f64) {
    wait_for_backlog(target);
    target.recycle_output();
    let before = target.received();
    let before_drops = kernel_drops(target.port());
    let stream = sender(mix, target.port())
        .arg("--rate")
        .arg(format!("{BURST_STREAM_RATE:.0}"))
        .arg("--duration")
        .arg(format!("{}ms", BURST_STREAM.as_millis()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run herald send");
    std::thread::sleep(BURST_AT);
    let (burst_sent, burst_took) = sent_by(
        &sender(mix, target.port())
            .args(["--rate", "0", "--count", &size.to_string()])
            .output()
            .expect("run herald send"),
    );
    let (stream_sent, _) = sent_by(&stream.wait_with_output().expect("herald send"));
    let sent = stream_sent + burst_sent;
    let handled = settle(target, before, sent);
    let lost = sent.saturating_sub(handled);
    let burst_rate = burst_sent as f64 / burst_took.as_secs_f64().max(1e-9);
    let _ = writeln!(
        log,
        "{}: burst of {burst_sent} at {burst_rate:.0}/s into a {BURST_STREAM_RATE:.0}/s stream: sent {sent} handled {handled} lost {lost} (kernel {})",
        target.name(),
        kernel_drops(target.port()).saturating_sub(before_drops),
    );
    (lost, burst_rate)
}

/// Every try of every size of [`burst`]: the losses per size and try, and
/// the fastest burst of all.
fn bursts(target: &dyn Target, mix: &Path, log: &mut String) -> (Vec<Vec<u64>>, f64) {
    let mut fastest = 0.0f64;
    let lost = BURST_SIZES
        .iter()
        .map(|&size| {
            (0..BURST_TRIES)
                .map(|_| {
                    let (lost, rate) = burst(target, mix, size, log);
                    fastest = fastest.max(rate);
                    lost
                })
                .collect()
        })
        .collect();
    (lost, fastest)
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The kernel's drop count for the UDP socket bound to `port` (/proc/net/udp).
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let wanted = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&wanted))
        })
        .filter_map(|line| {
            line.split_whitespace()
                .last()
                .and_then(|d| d.parse::<u64>().ok())
        })
        .sum()
}

/// Datagrams a receiver dropped itself, by cause.
type Drops = BTreeMap<String, u64>;

/// `after` minus `before`, cause by cause, leaving out causes with none.
fn drops_since(before: &Drops, after: Drops) -> Drops {
    after
        .into_iter()
        .map(|(cause, n)| {
            let earlier = before.get(&cause).copied().unwrap_or(0);
            (cause, n.saturating_sub(earlier))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The value of label `name` in a Prometheus text line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// A receiver under test.
trait Target {
    fn name(&self) -> &str;
    fn port(&self) -> u16;
    /// The receiver's processes (CPU, writes and memory are summed over them).
    fn pids(&self) -> Vec<u32>;
    /// Datagrams fully handled so far (counted, written, delivered).
    fn received(&self) -> u64;
    /// Datagrams dropped inside the receiver so far (its own counters), by
    /// cause.
    fn app_drops(&self) -> Drops {
        Drops::new()
    }
    /// The receive-to-delivery latency histogram so far, as cumulative
    /// (upper bound in seconds, count) pairs, when the receiver reports one.
    fn latency_buckets(&self) -> Option<Vec<(f64, f64)>> {
        None
    }
    /// Events accepted and not yet delivered (queued in memory or in a disk
    /// buffer), when the receiver reports it.
    fn backlog(&self) -> u64 {
        0
    }
    /// Empties the receiver's output file between runs, as log rotation would.
    /// Without it every run writes into never-used memory: on a virtual machine
    /// the first touch of a page-cache page is slow, and a file grown to many
    /// GiB made later runs cost 1.7–1.9× the CPU per event of earlier ones.
    fn recycle_output(&self) {}
}

/// The `q` quantile of cumulative (upper bound, count) buckets, interpolated
/// linearly within its bucket as Prometheus's `histogram_quantile` does; the
/// highest finite bound when it falls in the `+Inf` bucket.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower;
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return lower + (le - lower) * fraction;
        }
        (lower, below) = (le, count);
    }
    lower
}

/// Empties `path`, which a receiver keeps open for appending.
fn truncate(path: &Path) {
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = file.set_len(0);
    }
}

/// This benchmark binary run as the bare receiver (`e2e drain <port> <file>`).
fn drain(port: u16, count_file: &Path) {
    let bound =
        herald::ingest::socket::bind(SocketAddr::from(([127, 0, 0, 1], port)), 8 << 20, false)
            .expect("bind");
    let mut receiver = herald::ingest::socket::Receiver::new(bound.socket, 64, 65_507);
    let mut count = 0u64;
    let mut last_write = Instant::now();
    loop {
        let _ = receiver.recv_batch(herald::ingest::socket::Wait::Block, |_| count += 1);
        if last_write.elapsed() > Duration::from_millis(20) {
            let tmp = count_file.with_extension("tmp");
            if std::fs::write(&tmp, count.to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, count_file);
            }
            last_write = Instant::now();
        }
    }
}

struct Drain {
    child: Child,
    port: u16,
    file: PathBuf,
}

impl Drain {
    /// This benchmark binary started as the drain, counting into a file in `dir`.
    fn start(dir: &Path) -> Drain {
        let port = free_udp_port();
        let file = dir.join(format!("count-{port}"));
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args(["drain", &port.to_string(), &file.display().to_string()])
            .spawn()
            .expect("start drain");
        std::thread::sleep(Duration::from_millis(300));
        Drain { child, port, file }
    }
}

impl Target for Drain {
    fn name(&self) -> &str {
        DRAIN
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How far the floor writes between write-behind requests, and how large its
/// file grows before it starts a new one: as herald's file sink.
const FLOOR_WRITE_BEHIND: u64 = 8 << 20;
const FLOOR_FILE_BYTES: u64 = 100 << 20;

/// This benchmark binary run as the floor (`e2e floor <port> <count file>
/// <output> <line bytes>`): the drain, writing a line of `line` bytes for every
/// datagram it reads (the datagram's own bytes, repeated to length), one
/// `write` a read. As herald's file sink: every 8 MiB it starts writing the new
/// bytes back and drops those written back before from the page cache, a
/// thread of its own syncs the file every second, and at 100 MiB the file is
/// unlinked and a new one started (the old one closed on that thread, which
/// frees it). Nothing is parsed or encoded.
fn floor(port: u16, count_file: &Path, out: &Path, line: usize) {
    use std::sync::Arc;
    use std::sync::mpsc;

    let bound =
        herald::ingest::socket::bind(SocketAddr::from(([127, 0, 0, 1], port)), 8 << 20, false)
            .expect("bind");
    let mut receiver = herald::ingest::socket::Receiver::new(bound.socket, 64, 65_507);
    let open = || {
        Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .expect("open the floor's file"),
        )
    };
    // The thread that syncs the current file every second and closes the
    // files rotated away.
    let (upkeep, files) = mpsc::channel::<Arc<std::fs::File>>();
    let mut file = open();
    let _ = upkeep.send(file.clone());
    std::thread::spawn(move || {
        let mut current: Option<Arc<std::fs::File>> = None;
        loop {
            match files.recv_timeout(Duration::from_secs(1)) {
                Ok(next) => current = Some(next),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(file) = &current {
                        let _ = file.sync_data();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    let mut buffer: Vec<u8> = Vec::with_capacity(receiver.batch_size() * line);
    let (mut size, mut behind_started, mut behind_forgotten) = (0u64, 0u64, 0u64);
    let mut count = 0u64;
    let mut last_write = Instant::now();
    loop {
        buffer.clear();
        let _ = receiver.recv_batch(herald::ingest::socket::Wait::Block, |datagram| {
            let payload: &[u8] = if datagram.payload.is_empty() {
                b" "
            } else {
                datagram.payload
            };
            let end = buffer.len() + line.saturating_sub(1);
            while buffer.len() < end {
                let n = payload.len().min(end - buffer.len());
                buffer.extend_from_slice(&payload[..n]);
            }
            buffer.push(b'\n');
            count += 1;
        });
        if !buffer.is_empty() {
            (&*file).write_all(&buffer).expect("write the floor's file");
            size += buffer.len() as u64;
        }
        let aligned = herald::pagecache::align_down(size);
        if aligned >= behind_started + FLOOR_WRITE_BEHIND {
            herald::pagecache::start_writing(&file, &(behind_started..aligned));
            herald::pagecache::forget(&file, &(behind_forgotten..behind_started));
            (behind_forgotten, behind_started) = (behind_started, aligned);
        }
        if size >= FLOOR_FILE_BYTES {
            // The last handle on the unlinked file goes with the upkeep
            // thread's next file: closing it there frees it.
            let _ = std::fs::remove_file(out);
            file = open();
            let _ = upkeep.send(file.clone());
            (size, behind_started, behind_forgotten) = (0, 0, 0);
        }
        if last_write.elapsed() > Duration::from_millis(20) {
            let tmp = count_file.with_extension("tmp");
            if std::fs::write(&tmp, count.to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, count_file);
            }
            last_write = Instant::now();
        }
    }
}

/// The mean length of the JSON line herald's file sink writes for a datagram
/// of `datagrams`, newline included: what the floor writes a datagram.
fn json_line_bytes(datagrams: &[Vec<u8>]) -> usize {
    let mut parser =
        herald::parse::Parser::new(&herald::parse::ParseConfig::default()).expect("parser");
    let sender = SocketAddr::from(([127, 0, 0, 1], 45_678));
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    let mut total = 0;
    for datagram in datagrams {
        out.clear();
        let event = parser
            .parse_shared(datagram, sender, now)
            .expect("the mix parses");
        event.write_json(&mut out);
        total += out.len() + 1;
    }
    total / datagrams.len().max(1)
}

struct Floor {
    child: Child,
    port: u16,
    file: PathBuf,
}

impl Floor {
    /// This benchmark binary started as the floor, writing `line` bytes a
    /// datagram into a file in `dir`.
    fn start(dir: &Path, line: usize) -> Floor {
        let port = free_udp_port();
        let file = dir.join(format!("count-{port}"));
        let out = dir.join(format!("floor-{port}.log"));
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "floor",
                &port.to_string(),
                &file.display().to_string(),
                &out.display().to_string(),
                &line.to_string(),
            ])
            .spawn()
            .expect("start the floor");
        std::thread::sleep(Duration::from_millis(300));
        Floor { child, port, file }
    }
}

impl Target for Floor {
    fn name(&self) -> &str {
        FLOOR
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Herald {
    child: Child,
    port: u16,
    http: SocketAddr,
    setup: Setup,
    _dir: tempfile::TempDir,
}

/// The herald binary measured: this build's, or `HERALD_BENCH_BINARY` (to
/// compare two builds in one session; the sender is always this build's).
fn herald_under_test() -> PathBuf {
    std::env::var_os("HERALD_BENCH_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_herald")),
        PathBuf::from,
    )
}

/// A herald configuration the bench runs: the sink, its settings, and its
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// The `file` sink as shipped: rotation at 100 MiB, background sync every
    /// second, default queues. The headline.
    File,
    /// The `file` sink with rotation off (`max_bytes = 0`).
    FileNoRotation,
    /// The `file` sink as shipped, with a disk buffer.
    FileDisk,
    /// The `null` sink: receive, parse and route, nothing written.
    Null,
    /// The `null` sink with a disk buffer: what the buffer costs.
    NullDisk,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::File => "herald, file sink (shipped defaults)",
            Setup::FileNoRotation => "herald, file sink, no rotation",
            Setup::FileDisk => "herald, file sink, disk buffer",
            Setup::Null => "herald, null sink",
            Setup::NullDisk => "herald, null sink, disk buffer",
        }
    }

    /// The `[sinks.out]` table.
    fn sink_table(self) -> String {
        // The disk buffer as the examples ship it (1 GiB, synced every 500 ms).
        const DISK: &str = "\nbuffer = { type = \"disk\", max_bytes = 1073741824 }";
        match self {
            Setup::File => "type = \"file\"\npath = \"events.jsonl\"".to_string(),
            Setup::FileNoRotation => {
                "type = \"file\"\npath = \"events.jsonl\"\nmax_bytes = 0".to_string()
            }
            Setup::FileDisk => format!("type = \"file\"\npath = \"events.jsonl\"{DISK}"),
            Setup::Null => "type = \"null\"".to_string(),
            Setup::NullDisk => format!("type = \"null\"{DISK}"),
        }
    }

    /// Whether the bench empties the output file between runs: only where
    /// nothing rotates it.
    fn recycles(self) -> bool {
        self == Setup::FileNoRotation
    }
}

impl Herald {
    fn start(setup: Setup) -> Herald {
        Herald::start_on(setup, free_udp_port(), false)
    }

    /// Starts herald on `port`; with `reuse_port`, other instances may share it.
    fn start_on(setup: Setup, port: u16, reuse_port: bool) -> Herald {
        let dir = tempfile::tempdir().expect("temp dir");
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let sink_table = setup.sink_table();
        let config = format!(
            "[ingest]\nlisten = [\"127.0.0.1:{port}\"]\nallow = [\"127.0.0.0/8\"]\nreuse_port = {reuse_port}\n\n[http]\nlisten = \"{http}\"\n\n[log]\nlevel = \"error\"\n\n[sinks.out]\n{sink_table}\n"
        );
        std::fs::write(dir.path().join("herald.toml"), config).expect("config");
        let child = Command::new(herald_under_test())
            .args(["run", "--config", "herald.toml"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start herald");
        let herald = Herald {
            child,
            port,
            http,
            setup,
            _dir: dir,
        };
        let start = Instant::now();
        while herald.metrics().is_empty() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        herald
    }

    fn metrics(&self) -> String {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.http, Duration::from_secs(1)) else {
            return String::new();
        };
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    fn metric(&self, text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }
}

impl Target for Herald {
    fn name(&self) -> &str {
        self.setup.label()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        self.metric(&self.metrics(), "herald_sink_events_delivered_total") as u64
    }
    fn backlog(&self) -> u64 {
        // Waiting in the queue, and in the batch the driver holds (a disk
        // buffer counts the batch in both: only zero matters here).
        let metrics = self.metrics();
        (self.metric(&metrics, "herald_sink_queue_depth")
            + self.metric(&metrics, "herald_sink_batch_events")) as u64
    }
    fn app_drops(&self) -> Drops {
        // herald_pipeline_dropped_total{stage="ingest"|"sink",...} and
        // herald_ingest_rejected_total{reason=...}, by stage or reason.
        let mut drops = Drops::new();
        for line in self.metrics().lines() {
            let cause = if line.starts_with("herald_pipeline_dropped_total{") {
                // Drops a config's rules ask for are not losses.
                label(line, "stage").and_then(|stage| match stage {
                    "ingest" => Some("hand-off full".to_string()),
                    "sink" => Some("sink queue full".to_string()),
                    _ => None,
                })
            } else if line.starts_with("herald_ingest_rejected_total{") {
                label(line, "reason").map(|reason| format!("rejected ({reason})"))
            } else {
                None
            };
            let value = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok());
            if let (Some(cause), Some(value)) = (cause, value) {
                *drops.entry(cause).or_default() += value as u64;
            }
        }
        drops
    }
    fn recycle_output(&self) {
        if self.setup.recycles() {
            truncate(&self._dir.path().join("events.jsonl"));
        }
    }
    fn latency_buckets(&self) -> Option<Vec<(f64, f64)>> {
        let prefix = "herald_event_latency_seconds_bucket{sink=\"out\",le=\"";
        let buckets = self
            .metrics()
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        Some(buckets)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two herald processes on one port (`ingest.reuse_port`): the kernel spreads
/// the sender's source ports over them.
struct Pair {
    name: String,
    instances: [Herald; 2],
}

impl Pair {
    fn start(setup: Setup) -> Pair {
        let port = free_udp_port();
        Pair {
            name: format!("2 × {} on one port", setup.label()),
            instances: [
                Herald::start_on(setup, port, true),
                Herald::start_on(setup, port, true),
            ],
        }
    }
}

impl Target for Pair {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.instances[0].port
    }
    fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|h| h.child.id()).collect()
    }
    fn received(&self) -> u64 {
        self.instances.iter().map(Target::received).sum()
    }
    fn backlog(&self) -> u64 {
        self.instances.iter().map(Target::backlog).sum()
    }
    fn app_drops(&self) -> Drops {
        let mut drops = Drops::new();
        for instance in &self.instances {
            for (cause, n) in instance.app_drops() {
                *drops.entry(cause).or_default() += n;
            }
        }
        drops
    }
    fn recycle_output(&self) {
        for instance in &self.instances {
            instance.recycle_output();
        }
    }
}

struct Rsyslog {
    child: Child,
    port: u16,
    out: PathBuf,
    /// (lines in files emptied earlier, bytes of the current file read so far,
    /// lines in those bytes), so each poll reads only what is new.
    counted: Cell<(u64, u64, u64)>,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Option<Rsyslog> {
        let binary = ["/usr/sbin/rsyslogd", "rsyslogd"].into_iter().find(|b| {
            Command::new(b)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_udp_port();
        let out = dir.path().join("messages.log");
        let root = dir.path().display();
        let config = format!(
            "global(workDirectory=\"{root}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" rcvbufSize=\"8m\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
            out.display()
        );
        std::fs::write(dir.path().join("rsyslog.conf"), config).expect("config");
        let child = Command::new(binary)
            .arg("-n")
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let rsyslog = Rsyslog {
            child,
            port,
            out,
            counted: Cell::new((0, 0, 0)),
            _dir: dir,
        };
        let start = Instant::now();
        while !kernel_socket_open(port) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(rsyslog)
    }
}

fn kernel_socket_open(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&wanted))
        })
}

impl Target for Rsyslog {
    fn name(&self) -> &str {
        RSYSLOG
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        // Count the newlines rsyslog wrote since the last look.
        let (earlier, mut offset, mut lines) = self.counted.get();
        if let Ok(mut file) = std::fs::File::open(&self.out)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut buffer = vec![0u8; 1 << 20];
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                offset += n as u64;
                lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        self.counted.set((earlier, offset, lines));
        earlier + lines
    }
    fn recycle_output(&self) {
        let total = self.received();
        truncate(&self.out);
        self.counted.set((total, 0, 0));
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One fixed-length run at `rate`.
#[derive(Debug, Clone, Default)]
struct Run {
    rate: f64,
    sent: u64,
    achieved: f64,
    received: u64,
    kernel_drops: u64,
    app_drops: Drops,
    cpu_seconds: f64,
    seconds: f64,
    /// Bytes the receiver wrote to storage (`/proc/<pid>/io` write_bytes).
    written_bytes: u64,
    /// CPU seconds (user + system) of the sender's process.
    sender_cpu_seconds: f64,
}

impl Run {
    /// Bytes written to storage per handled datagram.
    fn written_per_event(&self) -> f64 {
        self.written_bytes as f64 / self.received.max(1) as f64
    }

    /// The receiver's CPU time per handled datagram, in µs.
    fn cpu_per_event_us(&self) -> f64 {
        self.cpu_seconds / self.received.max(1) as f64 * 1e6
    }

    /// The sender's CPU time per datagram sent, in µs. Sending over loopback
    /// includes the kernel's delivery into the receiver's socket.
    fn sender_per_event_us(&self) -> f64 {
        self.sender_cpu_seconds / self.sent.max(1) as f64 * 1e6
    }

    /// The receiver's CPU time per datagram sent (handled or not), in µs:
    /// with [`Run::sender_per_event_us`], what a datagram cost the machine.
    fn cpu_per_sent_us(&self) -> f64 {
        self.cpu_seconds / self.sent.max(1) as f64 * 1e6
    }

    /// The cores the receiver and the sender kept busy together.
    fn cores_used(&self) -> f64 {
        (self.cpu_seconds + self.sender_cpu_seconds) / self.seconds.max(0.001)
    }

    fn lossless(&self) -> bool {
        self.received >= self.sent && self.kernel_drops == 0 && self.app_dropped() == 0
    }

    fn app_dropped(&self) -> u64 {
        self.app_drops.values().sum()
    }

    /// What was lost, by cause: the kernel's drops, the receiver's own by
    /// cause, and what was neither handled nor counted as dropped.
    fn losses(&self) -> String {
        let mut causes = vec![format!("kernel {}", self.kernel_drops)];
        causes.extend(
            self.app_drops
                .iter()
                .map(|(cause, n)| format!("{cause} {n}")),
        );
        let unaccounted = self
            .sent
            .saturating_sub(self.received + self.kernel_drops + self.app_dropped());
        if unaccounted > 0 {
            causes.push(format!("not handled in time {unaccounted}"));
        }
        causes.join(", ")
    }
}

/// What `herald send` reported, and the CPU it used.
struct Sent {
    sent: u64,
    elapsed: Duration,
    cpu_seconds: f64,
}

/// CPU seconds (user + system) of this process's children that have ended
/// and been waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `herald send` sending the lines of `mix` to `port` from a process of its
/// own, so that the receiver's CPU figures are its own and the two do not
/// share a thread; the caller adds the rate and how much to send.
fn sender(mix: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["send", "--json", "--to"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--file")
        .arg(mix)
        // As the services of Sense nodes do: many source ports (which only
        // instances sharing the port with reuse_port tell apart).
        .args(["--sockets", &SENDER_SOCKETS.to_string()])
        .stderr(Stdio::inherit());
    command
}

/// What a finished `herald send --json` reported: datagrams sent, and how
/// long sending took.
fn sent_by(output: &std::process::Output) -> (u64, Duration) {
    // A send that reports failures still says what it sent; anything else
    // means the figures would be wrong.
    assert!(
        !output.stdout.is_empty(),
        "herald send failed: {:?}",
        output.status
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("herald send --json output");
    (
        report["sent"].as_u64().unwrap_or(0),
        Duration::from_secs_f64(report["elapsed_s"].as_f64().unwrap_or(0.0)),
    )
}

/// Sends the lines of `mix` to `port` at `rate` for `seconds` (see [`sender`]).
fn send_from_process(mix: &Path, port: u16, rate: f64, seconds: f64) -> Sent {
    // The receivers run until their row ends, so the sender is the only
    // child that ends meanwhile: the difference is its CPU.
    let children_before = children_cpu_seconds();
    let output = sender(mix, port)
        .arg("--rate")
        .arg(format!("{rate:.0}"))
        .arg("--duration")
        .arg(format!("{:.0}ms", seconds * 1000.0))
        .output()
        .expect("run herald send");
    let (sent, elapsed) = sent_by(&output);
    Sent {
        sent,
        elapsed,
        cpu_seconds: children_cpu_seconds() - children_before,
    }
}

/// How long a run may wait for what the one before left queued.
const BACKLOG_WAIT: Duration = Duration::from_secs(120);

/// Waits until the target has delivered what earlier runs left queued (a
/// disk buffer can hold minutes of events), so that a run neither counts
/// them as its own nor measures its latency behind them.
fn wait_for_backlog(target: &dyn Target) {
    let start = Instant::now();
    while target.backlog() > 0 {
        if start.elapsed() >= BACKLOG_WAIT {
            eprintln!(
                "{}: still {} events queued after {} s; the next run starts anyway",
                target.name(),
                target.backlog(),
                BACKLOG_WAIT.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `target` has handled `sent` datagrams since its count was
/// `before`, or its count stops moving, or 10 s pass; what it handled since.
fn settle(target: &dyn Target, before: u64, sent: u64) -> u64 {
    let mut last = target.received();
    let mut still = Instant::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        let now = target.received();
        if now - before >= sent {
            break;
        }
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_millis(700) {
            break;
        }
    }
    target.received() - before
}

/// Sends at `rate` for `seconds` and waits until the target has settled.
fn run(target: &dyn Target, mix: &Path, rate: f64, seconds: f64) -> Run {
    wait_for_backlog(target);
    target.recycle_output();
    let before_received = target.received();
    let before_drops = kernel_drops(target.port());
    let before_app = target.app_drops();
    let before_cpu = cpu_of(&target.pids());
    let before_written = written_of(&target.pids());
    let report = send_from_process(mix, target.port(), rate, seconds);
    let received = settle(target, before_received, report.sent);
    Run {
        rate,
        sent: report.sent,
        achieved: report.sent as f64 / report.elapsed.as_secs_f64().max(1e-9),
        received,
        kernel_drops: kernel_drops(target.port()) - before_drops,
        app_drops: drops_since(&before_app, target.app_drops()),
        cpu_seconds: cpu_of(&target.pids()) - before_cpu,
        seconds: report.elapsed.as_secs_f64(),
        written_bytes: written_of(&target.pids()).saturating_sub(before_written),
        sender_cpu_seconds: report.cpu_seconds,
    }
}

/// Result for one target.
struct Outcome {
    name: String,
    zero_loss: Run,
    /// The lowest rate that lost datagrams twice, when one did.
    first_lossy: Option<Run>,
    sender_bound: bool,
    overload: Option<Run>,
    latency: Option<(f64, f64)>,
    peak_rss_mib: f64,
    /// The doubling steps (25k, 50k, 100k, ... per second), the same for every
    /// receiver, so CPU can be compared at equal rates.
    ladder: Vec<Run>,
}

/// Appends one run's line to the log (and shows it while the bench runs).
fn log_run(log: &mut String, name: &str, what: &str, run: &Run) {
    let _ = writeln!(
        log,
        "{name}: {what} {:.0}/s achieved {:.0}/s sent {} received {} lost: {} cpu {:.2}s sender cpu {:.2}s",
        run.rate,
        run.achieved,
        run.sent,
        run.received,
        run.losses(),
        run.cpu_seconds,
        run.sender_cpu_seconds
    );
    eprintln!("{}", log.lines().last().unwrap_or(""));
}

/// A run at `rate`, and a second one when the first lost datagrams: a rate
/// counts as lossy only when it lost twice, so that one disturbance on a
/// shared machine does not end a receiver's ladder early. Returns the
/// lossless run if there is one, else the second.
fn run_twice_if_lossy(
    target: &dyn Target,
    mix: &Path,
    rate: f64,
    seconds: f64,
    log: &mut String,
) -> Run {
    let first = run(target, mix, rate, seconds);
    log_run(log, target.name(), "rate", &first);
    if first.lossless() {
        return first;
    }
    let second = run(target, mix, rate, seconds);
    log_run(log, target.name(), "again", &second);
    second
}

fn measure(target: &dyn Target, mix: &Path, seconds: f64, log: &mut String) -> Outcome {
    let mut good = Run::default();
    let mut bad: Option<Run> = None;
    let mut rate = 25_000.0;
    let mut sender_bound = false;
    let mut ladder = Vec::new();
    loop {
        let result = run_twice_if_lossy(target, mix, rate, seconds, log);
        ladder.push(result.clone());
        if result.lossless() {
            let bound = result.achieved < rate * 0.9;
            good = result;
            if bound {
                // The sender cannot go faster: the receiver is not the limit.
                sender_bound = true;
                break;
            }
            rate *= 2.0;
        } else {
            bad = Some(result);
            break;
        }
    }
    let mut first_lossy = None;
    if let Some(mut high) = bad {
        // Bisect between the last good and first bad rate.
        let mut low = good;
        for _ in 0..3 {
            let rate = (low.rate.max(1.0) + high.rate) / 2.0;
            let result = run_twice_if_lossy(target, mix, rate, seconds, log);
            if result.lossless() {
                low = result;
            } else {
                high = result;
            }
        }
        good = low;
        first_lossy = Some(high);
    }
    // Latency first: the overload run would leave its queueing in the window.
    let latency = target.latency_buckets().map(|before| {
        let half = (good.achieved / 2.0).max(1000.0);
        // The histogram counts from start-up: take the quantiles of what this
        // half-rate run added to it.
        let _ = run(target, mix, half, seconds);
        let after = target.latency_buckets().unwrap_or_default();
        let added: Vec<(f64, f64)> = after
            .iter()
            .map(|&(le, count)| {
                let earlier = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
                (le, count - earlier)
            })
            .collect();
        (
            histogram_quantile(0.5, &added) * 1000.0,
            histogram_quantile(0.99, &added) * 1000.0,
        )
    });
    let overload = (good.rate > 0.0).then(|| run(target, mix, good.achieved * 2.0, seconds));
    if let Some(over) = &overload {
        log_run(log, target.name(), "overload", over);
    }
    Outcome {
        name: target.name().to_string(),
        zero_loss: good,
        first_lossy,
        sender_bound,
        overload,
        latency,
        peak_rss_mib: target.pids().into_iter().map(peak_rss_mib).sum(),
        ladder,
    }
}

/// CPU µs per event of `a` and `b` at the highest doubling step both handled
/// without loss: (rate, a's, b's).
fn cpu_at_same_rate(a: &Outcome, b: &Outcome) -> Option<(f64, f64, f64)> {
    a.ladder
        .iter()
        .rev()
        .filter(|x| x.lossless())
        .find_map(|x| {
            b.ladder
                .iter()
                .find(|y| y.lossless() && y.rate == x.rate)
                .map(|y| (x.rate, x.cpu_per_event_us(), y.cpu_per_event_us()))
        })
}

/// How many times in a row each datagram of the mix is sent.
const MIX_RUN: usize = 8;

/// Source ports the sender sends from in turn.
const SENDER_SOCKETS: usize = 16;

/// The drain's, the floor's and rsyslog's row names.
const DRAIN: &str = "drain (recvmmsg into a counter)";
const FLOOR: &str = "floor (the drain writing a JSON-sized line a datagram to a file, no parsing)";
const RSYSLOG: &str = "rsyslog (imudp → file)";

/// herald as shipped against its targets: at least 1.3× rsyslog's zero-loss
/// rate, at least 90 % of the drain's, and at most 1.5× the drain's CPU per
/// datagram at the same rate.
fn targets(
    herald: Option<&Outcome>,
    drain: Option<&Outcome>,
    floor: Option<&Outcome>,
    rsyslog: Option<&Outcome>,
) -> String {
    let Some(herald) = herald else {
        return String::new();
    };
    let mut lines = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    if let Some(rsyslog) = rsyslog {
        let ratio = herald.zero_loss.achieved / rsyslog.zero_loss.achieved.max(1.0);
        lines.push(format!(
            "- zero-loss rate {ratio:.2}× rsyslog's (target at least 1.3×: {})",
            verdict(ratio >= 1.3)
        ));
    }
    if let Some(drain) = drain {
        let ratio = herald.zero_loss.achieved / drain.zero_loss.achieved.max(1.0);
        lines.push(format!(
            "- zero-loss rate {:.0} % of the drain's (target at least 90 %: {})",
            ratio * 100.0,
            verdict(ratio >= 0.9)
        ));
        if let Some((rate, h, d)) = cpu_at_same_rate(herald, drain) {
            let ratio = h / d.max(1e-12);
            lines.push(format!(
                "- CPU per datagram at {rate:.0}/s (the highest step both took without loss): \
                 {h:.2} µs against the drain's {d:.2} µs, {ratio:.2}× (target at most 1.5×: {})",
                verdict(ratio <= 1.5)
            ));
        }
    }
    if let (Some(drain), Some(floor)) = (drain, floor) {
        lines.extend(floor_share(herald, drain, floor));
    }
    if let Some(rsyslog) = rsyslog
        && let Some((rate, h, r)) = cpu_at_same_rate(herald, rsyslog)
    {
        lines.push(format!(
            "- CPU per datagram at {rate:.0}/s: {h:.2} µs against rsyslog's {r:.2} µs, {:.2}×",
            h / r.max(1e-12)
        ));
    }
    lines.extend(budget(herald, drain, rsyslog));
    format!(
        "herald as shipped, in this run:\n\n{}\n\n",
        lines.join("\n")
    )
}

/// What the floor (receiving and writing, no parsing) costs against the drain,
/// and what the CPU target would then leave herald for everything else: at
/// the highest doubling step all three took without loss.
fn floor_share(herald: &Outcome, drain: &Outcome, floor: &Outcome) -> Vec<String> {
    let mut lines = vec![format!(
        "- the floor's zero-loss rate: {:.0} % of the drain's",
        floor.zero_loss.achieved / drain.zero_loss.achieved.max(1.0) * 100.0
    )];
    let at = herald
        .ladder
        .iter()
        .rev()
        .filter(|x| x.lossless())
        .find_map(|h| {
            let same = |o: &Outcome| {
                o.ladder
                    .iter()
                    .find(|y| y.lossless() && y.rate == h.rate)
                    .map(Run::cpu_per_event_us)
            };
            Some((h.rate, h.cpu_per_event_us(), same(drain)?, same(floor)?))
        });
    if let Some((rate, h, d, f)) = at {
        let left = 1.5 * d - f;
        let leaves = if left > 0.0 {
            format!("would leave herald {left:.2} µs a datagram")
        } else {
            "leaves herald nothing".to_string()
        };
        lines.push(format!(
            "- CPU per datagram at {rate:.0}/s: the floor (receiving and writing as herald's \
             file sink writes, nothing parsed or encoded) {f:.2} µs, {:.2}× the drain's \
             {d:.2} µs; at most 1.5× the drain {leaves} for parsing, routing, encoding and \
             its hand-offs, where herald used {:.2} µs more than the floor ({h:.2} µs)",
            f / d.max(1e-12),
            h - f,
        ));
    }
    lines
}

/// The CPU budget behind the zero-loss rates: the sender shares the machine
/// with the receiver, so at a rate `r` a receiver can use at most
/// `cores / r` minus the sender's own CPU per datagram. Says what herald and
/// the sender used where herald first lost datagrams, and what the rate
/// targets would leave herald.
fn budget(herald: &Outcome, drain: Option<&Outcome>, rsyslog: Option<&Outcome>) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut lines = Vec::new();
    if let Some(lossy) = &herald.first_lossy {
        lines.push(format!(
            "- where herald first lost datagrams, at {:.0}/s: herald used {:.2} µs and the \
             sender {:.2} µs of CPU per datagram sent, {:.2} of the {cores:.0} cores together \
             (at its zero-loss rate: {:.2} and {:.2} µs)",
            lossy.achieved,
            lossy.cpu_per_sent_us(),
            lossy.sender_per_event_us(),
            lossy.cores_used(),
            herald.zero_loss.cpu_per_sent_us(),
            herald.zero_loss.sender_per_event_us(),
        ));
    }
    // The sender's cost near a rate, from herald's own runs: it depends on
    // the receiver (waking a receiver blocked in a read costs the sender;
    // herald's receive thread mostly sleeps between reads instead).
    let sender_near = |rate: f64| {
        herald
            .ladder
            .iter()
            .chain(&herald.first_lossy)
            .filter(|run| run.sent > 0)
            .min_by(|a, b| {
                (a.achieved - rate)
                    .abs()
                    .total_cmp(&(b.achieved - rate).abs())
            })
            .map(|run| (run.achieved, run.sender_per_event_us()))
    };
    let mut wanted = Vec::new();
    if let Some(rsyslog) = rsyslog {
        wanted.push(("1.3× rsyslog's rate", 1.3 * rsyslog.zero_loss.achieved));
    }
    if let Some(drain) = drain {
        wanted.push(("90 % of the drain's rate", 0.9 * drain.zero_loss.achieved));
    }
    for (what, rate) in wanted {
        if let Some((near, sender)) = sender_near(rate) {
            let left = cores / rate * 1e6 - sender;
            lines.push(format!(
                "- {what}, {rate:.0}/s: the sender takes about {sender:.2} µs per datagram \
                 (herald's run at {near:.0}/s), which leaves herald at most {left:.2} µs per \
                 datagram sent on {cores:.0} cores",
            ));
        }
    }
    lines
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rmem = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), Linux {}, net.core.rmem_max = {}",
        kernel.trim(),
        rmem.trim()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("drain") {
        let port = args[2].parse().expect("port");
        drain(port, Path::new(&args[3]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("floor") {
        let port = args[2].parse().expect("port");
        let line = args[5].parse().expect("line bytes");
        floor(port, Path::new(&args[3]), Path::new(&args[4]), line);
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
        let drain = Drain::start(dir.path());
        outcomes.push(measure(&drain, &mix, seconds, &mut log));
    }
    let line_bytes = json_line_bytes(&datagrams);
    if wanted("floor") {
        let floor = Floor::start(dir.path(), line_bytes);
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
        let rss = peak_rss_mib(herald.child.id());
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
        let herald_us = sense_rates(&herald, &mix, &mut log);
        drop(herald);
        let rsyslog_us = Rsyslog::start().map(|rsyslog| sense_rates(&rsyslog, &mix, &mut log));
        let mut table = format!(
            "At the rates a Qlik Sense site sends, CPU per datagram of the whole process \
             (every thread's run time from `/proc/<pid>/task/*/schedstat`, over \
             {SENSE_SECONDS} s of sending and half a second after):\n\n\
             | datagrams/s | herald as shipped | rsyslog |\n|---:|---|---|\n"
        );
        for (i, rate) in SENSE_RATES.iter().enumerate() {
            let rsyslog = rsyslog_us
                .as_ref()
                .map_or("not installed".to_string(), |us| format!("{:.1} µs", us[i]));
            let _ = writeln!(table, "| {rate:.0} | {:.1} µs | {rsyslog} |", herald_us[i]);
        }
        table.push('\n');
        table
    } else {
        String::new()
    };
    // Bursts into a slow stream: the drain, herald as shipped and rsyslog.
    let bursts_table = if wanted("bursts") {
        let mut columns: Vec<(&str, Option<Vec<Vec<u64>>>)> = Vec::new();
        let mut fastest = 0.0f64;
        let mut measure_bursts = |target: &dyn Target, log: &mut String| {
            let (lost, rate) = bursts(target, &mix, log);
            fastest = fastest.max(rate);
            lost
        };
        let drain = Drain::start(dir.path());
        columns.push(("drain", Some(measure_bursts(&drain, &mut log))));
        drop(drain);
        let herald = Herald::start(Setup::File);
        columns.push(("herald as shipped", Some(measure_bursts(&herald, &mut log))));
        drop(herald);
        let rsyslog = Rsyslog::start().map(|rsyslog| measure_bursts(&rsyslog, &mut log));
        columns.push(("rsyslog", rsyslog));
        let mut table = format!(
            "Bursts: a stream of {BURST_STREAM_RATE:.0} datagrams a second for {} s and, \
             {} s into it, a burst sent as fast as the sender goes (up to {fastest:.0}/s \
             here); datagrams lost (of stream and burst) in each of {BURST_TRIES} tries:\n\n\
             | burst |",
            BURST_STREAM.as_secs_f64(),
            BURST_AT.as_secs_f64(),
        );
        for (name, _) in &columns {
            let _ = write!(table, " {name} |");
        }
        let _ = writeln!(table, "\n|---:|{}", "---|".repeat(columns.len()));
        for (i, size) in BURST_SIZES.iter().enumerate() {
            let _ = write!(table, "| {size} |");
            for (_, tries) in &columns {
                let cell = tries.as_ref().map_or("not installed".to_string(), |tries| {
                    let lost: Vec<String> = tries[i].iter().map(u64::to_string).collect();
                    lost.join(", ")
                });
                let _ = write!(table, " {cell} |");
            }
            table.push('\n');
        }
        table.push('\n');
        table
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

    let find = |name: &str| outcomes.iter().find(|o| o.name == name);
    let drain = find(DRAIN);
    let baseline = drain.map_or(1.0, |d| d.zero_loss.achieved.max(1.0));
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| receiver | zero-loss rate (datagrams/s) | vs drain | CPU at that rate | CPU µs/event | sender µs/event; cores used with it | written to disk per event | peak RSS | at 2× that rate: sent / handled | lost at 2×, by cause | latency p50 / p99 (half rate) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let z = &o.zero_loss;
        let cpu_pct = z.cpu_seconds / z.seconds.max(0.001) * 100.0;
        let (over, lost) = o.overload.as_ref().map_or(("-".into(), "-".into()), |r| {
            (format!("{} / {}", r.sent, r.received), r.losses())
        });
        let latency = o.latency.map_or("-".to_string(), |(p50, p99)| {
            format!("{p50:.2} ms / {p99:.2} ms")
        });
        let name = if o.name == Setup::File.label() {
            format!("**{}**", o.name)
        } else {
            o.name.clone()
        };
        let _ = writeln!(
            table,
            "| {name} | {:.0}{} | {} | {:.0} % | {:.2} | {:.2}; {:.2} | {:.0} B | {:.1} MiB | {over} | {lost} | {latency} |",
            z.achieved,
            if o.sender_bound {
                " (sender-bound)"
            } else {
                ""
            },
            drain.map_or("-".to_string(), |_| format!(
                "{:.0} %",
                z.achieved / baseline * 100.0
            )),
            cpu_pct,
            z.cpu_per_event_us(),
            z.sender_per_event_us(),
            z.cores_used(),
            z.written_per_event(),
            o.peak_rss_mib,
        );
    }
    if rsyslog_missing {
        let _ = writeln!(
            table,
            "| rsyslog | not installed (apt-get install rsyslog) | | | | | | | | | |"
        );
    }
    let targets = targets(find(Setup::File.label()), drain, find(FLOOR), find(RSYSLOG));
    // What a disk buffer costs: each disk-buffered sink against the same sink
    // with its memory buffer, in this run.
    let mut buffer_cost = String::new();
    for (memory, disk) in [
        (Setup::Null, Setup::NullDisk),
        (Setup::File, Setup::FileDisk),
    ] {
        if let (Some(memory), Some(disk)) = (find(memory.label()), find(disk.label())) {
            let _ = write!(
                buffer_cost,
                "{}: zero-loss rate {:.0}/s, {:.0} % of the same sink with its memory buffer ({:.0}/s); it writes {:.0} bytes per event to disk and uses {:.2} µs of CPU per event ({:.2} µs in memory). ",
                disk.name,
                disk.zero_loss.achieved,
                disk.zero_loss.achieved / memory.zero_loss.achieved.max(1.0) * 100.0,
                memory.zero_loss.achieved,
                disk.zero_loss.written_per_event(),
                disk.zero_loss.cpu_per_event_us(),
                memory.zero_loss.cpu_per_event_us(),
            );
        }
    }
    if !buffer_cost.is_empty() {
        buffer_cost.push_str("\n\n");
    }
    let steady = steady_rss.map_or(String::new(), |rss| {
        format!(
            "herald with the file sink as shipped at a steady 100,000 events/s (fresh \
             process): peak RSS {rss:.1} MiB.\n\n"
        )
    });
    let report = format!(
        "# herald benchmarks\n\n\
         Produced by `cargo bench --bench e2e` on {}.\n\
         Run length {seconds} s per step; datagram mix: {} kinds, {}–{} bytes (every Sense \
         message kind plus long messages), each sent {MIX_RUN} times in a row. Sender: `herald send --file` (batched \
         `sendmmsg`, runs of equal length as one segmented send, from {SENDER_SOCKETS} source ports in turn), a process of its own on the same machine, over loopback. The \
         headline row is herald as shipped: the file sink with its default rotation \
         (100 MiB, 5 files), background sync every second and default queues; the other \
         herald rows change one thing each, and the pair rows run two instances on one \
         port (`ingest.reuse_port`), their CPU and memory summed. The floor row is \
         the drain writing, for every datagram, a line as long as herald's JSON for the \
         mix ({line_bytes} bytes), as herald's file sink writes (one `write` a read, \
         write-behind, a sync every second, a new file every 100 MiB), with nothing \
         parsed or encoded: what receiving and writing this JSON cost at least.\n\n\
         {table}\n{targets}{buffer_cost}{steady}{sense}{bursts_table}\
         Zero loss means every datagram sent was handled (counted by the drain and the \
         floor, written by rsyslog, delivered by herald's sink) and the kernel dropped none \
         (`/proc/net/udp`); a rate that lost datagrams is run a second time and counts \
         as lossy only if it loses again (this machine is shared). CPU is the receiver processes' user + system time during the \
         zero-loss run; the sender's is its process's, which over loopback includes the \
         kernel's delivery into the receiver's socket, and the cores used are both \
         together over the run's length (the machine has no more to give). Losses at 2×: the kernel's (receive buffer full), herald's own by \
         cause (hand-off full: parse workers behind; sink queue full: the sink behind), \
         and what was not handled by the end of the run (a run ends once the count stops \
         moving, at most 10 s after sending; the next starts once herald has delivered \
         what its queue or disk buffer still held, so it neither counts those events \
         as its own nor measures its latency behind them). Latency is from herald's \
         `herald_event_latency_seconds` histogram (read to delivered, one event in 17 \
         sampled), over the half-rate run only, interpolated within its bucket as \
         Prometheus's `histogram_quantile` does. Where nothing rotates the output (rsyslog, \
         herald without rotation) each run starts with the file emptied, as log rotation \
         would leave it.\n\n## Runs\n\n```text\n{log}```\n",
        machine(),
        datagrams.len(),
        lengths.iter().min().unwrap_or(&0),
        lengths.iter().max().unwrap_or(&0),
    );
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
