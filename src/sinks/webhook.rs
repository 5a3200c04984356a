//! The `webhook` sink: the event JSON (EVENTS.md) POSTed or PUT to any URL, with
//! custom headers and an optional HMAC-SHA256 signature of the body so the
//! receiver can check it came from herald.
//!
//! `body` chooses what one request carries. `event` (the default) sends one event
//! per request as an alert, under the alert rules of [`super::alert::AlertSink`]
//! (de-duplication, rate limit, pacing). `array` and `ndjson` forward every
//! matching event in batches of up to `batch_max_events`, as one JSON array or as
//! one event per line ([`WebhookBatchSink`]); the alert rules do not apply there,
//! and a failed batch is retried whole like any batching sink's.
//!
//! The signature header is `X-Herald-Signature: sha256=<hex>` over the exact
//! body bytes, keyed with `hmac_secret`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::alert::{Notifier, Rendered};
use crate::event::{Event, prefetch};
use crate::secret::Secret;
use crate::sinks::transport;
use crate::sinks::{Sink, SinkError};

/// Settings of a `webhook` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to send (a secret when it carries a token: `${HOOK_URL}`).
    pub url: Secret,
    /// `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: WebhookMethod,
    /// What one request carries: `event` (default), `array` or `ndjson`.
    #[serde(default)]
    pub body: WebhookBody,
    /// Extra request headers, e.g. `{ "X-Api-Key" = "${HOOK_KEY}" }` (values are secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Key for the `X-Herald-Signature` HMAC-SHA256 header; unset: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<Secret>,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "transport::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// The HTTP method of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    /// POST.
    #[default]
    Post,
    /// PUT.
    Put,
}

/// What one webhook request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookBody {
    /// One event's JSON object, sent as an alert.
    #[default]
    Event,
    /// A JSON array of the events of a batch (`application/json`).
    Array,
    /// The events of a batch, one JSON object per line (`application/x-ndjson`).
    Ndjson,
}

impl WebhookBody {
    /// Whether requests carry batches of events rather than one alert.
    pub fn batches(self) -> bool {
        self != WebhookBody::Event
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookBody::Event => "event",
            WebhookBody::Array => "array",
            WebhookBody::Ndjson => "ndjson",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            WebhookBody::Event | WebhookBody::Array => "application/json",
            WebhookBody::Ndjson => "application/x-ndjson",
        }
    }
}

/// The signature header's value for `body`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Sends events to a webhook.
#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    config: WebhookConfig,
}

impl Webhook {
    /// Builds the client (no I/O).
    ///
    /// # Errors
    ///
    /// When the TLS settings or a header name are unusable.
    pub fn new(config: &WebhookConfig) -> Result<Webhook, String> {
        for name in config.headers.keys() {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
        }
        let client = transport::client(config.timeout_ms, config.tls_ca_file.as_deref())?;
        Ok(Webhook {
            client,
            config: config.clone(),
        })
    }

    /// Sends one request with `body`, signed when a key is set.
    async fn send(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let url = self.config.url.expose();
        let mut request = match self.config.method {
            WebhookMethod::Post => self.client.post(url),
            WebhookMethod::Put => self.client.put(url),
        }
        .header(
            reqwest::header::CONTENT_TYPE,
            self.config.body.content_type(),
        );
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.expose());
        }
        if let Some(key) = &self.config.hmac_secret {
            request = request.header(
                "X-Herald-Signature",
                signature(key.expose().as_bytes(), &body),
            );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|err| transport::network_error(&err))?;
        transport::check(response).await.map(drop)
    }
}

impl Notifier for Webhook {
    async fn notify(&mut self, event: &Event, _rendered: &Rendered) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(2048);
        event.write_json(&mut body);
        self.send(body).await
    }
}

/// A webhook that forwards batches of events (`body = "array"` or `"ndjson"`).
#[derive(Debug)]
pub struct WebhookBatchSink {
    webhook: Webhook,
}

impl WebhookBatchSink {
    /// Builds the client (no I/O).
    ///
    /// # Errors
    ///
    /// As [`Webhook::new`], and when `body` is `event` (that is an alert sink).
    pub fn new(config: &WebhookConfig) -> Result<WebhookBatchSink, String> {
        if !config.body.batches() {
            return Err(format!(
                "body = \"{}\" sends alerts, not batches",
                config.body.as_str()
            ));
        }
        Ok(WebhookBatchSink {
            webhook: Webhook::new(config)?,
        })
    }
}

impl Sink for WebhookBatchSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(batch.len() * 1024 + 2);
        let array = self.webhook.config.body == WebhookBody::Array;
        if array {
            body.push(b'[');
        }
        for (i, event) in prefetch::ahead(batch).enumerate() {
            if array && i > 0 {
                body.push(b',');
            }
            event.write_json(&mut body);
            if !array {
                body.push(b'\n');
            }
        }
        if array {
            body.push(b']');
        }
        self.webhook.send(body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
