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
    /// Datagrams to send in total (the set is cycled); `None`: each once.
    pub count: Option<u64>,
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

/// Sends `datagrams` (cycled) to `options.to`, paced to `options.rate`.
///
/// # Errors
///
/// When the sending socket cannot be bound.
pub fn send(datagrams: &[Vec<u8>], options: &SendOptions) -> io::Result<SendReport> {
    let from = options.from.unwrap_or(match options.to {
        SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    });
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))?;
    let total = options.count.unwrap_or(datagrams.len() as u64);
    let interval = options
        .rate
        .filter(|&rate| rate > 0.0)
        .map(|rate| Duration::from_secs_f64(1.0 / rate));
    let start = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    for i in 0..total {
        if let Some(interval) = interval {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let datagram = &datagrams[(i % datagrams.len() as u64) as usize];
        match socket.send_to(datagram, options.to) {
            Ok(_) => sent += 1,
            Err(_) => failed += 1,
        }
    }
    Ok(SendReport {
        sent,
        failed,
        elapsed: start.elapsed(),
    })
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
    fn sends_the_requested_count_cycling_the_set() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let options = SendOptions {
            to: receiver.local_addr().unwrap(),
            from: None,
            count: Some(5),
            rate: None,
        };
        let report = send(&[b"a".to_vec(), b"b".to_vec()], &options).unwrap();
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
