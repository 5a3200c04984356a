//! End-to-end throughput: the highest steady rate each receiver takes with zero
//! loss, in the same run on the same machine:
//!
//! * `baseline`: a bare receiver (`recvmmsg` into a counter, herald's own socket
//!   code and options) — the physical limit here;
//! * `herald-null` and `herald-file`: herald with the `null` and `file` sinks,
//!   each with its memory buffer and with a disk buffer (the buffer's cost);
//! * `rsyslog`: `rsyslogd` with `imudp` (large receive buffer) writing every
//!   message to a file, the C tool admins would otherwise pick.
//!
//! For each, the rate is stepped over fixed-length runs until datagrams are lost
//! (received < sent, or the kernel dropped any), then bisected. Reported per
//! target: zero-loss rate and its ratio to the baseline, CPU % and CPU time per
//! event at that rate, peak RSS, what is lost (and counted) at twice that rate,
//! and for herald the p50/p99 latency from receive to sink at half that rate.
//! The table goes to `BENCHMARKS.md` with the machine and the command.
//!
//! Run: `cargo bench --bench e2e` (needs `rsyslogd` from Debian's `rsyslog`;
//! without it the rsyslog row says so). `HERALD_BENCH_SECONDS` sets the run length
//! (default 3).

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::send::{SAMPLES, SendOptions, send};

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
        let mut joined = long.join(";");
        joined.truncate(target_len.max(base.len()));
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

/// Peak resident set size of a process, in MiB.
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

