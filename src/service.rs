//! Tells a service manager how herald is doing, over systemd's notification
//! protocol (`sd_notify`): one datagram of `KEY=value` lines to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET`.
//!
//! What it does:
//!
//! * [`ready`]: `READY=1` with a `STATUS=` line, once the listeners, the sinks
//!   and the HTTP endpoint are up, so that `systemctl start` returns (and units
//!   ordered after herald start) only when herald can take events. A config
//!   reload calls it again when the new config is in force.
//! * [`reloading`]: `RELOADING=1` with `MONOTONIC_USEC=`, when a reload begins.
//! * [`stopping`]: `STOPPING=1` when a stop begins, with `EXTEND_TIMEOUT_USEC=`
//!   covering the drain (`pipeline.shutdown_grace_ms`) so that a grace longer
//!   than the unit's `TimeoutStopSec=` is not cut short.
//! * [`spawn_watchdog`]: `WATCHDOG=1` every half of `$WATCHDOG_USEC` when the
//!   unit sets `WatchdogSec=` (and `$WATCHDOG_PID`, if set, is herald's pid).
//!
//! What it does not do: socket activation (`LISTEN_FDS`), the file-descriptor
//! store, `vsock:` notification addresses, or unsetting the variables (herald
//! starts no child processes that could inherit them). Without `$NOTIFY_SOCKET`
//! every function does nothing, so herald behaves the same from a terminal,
//! under another service manager and on systems without Unix sockets. A
//! notification that cannot be sent is logged and otherwise ignored: the
//! service manager then times out or restarts herald, as its unit says.

use std::ffi::OsStr;
use std::io;
use std::time::Duration;

use tracing::{debug, warn};

/// The variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Time the service manager is asked to allow beyond the drain at a stop:
/// the async runtime's own shutdown and the final flushes.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Tells the service manager herald is ready; `status` is what
/// `systemctl status` shows (one line).
pub fn ready(status: &str) {
    send("READY=1", &format!("READY=1\nSTATUS={}", one_line(status)));
}

/// Tells the service manager a config reload has begun; call [`ready`] when
/// it is done (or has failed and the old config stays in force).
pub fn reloading() {
    send(
        "RELOADING=1",
        &format!(
            "RELOADING=1\nSTATUS=reloading the config\nMONOTONIC_USEC={}",
            monotonic_usec()
        ),
    );
}

/// Tells the service manager herald is stopping and will take up to `grace`
/// (plus a margin) to deliver what its queues hold.
pub fn stopping(grace: Duration) {
    let extend = (grace + STOP_MARGIN).as_micros();
    send(
        "STOPPING=1",
        &format!(
            "STOPPING=1\nSTATUS=stopping: delivering what is queued (up to {} s)\nEXTEND_TIMEOUT_USEC={extend}",
            grace.as_secs_f64().ceil()
        ),
    );
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(text: &str) {
    send("STATUS=", &format!("STATUS={}", one_line(text)));
}

/// How often to ping the service manager's watchdog: half of
/// `$WATCHDOG_USEC`, or `None` when no watchdog is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid.map(str::trim).filter(|pid| !pid.is_empty())
        && pid.parse::<u32>().ok() != Some(own)
    {
        // The watchdog belongs to another process (a wrapper that started herald).
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// When the unit has a watchdog, starts a task on the current tokio runtime
/// that sends `WATCHDOG=1` every half of its period, and returns the interval.
///
/// The ping is a plain timer: it proves that the process is alive and its
/// async runtime is scheduling tasks, not that datagrams are moving through
/// the pipeline. Making the ping depend on the receive threads, workers and
/// sink drivers all making progress (and telling "stuck" from "idle, nothing
/// sent") is left for later; a hung process is what this catches.
pub fn spawn_watchdog() -> Option<Duration> {
    let interval = watchdog_interval()?;
    std::env::var_os(NOTIFY_SOCKET)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tick.tick().await;
            match notify("WATCHDOG=1") {
                Ok(_) => {}
                Err(err) if !warned => {
                    warned = true;
                    warn!(%err, "cannot ping the service manager's watchdog; it will restart herald");
                }
                Err(err) => debug!(%err, "cannot ping the service manager's watchdog"),
            }
        }
    });
    Some(interval)
}

/// Sends `message`, logging (not returning) a failure; `what` names it in the log.
fn send(what: &str, message: &str) {
    match notify(message) {
        Ok(true) => debug!(what, "told the service manager"),
        Ok(false) => {}
        Err(err) => {
            warn!(%err, what, "cannot notify the service manager ({NOTIFY_SOCKET})");
        }
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`; `Ok(false)` when it is unset or empty.
///
/// # Errors
///
/// When the address is not a path or abstract name, or the send fails.
pub fn notify(message: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, message).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `message` as one datagram to the socket `address`: a path (`/run/...`)
/// or, on Linux, an abstract name written `@name`.
///
/// # Errors
///
/// When the address is of another kind (`vsock:...`) or the send fails.
#[cfg(unix)]
pub fn notify_to(address: &OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::UnixDatagram;

    let bytes = address.as_bytes();
    let socket = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => socket.send_to(message.as_bytes(), address)?,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt as _;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt as _;
            let name = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            socket.send_to_addr(message.as_bytes(), &name)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={} is neither a socket path nor an abstract name (@name)",
                    address.to_string_lossy()
                ),
            ));
        }
    };
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was sent in part",
        ));
    }
    Ok(())
}

/// Unix sockets are needed; elsewhere there is no service manager to tell.
#[cfg(not(unix))]
pub fn notify_to(_address: &OsStr, _message: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "service manager notification needs Unix sockets",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC=` wants it.
fn monotonic_usec() -> u64 {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only to the struct it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0 {
            let secs = u64::try_from(now.tv_sec).unwrap_or(0);
            let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
            return secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000);
        }
    }
    0
}

/// A status must stay on its line: a newline would start another assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_notification_reaches_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        assert_eq!(received(&socket), "READY=1\nSTATUS=up");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_notification_reaches_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!(
            "herald-test-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(received(&socket), "WATCHDOG=1");
    }

    #[test]
    fn an_address_of_another_kind_is_refused_with_its_name() {
        let err = notify_to(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert!(err.to_string().contains("vsock:2:1234"), "{err}");
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_period_and_only_for_this_process() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval_from(Some("200000"), None, 42), half);
        assert_eq!(watchdog_interval_from(Some("200000"), Some("42"), 42), half);
        assert_eq!(watchdog_interval_from(Some("200000"), Some(""), 42), half);
        assert_eq!(watchdog_interval_from(Some("200000"), Some("7"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nREADY=1\r"), "a READY=1 ");
    }

    #[test]
    fn the_monotonic_clock_is_read() {
        let first = monotonic_usec();
        assert!(first > 0);
        assert!(monotonic_usec() >= first);
    }
}
