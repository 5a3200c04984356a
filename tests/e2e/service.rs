//! herald under a service manager: the shipped systemd unit passes
//! `systemd-analyze verify`, the config it runs loads, and herald tells a
//! (fake) `NOTIFY_SOCKET` when it is ready, when it stops and, with a
//! watchdog, that it is alive. Without `systemd-analyze` the unit test says
//! "skipped", except under CI, where `.ci/run` installs it.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{ConfigBuilder, Herald, herald_bin, herald_command, repo_root, send};

const UNIT: &str = "packaging/systemd/herald.service";
const INSTALLED_BIN: &str = "/usr/local/bin/herald";

fn unit_text() -> String {
    fs::read_to_string(repo_root().join(UNIT)).expect("the unit file")
}

/// `systemd-analyze`, or `None` (with a visible message) when it is not
/// installed outside CI.
fn systemd_analyze() -> Option<Command> {
    let installed = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is not installed; .ci/run installs it (apt-get install systemd)"
        );
        eprintln!("skipped: systemd-analyze not installed (apt-get install systemd)");
        return None;
    }
    Some(Command::new("systemd-analyze"))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let text = unit_text();
    assert!(
        text.contains(&format!(
            "ExecStart={INSTALLED_BIN} run --config /etc/herald/herald.toml"
        )),
        "{text}"
    );
    let Some(mut analyze) = systemd_analyze() else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at the one built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("herald.service");
    fs::write(&unit, text.replace(INSTALLED_BIN, herald_bin())).unwrap();
    let out = analyze
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A misspelt key is only a warning (exit 0): any line about the unit fails.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("herald.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn the_unit_runs_the_packaged_config_which_keeps_everything_in_the_state_directory() {
    let text = unit_text();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "StateDirectory=herald",
        "ConfigurationDirectory=herald",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from the unit");
    }
    let packaged = repo_root().join("packaging").join("herald.toml");
    let out = herald_command(&["check", "--config", packaged.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(stdout.split_once('\n').unwrap().1).unwrap();
    assert_eq!(config["data_dir"].as_str(), Some("/var/lib/herald"));
    assert_eq!(
        config["dead_letter"]["path"].as_str(),
        Some("/var/lib/herald/dead-letter.jsonl")
    );
    for (name, sink) in config["sinks"].as_table().unwrap() {
        if let Some(path) = sink.get("path").and_then(|p| p.as_str()) {
            assert!(
                path.starts_with("/var/lib/herald/"),
                "sinks.{name}.path = {path}"
            );
        }
    }
}

/// A fake service manager: a datagram socket in a temp dir, and the
/// environment that names it.
struct Manager {
    _dir: tempfile::TempDir,
    socket: UnixDatagram,
    address: String,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            address: path.to_str().unwrap().to_string(),
            _dir: dir,
            socket,
        }
    }

    /// Waits up to `within` for the next notification.
    fn next(&self, within: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits for a notification with the line `line`, returning it; fails
    /// the test (with herald's log) when none comes.
    fn expect(&self, line: &str, herald: &Herald) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) if message.lines().any(|l| l == line) => return message,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no {line} notification\nstderr:\n{}", herald.stderr());
    }
}

#[test]
fn ready_comes_once_herald_answers_and_stopping_when_it_is_told_to_stop() {
    let manager = Manager::new();
    let config = ConfigBuilder::new().build();
    let mut herald = Herald::launch_with_env(&config, &[("NOTIFY_SOCKET", &manager.address)]);
    let ready = manager.expect("READY=1", &herald);
    // At READY=1 the endpoint answers and lists the listener, already bound.
    let (status, health) = herald.http_get("/health");
    assert_eq!(status, 200, "{health}");
    assert!(
        health.contains(&format!("\"listen\": \"{}\"", herald.udp)),
        "{health}"
    );
    let status_line = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= line in {ready:?}"));
    assert!(
        status_line.contains(&herald.udp.to_string()),
        "{status_line}"
    );
    assert!(status_line.contains("1 sink(s)"), "{status_line}");
    send(
        "127.0.0.1",
        herald.udp,
        &[crate::harness::fixture("engine_error").datagram.as_slice()],
    );
    herald.wait_for_events(1);

    herald.sigterm();
    let stopping = manager.expect("STOPPING=1", &herald);
    // The drain's time is asked for: the default grace (10 s) plus a margin.
    assert!(
        stopping.contains("EXTEND_TIMEOUT_USEC=15000000"),
        "{stopping:?}"
    );
    assert!(herald.wait_exit().success(), "{}", herald.stderr());
    // Nothing else was said (no watchdog was asked for).
    assert_eq!(manager.next(Duration::from_millis(100)), None);
}

#[test]
fn ready_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::SocketAddr;
    let name = format!("herald-e2e-notify-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let herald = Herald::launch_with_env(
        &ConfigBuilder::new().build(),
        &[("NOTIFY_SOCKET", &format!("@{name}"))],
    );
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|err| panic!("no notification ({err})\nstderr:\n{}", herald.stderr()));
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("READY=1\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// The `WATCHDOG=1` notifications `herald` sends in `window` after it is ready.
fn watchdog_pings(env: &[(&str, &str)], window: Duration) -> usize {
    let manager = Manager::new();
    let mut all = vec![("NOTIFY_SOCKET", manager.address.as_str())];
    all.extend_from_slice(env);
    let herald = Herald::launch_with_env(&ConfigBuilder::new().build(), &all);
    manager.expect("READY=1", &herald);
    let end = Instant::now() + window;
    let mut pings = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match manager.next(left) {
            Some(message) => {
                assert_eq!(message, "WATCHDOG=1", "unexpected notification");
                pings += 1;
            }
            None => break,
        }
    }
    pings
}

#[test]
fn the_watchdog_is_pinged_every_half_period_and_only_when_it_is_herald_s() {
    // WATCHDOG_USEC=200000: a ping every 100 ms, so about 10 in a second.
    let pings = watchdog_pings(&[("WATCHDOG_USEC", "200000")], Duration::from_secs(1));
    assert!((5..=15).contains(&pings), "{pings} pings in 1 s");
    // A watchdog meant for another process (WATCHDOG_PID) is not herald's.
    let pings = watchdog_pings(
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
        Duration::from_millis(500),
    );
    assert_eq!(pings, 0);
}

#[test]
fn logs_are_plain_text_when_standard_error_is_not_a_terminal() {
    // NO_COLOR empty counts as unset: only the file (not a terminal) decides.
    let mut herald = Herald::start_with_env(&ConfigBuilder::new().build(), &[("NO_COLOR", "")]);
    herald.sigterm();
    herald.wait_exit();
    let log = herald.stderr();
    assert!(log.contains("herald is running"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log:?}");
}

#[test]
fn the_readme_says_what_is_supported_and_how_to_install_the_service() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    for text in [
        "## Install as a service",
        "## Supported platforms",
        UNIT,
        "/etc/herald/herald.toml",
        "/var/lib/herald",
        "journalctl -u herald",
        "NO_COLOR",
    ] {
        assert!(readme.contains(text), "{text:?} missing from the README");
    }
    assert!(Path::new(&repo_root().join("packaging/herald.toml")).is_file());
}
