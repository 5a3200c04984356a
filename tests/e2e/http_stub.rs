//! An in-process HTTP/1.1 server standing in for Loki, InfluxDB and friends.
//!
//! [`Stub::start`] listens on `127.0.0.1:0` and serves each connection on its
//! own thread, with keep-alive, `Content-Length` and chunked request bodies and
//! `Expect: 100-continue`. Every request is recorded ([`Request`]: method, path,
//! decoded query pairs, lower-cased headers, body gunzipped when it was sent
//! with `Content-Encoding: gzip`). Answers come, in this order, from a queue of
//! scripted responses ([`Stub::push_response`]), from predicate responders
//! ([`Stub::respond_when`]) and from a default (204 No Content unless
//! [`Stub::set_default`] says otherwise).
//!
//! Nothing here sleeps to decide an outcome: [`Stub::wait_for_requests`] waits
//! on a condition variable until a deadline.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest request head or body the stub accepts.
const MAX_BYTES: usize = 64 << 20;

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query string, e.g. `/loki/api/v1/push`.
    pub path: String,
    /// The query string as decoded (name, value) pairs, in order.
    pub query: Vec<(String, String)>,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The body as it came over the wire.
    pub raw_body: Vec<u8>,
    /// When the whole request had been read.
    pub received: Instant,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The (decoded) body as text; fails the test when it is not UTF-8.
    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("request body is UTF-8")
    }

    /// The (decoded) body as JSON; fails the test when it is not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "request body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// An answer the stub gives.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length` is always added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, `headers` and `body`.
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }
}

type Responder = Box<dyn Fn(&Request) -> Option<Response> + Send>;

struct Script {
    requests: Vec<Request>,
    queue: VecDeque<Response>,
    responders: Vec<Responder>,
    default: Response,
}

struct Shared {
    script: Mutex<Script>,
    arrived: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stub server; stops accepting when dropped.
pub struct Stub {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Stub {
    /// Starts a stub on a free port of 127.0.0.1.
    pub fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
        let addr = listener.local_addr().expect("stub address");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                requests: Vec::new(),
                queue: VecDeque::new(),
                responders: Vec::new(),
                default: Response::new(204, &[], ""),
            }),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("stub {addr}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = accept_shared.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("stub {addr} conn"))
                        .spawn(move || serve(stream, &shared));
                }
            })
            .expect("start the stub thread");
        Stub { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a response for the next request not yet answered.
    pub fn push_response(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.shared
            .lock()
            .queue
            .push_back(Response::new(status, headers, body));
    }

    /// Answers every request `when` holds for (and the queue has nothing for)
    /// with this response; responders added earlier are asked first.
    pub fn respond_when(
        &self,
        when: impl Fn(&Request) -> bool + Send + 'static,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) {
        let response = Response::new(status, headers, body);
        self.shared.lock().responders.push(Box::new(move |request| {
            when(request).then(|| response.clone())
        }));
    }

    /// The response when neither the queue nor a responder gives one.
    pub fn set_default(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.shared.lock().default = Response::new(status, headers, body);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `n` requests arrived and returns them all; fails the
    /// test, listing what did arrive, when `deadline` passes first.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) -> Vec<Request> {
        let end = Instant::now() + deadline;
        let mut script = self.shared.lock();
        while script.requests.len() < n {
            let now = Instant::now();
            assert!(
                now < end,
                "the stub got {} request(s), not {n}, within {deadline:?}: {:#?}",
                script.requests.len(),
                script
                    .requests
                    .iter()
                    .map(|r| format!(
                        "{} {} {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&r.body)
                    ))
                    .collect::<Vec<_>>()
            );
            script = self
                .shared
                .arrived
                .wait_timeout(script, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        script.requests.clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Serves one connection until the client closes it, asks to, or the stub stops.
fn serve(stream: TcpStream, shared: &Shared) {
    // Poll the stop flag while idle between requests.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, &mut writer, shared) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = {
            let mut script = shared.lock();
            let response = script
                .queue
                .pop_front()
                .or_else(|| script.responders.iter().find_map(|r| r(&request)))
                .unwrap_or_else(|| script.default.clone());
            script.requests.push(request);
            shared.arrived.notify_all();
            response
        };
        if write_response(&mut writer, &response, close).is_err() || close {
            return;
        }
    }
}

/// Reads one line (up to `\n`), retrying read timeouts until the stub stops.
/// `Ok(false)` at end of stream before any byte.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    shared: &Shared,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        match reader.read_until(b'\n', line) {
            Ok(0) if line.is_empty() => return Ok(false),
            Ok(_) if line.ends_with(b"\n") => return Ok(true),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return Err(err);
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
        if line.len() > MAX_BYTES {
            return Err(ErrorKind::InvalidData.into());
        }
    }
}

