//! The drain and the floor: this benchmark binary run as a receiver of its
//! own (`e2e drain <port> <count file>`, `e2e floor <port> <count file>
//! <output> <line bytes>`), counting what it read into a file the bench
//! polls. The drain only receives; the floor also writes a line per datagram
//! as herald's file sink writes, and parses nothing.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use herald::ingest::socket::{Receiver, Wait};

use super::{DRAIN, FLOOR, Target};
use crate::readings::free_udp_port;

/// How far the floor writes between write-behind requests, and how large its
/// file grows before it starts a new one: as herald's file sink.
const FLOOR_WRITE_BEHIND: u64 = 8 << 20;
const FLOOR_FILE_BYTES: u64 = 100 << 20;

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

/// The floor: the drain, writing a line of `line` bytes for every datagram
/// it reads (the datagram's own bytes, repeated to length), one `write` a
/// read. As herald's file sink: every 8 MiB it starts writing the new bytes
/// back and drops those written back before from the page cache, a thread of
/// its own syncs the file every second, and at 100 MiB the file is unlinked
/// and a new one started (the old one closed on that thread, which frees it).
/// Nothing is parsed or encoded.
fn floor(port: u16, count_file: &Path, out: &Path, line: usize) {
    let open = || {
        Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .expect("open the floor's file"),
        )
    };
    // The thread that syncs the current file every second and closes the
    // files rotated away.
    let (upkeep, files) = mpsc::channel::<Arc<std::fs::File>>();
    let mut file = open();
    let _ = upkeep.send(file.clone());
    std::thread::spawn(move || {
        let mut current: Option<Arc<std::fs::File>> = None;
        loop {
            match files.recv_timeout(Duration::from_secs(1)) {
                Ok(next) => current = Some(next),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(file) = &current {
                        let _ = file.sync_data();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    let buffer = std::cell::RefCell::new(Vec::<u8>::with_capacity(64 * line));
    let (mut size, mut behind_started, mut behind_forgotten) = (0u64, 0u64, 0u64);
    let each = |payload: &[u8]| {
        let payload: &[u8] = if payload.is_empty() { b" " } else { payload };
        let mut buffer = buffer.borrow_mut();
        let end = buffer.len() + line.saturating_sub(1);
        while buffer.len() < end {
            let n = payload.len().min(end - buffer.len());
            buffer.extend_from_slice(&payload[..n]);
        }
        buffer.push(b'\n');
    };
    let after = || {
        let mut buffer = buffer.borrow_mut();
        if !buffer.is_empty() {
            (&*file).write_all(&buffer).expect("write the floor's file");
            size += buffer.len() as u64;
            buffer.clear();
        }
        let aligned = herald::pagecache::align_down(size);
        if aligned >= behind_started + FLOOR_WRITE_BEHIND {
            herald::pagecache::start_writing(&file, &(behind_started..aligned));
            herald::pagecache::forget(&file, &(behind_forgotten..behind_started));
            (behind_forgotten, behind_started) = (behind_started, aligned);
        }
        if size >= FLOOR_FILE_BYTES {
            // The last handle on the unlinked file goes with the upkeep
            // thread's next file: closing it there frees it.
            let _ = std::fs::remove_file(out);
            file = open();
            let _ = upkeep.send(file.clone());
            (size, behind_started, behind_forgotten) = (0, 0, 0);
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
}

impl Counted {
    /// This benchmark binary started as the drain, counting into a file in
    /// `dir`.
    pub(crate) fn drain(dir: &Path) -> Counted {
        Counted::start(DRAIN, dir, |_, _| Vec::new())
    }

    /// This benchmark binary started as the floor, writing `line` bytes a
    /// datagram into a file in `dir`.
    pub(crate) fn floor(dir: &Path, line: usize) -> Counted {
        Counted::start(FLOOR, dir, |dir, port| {
            let out = dir.join(format!("floor-{port}.log"));
            vec![out.display().to_string(), line.to_string()]
        })
    }

    fn start(
        name: &'static str,
        dir: &Path,
        more: impl FnOnce(&Path, u16) -> Vec<String>,
    ) -> Counted {
        let port = free_udp_port();
        let count_file = dir.join(format!("count-{port}"));
        let mode = if name == FLOOR { "floor" } else { "drain" };
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args([mode, &port.to_string(), &count_file.display().to_string()])
            .args(more(dir, port))
            .spawn()
            .expect("start this bench as a receiver");
        std::thread::sleep(Duration::from_millis(300));
        Counted {
            name,
            child,
            port,
            count_file,
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
    }
}
