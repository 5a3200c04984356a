//! What appending an event file costs in the page cache: the file sink's own
//! [`RotatingFile`] (which writes back behind itself and drops what is written
//! back) against a plain append-only file, writing the same lines in the same
//! batches.
//!
//! Each run writes 460 MiB of 777-byte lines (the benchmark mix's mean JSON
//! line) in batches of 84 lines, as the file sink does at 200k events/s, into a
//! new file under `target/`, after removing the last run's file and waiting 6 s
//! (a machine that hands freed memory back to its host does so within that
//! time, so every run starts on memory the same way). Runs alternate and print
//! the writer thread's CPU per byte and per line, and the whole process's
//! (which includes the write-behind thread). Nothing here is asserted.
//!
//! `cargo bench --bench page_cache` (about two minutes; Linux only).

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use herald::sinks::file::RotatingFile;

    const LINE: usize = 777;
    const LINES_PER_BATCH: usize = 84;
    const TOTAL: u64 = 460 * 1024 * 1024;
    const ROUNDS: usize = 3;

    /// CPU seconds of this thread (`RUSAGE_THREAD`) or process.
    fn cpu(who: libc::c_int) -> f64 {
        // SAFETY: `getrusage` fills the zeroed struct it is given.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }

    /// Writes the run's lines through `append`; returns (thread, process) CPU
    /// seconds.
    fn run(mut append: impl FnMut(&[u8])) -> (f64, f64) {
        let mut line = "x".repeat(LINE - 1);
        line.push('\n');
        let batch = line.repeat(LINES_PER_BATCH);
        let (thread, process) = (cpu(libc::RUSAGE_THREAD), cpu(libc::RUSAGE_SELF));
        let mut written = 0u64;
        while written < TOTAL {
            append(batch.as_bytes());
            written += batch.len() as u64;
        }
        (
            cpu(libc::RUSAGE_THREAD) - thread,
            cpu(libc::RUSAGE_SELF) - process,
        )
    }

    fn fresh(path: &Path) {
        let _ = std::fs::remove_file(path);
        std::thread::sleep(Duration::from_secs(6));
    }

    pub fn main() {
        if std::env::args().any(|arg| arg == "--list") {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-cache-bench");
        std::fs::create_dir_all(&dir).expect("create target/page-cache-bench");
        let path = dir.join("events.jsonl");
        let mut results: [(&str, Vec<(f64, f64)>); 2] =
            [("plain append", Vec::new()), ("RotatingFile", Vec::new())];
        for round in 1..=ROUNDS {
            fresh(&path);
            let mut file: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open");
            let plain = run(|bytes| file.write_all(bytes).expect("write"));
            drop(file);
            results[0].1.push(plain);

            fresh(&path);
            // No rotation, so that only the page cache differs.
            let mut file = RotatingFile::open(&path, 0, 0).expect("open");
            let ours = run(|bytes| file.append(bytes).expect("write"));
            drop(file);
            results[1].1.push(ours);
            println!(
                "round {round}: writer CPU plain {:.2} s, RotatingFile {:.2} s",
                plain.0, ours.0
            );
        }
        let _ = std::fs::remove_file(&path);
        let lines = TOTAL as f64 / LINE as f64;
        for (name, runs) in &mut results {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (thread, process) = runs[runs.len() / 2];
            println!(
                "{name}: writer thread {:.2} ns/byte, {:.2} µs a {LINE}-byte line; whole process {:.2} µs a line (median of {ROUNDS})",
                thread * 1e9 / TOTAL as f64,
                thread * 1e6 / lines,
                process * 1e6 / lines,
            );
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("page_cache: Linux only");
}
