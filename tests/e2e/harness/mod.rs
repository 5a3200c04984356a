//! Shared helpers: free ports, the config builder, a running `herald` process,
//! UDP sending and running the CLI; the HTTP client and Prometheus text reader
//! are in `wire`, fixtures, JSON and other test data in `data`.
//!
//! Nothing here sleeps to decide an outcome: conditions are polled every
//! [`POLL`] until a generous [`DEADLINE`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub mod browser;
mod data;
mod wire;

pub use data::*;
pub use wire::*;

/// How long a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(50);

/// The `herald` binary under test.
pub fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// The repository root (where `config/` and `fixtures/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Ports this test process has handed out: each is handed out once, so a
/// port one test's server gave up (an InfluxDB stopped for an outage, say)
/// cannot go to another test's herald before the first server takes it back.
fn fresh_port(mut bind: impl FnMut() -> u16) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = bind();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    fresh_port(|| {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("bind a UDP port")
            .port()
    })
}

/// A UDP port on ::1 that was free a moment ago.
pub fn free_udp_port_v6() -> u16 {
    fresh_port(|| {
        UdpSocket::bind("[::1]:0")
            .and_then(|s| s.local_addr())
            .expect("bind an IPv6 UDP port")
            .port()
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    fresh_port(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("bind a TCP port")
            .port()
    })
}

/// Polls `cond` every [`POLL`] until it holds or `deadline` passes; says which.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Builds a herald config: one UDP listener, the HTTP endpoint, a dead-letter
/// file and a file sink `events` writing `events.jsonl` (paths relative to the
/// config file's directory, the temp dir herald runs in).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    /// Listener address as written in `ingest.listen`.
    pub listen: SocketAddr,
    /// HTTP port on 127.0.0.1.
    pub http_port: u16,
    allow: Vec<String>,
    max_datagram_bytes: Option<usize>,
    ingest: String,
    flush_interval_ms: u64,
    events_sink: String,
    dead_letter: bool,
    extra: String,
}

impl ConfigBuilder {
    /// IPv4 loopback listener on a free port; allows `127.0.0.1/32`.
    pub fn new() -> ConfigBuilder {
        ConfigBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            http_port: free_tcp_port(),
            allow: vec!["127.0.0.1/32".into()],
            max_datagram_bytes: None,
            ingest: String::new(),
            flush_interval_ms: 50,
            events_sink: String::new(),
            dead_letter: true,
            extra: String::new(),
        }
    }

    /// Listens on `[::1]` (free port) instead.
    pub fn ipv6(mut self) -> ConfigBuilder {
        self.listen = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free_udp_port_v6()));
        self
    }

    /// Listens on `addr` instead (e.g. the dual-stack `[::]:port`).
    pub fn listen(mut self, addr: SocketAddr) -> ConfigBuilder {
        self.listen = addr;
        self
    }

    /// Sets `ingest.allow`.
    pub fn allow(mut self, entries: &[&str]) -> ConfigBuilder {
        self.allow = entries.iter().map(|e| (*e).to_string()).collect();
        self
    }

    /// Sets `ingest.max_datagram_bytes`.
    pub fn max_datagram_bytes(mut self, bytes: usize) -> ConfigBuilder {
        self.max_datagram_bytes = Some(bytes);
        self
    }

    /// Adds a `key = value` line to `[ingest]`.
    pub fn ingest_key(mut self, line: &str) -> ConfigBuilder {
        self.ingest.push_str(line);
        self.ingest.push('\n');
        self
    }

    /// Sets `flush_interval_ms` of the `events` sink.
    pub fn flush_interval_ms(mut self, ms: u64) -> ConfigBuilder {
        self.flush_interval_ms = ms;
        self
    }

    /// Leaves out the `[dead_letter]` table.
    pub fn without_dead_letter(mut self) -> ConfigBuilder {
        self.dead_letter = false;
        self
    }

    /// Adds a `key = value` line to the `events` sink table.
    pub fn events_sink_key(mut self, line: &str) -> ConfigBuilder {
        self.events_sink.push_str(line);
        self.events_sink.push('\n');
        self
    }

    /// Appends raw TOML (e.g. another sink table).
    pub fn extra(mut self, toml: &str) -> ConfigBuilder {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The config text.
    pub fn build(&self) -> String {
        let allow: Vec<String> = self.allow.iter().map(|a| format!("{a:?}")).collect();
        let mut text = format!(
            "[ingest]\nlisten = [\"{}\"]\nallow = [{}]\n",
            self.listen,
            allow.join(", ")
        );
        if let Some(max) = self.max_datagram_bytes {
            text.push_str(&format!("max_datagram_bytes = {max}\n"));
        }
        text.push_str(&self.ingest);
        text.push_str(&format!(
            "\n[http]\nlisten = \"127.0.0.1:{}\"\n\n",
            self.http_port
        ));
        if self.dead_letter {
            text.push_str("[dead_letter]\npath = \"dead.jsonl\"\n\n");
        }
        text.push_str(&format!(
            "[sinks.events]\ntype = \"file\"\npath = \"events.jsonl\"\nflush_interval_ms = {}\n{}\n",
            self.flush_interval_ms, self.events_sink
        ));
        text.push_str(&self.extra);
        text
    }
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder::new()
    }
}

