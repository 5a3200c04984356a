//! The HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /health` (JSON).
//!
//! A deliberately small HTTP/1.1 server: one request per connection, GET only,
//! request head capped at 8 KiB and read within 5 s, so a stuck or hostile client
//! cannot hold resources. It binds loopback by default (`http.listen`). It serves
//! nothing else; sinks that need HTTP use their own clients.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::pipeline::Health;
use crate::sinks::driver::SinkState;

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint serves from.
#[derive(Clone)]
pub struct HttpState {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Feeds `/health`.
    pub health: Arc<Health>,
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, state: HttpState) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &state).await {
                debug!(%peer, %err, "http connection ended with an error");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            request.extend_from_slice(&chunk[..n]);
            if memchr::memmem::find(&request, b"\r\n\r\n").is_some() {
                return Ok(true);
            }
            if request.len() > MAX_REQUEST_BYTES {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let (status, content_type, body) = if head_complete {
        respond(&request, state)
    } else {
        ("400 Bad Request", "text/plain", "bad request\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn respond(request: &[u8], state: &HttpState) -> (&'static str, &'static str, String) {
    let line_end = memchr::memchr(b'\r', request).unwrap_or(request.len());
    let line = String::from_utf8_lossy(&request[..line_end]);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
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
        (_, "/metrics" | "/health") => ("405 Method Not Allowed", "text/plain", "use GET\n".into()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics or /health\n".into(),
        ),
    }
}

/// The `/health` document, and whether herald is healthy (every sink delivering).
pub fn health(health: &Health) -> (bool, String) {
    let sinks: serde_json::Map<String, serde_json::Value> = health
        .sinks
        .iter()
        .map(|sink| {
            let buffer = sink.queue.buffer_status();
            let mut value = json!({
                "type": sink.type_name,
                "state": sink.state().as_str(),
                "queue_depth": sink.queue.len(),
                "queue_capacity": sink.queue.capacity(),
                "buffer": {
                    "type": buffer.type_name,
                    "events": buffer.events,
                    "bytes": buffer.bytes,
                    "max_bytes": buffer.max_bytes,
                },
            });
            if let Some(error) = &buffer.error {
                value["buffer"]["error"] = json!(error);
            }
            if let Some(error) = sink.last_error() {
                value["last_error"] = json!(error);
            }
            (sink.name.clone(), value)
        })
        .collect();
    let healthy = health.sinks.iter().all(|sink| {
        matches!(sink.state(), SinkState::Ok | SinkState::Stopped)
            && sink.queue.buffer_status().error.is_none()
    });
    let stopping = health.stopping.load(Ordering::Relaxed);
    let status = if stopping {
        "stopping"
    } else if healthy {
        "ok"
    } else {
        "degraded"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": health.started.elapsed().as_secs(),
        "listeners": health.listeners.iter().map(|(name, addr, buffer)| json!({
            "listen": name,
            "bound": addr.to_string(),
            "receive_buffer_bytes": buffer,
        })).collect::<Vec<_>>(),
        "allowlist": {
            "entries": health.allowlist.load().len(),
            "unresolved_hosts": health.unresolved(),
        },
        "sinks": sinks,
    });
    (healthy && !stopping, format!("{body:#}\n"))
}
