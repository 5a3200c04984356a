//! herald as the bench runs it: one [`Setup`] (the sink, its settings, its
//! buffer) in a process of its own with its HTTP endpoint on loopback, read
//! through `/metrics` ([`Herald`]); and two instances sharing one port
//! ([`Pair`]). It does not send or judge.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Target, truncate};
use crate::readings::{Drops, free_tcp_port, free_udp_port, label};

pub(crate) struct Herald {
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
pub(crate) enum Setup {
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
    pub(crate) fn label(self) -> &'static str {
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
    pub(crate) fn start(setup: Setup) -> Herald {
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
pub(crate) struct Pair {
    name: String,
    instances: [Herald; 2],
}

impl Pair {
    pub(crate) fn start(setup: Setup) -> Pair {
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
