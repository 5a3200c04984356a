//! `herald send`: sample datagrams of every kind, and a paced UDP sender for
//! connectivity checks and smoke tests.
//!
//! The samples are the project's fixtures, built exactly to the Sense appender
//! patterns, so what `herald send` emits is what a Sense node would. This module
//! sends; it never listens.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
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
                datagram: include_bytes!(concat!("../fixtures/datagrams/", $file)),
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
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct SendReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the socket refused (e.g. nothing listening, buffer full).
    pub failed: u64,
    /// Time taken.
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
}

/// Datagrams handed to the kernel per system call.
const BATCH: usize = 64;

/// Sends `datagrams` (cycled) to `options.to`, paced to `options.rate`, in
/// batches (`sendmmsg` on Linux). `progress` is called about ten times a second
/// with the datagrams sent so far.
///
/// # Errors
///
/// When the sending socket cannot be bound or connected.
pub fn send(
    datagrams: &[Vec<u8>],
    options: &SendOptions,
    mut progress: impl FnMut(u64),
) -> io::Result<SendReport> {
    let from = options.from.unwrap_or(match options.to {
        SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    });
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))?;
    socket.connect(options.to)?;
    let total = options.count.unwrap_or(if options.duration.is_some() {
        u64::MAX
    } else {
        datagrams.len() as u64
    });
    let rate = options.rate.filter(|&rate| rate > 0.0);
    let start = Instant::now();
    let end = options.duration.map(|d| start + d);
    let mut last_progress = start;
    let (mut attempted, mut sent, mut failed) = (0u64, 0u64, 0u64);
    let mut batch: Vec<&[u8]> = Vec::with_capacity(BATCH);
    while attempted < total && !datagrams.is_empty() {
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            break;
        }
        let due = match rate {
            Some(rate) => ((now - start).as_secs_f64() * rate) as u64 + 1,
            None => u64::MAX,
        };
        let n = due.min(total).saturating_sub(attempted).min(BATCH as u64) as usize;
        if n == 0 {
            let next = start + Duration::from_secs_f64((attempted as f64) / rate.unwrap_or(1.0));
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .min(Duration::from_millis(5)),
            );
            continue;
        }
        batch.clear();
        batch.extend((0..n).map(|k| {
            datagrams[((attempted + k as u64) % datagrams.len() as u64) as usize].as_slice()
        }));
        let ok = send_batch(&socket, &batch);
        sent += ok as u64;
        failed += (n - ok) as u64;
        attempted += n as u64;
        if now.duration_since(last_progress) >= Duration::from_millis(100) {
            progress(sent);
            last_progress = now;
        }
    }
    progress(sent);
    Ok(SendReport {
        sent,
        failed,
        elapsed: start.elapsed(),
    })
}

/// Sends a batch on a connected socket; returns how many went out.
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, batch: &[&[u8]]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr; each header then points at one iovec
    // that lives until the call returns.
    let mut headers: Vec<libc::mmsghdr> = (0..batch.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    let (mut next, mut sent) = (0, 0);
    while next < batch.len() {
        // SAFETY: the headers and iovecs are valid for `batch.len() - next` entries.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[next..].as_mut_ptr(),
                (batch.len() - next) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            // An error (often ECONNREFUSED, reported for an earlier datagram when
            // nothing listens) stops the call: count the next one as failed and go on.
            next += 1;
        } else {
            sent += n as usize;
            next += n as usize;
        }
    }
    sent
}

/// Sends a batch on a connected socket; returns how many went out.
#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, batch: &[&[u8]]) -> usize {
    batch.iter().filter(|d| socket.send(d).is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseConfig, Parser};

    #[test]
    fn every_sample_parses() {
        let mut parser = Parser::new(&ParseConfig::default()).unwrap();
        for sample in SAMPLES {
            parser
                .parse(
                    sample.datagram,
                    "127.0.0.1:1".parse().unwrap(),
                    jiff::Timestamp::UNIX_EPOCH,
                )
                .unwrap_or_else(|err| panic!("{}: {err}", sample.kind));
        }
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let err = samples("printer").unwrap_err();
        assert!(err.contains("task-failed"), "{err}");
        assert_eq!(samples("all").unwrap().len(), SAMPLES.len());
    }

    #[test]
    fn paces_to_the_requested_rate_and_stops_after_the_duration() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let options = SendOptions {
            to: receiver.local_addr().unwrap(),
            from: None,
            count: None,
            duration: Some(Duration::from_millis(300)),
            rate: Some(100.0),
        };
        let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
        // 100/s for 0.3 s: about 30, never a flood.
        assert!((20..=40).contains(&report.sent), "{}", report.sent);
    }

    #[test]
    fn sending_to_a_closed_port_counts_failures_instead_of_stopping() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let options = SendOptions {
            to: closed,
            from: None,
            count: Some(500),
            duration: None,
            rate: None,
        };
        let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
        assert_eq!(report.sent + report.failed, 500);
    }

    #[test]
    fn sends_the_requested_count_cycling_the_set() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let options = SendOptions {
            to: receiver.local_addr().unwrap(),
            from: None,
            count: Some(5),
            duration: None,
            rate: None,
        };
        let report = send(&[b"a".to_vec(), b"b".to_vec()], &options, |_| {}).unwrap();
        assert_eq!(report.sent, 5);
        let mut buf = [0u8; 8];
        let got: Vec<u8> = (0..5)
            .map(|_| {
                receiver.recv(&mut buf).unwrap();
                buf[0]
            })
            .collect();
        assert_eq!(got, b"ababa");
    }
}
