//! Sending and measuring: a fixed-length [`Run`] at one rate with
//! `herald send` in a process of its own, and [`measure`], which steps and
//! bisects the rate until a receiver loses datagrams twice in a row and
//! reports its [`Outcome`].

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::SENDER_SOCKETS;
use crate::readings::{Drops, cpu_of, drops_since, kernel_drops, peak_rss_mib, written_of};
use crate::receivers::Target;

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

/// One fixed-length run at `rate`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) sent: u64,
    pub(crate) achieved: f64,
    pub(crate) received: u64,
    kernel_drops: u64,
    app_drops: Drops,
    pub(crate) cpu_seconds: f64,
    pub(crate) seconds: f64,
    /// Bytes the receiver wrote to storage (`/proc/<pid>/io` write_bytes).
    written_bytes: u64,
    /// CPU seconds (user + system) of the sender's process.
    sender_cpu_seconds: f64,
}

impl Run {
    /// Bytes written to storage per handled datagram.
    pub(crate) fn written_per_event(&self) -> f64 {
        self.written_bytes as f64 / self.received.max(1) as f64
    }

    /// The receiver's CPU time per handled datagram, in µs.
    pub(crate) fn cpu_per_event_us(&self) -> f64 {
        self.cpu_seconds / self.received.max(1) as f64 * 1e6
    }

    /// The sender's CPU time per datagram sent, in µs. Sending over loopback
    /// includes the kernel's delivery into the receiver's socket.
    pub(crate) fn sender_per_event_us(&self) -> f64 {
        self.sender_cpu_seconds / self.sent.max(1) as f64 * 1e6
    }

    /// The receiver's CPU time per datagram sent (handled or not), in µs:
    /// with [`Run::sender_per_event_us`], what a datagram cost the machine.
    pub(crate) fn cpu_per_sent_us(&self) -> f64 {
        self.cpu_seconds / self.sent.max(1) as f64 * 1e6
    }

    /// The cores the receiver and the sender kept busy together.
    pub(crate) fn cores_used(&self) -> f64 {
        (self.cpu_seconds + self.sender_cpu_seconds) / self.seconds.max(0.001)
    }

    pub(crate) fn lossless(&self) -> bool {
        self.received >= self.sent && self.kernel_drops == 0 && self.app_dropped() == 0
    }

    fn app_dropped(&self) -> u64 {
        self.app_drops.values().sum()
    }

    /// What was lost, by cause: the kernel's drops, the receiver's own by
    /// cause, and what was neither handled nor counted as dropped.
    pub(crate) fn losses(&self) -> String {
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
pub(crate) struct Sent {
    pub(crate) sent: u64,
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
pub(crate) fn sender(mix: &Path, port: u16) -> Command {
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
pub(crate) fn sent_by(output: &std::process::Output) -> (u64, Duration) {
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
pub(crate) fn send_from_process(mix: &Path, port: u16, rate: f64, seconds: f64) -> Sent {
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
pub(crate) fn wait_for_backlog(target: &dyn Target) {
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
pub(crate) fn settle(target: &dyn Target, before: u64, sent: u64) -> u64 {
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
pub(crate) fn run(target: &dyn Target, mix: &Path, rate: f64, seconds: f64) -> Run {
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
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) zero_loss: Run,
    /// The lowest rate that lost datagrams twice, when one did.
    pub(crate) first_lossy: Option<Run>,
    pub(crate) sender_bound: bool,
    pub(crate) overload: Option<Run>,
    pub(crate) latency: Option<(f64, f64)>,
    pub(crate) peak_rss_mib: f64,
    /// The doubling steps (25k, 50k, 100k, ... per second), the same for every
    /// receiver, so CPU can be compared at equal rates.
    pub(crate) ladder: Vec<Run>,
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

pub(crate) fn measure(target: &dyn Target, mix: &Path, seconds: f64, log: &mut String) -> Outcome {
    let mut good = Run::default();
    let mut bad: Option<Run> = None;
    let mut rate = 25_000.0;
    let mut sender_bound = false;
    let mut ladder = Vec::new();
    // Every lossless run: the zero-loss rate is the fastest of them, which
    // need not be the last (a sender-bound step can achieve less than the
    // step before it).
    let mut lossless = Vec::new();
    loop {
        let result = run_twice_if_lossy(target, mix, rate, seconds, log);
        ladder.push(result.clone());
        if result.lossless() {
            let bound = result.achieved < rate * 0.9;
            lossless.push(result.clone());
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
        let mut low = good.clone();
        for _ in 0..3 {
            let rate = (low.rate.max(1.0) + high.rate) / 2.0;
            let result = run_twice_if_lossy(target, mix, rate, seconds, log);
            if result.lossless() {
                lossless.push(result.clone());
                low = result;
            } else {
                high = result;
            }
        }
        first_lossy = Some(high);
    }
    if let Some(fastest) = lossless
        .into_iter()
        .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
    {
        good = fastest;
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
pub(crate) fn cpu_at_same_rate(a: &Outcome, b: &Outcome) -> Option<(f64, f64, f64)> {
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
