//! The HTTP endpoint: `GET /metrics` (Prometheus text), `GET /health` (JSON)
//! and `GET /tap` (a live sample of the events, as Server-Sent Events; see
//! [`crate::tap`]).
//!
//! A deliberately small HTTP/1.1 server: one request per connection, GET only,
//! request head capped at 8 KiB and read within 5 s, the answer written within
//! 5 s, and at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//! once), so stuck or hostile clients cannot hold resources. It binds loopback by
//! default (`http.listen`); with `http.token` set, `/health`, `/tap` (and `/metrics`
//! unless `http.metrics_public`) needs `Authorization: Bearer <token>`, compared
//! in constant time. It serves nothing else; sinks that need HTTP use their own
//! clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::pipeline::Health;
use crate::redact;
use crate::secret::Secret;
use crate::sinks::driver::SinkStatus;
use crate::status::{self, StatusBoard};
use crate::tap::query::{self, TapQuery};
use crate::tap::{MAX_TAPS, TICK};

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; further ones are closed without an answer.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections the kernel may hold for the accept loop (Linux caps it at
/// `net.core.somaxconn`, 4096 by default). The usual 128 overflows when a burst
/// of clients connects while the loop is busy for a few milliseconds, and a
/// client whose connection attempt is dropped waits a second before retrying.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the endpoint's listener on `addr`, with room for a burst of
/// connections ([`LISTEN_BACKLOG`]).
///
/// # Errors
///
/// When the socket cannot be made or bound (address in use, not permitted).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // What the standard library's bind does too: a restarted herald can bind
    // again while its old connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What the endpoint serves from.
#[derive(Clone)]
pub struct HttpState {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Feeds `/health`.
    pub health: Arc<Health>,
    /// The bearer token, when one is configured.
    pub token: Option<Secret>,
    /// Whether `/metrics` is served without the token.
    pub metrics_public: bool,
    /// The status page's history.
    pub board: Arc<StatusBoard>,
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, state: HttpState) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many http connections; closing this one");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &state).await {
                debug!(%peer, %err, "http connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// How reading a request head ended.
enum Head {
    /// Its blank line arrived.
    Complete,
    /// The client stopped sending before it.
    Ended,
    /// Over [`MAX_REQUEST_BYTES`] without it.
    TooLarge,
    /// Not within [`READ_TIMEOUT`].
    Overdue,
}

async fn handle(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<Head, std::io::Error>(Head::Ended);
            }
            request.extend_from_slice(&chunk[..n]);
            if memchr::memmem::find(&request, b"\r\n\r\n").is_some() {
                return Ok(Head::Complete);
            }
            if request.len() > MAX_REQUEST_BYTES {
                return Ok(Head::TooLarge);
            }
        }
    })
    .await
    .unwrap_or(Ok(Head::Overdue))?;
    let refusal = match head {
        Head::Complete => None,
        Head::Ended => Some(("400 Bad Request", "bad request\n".to_string())),
        Head::TooLarge => Some((
            "431 Request Header Fields Too Large",
            format!(
                "the request head is over {} KiB\n",
                MAX_REQUEST_BYTES / 1024
            ),
        )),
        Head::Overdue => Some((
            "408 Request Timeout",
            format!(
                "no complete request head within {} s\n",
                READ_TIMEOUT.as_secs()
            ),
        )),
    };
    if let Some((status, body)) = refusal {
        return write_answer(&mut stream, status, "text/plain", &body).await;
    }
    if state.token.is_none() && !local_host(&request) {
        let body = "without http.token this endpoint answers only requests for localhost \
                    or a loopback address; set http.token to reach it by another name\n";
        return write_answer(&mut stream, "421 Misdirected Request", "text/plain", body).await;
    }
    let (method, target) = request_line(&request);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let authorised = authorised(&request, state.token.as_ref());
    match (method.as_str(), path, authorised) {
        ("GET", "/tap", true) => return stream_tap(stream, state, query::decode(query)).await,
        ("GET", "/status/stream", true) => return stream_status(stream, state).await,
        _ => {}
    }
    let (status, content_type, body) = respond(&method, path, authorised, state);
    write_answer(&mut stream, status, content_type, &body).await
}

