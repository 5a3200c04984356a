//! A private SMTP server for tests: `tests/support/smtp_server.py` (Python's
//! aiosmtpd) started on a free loopback port with a temporary directory, and
//! killed on drop. Every accepted message is parsed by Python's email package
//! (not by lettre, which built it) and recorded as one JSON line, which
//! [`SmtpServer::messages`] reads back.
//!
//! For TLS, [`Tls::generate`] makes a throwaway CA and a server certificate for
//! `localhost` and `127.0.0.1` with the `openssl` CLI.
//!
//! Without python3 + aiosmtpd (or openssl, for TLS) the tests say so and pass,
//! except under CI (`CI` set), where `.ci/run` installs them and their absence
//! is a failure. Depends on nothing but std, serde_json and tempfile.

#![allow(dead_code)] // each user needs a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::ports::server_port as free_port;

/// Whether `program args` runs and succeeds.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `None` (with a message) when a tool is missing outside CI; fails under CI.
fn require(available: bool, what: &str) -> Option<()> {
    if available {
        return Some(());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is missing; .ci/run must install it"
    );
    eprintln!("skipped: {what} is missing");
    None
}

/// A throwaway CA and a server certificate signed by it.
#[derive(Debug)]
pub struct Tls {
    dir: TempDir,
}

impl Tls {
    /// Generates the CA and a certificate for `localhost` / `127.0.0.1`;
    /// `None` when openssl is missing (outside CI).
    pub fn generate() -> Option<Tls> {
        require(runs("openssl", &["version"]), "the openssl CLI")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let ext = dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=herald test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Some(Tls { dir })
    }

    /// The CA certificate (PEM), for `tls_ca_file`.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// Offer (and require) STARTTLS with this certificate; with `implicit_tls`,
    /// speak TLS from the first byte instead (SMTPS).
    pub tls: Option<&'a Tls>,
    /// TLS from the first byte (needs `tls`).
    pub implicit_tls: bool,
    /// Require AUTH with this (user, password).
    pub auth: Option<(&'a str, &'a str)>,
    /// Recipients containing this are refused with 550 (unknown mailbox).
    pub refuse: Option<&'a str>,
    /// Recipients containing `.0` are refused with 451 the first `.1` times.
    pub flaky: Option<(&'a str, u32)>,
}

/// A running aiosmtpd, killed on drop.
pub struct SmtpServer {
    dir: TempDir,
    child: Child,
    _stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SmtpServer {
    /// Starts the server; `None` when python3 or aiosmtpd is missing (outside CI).
    pub fn start(options: &Options<'_>) -> Option<SmtpServer> {
        require(
            runs("python3", &["-c", "import aiosmtpd"]),
            "python3 with aiosmtpd (pip install aiosmtpd)",
        )?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg("--port")
            .arg(addr.port().to_string())
            .arg("--out")
            .arg(dir.path().join("messages.jsonl"));
        if let Some(tls) = options.tls {
            command
                .arg("--cert")
                .arg(tls.cert())
                .arg("--key")
                .arg(tls.key());
            if options.implicit_tls {
                command.arg("--implicit-tls");
            }
        }
        if let Some((user, password)) = options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if let Some(refuse) = options.refuse {
            command.arg("--refuse").arg(refuse);
        }
        if let Some((flaky, times)) = options.flaky {
            command.arg("--flaky").arg(format!("{flaky}:{times}"));
        }
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let server = SmtpServer {
            dir,
            child,
            _stdin: stdin,
            addr,
        };
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP server did not start:\n{}",
            server.log()
        );
        Some(server)
    }

    /// The server's standard error (Python tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Everything recorded so far: `{"event": "message", ...}` for accepted
    /// messages and `{"event": "refused", "rcpt", "code"}` for refusals.
    pub fn records(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("messages.jsonl")).unwrap_or_default();
        // The server may be writing a line right now.
        crate::harness::whole_lines(&text)
            .lines()
            .map(|line| serde_json::from_str(line).expect("server writes JSON lines"))
            .collect()
    }

    /// The accepted messages so far.
    pub fn messages(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == "message")
            .collect()
    }

    /// Waits until at least `n` messages arrived (fails after `deadline`).
    pub fn wait_for_messages(&self, n: usize, deadline: Duration) -> Vec<Value> {
        let end = Instant::now() + deadline;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < end,
                "{} of {n} messages arrived:\n{messages:#?}\nserver log:\n{}",
                messages.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
