//! `herald send`: sample datagrams of every kind, and a paced UDP sender for
//! connectivity checks and smoke tests.
//!
//! The samples are the project's fixtures, built exactly to the Sense appender
//! patterns, so what `herald send` emits is what a Sense node would. This module
//! sends; it never listens.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// One built-in sample datagram.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The name used with `--kind`.
    pub kind: &'static str,
    /// The datagram.
    pub datagram: &'static [u8],
}

macro_rules! samples {
    ($($kind:literal => $file:literal,)*) => {
        /// Every built-in sample, one per kind of Sense message.
        pub static SAMPLES: &[Sample] = &[
            $(Sample {
                kind: $kind,
                datagram: include_bytes!(concat!("../../fixtures/datagrams/", $file)),
            },)*
        ];
    };
}

samples! {
    "engine" => "engine_error.txt",
    "proxy" => "proxy_warn.txt",
    "repository" => "repository_warn.txt",
    "scheduler" => "scheduler_warn.txt",
    "qix-perf" => "qix_perf_user.txt",
    "session" => "session_start.txt",
    "connection" => "connection_open.txt",
    "task-failed" => "task_reload_failed.txt",
    "task-aborted" => "task_aborted.txt",
    "task-success" => "task_success_double_slash.txt",
    "task-distribute" => "task_distribute.txt",
    "engine-reload-failed" => "engine_reload_failed.txt",
}

/// The event a built-in sample parses to (sender `10.0.0.5:61000`, received at
/// the Unix epoch), for tests across the crate.
#[cfg(test)]
pub(crate) fn sample_event(kind: &str) -> crate::event::Event {
    let sample = SAMPLES
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no sample {kind}"));
    crate::parse::Parser::new(&crate::parse::ParseConfig::default())
        .expect("default config")
        .parse(
            sample.datagram,
            "10.0.0.5:61000".parse().expect("address"),
            jiff::Timestamp::UNIX_EPOCH,
        )
        .expect("samples parse")
}

/// The samples for `--kind`: one kind, or `all`.
///
/// # Errors
///
/// When the kind is unknown; the message lists the known ones.
pub fn samples(kind: &str) -> Result<Vec<Vec<u8>>, String> {
    if kind == "all" {
        return Ok(SAMPLES.iter().map(|s| s.datagram.to_vec()).collect());
    }
    SAMPLES
        .iter()
        .find(|s| s.kind == kind)
        .map(|s| vec![s.datagram.to_vec()])
        .ok_or_else(|| {
            let kinds: Vec<_> = SAMPLES.iter().map(|s| s.kind).collect();
            format!(
                "unknown kind {kind:?}; use all or one of: {}",
                kinds.join(", ")
            )
        })
}

/// Reads one datagram per line from a file (blank lines skipped; a trailing
/// `\r` is kept off).
///
/// # Errors
///
/// When the file cannot be read or has no datagram in it.
pub fn lines(path: &std::path::Path) -> io::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)?;
    let datagrams: Vec<Vec<u8>> = bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if datagrams.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file has no lines to send",
        ));
    }
    Ok(datagrams)
}

/// Resolves `--to`: `HOST:PORT` with a host name, an IPv4 address or an IPv6
/// address in brackets (`[::1]:9996`). Returns the first address a socket can
/// be connected to (from `from`, when given: only addresses of its family).
///
/// # Errors
///
/// A message naming the host: not `HOST:PORT`, not resolvable, no address of
/// `from`'s family, or no address reachable (with each address's reason).
pub fn resolve(target: &str, from: Option<IpAddr>) -> Result<SocketAddr, String> {
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(format!(
            "{target:?} has no port; write HOST:PORT, e.g. {target}:9996"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "{target:?} is not HOST:PORT (e.g. localhost:9996, 10.1.0.5:9996 or [::1]:9996)"
        ));
    }
    let host_name = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve host {host_name:?}: {}", plain_io(&err)))?
        .collect();
    let candidates: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|addr| from.is_none_or(|from| from.is_ipv4() == addr.is_ipv4()))
        .collect();
    if candidates.is_empty() {
        return Err(match from {
            Some(from) if !addresses.is_empty() => format!(
                "host {host_name:?} has no {} address to send to from {from}",
                if from.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
            _ => format!("host {host_name:?} has no address"),
        });
    }
    let mut reasons = Vec::new();
    for addr in candidates {
        match connect(addr, from) {
            Ok(_) => return Ok(addr),
            Err(err) => reasons.push(format!("{addr}: {}", plain_io(&err))),
        }
    }
    Err(format!(
        "cannot send to host {host_name:?}: {}",
        reasons.join("; ")
    ))
}