/// The method and target of the request line.
fn request_line(request: &[u8]) -> (String, String) {
    let line_end = memchr::memchr(b'\r', request).unwrap_or(request.len());
    let line = String::from_utf8_lossy(&request[..line_end]);
    let mut parts = line.split(' ');
    (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    )
}

/// Streams a tap's events as Server-Sent Events until the client goes away
/// or herald stops: each event as `data: <JSON>` (redacted), and every
/// second `event: stats` with the counts shown and not shown.
async fn stream_tap(
    mut stream: TcpStream,
    state: &HttpState,
    query: Result<TapQuery, String>,
) -> std::io::Result<()> {
    let query = match query {
        Ok(query) => query,
        Err(problem) => {
            let body = format!("{problem}\n");
            return write_answer(&mut stream, "400 Bad Request", "text/plain", &body).await;
        }
    };
    let Some(tap) = state.health.taps.open(&query.filter, query.limit) else {
        let body = format!("{MAX_TAPS} taps are open already; close one and try again\n");
        return write_answer(&mut stream, "503 Service Unavailable", "text/plain", &body).await;
    };
    write_within(&mut stream, EVENT_STREAM_HEAD.as_bytes()).await?;
    let mut ticks = tokio::time::interval(TICK);
    let mut events = Vec::new();
    let mut json = Vec::new();
    let mut last_stats: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let mut out = Vec::new();
        if state.health.stopping.load(Ordering::Relaxed) {
            out.extend_from_slice(b"event: end\ndata: {\"reason\":\"herald is stopping\"}\n\n");
            write_within(&mut stream, &out).await?;
            return stream.shutdown().await;
        }
        tap.take(&mut events);
        for event in events.drain(..) {
            json.clear();
            event.write_json(&mut json);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(redact::text(&String::from_utf8_lossy(&json)).as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        if last_stats.is_none_or(|at| at.elapsed() >= STATS_EVERY) {
            let (shown, not_shown) = tap.counts();
            out.extend_from_slice(
                format!(
                    "event: stats\ndata: {{\"shown\":{shown},\"not_shown\":{not_shown},\"limit\":{}}}\n\n",
                    query.limit
                )
                .as_bytes(),
            );
            last_stats = Some(Instant::now());
        }
        if !out.is_empty() {
            write_within(&mut stream, &out).await?;
        }
    }
}

/// The head of a Server-Sent Events answer.
const EVENT_STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";

/// Streams the status page's data as Server-Sent Events: at once, then every
/// [`status::INTERVAL`], until the client goes away or herald stops.
async fn stream_status(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let Some(_slot) = state.board.open_stream() else {
        let body = format!(
            "{} status pages are open already; close one and try again\n",
            status::MAX_STREAMS
        );
        return write_answer(&mut stream, "503 Service Unavailable", "text/plain", &body).await;
    };
    write_within(&mut stream, EVENT_STREAM_HEAD.as_bytes()).await?;
    let mut ticks = tokio::time::interval(status::INTERVAL);
    loop {
        ticks.tick().await;
        let document = status::document(&state.board, &state.health, &state.metrics.render());
        write_within(&mut stream, format!("data: {document}\n\n").as_bytes()).await?;
        if state.health.stopping.load(Ordering::Relaxed) {
            return stream.shutdown().await;
        }
    }
}

/// Writes `bytes` within [`WRITE_TIMEOUT`].
async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// How often a tap's stream reports its counts (which also tells the client
/// the connection is alive).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Writes a whole answer and closes.
async fn write_answer(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    // Browsers ask for the token as a password (Basic); other clients send
    // it as a Bearer token.
    let challenge = if status.starts_with("401") {
        "WWW-Authenticate: Bearer\r\nWWW-Authenticate: Basic realm=\"herald\", charset=\"UTF-8\"\r\n"
    } else {
        ""
    };
    // The status page: only its own script and style, never in a frame.
    let page = if content_type.starts_with("text/html") {
        "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{challenge}{page}Connection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Whether the request's `Host` names this machine (`localhost`, a loopback
/// address) or is absent. Without a token, that is what keeps a web page on
/// another site, whose name an attacker points at 127.0.0.1 (DNS rebinding),
/// from reading the endpoint through the admin's browser: browsers always send
/// the name they asked for.
fn local_host(request: &[u8]) -> bool {
    let head = String::from_utf8_lossy(request);
    let Some(host) = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim().to_ascii_lowercase())
    else {
        return true;
    };
    // `name:port`, `[v6]:port`, `[v6]`, `name`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name),
    };
    let name = name.trim_end_matches('.');
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request carries the configured token (or none is configured).
fn authorised(request: &[u8], token: Option<&Secret>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let head = String::from_utf8_lossy(request);
    let sent = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| {
            let (scheme, credentials) = value.trim().split_once(' ')?;
            let credentials = credentials.trim();
            if scheme.eq_ignore_ascii_case("bearer") {
                Some(credentials.as_bytes().to_vec())
            } else if scheme.eq_ignore_ascii_case("basic") {
                // `user:password`, base64: any user name, the token as password.
                let pair = crate::deadletter::base64_decode(credentials)?;
                let colon = memchr::memchr(b':', &pair)?;
                Some(pair[colon + 1..].to_vec())
            } else {
                None
            }
        });
    sent.is_some_and(|sent| same_bytes(&sent, token.expose().as_bytes()))
}

/// Compares in time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differ) == 0 && a.len() == b.len()
}

