//! A private InfluxDB 1.x server for tests and benchmarks: `influxd` from
//! Debian's `influxdb` package, started on free loopback ports with a temporary
//! data directory and stopped on drop. Shared by `tests/e2e` and `benches/` with
//! `#[path]`, so it depends on nothing but std, serde_json and tempfile.

#![allow(dead_code)] // each user needs a different part

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::ports::server_port as free_port;

/// Polls `cond` every 50 ms until it holds or `deadline` passes.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private `influxd`, stopped on drop.
pub struct Influxd {
    dir: TempDir,
    child: Option<Child>,
    /// The HTTP API address.
    pub http: SocketAddr,
}

impl Influxd {
    /// Starts `influxd`, or returns `None` when it is not installed (outside CI).
    pub fn start() -> Option<Influxd> {
        let installed = Command::new("influxd")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "influxd is not installed; .ci/run must install Debian's influxdb package"
            );
            eprintln!("skipped: influxd is not installed (apt-get install influxdb)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let rpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let root = dir.path().display().to_string();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"{rpc}\"\n\
             [meta]\n  dir = \"{root}/meta\"\n\
             [data]\n  dir = \"{root}/data\"\n  wal-dir = \"{root}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"{http}\"\n  log-enabled = false\n\
             [logging]\n  level = \"error\"\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        std::fs::write(dir.path().join("influxd.conf"), config).expect("write influxd.conf");
        let mut influxd = Influxd {
            dir,
            child: None,
            http,
        };
        influxd.run();
        Some(influxd)
    }

    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("influxd.log")).expect("log file");
        let child = Command::new("influxd")
            .arg("-config")
            .arg(self.dir.path().join("influxd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start influxd");
        self.child = Some(child);
        let up = poll_until(Duration::from_secs(30), || {
            self.request("GET", "/ping", "").0 == 204
        });
        assert!(up, "influxd did not start:\n{}", self.log());
    }

    /// Stops the server (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A raw HTTP request; `(status, body)`, status 0 when unreachable.
    pub fn request(&self, method: &str, path_and_query: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&self.http, Duration::from_secs(2))
        else {
            return (0, String::new());
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "{method} {path_and_query} HTTP/1.0\r\nHost: influxd\r\nContent-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("");
        // influxd answers queries with chunked encoding only when asked; bodies are plain.
        (status, body.to_string())
    }

    pub fn create_database(&self, name: &str) {
        let (status, body) = self.request(
            "POST",
            "/query",
            &format!("q={}", encode(&format!("CREATE DATABASE \"{name}\""))),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Runs InfluxQL with nanosecond epochs; returns the first statement's series.
    pub fn query(&self, db: &str, q: &str) -> Vec<Value> {
        let (status, body) = self.request(
            "GET",
            &format!("/query?db={}&epoch=ns&q={}", encode(db), encode(q)),
            "",
        );
        assert_eq!(status, 200, "{q}: {body}");
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|err| panic!("{q}: {err}: {body}"));
        value["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Rows of `SELECT * FROM measurement` as objects keyed by column.
    pub fn rows(&self, db: &str, measurement: &str) -> Vec<serde_json::Map<String, Value>> {
        let mut rows = Vec::new();
        for series in self.query(db, &format!("SELECT * FROM \"{measurement}\"")) {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|v| v.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            for values in series["values"].as_array().cloned().unwrap_or_default() {
                let row = columns
                    .iter()
                    .cloned()
                    .zip(values.as_array().cloned().unwrap_or_default())
                    .filter(|(_, v)| !v.is_null())
                    .collect();
                rows.push(row);
            }
        }
        rows
    }

    pub fn count(&self, db: &str, measurement: &str) -> usize {
        self.rows(db, measurement).len()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Percent-encodes a query-string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