/// A socket bound to `from` (or any address of `to`'s family) and connected to `to`.
fn connect(to: SocketAddr, from: Option<IpAddr>) -> io::Result<UdpSocket> {
    let from = from.unwrap_or(match to {
        SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    });
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))?;
    socket.connect(to)?;
    Ok(socket)
}

/// An I/O error as words: `connection refused`, without `(os error 111)`.
fn plain_io(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", err.kind()),
    }
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Destination.
    pub to: SocketAddr,
    /// Source address to send from (e.g. `127.0.0.2` to test the allowlist).
    pub from: Option<IpAddr>,
    /// Datagrams to send in total (the set is cycled); `None`: each once, or
    /// unlimited when `duration` is set.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Datagrams per second; `None` or 0: as fast as possible.
    pub rate: Option<f64>,
    /// Sockets (source ports) to send from, batch by batch in turn, as several
    /// Sense services on one node would; at least 1.
    pub sockets: usize,
}

/// Why sending went wrong, by kind of error: a stable name for `--json`, the
/// reason in words and what to check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// A stable name: `connection_refused`, `no_buffer_space`, ... (the
    /// error kind, for errors without a name of their own).
    pub kind: String,
    /// The reason in words: `connection refused`.
    pub reason: String,
    /// What to check, if there is an idea: `nothing listens on 127.0.0.1:9996?`.
    pub hint: Option<String>,
}

impl Problem {
    fn of(err: &io::Error, to: SocketAddr) -> Problem {
        let (kind, reason, hint) = match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => (
                "connection_refused",
                "connection refused",
                format!("nothing listens on {to}?"),
            ),
            Some(libc::ENOBUFS | libc::EAGAIN) => (
                "no_buffer_space",
                "no buffer space",
                "the kernel's send queue is full; try a lower --rate".into(),
            ),
            Some(libc::EMSGSIZE) => (
                "message_too_long",
                "message too long",
                "a datagram is larger than the network allows".into(),
            ),
            Some(libc::ENETUNREACH) => (
                "network_unreachable",
                "network unreachable",
                format!("no route to {to}"),
            ),
            Some(libc::EHOSTUNREACH) => (
                "host_unreachable",
                "host unreachable",
                format!("no route to {to}"),
            ),
            Some(libc::EPERM | libc::EACCES) => (
                "not_permitted",
                "not permitted",
                "a firewall rule on this machine?".into(),
            ),
            _ => {
                return Problem {
                    kind: format!("{:?}", err.kind()),
                    reason: plain_io(err),
                    hint: None,
                };
            }
        };
        Problem {
            kind: kind.into(),
            reason: reason.into(),
            hint: Some(hint),
        }
    }

    /// `connection refused 75 times (nothing listens on 127.0.0.1:9996?)`.
    pub fn describe(&self, count: u64) -> String {
        let times = if count == 1 {
            "once".to_string()
        } else {
            format!("{count} times")
        };
        match &self.hint {
            Some(hint) => format!("{} {times} ({hint})", self.reason),
            None => format!("{} {times}", self.reason),
        }
    }
}

/// What was sent.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams that could not be sent.
    pub failed: u64,
    /// Every error the socket reported, by kind, with how often. Some errors
    /// come back on a later send: "connection refused" is the destination's
    /// answer to an earlier datagram, so it counts here, and the datagram in
    /// hand is sent again.
    pub problems: std::collections::BTreeMap<Problem, u64>,
    /// Time taken: with a rate, until the end of the last datagram's slot
    /// (100 datagrams at 50/s take 2 s) or the last send, whichever is later.
    pub elapsed: Duration,
}