/// Reads exactly `len` bytes, retrying read timeouts until the stub stops.
fn read_exact(
    reader: &mut BufReader<TcpStream>,
    len: usize,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> std::io::Result<()> {
    if len > MAX_BYTES {
        return Err(ErrorKind::InvalidData.into());
    }
    let start = out.len();
    out.resize(start + len, 0);
    let mut filled = start;
    while filled < out.len() {
        match reader.read(&mut out[filled..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return Err(err);
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what.into())
}

/// Reads one request; `Ok(None)` when the client closed the connection between
/// requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    shared: &Shared,
) -> std::io::Result<Option<Request>> {
    let mut line = Vec::new();
    // Tolerate empty lines before a request line (RFC 9112 §2.2).
    loop {
        if !read_line(reader, &mut line, shared)? {
            return Ok(None);
        }
        if line != b"\r\n" && line != b"\n" {
            break;
        }
    }
    let request_line = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not HTTP/1.x: {request_line:?}")));
    }
    let mut headers = Vec::new();
    loop {
        if !read_line(reader, &mut line, shared)? {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {text:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut raw_body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            if !read_line(reader, &mut line, shared)? {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    if !read_line(reader, &mut line, shared)? || line == b"\r\n" || line == b"\n" {
                        break;
                    }
                }
                break;
            }
            read_exact(reader, size, &mut raw_body, shared)?;
            let mut crlf = Vec::new();
            read_exact(reader, 2, &mut crlf, shared)?;
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        read_exact(reader, length, &mut raw_body, shared)?;
    }
    let body = if header("content-encoding").is_some_and(|v| v.eq_ignore_ascii_case("gzip")) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw_body[..])
            .read_to_end(&mut out)
            .map_err(|err| {
                invalid(format!(
                    "Content-Encoding: gzip but the body does not gunzip: {err}"
                ))
            })?;
        out
    } else {
        raw_body.clone()
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: parse_query(query),
        headers,
        body,
        raw_body,
        received: Instant::now(),
    }))
}

/// `a=1&b=x+y%21` to decoded pairs.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(writer: &mut TcpStream, response: &Response, close: bool) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // 204 and 304 never have a body (RFC 9110 §6.4.1).
    let body: &[u8] = if matches!(response.status, 204 | 304) {
        &[]
    } else {
        &response.body
    };
    if !matches!(response.status, 204 | 304) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()
}

#[test]
fn stub_records_requests_and_answers_from_its_script() {
    use std::io::Read as _;

    let stub = Stub::start();
    stub.push_response(429, &[("Retry-After", "1")], "slow down");
    stub.respond_when(|r| r.body == b"bad", 400, &[], "{\"error\":\"no\"}");
    let mut conn = TcpStream::connect(stub.addr).unwrap();
    let gz = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"hello").unwrap();
        encoder.finish().unwrap()
    };
    // Three requests on one keep-alive connection: gzip, chunked, plain.
    let mut wire = format!(
        "POST /p?org=a%20b&x=1+2&flag HTTP/1.1\r\nHost: s\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    wire.extend_from_slice(&gz);
    wire.extend_from_slice(
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nba\r\n1;x=y\r\nd\r\n0\r\n\r\n",
    );
    wire.extend_from_slice(b"GET /q HTTP/1.1\r\nConnection: close\r\n\r\n");
    conn.write_all(&wire).unwrap();
    let mut answers = String::new();
    conn.read_to_string(&mut answers).unwrap();
    // Bodies have no trailing newline, so status lines follow them directly.
    let statuses: Vec<&str> = answers
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| answer.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["429 Too Many Requests", "400 Bad Request", "204 No Content"],
        "{answers}"
    );
    assert!(
        answers.contains("Retry-After: 1\r\nContent-Length: 9\r\n\r\nslow down"),
        "{answers}"
    );
    assert!(
        answers.ends_with("204 No Content\r\nConnection: close\r\n\r\n"),
        "{answers}"
    );

    let requests = stub.wait_for_requests(3, Duration::from_secs(5));
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/p");
    assert_eq!(
        requests[0].query,
        [
            ("org".to_string(), "a b".to_string()),
            ("x".to_string(), "1 2".to_string()),
            ("flag".to_string(), String::new())
        ]
    );
    assert_eq!(requests[0].header("HOST"), Some("s"));
    assert_eq!(requests[0].body, b"hello");
    assert_eq!(requests[0].raw_body, gz);
    assert_eq!(requests[1].body, b"bad");
    assert_eq!(requests[2].method, "GET");
    assert!(requests[2].body.is_empty());
}