const UNAUTHORISED: (&str, &str, &str) = (
    "401 Unauthorized",
    "text/plain",
    "send Authorization: Bearer <http.token>\n",
);

/// The answer to `method` on `path`, for requests that are not streams.
fn respond(
    method: &str,
    path: &str,
    authorised: bool,
    state: &HttpState,
) -> (&'static str, &'static str, String) {
    match (method, path) {
        ("GET", "/tap" | "/status/stream") => {
            (UNAUTHORISED.0, UNAUTHORISED.1, UNAUTHORISED.2.into())
        }
        ("GET", "/" | "/status.json" | "/assets/status.js" | "/assets/status.css")
            if !authorised =>
        {
            (UNAUTHORISED.0, UNAUTHORISED.1, UNAUTHORISED.2.into())
        }
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            status::PAGE_HTML.into(),
        ),
        ("GET", "/assets/status.js") => (
            "200 OK",
            "text/javascript; charset=utf-8",
            status::PAGE_JS.into(),
        ),
        ("GET", "/assets/status.css") => {
            ("200 OK", "text/css; charset=utf-8", status::PAGE_CSS.into())
        }
        ("GET", "/status.json") => (
            "200 OK",
            "application/json",
            format!(
                "{:#}\n",
                status::document(&state.board, &state.health, &state.metrics.render())
            ),
        ),
        ("GET", "/metrics") if !authorised && !state.metrics_public => {
            (UNAUTHORISED.0, UNAUTHORISED.1, UNAUTHORISED.2.into())
        }
        ("GET", "/health") if !authorised => {
            (UNAUTHORISED.0, UNAUTHORISED.1, UNAUTHORISED.2.into())
        }
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        ("GET", "/health") => {
            let (healthy, body) = health(&state.health);
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        (_, "/metrics" | "/health" | "/tap" | "/" | "/status.json" | "/status/stream") => {
            ("405 Method Not Allowed", "text/plain", "use GET\n".into())
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "not found; try /, /metrics, /health or /tap\n".into(),
        ),
    }
}

