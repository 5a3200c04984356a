//! What the bench reads off the machine: free loopback ports, a process's CPU
//! time, bytes written and peak memory from `/proc`, the kernel's drop count
//! for a UDP port, and labels in herald's Prometheus text. It starts nothing.

use std::collections::BTreeMap;
use std::net::UdpSocket;

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

pub(crate) fn free_tcp_port() -> u16 {
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
pub(crate) fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// Bytes the processes have caused to be written, together.
pub(crate) fn written_of(pids: &[u32]) -> u64 {
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
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The kernel's drop count for the UDP socket bound to `port` (/proc/net/udp).
pub(crate) fn kernel_drops(port: u16) -> u64 {
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
pub(crate) type Drops = BTreeMap<String, u64>;

/// `after` minus `before`, cause by cause, leaving out causes with none.
pub(crate) fn drops_since(before: &Drops, after: Drops) -> Drops {
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
pub(crate) fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}