impl SendReport {
    /// Datagrams per second achieved.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether every datagram was sent and no error came back.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.problems.is_empty()
    }

    /// The problems as one line: `connection refused 75 times (...); ...`.
    pub fn problems_text(&self) -> String {
        self.problems
            .iter()
            .map(|(problem, &count)| problem.describe(count))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

mod batch;

use batch::send_batch;

/// Datagrams handed to the kernel per system call.
const BATCH: usize = 256;

/// When pacing, the sender waits until this much time's worth of datagrams
/// (at most [`BATCH`]) is due and sends them in one call, instead of waking
/// for each datagram as it falls due: at 200k/s that is a wake-up every
/// 0.5 ms instead of every 5 µs, and the sender's CPU goes to sending.
const PACE_SLICE: Duration = Duration::from_micros(500);

/// Sends `datagrams` (cycled) to `options.to`, paced to `options.rate`, in
/// batches (`sendmmsg` on Linux). `progress` is called about ten times a second
/// with the datagrams sent so far.
///
/// Pacing follows a schedule fixed at the start: datagram `k` is due at
/// `k / rate` seconds, so time lost in one sleep or system call is made up by
/// the next, and a run of `n` datagrams ends `n / rate` seconds after it began.
/// Datagrams go out in slices of [`PACE_SLICE`] (or one datagram, when that
/// is longer): each is sent once the last of its slice is due.
///
/// # Errors
///
/// When the sending socket cannot be bound or connected.
pub fn send(
    datagrams: &[Vec<u8>],
    options: &SendOptions,
    mut progress: impl FnMut(u64),
) -> io::Result<SendReport> {
    let sockets = (0..options.sockets.max(1))
        .map(|_| connect(options.to, options.from))
        .collect::<io::Result<Vec<_>>>()?;
    let mut turn = 0;
    let total = options.count.unwrap_or(if options.duration.is_some() {
        u64::MAX
    } else {
        datagrams.len() as u64
    });
    let schedule = Schedule::new(options.rate, total, options.duration);
    let start = Instant::now();
    let mut last_progress = start;
    let mut outcome = Outcome::default();
    let mut attempted = 0u64;
    let mut batch: Vec<&[u8]> = Vec::with_capacity(BATCH);
    // Segmentation offload for runs of equal-length datagrams, until the
    // kernel refuses it.
    let mut segmented = true;
    while !datagrams.is_empty() {
        let now = Instant::now();
        let n = match schedule.step(now - start, attempted) {
            Step::Done => break,
            Step::WaitUntil(offset) => {
                sleep_until(start + offset);
                continue;
            }
            Step::Send(n) => n,
        };
        batch.clear();
        batch.extend((0..n).map(|k| {
            datagrams[((attempted + k as u64) % datagrams.len() as u64) as usize].as_slice()
        }));
        send_batch(
            &sockets[turn],
            &batch,
            options.to,
            &mut outcome,
            &mut segmented,
        );
        turn = (turn + 1) % sockets.len();
        attempted += n as u64;
        if now.duration_since(last_progress) >= Duration::from_millis(100) {
            progress(outcome.sent);
            last_progress = now;
        }
    }
    // With a rate, the last datagram's slot ends the run: n datagrams at r/s
    // take n / r seconds (or the duration asked for).
    // The time the run took is the later of the last send and that slot's end
    // (a late wake-up from the final sleep sends nothing, so it does not count).
    let mut elapsed = start.elapsed();
    if let Some(slot_end) = schedule.slot_end(attempted) {
        elapsed = elapsed.max(slot_end);
        sleep_until(start + slot_end);
    }
    progress(outcome.sent);
    if attempted > 0 {
        // The answer to the last datagrams comes after the last send: wait a
        // moment for a refusal (a loopback one is there at once).
        // Waiting on the first socket is enough time for every refusal to
        // arrive; the others are only asked.
        for (i, socket) in sockets.iter().enumerate() {
            outcome.late_error(socket, options.to, i == 0);
        }
    }
    Ok(SendReport {
        sent: outcome.sent,
        failed: outcome.failed,
        problems: outcome.problems,
        elapsed,
    })
}

/// When each datagram of a run goes out: datagram `k` is due `k / rate`
/// seconds after the start, and they are sent in slices of [`PACE_SLICE`].
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Datagrams a second; `None`: as fast as the kernel takes them.
    rate: Option<f64>,
    /// Datagrams sent at once when pacing (at least one).
    slice: u64,
    /// Datagrams in the run (`u64::MAX`: until `end`).
    total: u64,
    /// When the run ends, from its start.
    end: Option<Duration>,
}

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Sends this many datagrams now.
    Send(usize),
    /// Sleeps until this long after the start.
    WaitUntil(Duration),
    /// The run is over.
    Done,
}

