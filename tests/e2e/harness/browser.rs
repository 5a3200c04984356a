//! A real browser for tests: Debian's headless Chromium, driven through
//! ChromeDriver's W3C WebDriver protocol (plain HTTP and JSON on loopback).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{free_tcp_port, poll_until};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A ChromeDriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    /// Chromium's profile, for as long as the session lives.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium of `width` × `height`;
    /// `None` (saying so) when they are not installed outside CI.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        let installed =
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "Chromium and ChromeDriver are not installed; .ci/run installs them (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: Chromium not installed (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = free_tcp_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        let ready = poll_until(Duration::from_secs(20), || {
            browser
                .call("GET", "/status", None)
                .is_ok_and(|v| v["value"]["ready"] == true)
        });
        assert!(ready, "chromedriver did not become ready");
        let profile = browser._profile.path().display().to_string();
        let answer = browser
            .call(
                "POST",
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": CHROMIUM,
                            "args": [
                                "--headless=new", "--no-sandbox", "--disable-gpu",
                                "--disable-dev-shm-usage", "--no-first-run",
                                format!("--window-size={width},{height}"),
                                format!("--user-data-dir={profile}"),
                            ],
                        },
                    }},
                })),
            )
            .expect("create a browser session");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Some(browser)
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )["value"]
            .clone()
    }

    /// Polls `script` until it returns `true` (up to `within`); false if it
    /// never does.
    pub fn wait_until(&self, within: Duration, script: &str) -> bool {
        poll_until(within, || self.eval(script) == Value::Bool(true))
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let answer = self.call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        let text = answer.expect("screenshot")["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        super::base64_decode(&text)
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = self
            .call(method, &path, Some(body))
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        assert!(
            answer["value"]["error"].is_null(),
            "{method} {path}: {answer}"
        );
        answer
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> std::io::Result<Value> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        // ChromeDriver keeps the connection open: read the head, then as
        // many bytes as it announces.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&chunk[..n]);
            if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        while answer.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice(&answer[head_end..]).map_err(std::io::Error::other)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