/// The `/health` document, and whether herald is healthy (every sink delivering).
/// Error texts are redacted ([`crate::redact`]).
pub fn health(health: &Health) -> (bool, String) {
    let sinks: serde_json::Map<String, serde_json::Value> = health
        .sinks()
        .iter()
        .map(|sink| (sink.name.clone(), sink_json(sink)))
        .collect();
    let (status, healthy) = health.overall();
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": health.started.elapsed().as_secs(),
        "listeners": listeners_json(health),
        "allowlist": allowlist_json(health),
        "sinks": sinks,
        "taps_open": health.taps.len(),
        "senders": health.senders.snapshot().iter().map(|stream| json!({
            "host": stream.host,
            "tag": stream.tag,
            "source": stream.source.as_str(),
            "received": stream.received,
            "lost": stream.lost,
            "missing_now": stream.missing,
            "late": stream.late,
            "restarts": stream.restarts,
            "loss_ratio": stream.loss_ratio(),
            "last_row": stream.last_row,
            "last_seen": stream.last_seen.to_string(),
        })).collect::<Vec<_>>(),
        "last_reload": health
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|reload| json!({
                "at": reload.at.to_string(),
                "result": reload.result,
                "detail": crate::redact::text(&reload.detail),
            })),
    });
    (healthy, format!("{body:#}\n"))
}

/// The listeners as `/health` and the status page show them.
pub(crate) fn listeners_json(health: &Health) -> serde_json::Value {
    health
        .listeners()
        .iter()
        .map(|(name, addr, buffer)| {
            json!({
                "listen": name,
                "bound": addr.to_string(),
                "receive_buffer_bytes": buffer,
            })
        })
        .collect()
}

/// The allowlist's size and the names that did not resolve.
pub(crate) fn allowlist_json(health: &Health) -> serde_json::Value {
    json!({
        "entries": health.allowlist.load().len(),
        "unresolved_hosts": health.unresolved(),
    })
}

/// A sink as `/health` and the status page show it: type, state, queue,
/// buffer and last error (redacted).
pub(crate) fn sink_json(sink: &SinkStatus) -> serde_json::Value {
    let buffer = sink.queue.buffer_status();
    let mut value = json!({
        "type": sink.type_name,
        "state": sink.state().as_str(),
        "queue_depth": sink.queue.len(),
        "queue_capacity": sink.queue.capacity(),
        "in_flight": sink.queue.in_flight(),
        "buffer": {
            "type": buffer.type_name,
            "events": buffer.events,
            "bytes": buffer.bytes,
            "max_bytes": buffer.max_bytes,
        },
    });
    if let Some(error) = &buffer.error {
        value["buffer"]["error"] = json!(crate::redact::text(error));
    }
    if let Some(error) = sink.last_error() {
        value["last_error"] = json!(crate::redact::text(&error));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_host_names_pass_without_a_token() {
        let request = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        for host in [
            "localhost:9995",
            "127.0.0.1:9995",
            "127.1.2.3",
            "[::1]:9995",
            "LOCALHOST",
            "app.localhost:1",
            "localhost.",
        ] {
            assert!(local_host(request(host).as_bytes()), "{host}");
        }
        for host in [
            "evil.example:9995",
            "10.0.0.5:9995",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!local_host(request(host).as_bytes()), "{host}");
        }
        assert!(local_host(b"GET /metrics HTTP/1.0\r\n\r\n"));
    }

    #[tokio::test]
    async fn the_listener_holds_a_burst_of_connections_before_they_are_accepted() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The kernel caps the backlog at net.core.somaxconn.
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(LISTEN_BACKLOG as usize);
        let burst = (LISTEN_BACKLOG as usize).min(somaxconn);
        // Nothing accepts: each connection waits in the backlog. Beyond it, the
        // kernel drops the attempt and connect waits a second or more to retry.
        let connected = tokio::task::spawn_blocking(move || {
            (0..burst)
                .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)))
                .collect::<Result<Vec<_>, _>>()
                .map(|streams| streams.len())
        })
        .await
        .unwrap();
        assert_eq!(connected.unwrap(), burst);
        drop(listener);
    }
}
