//! The receivers the bench measures, behind one [`Target`] trait: the drain
//! and the floor (this binary run as a child process, see [`counted`]),
//! herald in each of its setups, alone or as a pair on one port
//! ([`herald`]), and rsyslog ([`rsyslog`]). Each starts its process on a free
//! loopback port, reports what it handled and dropped, and stops its process
//! when dropped. This module does not send or judge: that is `runs`.

pub(crate) mod counted;
pub(crate) mod herald;
pub(crate) mod rsyslog;

use std::path::Path;

use crate::readings::Drops;

/// A receiver under test.
pub(crate) trait Target {
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

/// The drain's, the floor's and rsyslog's row names.
pub(crate) const DRAIN: &str = "drain (recvmmsg into a counter)";
pub(crate) const FLOOR: &str =
    "floor (the drain writing a JSON-sized line a datagram to a file, no parsing)";
pub(crate) const RSYSLOG: &str = "rsyslog (imudp → file)";

/// Empties `path`, which a receiver keeps open for appending.
fn truncate(path: &Path) {
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = file.set_len(0);
    }
}