/// A receiver under test.
trait Target {
    fn name(&self) -> &str;
    fn port(&self) -> u16;
    fn pid(&self) -> u32;
    /// Datagrams fully handled so far (counted, written, delivered).
    fn received(&self) -> u64;
    /// Datagrams dropped inside the receiver so far (its own counters).
    fn app_drops(&self) -> u64 {
        0
    }
    /// The receive-to-delivery latency histogram so far, as cumulative
    /// (upper bound in seconds, count) pairs, when the receiver reports one.
    fn latency_buckets(&self) -> Option<Vec<(f64, f64)>> {
        None
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
    let bound = herald::ingest::socket::bind(SocketAddr::from(([127, 0, 0, 1], port)), 8 << 20)
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

impl Target for Drain {
    fn name(&self) -> &str {
        "baseline (recvmmsg drain)"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pid(&self) -> u32 {
        self.child.id()
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

struct Herald {
    child: Child,
    port: u16,
    http: SocketAddr,
    label: String,
    _dir: tempfile::TempDir,
}

impl Herald {
    fn start(sink: &str) -> Herald {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_udp_port();
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        // One file that never rotates: the bench empties it between runs.
        let (kind, buffer) = sink.split_once('+').unwrap_or((sink, "memory"));
        let mut sink_table = match kind {
            "null" => "type = \"null\"".to_string(),
            _ => "type = \"file\"\npath = \"events.jsonl\"\nmax_bytes = 0".to_string(),
        };
        if buffer == "disk" {
            // The buffer as the examples ship it (1 GiB, synced every 500 ms).
            sink_table.push_str("\nbuffer = { type = \"disk\", max_bytes = 1073741824 }");
        }
        let config = format!(
            "[ingest]\nlisten = [\"127.0.0.1:{port}\"]\nallow = [\"127.0.0.0/8\"]\n\n[http]\nlisten = \"{http}\"\n\n[log]\nlevel = \"error\"\n\n[sinks.out]\n{sink_table}\n"
        );
        std::fs::write(dir.path().join("herald.toml"), config).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
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
            label: if buffer == "disk" {
                format!("herald, {kind} sink, disk buffer")
            } else {
                format!("herald, {kind} sink")
            },
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
        &self.label
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn received(&self) -> u64 {
        self.metric(&self.metrics(), "herald_sink_events_delivered_total") as u64
    }
    fn app_drops(&self) -> u64 {
        self.metric(&self.metrics(), "herald_pipeline_dropped_total") as u64
    }
    fn recycle_output(&self) {
        truncate(&self._dir.path().join("events.jsonl"));
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
        "rsyslog (imudp → file)"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pid(&self) -> u32 {
        self.child.id()
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
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rate: f64,
    sent: u64,
    achieved: f64,
    received: u64,
    kernel_drops: u64,
    app_drops: u64,
    cpu_seconds: f64,
    seconds: f64,
    /// Bytes the receiver wrote to storage (`/proc/<pid>/io` write_bytes).
    written_bytes: u64,
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

    fn lossless(&self) -> bool {
        self.received >= self.sent && self.kernel_drops == 0 && self.app_drops == 0
    }
}

/// Sends at `rate` for `seconds` and waits until the target has settled.
fn run(target: &dyn Target, datagrams: &[Vec<u8>], rate: f64, seconds: f64) -> Run {
    target.recycle_output();
    let before_received = target.received();
    let before_drops = kernel_drops(target.port());
    let before_app = target.app_drops();
    let before_cpu = cpu_seconds(target.pid());
    let before_written = written_bytes(target.pid());
    let options = SendOptions {
        to: SocketAddr::from(([127, 0, 0, 1], target.port())),
        from: None,
        count: None,
        duration: Some(Duration::from_secs_f64(seconds)),
        rate: Some(rate),
    };
    let report = send(datagrams, &options, |_| {}).expect("send");
    // Settle: wait until the count stops moving (or everything arrived).
    let mut last = target.received();
    let mut still = Instant::now();
    let settle_start = Instant::now();
    while settle_start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        let now = target.received();
        if now - before_received >= report.sent {
            break;
        }
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_millis(700) {
            break;
        }
    }
    Run {
        rate,
        sent: report.sent,
        achieved: report.rate(),
        received: target.received() - before_received,
        kernel_drops: kernel_drops(target.port()) - before_drops,
        app_drops: target.app_drops() - before_app,
        cpu_seconds: cpu_seconds(target.pid()) - before_cpu,
        seconds: report.elapsed.as_secs_f64(),
        written_bytes: written_bytes(target.pid()).saturating_sub(before_written),
    }
}

/// Result for one target.
struct Outcome {
    name: String,
    zero_loss: Run,
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
        "{name}: {what} {:.0}/s achieved {:.0}/s sent {} received {} kernel drops {} app drops {} cpu {:.2}s",
        run.rate,
        run.achieved,
        run.sent,
        run.received,
        run.kernel_drops,
        run.app_drops,
        run.cpu_seconds
    );
    eprintln!("{}", log.lines().last().unwrap_or(""));
}

fn measure(target: &dyn Target, datagrams: &[Vec<u8>], seconds: f64, log: &mut String) -> Outcome {
    let mut good = Run::default();
    let mut bad: Option<Run> = None;
    let mut rate = 25_000.0;
    let mut sender_bound = false;
    let mut ladder = Vec::new();
    loop {
        let result = run(target, datagrams, rate, seconds);
        log_run(log, target.name(), "rate", &result);
        ladder.push(result);
        if result.lossless() {
            good = result;
            if result.achieved < rate * 0.9 {
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
    if let Some(mut high) = bad {
        // Bisect between the last good and first bad rate.
        let mut low = good;
        for _ in 0..3 {
            let rate = (low.rate.max(1.0) + high.rate) / 2.0;
            let result = run(target, datagrams, rate, seconds);
            log_run(log, target.name(), "rate", &result);
            if result.lossless() {
                low = result;
            } else {
                high = result;
            }
        }
        good = low;
    }
    // Latency first: the overload run would leave its queueing in the window.
    let latency = target.latency_buckets().map(|before| {
        let half = (good.achieved / 2.0).max(1000.0);
        // The histogram counts from start-up: take the quantiles of what this
        // half-rate run added to it.
        let _ = run(target, datagrams, half, seconds);
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
    let overload = (good.rate > 0.0).then(|| run(target, datagrams, good.achieved * 2.0, seconds));
    if let Some(over) = overload {
        log_run(log, target.name(), "overload", &over);
    }
    Outcome {
        name: target.name().to_string(),
        zero_loss: good,
        sender_bound,
        overload,
        latency,
        peak_rss_mib: peak_rss_mib(target.pid()),
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
    if args.iter().any(|a| a == "--list" || a == "--test") {
        // cargo test/bench --list probes: nothing to list.
        return;
    }
    let seconds: f64 = std::env::var("HERALD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let datagrams = datagram_mix();
    let lengths: Vec<usize> = datagrams.iter().map(Vec::len).collect();
    let mut log = String::new();
    let mut outcomes = Vec::new();

    let dir = tempfile::tempdir().expect("temp dir");
    let drain_port = free_udp_port();
    let count_file = dir.path().join("count");
    let drain = Drain {
        child: Command::new(std::env::current_exe().expect("exe"))
            .args([
                "drain",
                &drain_port.to_string(),
                &count_file.display().to_string(),
            ])
            .spawn()
            .expect("start drain"),
        port: drain_port,
        file: count_file,
    };
    std::thread::sleep(Duration::from_millis(300));
    outcomes.push(measure(&drain, &datagrams, seconds, &mut log));
    drop(drain);
    for sink in ["null", "null+disk", "file", "file+disk"] {
        let herald = Herald::start(sink);
        outcomes.push(measure(&herald, &datagrams, seconds, &mut log));
    }
    // Memory at a steady 100k events/s with default queues, in a fresh process.
    let steady_rss = {
        let herald = Herald::start("file");
        let _ = run(&herald, &datagrams, 100_000.0, seconds.max(5.0));
        let rss = peak_rss_mib(herald.pid());
        let _ = writeln!(
            log,
            "herald, file sink: peak RSS {rss:.1} MiB after a steady 100000/s run"
        );
        rss
    };
    if let Some(rsyslog) = Rsyslog::start() {
        outcomes.push(measure(&rsyslog, &datagrams, seconds, &mut log));
    }

    let baseline = outcomes[0].zero_loss.achieved.max(1.0);
    let rsyslog = outcomes.iter().find(|o| o.name.starts_with("rsyslog"));
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| receiver | zero-loss rate (datagrams/s) | vs baseline | CPU at that rate | CPU µs/event | written to disk per event | peak RSS | at 2× that rate: sent / handled / kernel drops / app drops | latency p50 / p99 (half rate) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let z = o.zero_loss;
        let cpu_pct = z.cpu_seconds / z.seconds.max(0.001) * 100.0;
        let per_event = z.cpu_per_event_us();
        let over = o.overload.map_or("-".to_string(), |r| {
            format!(
                "{} / {} / {} / {}",
                r.sent, r.received, r.kernel_drops, r.app_drops
            )
        });
        let latency = o.latency.map_or("-".to_string(), |(p50, p99)| {
            format!("{p50:.2} ms / {p99:.2} ms")
        });
        let _ = writeln!(
            table,
            "| {} | {:.0}{} | {:.0} % | {:.0} % | {:.2} | {:.0} B | {:.1} MiB | {} | {} |",
            o.name,
            z.achieved,
            if o.sender_bound {
                " (sender-bound)"
            } else {
                ""
            },
            z.achieved / baseline * 100.0,
            cpu_pct,
            per_event,
            z.written_per_event(),
            o.peak_rss_mib,
            over,
            latency
        );
    }
    if rsyslog.is_none() {
        let _ = writeln!(
            table,
            "| rsyslog | not installed (apt-get install rsyslog) | | | | | | | |"
        );
    }
    let comparison = match (
        rsyslog,
        outcomes.iter().find(|o| o.name.contains("file sink")),
    ) {
        (Some(rsyslog), Some(herald)) => {
            let same_rate = cpu_at_same_rate(herald, rsyslog).map_or(String::new(), |(rate, h, r)| {
                    format!(
                        " At the same rate ({rate:.0}/s, the highest step both handled without loss) \
                         herald (file sink) used {h:.2} µs and rsyslog {r:.2} µs of CPU per event: {:.2}×.",
                        h / r.max(1e-12)
                    )
                });
            format!(
                "herald (file sink) uses {:.2}× rsyslog's CPU time per event (each at its own zero-loss rate), \
                 and takes {:.2}× rsyslog's zero-loss rate.{same_rate}\n\n",
                herald.zero_loss.cpu_per_event_us()
                    / rsyslog.zero_loss.cpu_per_event_us().max(1e-12),
                herald.zero_loss.achieved / rsyslog.zero_loss.achieved.max(1.0)
            )
        }
        _ => String::new(),
    };
    // What a disk buffer costs: each disk-buffered sink against the same sink
    // with its memory buffer, in this run.
    let mut buffer_cost = String::new();
    for kind in ["null", "file"] {
        let find = |name: String| outcomes.iter().find(|o| o.name == name);
        if let (Some(memory), Some(disk)) = (
            find(format!("herald, {kind} sink")),
            find(format!("herald, {kind} sink, disk buffer")),
        ) {
            let _ = write!(
                buffer_cost,
                "With a disk buffer the {kind} sink's zero-loss rate is {:.0}/s, {:.0} % of the same sink with a memory buffer ({:.0}/s); it writes {:.0} bytes per event to disk and uses {:.2} µs of CPU per event ({:.2} µs in memory). ",
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
    let report = format!(
        "# herald benchmarks\n\n\
         Produced by `cargo bench --bench e2e` on {}.\n\
         Run length {seconds} s per step; datagram mix: {} kinds, {}–{} bytes (every Sense \
         message kind plus long messages). Sender: `herald send`'s batched `sendmmsg` loop in \
         the benchmark process, on the same machine, over loopback.\n\n\
         {table}\n{comparison}{buffer_cost}herald with the file sink at a steady 100,000 events/s \
         (fresh process, default queues): peak RSS {steady_rss:.1} MiB.\n\n\
         Zero loss means every datagram sent was handled (counted by the baseline, written \
         by rsyslog, delivered by herald's sink) and the kernel dropped none \
         (`/proc/net/udp`). CPU is the receiver process's user + system time during the \
         zero-loss run. Latency is from herald's `herald_event_latency_seconds` \
         histogram (read to delivered, one event in 17 sampled), over the half-rate run \
         only, interpolated within its bucket as Prometheus's `histogram_quantile` does. \
         Each run starts with the receiver's output file emptied, as log \
         rotation would leave it.\n\n## Runs\n\n```text\n{log}```\n",
        machine(),
        datagrams.len(),
        lengths.iter().min().unwrap_or(&0),
        lengths.iter().max().unwrap_or(&0),
    );
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