/// A running `herald run` in its own temp dir. Killed on drop.
pub struct Herald {
    dir: TempDir,
    child: Child,
    exit: Option<ExitStatus>,
    /// The HTTP endpoint.
    pub http: SocketAddr,
    /// The first UDP listener.
    pub udp: SocketAddr,
}

impl Herald {
    /// Writes `config_toml` to a fresh temp dir, starts herald there and waits
    /// until `/health` answers.
    pub fn start(config_toml: &str) -> Herald {
        Herald::start_with_env(config_toml, &[])
    }

    /// Like [`Herald::start`], with extra environment variables (for `${VAR}`
    /// values in the config).
    pub fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Herald {
        Herald::launch_in(
            tempfile::tempdir().expect("temp dir"),
            config_toml,
            env,
            None,
        )
        .until_up(config_toml)
    }

    /// Waits until this herald's `/health` answers and lists its listener.
    fn until_up(mut self, config_toml: &str) -> Herald {
        let up = poll_until(Duration::from_secs(30), || {
            if self.has_exited() {
                return true;
            }
            // Only our herald lists our UDP listener: another test's herald on a
            // recycled port must not count.
            let ours = format!("\"listen\": \"{}\"", self.udp);
            TcpStream::connect_timeout(&self.http, Duration::from_secs(1)).is_ok()
                && self
                    .try_http("GET", "/health")
                    .is_ok_and(|(_, body)| body.contains(&ours))
        });
        assert!(
            up && !self.has_exited(),
            "herald did not come up (exit: {:?})\nconfig:\n{config_toml}\nstderr:\n{}",
            self.exit,
            self.stderr()
        );
        self
    }

    /// Like [`Herald::start`], with `http.token = token` (and `http_keys`, more
    /// lines for `[http]`) added to `config_toml`; waits until `/health`
    /// answers the token.
    pub fn start_with_token(config_toml: &str, token: &str, http_keys: &str) -> Herald {
        let config = config_toml.replacen(
            "[http]\n",
            &format!("[http]\ntoken = \"{token}\"\n{http_keys}"),
            1,
        );
        let herald = Herald::launch(&config);
        let bearer = format!("Authorization: Bearer {token}\r\n");
        let up = poll_until(Duration::from_secs(30), || {
            http_request_with(herald.http, "GET", "/health", &bearer).is_ok_and(|(s, _)| s == 200)
        });
        assert!(up, "herald did not come up\nstderr:\n{}", herald.stderr());
        herald
    }

    /// Like [`Herald::start`] without waiting for it to come up.
    pub fn launch(config_toml: &str) -> Herald {
        Herald::launch_with_env(config_toml, &[])
    }

    /// Like [`Herald::start_with_env`] without waiting for it to come up.
    pub fn launch_with_env(config_toml: &str, env: &[(&str, &str)]) -> Herald {
        Herald::launch_in(
            tempfile::tempdir().expect("temp dir"),
            config_toml,
            env,
            None,
        )
    }

