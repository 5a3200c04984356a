//! A private Prometheus for tests: `prometheus` from Debian's `prometheus`
//! package, started in the foreground on a free loopback port with its TSDB in
//! a temporary directory, scraping the targets a test gives every second.
//! Stopped on drop. Queries go through its HTTP API.
//!
//! Without prometheus, [`Prometheus::start`] says so and returns `None`, except
//! under CI (`CI` set), where it fails.

#![allow(dead_code)] // each user needs a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::harness::find_program;
use crate::ports::server_port as free_port;

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    dir: TempDir,
    child: Child,
    /// Its HTTP API on 127.0.0.1.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, `/metrics`) every
    /// second, or returns `None` when it is not installed (outside CI).
    pub fn start(targets: &[SocketAddr]) -> Option<Prometheus> {
        let Some(program) = find_program("prometheus") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "prometheus is not installed; .ci/run must install Debian's prometheus package"
            );
            eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(program)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { dir, child, addr };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if prometheus
                .get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
            {
                break;
            }
            let exited = prometheus.child.try_wait().ok().flatten().is_some();
            assert!(
                !exited && Instant::now() < end,
                "prometheus did not start:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(prometheus)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path`: (status, body), or `None` when nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// Evaluates `expr` now (instant query): the result vector, or what went
    /// wrong.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let encoded: String =
            percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let (status, body) = self
            .get(&format!("/api/v1/query?query={encoded}"))
            .ok_or("prometheus did not answer")?;
        let json: Value = serde_json::from_str(&body).map_err(|err| format!("{err}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Whether every target is up (scraped successfully).
    pub fn targets_up(&self) -> bool {
        self.query("up")
            .is_ok_and(|result| !result.is_empty() && result.iter().all(|r| r["value"][1] == "1"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
