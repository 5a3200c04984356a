//! The drain and the floor: this benchmark binary run as a receiver of its
//! own (`e2e drain <port> <count file>`, `e2e floor <port> <count file>
//! <output> <line bytes>`), counting what it read into a file the bench
//! polls. The drain only receives; the floor also writes a line per datagram
//! with herald's own file writer and the file sink's defaults, and parses
//! nothing.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use herald::ingest::socket::{Receiver, Wait};
use herald::sinks::file::RotatingFile;

use super::{DRAIN, FLOOR, Target};
use crate::readings::free_udp_port;

/// Runs this process as the receiver `args` name (after the binary's own
/// name: `drain <port> <count file>` or `floor <port> <count file> <output>
/// <line bytes>`); false when they name none.
pub(crate) fn run_as_receiver(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("drain") => {
            let port = args[1].parse().expect("port");
            receive(port, Path::new(&args[2]), |_| {}, || {});
        }
        Some("floor") => {
            let port = args[1].parse().expect("port");
            let line = args[4].parse().expect("line bytes");
            floor(port, Path::new(&args[2]), Path::new(&args[3]), line);
        }
        _ => return false,
    }
    true
}

/// Receives on `port` with herald's own socket code and options, calling
/// `each` for every datagram's payload and `after` after every read, and writes the
/// count read so far to `count_file` every 20 ms. Never returns.
fn receive(port: u16, count_file: &Path, mut each: impl FnMut(&[u8]), mut after: impl FnMut()) {
    let bound =
        herald::ingest::socket::bind(SocketAddr::from(([127, 0, 0, 1], port)), 8 << 20, false)
            .expect("bind");
    let mut receiver = Receiver::new(bound.socket, 64, 65_507);
    let mut count = 0u64;
    let mut last_write = Instant::now();
    loop {
        let _ = receiver.recv_batch(Wait::Block, |datagram| {
            each(datagram.payload);
            count += 1;
        });
        after();
        if last_write.elapsed() > Duration::from_millis(20) {
            let tmp = count_file.with_extension("tmp");
            if std::fs::write(&tmp, count.to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, count_file);
            }
            last_write = Instant::now();
        }
    }
}

/// The file sink's defaults the floor writes with: a batch of at most this
/// many lines, or what this long brought; rotation at 100 MiB keeping 5 files;
/// a sync at most once a second.
const FLOOR_BATCH_LINES: usize = 1000;
const FLOOR_BATCH_WAIT: Duration = Duration::from_millis(200);
const FLOOR_FILE_BYTES: u64 = 100 << 20;
const FLOOR_FILES: u32 = 5;
const FLOOR_SYNC_EVERY: Duration = Duration::from_secs(1);