    /// Like [`Herald::start`], with herald started under a soft limit of
    /// `soft` open files (as a service manager might start it).
    pub fn start_with_open_file_limit(config_toml: &str, soft: u64) -> Herald {
        let dir = tempfile::tempdir().expect("temp dir");
        Herald::launch_in(dir, config_toml, &[], Some(soft)).until_up(config_toml)
    }

    /// Stops this herald (it must have exited, or is killed) and starts a new
    /// one in the same directory with `config_toml`: a restart that keeps the
    /// data directory, dead-letter file and logs (the old log is kept as
    /// `stderr.<n>.txt`).
    pub fn restart(mut self, config_toml: &str) -> Herald {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let dir = tempfile::tempdir().expect("placeholder dir");
        let dir = std::mem::replace(&mut self.dir, dir);
        let runs = (1..)
            .find(|n| !dir.path().join(format!("stderr.{n}.txt")).exists())
            .unwrap_or(1);
        let _ = fs::rename(
            dir.path().join("stderr.txt"),
            dir.path().join(format!("stderr.{runs}.txt")),
        );
        let mut herald = Herald::launch_in(dir, config_toml, &[], None);
        let up = poll_until(Duration::from_secs(30), || {
            herald.has_exited() || herald.try_http("GET", "/health").is_ok()
        });
        assert!(
            up && !herald.has_exited(),
            "herald did not come up again (exit: {:?})\nstderr:\n{}",
            herald.exit,
            herald.stderr()
        );
        herald
    }

    /// herald's peak resident memory so far, in bytes (Linux: VmHWM).
    pub fn peak_rss_bytes(&self) -> u64 {
        self.memory_status("VmHWM:")
    }

    /// herald's resident memory now, in bytes (Linux: VmRSS). Used by the
    /// hostile-input tests, which share this harness.
    #[allow(dead_code)]
    pub fn rss_bytes(&self) -> u64 {
        self.memory_status("VmRSS:")
    }

    fn memory_status(&self, key: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/<pid>/status"))
            * 1024
    }

    /// How many file descriptors herald has open (Linux: `/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("/proc/<pid>/fd")
            .count()
    }

    fn launch_in(
        dir: TempDir,
        config_toml: &str,
        env: &[(&str, &str)],
        soft_open_files: Option<u64>,
    ) -> Herald {
        let config: toml::Table = toml::from_str(config_toml).expect("test config is TOML");
        let http: SocketAddr = config["http"]["listen"]
            .as_str()
            .expect("http.listen")
            .parse()
            .expect("http.listen is an address");
        let listen = &config["ingest"]["listen"];
        let first = listen
            .as_array()
            .and_then(|a| a.first())
            .unwrap_or(listen)
            .as_str()
            .expect("ingest.listen");
        let udp: SocketAddr = first.parse().expect("ingest.listen is an address");

        let config_path = dir.path().join("herald.toml");
        fs::write(&config_path, config_toml).expect("write config");
        let stdout = fs::File::create(dir.path().join("stdout.txt")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr.txt")).expect("stderr file");
        let mut command = Command::new(herald_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env_remove("HERALD_LOG")
            .env("NO_COLOR", "1");
        without_service_manager(&mut command);
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(soft) = soft_open_files {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: between fork and exec the closure calls only getrlimit
            // and setrlimit, which are async-signal-safe, and allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("start herald");
        Herald {
            dir,
            child,
            exit: None,
            http,
            udp,
        }
    }

    /// The temp dir herald runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process has ended (reaps it when it has).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit.is_some()
    }

    /// herald's standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    fn try_http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        http_request(self.http, method, path)
    }

    /// `GET path`: status code and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_request("GET", path)
    }

    /// Any method: status code and body.
    pub fn http_request(&self, method: &str, path: &str) -> (u16, String) {
        self.try_http(method, path).unwrap_or_else(|err| {
            panic!("{method} {path} failed: {err}\nstderr:\n{}", self.stderr())
        })
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Sum of the samples of `name` whose labels include every pair in
    /// `labels`; fails the test when no sample matches.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics_text();
        metric_sum(&text, name, labels)
            .unwrap_or_else(|| panic!("no sample of {name} with {labels:?} in /metrics:\n{text}"))
    }

    /// A file in herald's dir, as JSON lines (missing file: none).
    pub fn json_lines(&self, file: &str) -> Vec<Value> {
        read_json_lines(&self.dir.path().join(file))
    }

    /// The `events` file sink's events.
    pub fn events(&self) -> Vec<Value> {
        self.json_lines("events.jsonl")
    }

    /// Polls `cond` until it holds; fails the test with `what` and herald's log.
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&Herald) -> bool) {
        let mut exited = false;
        let ok = poll_until(DEADLINE, || {
            if self.has_exited() {
                exited = true;
                return true;
            }
            cond(self)
        });
        assert!(
            ok && !exited,
            "timed out or herald exited ({:?}) waiting for: {what}\nstderr:\n{}",
            self.exit,
            self.stderr()
        );
    }

    /// Sends every sample datagram ([`sample_datagrams`]) from 127.0.0.1 to
    /// the herald; returns how many.
    pub fn send_samples(&self) -> usize {
        let datagrams = sample_datagrams();
        let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        send("127.0.0.1", self.udp, &refs);
        datagrams.len()
    }

    /// Waits until the `events` file has at least `n` lines and returns them.
    pub fn wait_for_events(&mut self, n: usize) -> Vec<Value> {
        self.wait_for(&format!("{n} events in events.jsonl"), |h| {
            count_lines(&h.dir().join("events.jsonl")) >= n
        });
        self.events()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(
            self.exit.is_none(),
            "herald already exited: {:?}",
            self.exit
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    /// herald's standard output so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.txt")).unwrap_or_default()
    }

    /// Waits (up to 30 s) for the process to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let ended = poll_until(Duration::from_secs(30), || self.has_exited());
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("herald did not exit\nstderr:\n{}", self.stderr());
        }
        self.exit.expect("exit status")
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- herald stderr ({}) ----\n{}",
                self.dir.path().display(),
                self.stderr()
            );
        }
    }
}

