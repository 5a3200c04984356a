//! What every HTTP-based sink shares: building the client (TLS verification on,
//! optional extra CA), gzip bodies, and turning a response into delivery or a
//! [`SinkError`] that says whether to retry and when.
//!
//! The rules: 2xx is delivered; 408, 425, 429 and 5xx are retried, honouring
//! `Retry-After` (seconds or an HTTP date); 401, 403 and 404 are retried too,
//! because they are fixed by an operator (a token, a database) rather than by
//! changing the data; any other 4xx is permanent and carries the server's message.
//! Network errors and timeouts are retried.
//!
//! Every error message made here passes through [`crate::redact`], so a URL the
//! HTTP client prints (normalised: lower-case scheme, no default port) or a
//! server echoing a token never carries a secret out. URLs are checked when the
//! config is loaded ([`check_url`]).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::{SinkError, tls};

/// The request timeout every HTTP sink uses unless configured: 10 s.
pub fn default_timeout_ms() -> u64 {
    10_000
}

/// Builds an HTTP client with TLS verification on: `timeout_ms` for a whole
/// request, and the system's CAs plus those in `tls_ca_file` (PEM, read by
/// [`tls::read_ca_file`]), for servers with an internal CA. Every HTTP sink's
/// config has these two keys.
///
/// # Errors
///
/// When the CA file cannot be read or holds no certificate, or the TLS stack
/// cannot start.
pub fn client(timeout_ms: u64, tls_ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    tls::install_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = tls_ca_file {
        let certs = tls::read_ca_file(path)
            .map_err(|err| err.to_string())?
            .iter()
            .map(|cert| reqwest::Certificate::from_der(cert))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("{}: {}: {err}", tls::CA_FILE_KEY, path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|err| format!("cannot start the HTTP client: {err}"))
}

/// Parses an HTTP sink's URL: http or https, with a host, no spaces.
///
/// # Errors
///
/// What is wrong and the fix, without the URL itself (it may hold a token).
pub fn check_url(text: &str) -> Result<reqwest::Url, String> {
    const EXAMPLE: &str = "e.g. \"https://host:port/path\"";
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "contains a space or a control character; write the URL without them (a space in a path is %20), {EXAMPLE}"
        ));
    }
    let url = reqwest::Url::parse(text).map_err(|err| {
        format!("is not a URL ({err}); write it in full, with http:// or https://, {EXAMPLE}")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(if text.contains("://") {
            format!(
                "uses {}://; herald sends over http or https only, {EXAMPLE}",
                url.scheme()
            )
        } else {
            format!("is not a full URL; write it with http:// or https://, {EXAMPLE}")
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host; {EXAMPLE}"));
    }
    Ok(url)
}

/// POSTs a JSON body to a webhook and checks the answer.
///
/// # Errors
///
/// As [`check`], and network errors as retryable.
pub async fn post_json(
    client: &reqwest::Client,
    url: &crate::secret::Secret,
    body: Vec<u8>,
) -> Result<(), SinkError> {
    let response = client
        .post(url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| network_error(&err))?;
    check(response).await.map(drop)
}

/// Gzips a request body.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// A network-level failure (no response): always worth retrying. The message
/// (with the URL the client prints) is redacted.
pub fn network_error(err: &reqwest::Error) -> SinkError {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SinkError::retryable(crate::redact::string(message))
}

/// Reads a response: `Ok(body)` for 2xx, else the error the rules above give
/// (with the server's message redacted: servers may echo the URL).
///
/// # Errors
///
/// A [`SinkError`] for any non-2xx status.
pub async fn check(response: reqwest::Response) -> Result<String, SinkError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let message = format!(
        "HTTP {}: {}",
        status.as_u16(),
        crate::redact::text(&summarise(&body))
    );
    let retryable = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_EARLY
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
    ) || status.is_server_error();
    Err(SinkError {
        message,
        retryable,
        retry_after,
        status: Some(status.as_u16()),
        rejected: Vec::new(),
    })
}

/// The server's message, on one line and not too long for a log line.
fn summarise(body: &str) -> String {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            ["error", "message"]
                .iter()
                .find_map(|key| value.get(*key).and_then(|v| v.as_str()).map(str::to_string))
        })
        .unwrap_or_else(|| body.trim().to_string());
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// `Retry-After`: delay in seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(3600)));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let body = b"log,host=a value=1 1\n".repeat(100);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&body)[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn server_messages_are_summarised_on_one_line() {
        assert_eq!(
            summarise("{\"error\":\"partial write:\\nfield type conflict\"}"),
            "partial write: field type conflict"
        );
        assert_eq!(summarise("  plain text\n"), "plain text");
    }

    #[test]
    fn urls_are_checked_without_showing_them() {
        assert!(check_url("HTTPS://prod.logic.azure.com:443/workflows/x?sig=abc").is_ok());
        assert!(check_url("HTTP://127.0.0.1:8086").is_ok());
        for (url, expected) in [
            ("ftp://files.corp/secret-token", "uses ftp://"),
            ("ht!tp://bad url", "contains a space"),
            ("ht!tp://bad-url/secret-token", "is not a URL"),
            ("db:8086", "is not a full URL"),
            ("hooks.slack.com/services/secret-token", "is not a URL"),
            ("https://", "is not a URL"),
        ] {
            let problem = check_url(url).unwrap_err();
            assert!(problem.contains(expected), "{url}: {problem}");
            assert!(!problem.contains("secret-token"), "{url}: {problem}");
            assert!(problem.contains("https://host:port/path"), "{problem}");
        }
    }

    #[test]
    fn the_client_builds_with_verification_on() {
        client(default_timeout_ms(), None).unwrap();
    }
}
