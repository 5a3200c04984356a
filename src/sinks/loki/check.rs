//! The `herald check --connect` probe of a `loki` sink: is Loki up (`/ready`),
//! and does it take an (empty) push with the configured credentials and tenant.
//!
//! It sends no events and is not used by delivery.

use super::LokiConfig;
use crate::sinks::transport;

/// Checks that Loki answers `/ready` and that the credentials and tenant are
/// accepted (an empty push). Returns a one-line summary, or what is wrong.
///
/// # Errors
///
/// A message naming the problem and how to fix it.
pub async fn check_connection(config: &LokiConfig) -> Result<String, String> {
    let client = config.client()?;
    let base = config.base();
    let unreachable = |err: reqwest::Error| {
        format!(
            "cannot reach Loki at {base}: {}; check url and that Loki is running",
            transport::network_error(&err).message
        )
    };
    let ready = client
        .get(config.endpoint("/ready")?)
        .send()
        .await
        .map_err(unreachable)?;
    let status = ready.status().as_u16();
    if status != 200 {
        let body = ready.text().await.unwrap_or_default();
        return Err(format!(
            "Loki at {base}/ready answered HTTP {status}: {}",
            body.trim()
        ));
    }
    let push = config
        .authorise(client.post(config.push_url()?))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"streams":[]}"#)
        .send()
        .await
        .map_err(unreachable)?;
    match push.status().as_u16() {
        200..=299 => Ok(format!("Loki at {base} is ready and accepts pushes")),
        401 | 403 => Err(format!(
            "Loki at {base} refused the credentials or tenant (HTTP {}); check username/password, bearer_token and tenant",
            push.status().as_u16()
        )),
        other => Err(format!(
            "Loki at {base} answered a test push with HTTP {other}: {}",
            push.text().await.unwrap_or_default().trim()
        )),
    }
}