/// Sends each datagram from a fresh socket bound to `from:0`; returns that
/// socket's address (what herald will report as `sender`).
pub fn send(from: &str, to: SocketAddr, datagrams: &[&[u8]]) -> SocketAddr {
    let socket = UdpSocket::bind((from, 0)).unwrap_or_else(|err| panic!("bind {from}:0: {err}"));
    for datagram in datagrams {
        let sent = socket.send_to(datagram, to).expect("send_to");
        assert_eq!(sent, datagram.len(), "short send");
    }
    socket.local_addr().expect("local addr")
}

/// `name` on the PATH, or in `/usr/sbin` and `/usr/bin` (Debian puts servers
/// such as mosquitto and nats-server in `/usr/sbin`, which a non-root PATH
/// may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Waits up to 20 s until a server `child` just started accepts TCP
/// connections on every port of `ports` (on 127.0.0.1); false when it exited
/// or the time ran out first.
pub fn wait_until_listening(child: &mut Child, ports: &[u16]) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = ports.iter().all(|&port| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        let exited = child.try_wait().ok().flatten().is_some();
        if listening || exited || Instant::now() > end {
            return listening && !exited;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `herald <args>` to completion.
pub fn run_herald(args: &[&str]) -> Output {
    herald_command(args).output().expect("run herald")
}

/// Runs `herald args...` in `dir` (relative paths on the command line are
/// taken from there; those in a config resolve against the config's directory).
pub fn run_herald_in(dir: &Path, args: &[&str]) -> Output {
    herald_command(args)
        .current_dir(dir)
        .output()
        .expect("run herald")
}

/// `herald args...`, ready to run: no `HERALD_LOG`, no colour, nothing from a
/// service manager ([`without_service_manager`]).
pub fn herald_command(args: &[&str]) -> Command {
    let mut command = Command::new(herald_bin());
    command
        .args(args)
        .env_remove("HERALD_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    without_service_manager(&mut command);
    command
}

/// Keeps what the test process may have inherited from a service manager
/// (its notification socket, a watchdog) or a shell (a config file named in
/// `HERALD_CONFIG`) away from the herald under test; tests set them as needed.
pub fn without_service_manager(command: &mut Command) {
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "HERALD_CONFIG",
    ] {
        command.env_remove(var);
    }
}
