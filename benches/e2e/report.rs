//! The report: herald as shipped against its targets, what the floor leaves
//! for the rest, the CPU budget behind the rates, and the machine's
//! description. It measures nothing.

use std::fmt::Write as _;

use crate::receivers::herald::Setup;
use crate::receivers::{DRAIN, FLOOR, RSYSLOG};
use crate::runs::{Outcome, Run, cpu_at_same_rate};
use crate::{MIX_RUN, SENDER_SOCKETS};

/// What a whole run measured, for [`render`].
pub(crate) struct Results {
    /// One per row, in the table's order.
    pub(crate) outcomes: Vec<Outcome>,
    /// rsyslog's row was wanted and `rsyslogd` is not installed.
    pub(crate) rsyslog_missing: bool,
    /// herald as shipped at a steady 100k/s: peak RSS in MiB.
    pub(crate) steady_rss: Option<f64>,
    /// The "Sense rates" and "bursts" tables (empty when not run).
    pub(crate) sense: String,
    pub(crate) bursts: String,
    /// Every run's line.
    pub(crate) log: String,
    /// Seconds a run sends.
    pub(crate) seconds: f64,
    /// The mix: its kinds, and its shortest and longest datagram.
    pub(crate) kinds: usize,
    pub(crate) shortest: usize,
    pub(crate) longest: usize,
    /// What the floor writes a datagram.
    pub(crate) line_bytes: usize,
}

/// `BENCHMARKS.md` above the study: the machine, the table, herald's
/// targets, the disk buffer's cost, the Sense-rate and burst tables, how to
/// read them and every run's line.
pub(crate) fn render(results: &Results) -> String {
    let Results {
        outcomes,
        rsyslog_missing,
        steady_rss,
        sense,
        bursts: bursts_table,
        log,
        seconds,
        kinds,
        shortest,
        longest,
        line_bytes,
    } = results;
    let find = |name: &str| outcomes.iter().find(|o| o.name == name);
    let drain = find(DRAIN);
    let baseline = drain.map_or(1.0, |d| d.zero_loss.achieved.max(1.0));
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| receiver | zero-loss rate (datagrams/s) | vs drain | CPU at that rate | CPU µs/event | sender µs/event; cores used with it | written to disk per event | peak RSS | at 2× that rate: sent / handled | lost at 2×, by cause | latency p50 / p99 (half rate) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
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
    if *rsyslog_missing {
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
    let floor_row = if outcomes.iter().any(|o| o.name == FLOOR) {
        format!(
            " The floor row is the drain writing, for every datagram, a line as long as \
             herald's JSON for the mix ({line_bytes} bytes) with herald's own file writer \
             and the file sink's defaults (batches of up to 1,000 lines or 200 ms, \
             rotation at 100 MiB, write-behind, a sync at most once a second), on the \
             thread that receives, with nothing parsed or encoded."
        )
    } else {
        String::new()
    };
    let report = format!(
        "# herald benchmarks\n\n\
         Produced by `cargo bench --bench e2e` on {}.\n\
         Run length {seconds} s per step; datagram mix: {kinds} kinds, {shortest}–{longest} bytes (every Sense \
         message kind plus long messages), each sent {MIX_RUN} times in a row. Sender: `herald send --file` (batched \
         `sendmmsg`, runs of equal length as one segmented send, from {SENDER_SOCKETS} source ports in turn), a process of its own on the same machine, over loopback. The \
         headline row is herald as shipped: the file sink with its default rotation \
         (100 MiB, 5 files), background sync every second and default queues; the other \
         herald rows change one thing each, and the pair rows run two instances on one \
         port (`ingest.reuse_port`), their CPU and memory summed.{floor_row}\n\n\
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
    );
    report
}

/// herald as shipped against its targets: at least 1.3× rsyslog's zero-loss
/// rate, at least 90 % of the drain's, and at most 1.5× the drain's CPU per
/// datagram at the same rate; what the floor costs against the drain
/// ([`floor_share`]); the CPU budget behind the rates ([`budget`]).
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
