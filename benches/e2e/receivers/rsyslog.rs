//! rsyslog as the bench runs it: `rsyslogd` with `imudp` (large receive
//! buffer) writing every message to a file, counted by its newlines. It does
//! not send or judge.

use std::cell::Cell;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RSYSLOG, Target, truncate};
use crate::readings::free_udp_port;

pub(crate) struct Rsyslog {
    child: Child,
    port: u16,
    out: PathBuf,
    /// (lines in files emptied earlier, bytes of the current file read so far,
    /// lines in those bytes), so each poll reads only what is new.
    counted: Cell<(u64, u64, u64)>,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    pub(crate) fn start() -> Option<Rsyslog> {
        let binary = ["/usr/sbin/rsyslogd", "rsyslogd"].into_iter().find(|b| {
            Command::new(b)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_udp_port();
        let out = dir.path().join("messages.log");
        let root = dir.path().display();
        let config = format!(
            "global(workDirectory=\"{root}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" rcvbufSize=\"8m\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
            out.display()
        );
        std::fs::write(dir.path().join("rsyslog.conf"), config).expect("config");
        let child = Command::new(binary)
            .arg("-n")
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let rsyslog = Rsyslog {
            child,
            port,
            out,
            counted: Cell::new((0, 0, 0)),
            _dir: dir,
        };
        let start = Instant::now();
        while !kernel_socket_open(port) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(rsyslog)
    }
}

fn kernel_socket_open(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&wanted))
        })
}

impl Target for Rsyslog {
    fn name(&self) -> &str {
        RSYSLOG
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
    fn received(&self) -> u64 {
        // Count the newlines rsyslog wrote since the last look.
        let (earlier, mut offset, mut lines) = self.counted.get();
        if let Ok(mut file) = std::fs::File::open(&self.out)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut buffer = vec![0u8; 1 << 20];
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                offset += n as u64;
                lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        self.counted.set((earlier, offset, lines));
        earlier + lines
    }
    fn recycle_output(&self) {
        let total = self.received();
        truncate(&self.out);
        self.counted.set((total, 0, 0));
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
