//! The two tables at the rates a Sense site sends: CPU per datagram of the
//! whole process at 100 to 50,000 datagrams a second ([`sense_rates`]), and
//! what a receiver loses of a slow stream when a burst comes into it
//! ([`bursts`]).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::readings::kernel_drops;
use crate::receivers::Target;
use crate::runs::{send_from_process, sender, sent_by, settle, wait_for_backlog};

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
pub(crate) fn sense_rates(target: &dyn Target, mix: &Path, log: &mut String) -> Vec<f64> {
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
pub(crate) fn bursts(target: &dyn Target, mix: &Path, log: &mut String) -> (Vec<Vec<u64>>, f64) {
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

/// The "Sense rates" table: herald's CPU per datagram at each of
/// [`SENSE_RATES`], and rsyslog's when it is installed.
pub(crate) fn sense_table(herald_us: &[f64], rsyslog_us: Option<&[f64]>) -> String {
    let mut table = format!(
        "At the rates a Qlik Sense site sends, CPU per datagram of the whole process \
         (every thread's run time from `/proc/<pid>/task/*/schedstat`, over \
         {SENSE_SECONDS} s of sending and half a second after):\n\n\
         | datagrams/s | herald as shipped | rsyslog |\n|---:|---|---|\n"
    );
    for (i, rate) in SENSE_RATES.iter().enumerate() {
        let rsyslog =
            rsyslog_us.map_or("not installed".to_string(), |us| format!("{:.1} µs", us[i]));
        let _ = writeln!(table, "| {rate:.0} | {:.1} µs | {rsyslog} |", herald_us[i]);
    }
    table.push('\n');
    table
}

/// The "bursts" table: what each receiver (a column; `None` when not
/// installed) lost per burst size and try.
pub(crate) fn bursts_table(columns: &[(&str, Option<Vec<Vec<u64>>>)], fastest: f64) -> String {
    let mut table = format!(
        "Bursts: a stream of {BURST_STREAM_RATE:.0} datagrams a second for {} s and, \
         {} s into it, a burst sent as fast as the sender goes (up to {fastest:.0}/s \
         here); datagrams lost (of stream and burst) in each of {BURST_TRIES} tries:\n\n\
         | burst |",
        BURST_STREAM.as_secs_f64(),
        BURST_AT.as_secs_f64(),
    );
    for (name, _) in columns {
        let _ = write!(table, " {name} |");
    }
    let _ = writeln!(table, "\n|---:|{}", "---|".repeat(columns.len()));
    for (i, size) in BURST_SIZES.iter().enumerate() {
        let _ = write!(table, "| {size} |");
        for (_, tries) in columns {
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
}