impl Schedule {
    fn new(rate: Option<f64>, total: u64, end: Option<Duration>) -> Schedule {
        let rate = rate.filter(|&rate| rate > 0.0 && rate.is_finite());
        let slice = rate.map_or(1, |rate| {
            ((rate * PACE_SLICE.as_secs_f64()).ceil() as u64).clamp(1, BATCH as u64)
        });
        Schedule {
            rate,
            slice,
            total,
            end,
        }
    }

    /// When datagram `k` (from 0) is due, from the start.
    fn due_at(&self, k: u64) -> Duration {
        self.rate.map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(k as f64 / rate)
        })
    }

    /// What to do `elapsed` after the start, with `attempted` datagrams sent:
    /// send every datagram due once a whole slice is (or what is left of the
    /// run, or what is due when the run ends before the slice is), at most
    /// [`BATCH`] at once; otherwise wait until it is.
    fn step(&self, elapsed: Duration, attempted: u64) -> Step {
        if attempted >= self.total || self.end.is_some_and(|end| elapsed >= end) {
            return Step::Done;
        }
        let due = match self.rate {
            // Every datagram whose time has come: k is due at k / rate.
            Some(rate) => (elapsed.as_secs_f64() * rate).floor() as u64 + 1,
            None => u64::MAX,
        };
        let n = due
            .min(self.total)
            .saturating_sub(attempted)
            .min(BATCH as u64);
        let wanted = self.slice.min(self.total - attempted);
        if n >= wanted {
            return Step::Send(n as usize);
        }
        let full = self.due_at(attempted + wanted - 1);
        match self.end {
            // The run ends before this slice is due in full: what is due
            // goes now.
            Some(end) if full >= end && n > 0 => Step::Send(n as usize),
            Some(end) => Step::WaitUntil(full.min(end)),
            None => Step::WaitUntil(full),
        }
    }

    /// When the slot of the last of `attempted` datagrams ends, from the
    /// start (`None` without a rate): `n` datagrams at `r`/s take `n / r`
    /// seconds, or the duration asked for.
    fn slot_end(&self, attempted: u64) -> Option<Duration> {
        if self.rate.is_none() || attempted == 0 {
            return None;
        }
        let end = self.due_at(attempted);
        Some(self.end.map_or(end, |limit| end.min(limit)))
    }
}

/// How long to wait after the last send for the destination's refusal.
const LAST_ANSWER_WAIT: Duration = Duration::from_millis(50);

/// Sleeps until `deadline` (at once when it has passed).
fn sleep_until(deadline: Instant) {
    let wait = deadline.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

/// What the sends of a run came to.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    failed: u64,
    problems: std::collections::BTreeMap<Problem, u64>,
}

impl Outcome {
    /// Records an error reported after the last send, if one comes within
    /// [`LAST_ANSWER_WAIT`] (with `wait`; else only one already reported).
    fn late_error(&mut self, socket: &UdpSocket, to: SocketAddr, wait: bool) {
        let pending = match socket.take_error() {
            Ok(Some(err)) => Some(err),
            _ if !wait => None,
            _ => {
                // A connected UDP socket's receive reports a refusal as an error.
                let mut buf = [0u8; 1];
                match socket
                    .set_read_timeout(Some(LAST_ANSWER_WAIT))
                    .and_then(|()| socket.recv(&mut buf))
                {
                    Err(err)
                        if !matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        Some(err)
                    }
                    _ => None,
                }
            }
        };
        if let Some(err) = pending {
            *self.problems.entry(Problem::of(&err, to)).or_default() += 1;
        }
    }

    /// Records an error; returns whether the datagram in hand should be sent
    /// again (the error was about an earlier one, or a signal interrupted the call).
    fn error(&mut self, err: &io::Error, to: SocketAddr, tries: &mut u32) -> bool {
        if err.kind() == io::ErrorKind::Interrupted {
            return true;
        }
        *self.problems.entry(Problem::of(err, to)).or_default() += 1;
        *tries += 1;
        // A refusal is the answer to an earlier datagram, reported now; this one
        // has not been tried yet. A few tries at most: refusals can keep coming.
        err.raw_os_error() == Some(libc::ECONNREFUSED) && *tries < 3
    }
}

#[cfg(test)]
mod tests;