/// The floor: the drain, writing a line of `line` bytes for every datagram
/// it reads (the datagram's own bytes, repeated to length) as herald's file
/// sink writes its JSON: in batches of up to 1,000 lines or 200 ms, each one
/// `append` of herald's own [`RotatingFile`] (rotation, write-behind and
/// closing rotated files on its upkeep thread), and a sync at most once a
/// second on a thread of its own. Nothing is parsed or encoded, and it all
/// happens on the receiving thread.
fn floor(port: u16, count_file: &Path, out: &Path, line: usize) {
    let file = RefCell::new(
        RotatingFile::open(out, FLOOR_FILE_BYTES, FLOOR_FILES).expect("open the floor's file"),
    );
    // The sink's background sync: one at a time, none started while one runs.
    let syncing = Arc::new(AtomicBool::new(false));
    let (syncs, handles) = mpsc::channel::<std::fs::File>();
    let done = syncing.clone();
    std::thread::spawn(move || {
        for handle in handles {
            let _ = handle.sync_data();
            done.store(false, Ordering::Release);
        }
    });
    let batch = RefCell::new(Vec::<u8>::with_capacity(FLOOR_BATCH_LINES * line));
    let (lines, first) = (Cell::new(0usize), Cell::new(None::<Instant>));
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let each = |payload: &[u8]| {
        let payload: &[u8] = if payload.is_empty() { b" " } else { payload };
        let mut batch = batch.borrow_mut();
        let end = batch.len() + line.saturating_sub(1);
        while batch.len() < end {
            let n = payload.len().min(end - batch.len());
            batch.extend_from_slice(&payload[..n]);
        }
        batch.push(b'\n');
        lines.set(lines.get() + 1);
        if first.get().is_none() {
            first.set(Some(Instant::now()));
        }
    };
    let after = || {
        let due = first
            .get()
            .is_some_and(|at| at.elapsed() >= FLOOR_BATCH_WAIT);
        if lines.get() >= FLOOR_BATCH_LINES || due {
            let mut batch = batch.borrow_mut();
            file.borrow_mut()
                .append(&batch)
                .expect("write the floor's file");
            batch.clear();
            lines.set(0);
            first.set(None);
            unsynced = true;
        }
        if unsynced
            && last_sync.elapsed() >= FLOOR_SYNC_EVERY
            && !syncing.load(Ordering::Acquire)
            && let Some(Ok(handle)) = file.borrow().handle()
        {
            syncing.store(true, Ordering::Release);
            let _ = syncs.send(handle);
            last_sync = Instant::now();
            unsynced = false;
        }
    };
    receive(port, count_file, each, after);
}

/// The mean length of the JSON line herald's file sink writes for a datagram
/// of `datagrams`, newline included: what the floor writes a datagram.
pub(crate) fn json_line_bytes(datagrams: &[Vec<u8>]) -> usize {
    let mut parser =
        herald::parse::Parser::new(&herald::parse::ParseConfig::default()).expect("parser");
    let sender = SocketAddr::from(([127, 0, 0, 1], 45_678));
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    let mut total = 0;
    for datagram in datagrams {
        out.clear();
        let event = parser
            .parse_shared(datagram, sender, now)
            .expect("the mix parses");
        event.write_json(&mut out);
        total += out.len() + 1;
    }
    total / datagrams.len().max(1)
}

/// The drain or the floor, as a child process of this bench.
pub(crate) struct Counted {
    name: &'static str,
    child: Child,
    port: u16,
    count_file: PathBuf,
    /// The floor's output (and its rotated files), removed when it stops.
    output: Option<PathBuf>,
}

impl Counted {
    /// This benchmark binary started as the drain, counting into a file in
    /// `dir`.
    pub(crate) fn drain(dir: &Path) -> Counted {
        let port = free_udp_port();
        Counted::start(DRAIN, port, dir, "drain", &[], None)
    }

    /// This benchmark binary started as the floor, writing `line` bytes a
    /// datagram into a file in `dir`.
    pub(crate) fn floor(dir: &Path, line: usize) -> Counted {
        let port = free_udp_port();
        let output = dir.join(format!("floor-{port}.log"));
        let more = [output.display().to_string(), line.to_string()];
        Counted::start(FLOOR, port, dir, "floor", &more, Some(output))
    }

    fn start(
        name: &'static str,
        port: u16,
        dir: &Path,
        mode: &str,
        more: &[String],
        output: Option<PathBuf>,
    ) -> Counted {
        let count_file = dir.join(format!("count-{port}"));
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args([mode, &port.to_string(), &count_file.display().to_string()])
            .args(more)
            .spawn()
            .expect("start this bench as a receiver");
        std::thread::sleep(Duration::from_millis(300));
        Counted {
            name,
            child,
            port,
            count_file,
            output,
        }
    }
}

impl Target for Counted {
    fn name(&self) -> &str {
        self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        std::fs::read_to_string(&self.count_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The floor's files would otherwise sit in the page cache through
        // the rows after it.
        if let Some(output) = &self.output {
            let _ = std::fs::remove_file(output);
            for n in 1..=FLOOR_FILES {
                let mut rotated = output.clone().into_os_string();
                rotated.push(format!(".{n}"));
                let _ = std::fs::remove_file(rotated);
            }
        }
    }
}
