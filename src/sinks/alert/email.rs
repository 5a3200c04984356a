//! The `email` sink: alerts over SMTP (lettre), one message per recipient.
//!
//! Each alert is a `multipart/alternative` message (plain text and an HTML
//! version with a small table of the alert's `Key: value` lines and the links),
//! or plain text only with `html = false`. The subject is the alert title, or
//! the `subject_template`. lettre encodes everything (RFC 2047 subjects,
//! quoted-printable or base64 bodies), so backslashes, quotes, emoji, CRLF and
//! very long lines arrive intact. Every message carries `Auto-Submitted:
//! auto-generated` (RFC 3834), so vacation responders do not answer it.
//!
//! **Connection.** One connection per alert: connect, EHLO, STARTTLS (or TLS from
//! the first byte, or neither), AUTH PLAIN/LOGIN when `username` is set, one mail
//! transaction per recipient, QUIT. Nothing is kept open between alerts.
//! Certificates are always verified (system roots plus `tls_ca_file`).
//!
//! **One message per recipient**, so limits and failures are per recipient:
//!
//! - A 4xx answer (mailbox busy, greylisting) is retryable for that recipient;
//!   a 5xx answer (550 unknown mailbox) is final for that recipient.
//! - A connection, TLS or login failure, a timeout, or `530 authentication
//!   required` (a setting to fix, not a recipient problem) is retryable for
//!   everyone not served yet, and ends the attempt.
//! - Across the driver's retries of one event, a recipient who already received
//!   it, or was refused for good, is not sent it again.
//! - The outcome: any recipient still retryable: a retryable error; else any
//!   refused for good: a partial failure when someone received the alert (the
//!   event goes to the dead-letter file, the sink stays healthy), a permanent
//!   error when no one did; else delivered.
//!
//! **Rate limits.** Two limits apply, in this order:
//!
//! 1. The alert gate of every alert sink (`rate_limit_key`, default the task id,
//!    and `rate_limit_window_s`, default 300): after an alert of a task was
//!    delivered (every recipient got it, or was held back by the limit below),
//!    further alerts of that task are suppressed for the window and counted in
//!    `herald_alerts_suppressed_total{reason="rate_limited"}`.
//! 2. Butler's per-recipient limit (`per_recipient_rate_limit_s`, default 300): at
//!    most one message per (task id, recipient) per window, a slot being taken
//!    only when the server accepted that recipient's message. Suppressions are
//!    counted in `herald_email_recipients_suppressed_total{sink}`.
//!
//! With the same recipients for every alert the two agree whenever every
//! recipient accepts, so the gate decides. The per-recipient limit matters
//! when an alert reached only some recipients (the gate takes no slot for a
//! failed delivery): the next alert of that task inside the window then goes
//! only to those who did not get the previous one. It also keeps limiting per
//! task when the gate's limit is off (`rate_limit_window_s = 0`) or keyed
//! differently (a finer `rate_limit_key` is still capped per task here: set
//! `per_recipient_rate_limit_s = 0` to leave limiting to the gate alone).
//! Events without a task id are not limited per recipient.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, TlsParameters, TlsParametersBuilder,
};
use lettre::transport::smtp::commands::{Mail, Rset};
use lettre::transport::smtp::extension::ClientId;
use metrics::{Counter, counter};
use minijinja::Environment;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{MAX_KEYS, Notifier, Rendered, cut};
use crate::event::{Event, Field};
use crate::secret::{REDACTED, Secret};
use crate::sinks::SinkError;

/// Recipients an email sink did not send to because of the per-recipient limit.
pub const EMAIL_RECIPIENTS_SUPPRESSED: &str = "herald_email_recipients_suppressed_total";

/// Longest subject, in characters (longer ones are cut with a visible marker).
const SUBJECT_MAX: usize = 250;

/// Settings of an `email` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name or IP address (its TLS certificate must name it).
    pub host: String,
    /// The port; default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starttls` (default: plain connection upgraded with STARTTLS, which is
    /// required), `tls` (TLS from the first byte, "SMTPS"), or `none`: no
    /// encryption at all, so the message and any password cross the network in
    /// clear text (only for a trusted relay on the same host or network).
    #[serde(default)]
    pub security: Security,
    /// User name for SMTP AUTH (PLAIN or LOGIN); give `password` too, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for SMTP AUTH (`${SMTP_PASSWORD}` or `file:/path` keep it out of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The sender: `herald@corp.local` or `Qlik alerts <herald@corp.local>`.
    pub from: String,
    /// Recipients (at least one), each an address, optionally `Name <address>`.
    /// Each gets their own message.
    pub to: Vec<String>,
    /// Template for the subject (minijinja, over the event's fields plus `title`
    /// and `text`, the rendered alert); default: the alert title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_template: Option<String>,
    /// Send an HTML version besides the plain text (`multipart/alternative`).
    #[serde(default = "default_true")]
    pub html: bool,
    /// At most one message per (task id, recipient) in this many seconds,
    /// counting only messages the server accepted; 0: no per-recipient limit.
    /// The sink's `rate_limit_window_s` applies first (see the module docs).
    #[serde(default = "default_per_recipient_rate_limit_s")]
    pub per_recipient_rate_limit_s: u64,
    /// Longest wait for the connection (connect, TLS, login) and for each
    /// message, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust besides the system's, for a server
    /// with an internal CA. Certificate verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_per_recipient_rate_limit_s() -> u64 {
    300
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP upgraded with STARTTLS; fails if the server does not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: messages and credentials travel in clear text.
    None,
}

impl Security {
    /// The usual port.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Security::Starttls => "starttls",
            Security::Tls => "tls",
            Security::None => "none",
        }
    }
}

impl EmailConfig {
    /// The port in use (configured, or the usual one for `security`).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// Checks the settings without any I/O; returns the key and the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err((
                "host",
                "is empty; give the SMTP server's name, e.g. \"smtp.corp.local\"".into(),
            ));
        }
        if host.contains("://")
            || host.contains(char::is_whitespace)
            || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err((
                "host",
                format!(
                    "{:?} is not a host name; give only the name (e.g. \"smtp.corp.local\"), the port in `port` and TLS in `security`",
                    self.host
                ),
            ));
        }
        match (self.security, self.port) {
            (_, Some(0)) => return Err(("port", "must be between 1 and 65535".into())),
            (Security::Starttls, Some(465)) => {
                return Err((
                    "security",
                    "port 465 expects TLS from the first byte; set security = \"tls\", or use port 587 for STARTTLS".into(),
                ));
            }
            (Security::Tls, Some(port @ (25 | 587))) => {
                return Err((
                    "security",
                    format!(
                        "port {port} starts in plain text and upgrades with STARTTLS; set security = \"starttls\", or use port 465 for TLS"
                    ),
                ));
            }
            (Security::None, Some(465)) => {
                return Err((
                    "security",
                    "port 465 expects TLS from the first byte; set security = \"tls\"".into(),
                ));
            }
            _ => {}
        }
        match (&self.username, &self.password) {
            (Some(_), None) | (None, Some(_)) => {
                return Err((
                    "username",
                    "give both username and password, or neither".into(),
                ));
            }
            (Some(user), Some(_)) if user.is_empty() => {
                return Err(("username", "is empty".into()));
            }
            (Some(_), Some(password)) if password.expose().is_empty() => {
                return Err(("password", "is empty (an empty variable or file?)".into()));
            }
            _ => {}
        }
        parse_mailbox(&self.from).map_err(|problem| ("from", problem))?;
        if self.to.is_empty() {
            return Err((
                "to",
                "is empty; list at least one address, e.g. to = [\"qlik-admins@corp.local\"]"
                    .into(),
            ));
        }
        let mut seen = Vec::with_capacity(self.to.len());
        for to in &self.to {
            let address = parse_mailbox(to).map_err(|problem| ("to", problem))?.email;
            let address = address.to_string().to_lowercase();
            if seen.contains(&address) {
                return Err(("to", format!("lists {address} twice")));
            }
            seen.push(address);
        }
        if let Some(template) = &self.subject_template {
            subject_environment(template).map_err(|problem| ("subject_template", problem))?;
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms", "must be at least 1".into()));
        }
        if self.tls_ca_file.is_some() && self.security == Security::None {
            return Err((
                "tls_ca_file",
                "has no effect with security = \"none\"; remove it or use \"starttls\" or \"tls\""
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Parses `addr@example.com` or `Name <addr@example.com>`.
fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim().parse::<Mailbox>().map_err(|err| {
        format!(
            "{text:?} is not an email address ({err}); write \"name@example.com\" or \"Name <name@example.com>\""
        )
    })
}

/// Compiles the subject template.
fn subject_environment(template: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_template_owned("subject", template.to_string())
        .map_err(|err| format!("does not compile: {err:#}"))?;
    Ok(env)
}

/// The subject for an alert: one line, at most [`SUBJECT_MAX`] characters.
fn subject_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&line, SUBJECT_MAX)
}

/// The plain-text body: the alert text, then the links one per line.
pub fn text_body(rendered: &Rendered) -> String {
    let mut body = rendered.text.clone();
    if !rendered.links.is_empty() {
        body.push_str("\n\n");
        for (label, url) in &rendered.links {
            body.push_str(label);
            body.push_str(": ");
            body.push_str(url);
            body.push('\n');
        }
    }
    body
}

/// Escapes text for HTML content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `Key: value` when the line looks like one (a short label of words).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(": ")?;
    let label_like = !key.is_empty()
        && key.chars().count() <= 30
        && key.starts_with(|c: char| c.is_alphabetic())
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'));
    label_like.then_some((key, value))
}

/// The HTML body: the title, a table of the `Key: value` lines (other lines as
/// paragraphs, in order) and the links. Everything from the alert is escaped.
pub fn html_body(rendered: &Rendered) -> String {
    const CELL: &str = "padding:2px 12px 2px 0;vertical-align:top";
    let mut html = String::with_capacity(rendered.text.len() * 2 + 512);
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    html.push_str(&escape_html(&rendered.title));
    html.push_str("</title></head>\n<body style=\"font-family:sans-serif\">\n<h2>");
    html.push_str(&escape_html(&rendered.title));
    html.push_str("</h2>\n");
    let mut in_table = false;
    for line in rendered.text.lines() {
        let line = line.trim_end_matches('\r');
        match key_value(line) {
            Some((key, value)) => {
                if !in_table {
                    html.push_str("<table style=\"border-collapse:collapse\">\n");
                    in_table = true;
                }
                html.push_str(&format!(
                    "<tr><th style=\"text-align:left;{CELL}\">{}</th><td style=\"white-space:pre-wrap;{CELL}\">{}</td></tr>\n",
                    escape_html(key),
                    escape_html(value)
                ));
            }
            None => {
                if in_table {
                    html.push_str("</table>\n");
                    in_table = false;
                }
                if !line.trim().is_empty() {
                    html.push_str("<p style=\"white-space:pre-wrap\">");
                    html.push_str(&escape_html(line));
                    html.push_str("</p>\n");
                }
            }
        }
    }
    if in_table {
        html.push_str("</table>\n");
    }
    if !rendered.links.is_empty() {
        let links: Vec<String> = rendered
            .links
            .iter()
            .map(|(label, url)| {
                if url.starts_with("https://") || url.starts_with("http://") {
                    format!(
                        "<a href=\"{}\">{}</a>",
                        escape_html(url),
                        escape_html(label)
                    )
                } else {
                    format!("{}: {}", escape_html(label), escape_html(url))
                }
            })
            .collect();
        html.push_str("<p>");
        html.push_str(&links.join(" &middot; "));
        html.push_str("</p>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// At most one message per (key, recipient) per window; a slot is taken only
/// by an accepted message. Holds at most [`MAX_KEYS`] slots.
#[derive(Debug)]
struct RecipientLimiter {
    window: Duration,
    slots: HashMap<(String, String), Instant>,
}

impl RecipientLimiter {
    fn new(window: Duration) -> RecipientLimiter {
        RecipientLimiter {
            window,
            slots: HashMap::new(),
        }
    }

    fn limited(&self, key: &str, recipient: &str, now: Instant) -> bool {
        !self.window.is_zero()
            && self
                .slots
                .get(&(key.to_string(), recipient.to_string()))
                .is_some_and(|at| now.duration_since(*at) < self.window)
    }

    fn record(&mut self, key: &str, recipient: &str, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        if self.slots.len() >= MAX_KEYS {
            let window = self.window;
            self.slots.retain(|_, at| now.duration_since(*at) < window);
        }
        if self.slots.len() < MAX_KEYS {
            self.slots
                .insert((key.to_string(), recipient.to_string()), now);
        }
    }
}

/// Where one recipient stands for the event being delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recipient {
    /// Not served yet (or a retryable failure).
    Pending,
    /// The server accepted the message.
    Sent,
    /// Refused for good (5xx), with the server's answer.
    Refused(String),
    /// Not sent: the per-recipient limit.
    Suppressed,
}

/// The event being delivered and each recipient's state, kept across retries.
#[derive(Debug)]
struct Attempt {
    event: String,
    recipients: Vec<Recipient>,
}

/// Why the connection could not be set up.
#[derive(Debug)]
enum ConnectError {
    /// TCP connect, greeting or EHLO.
    Connect(String),
    /// STARTTLS not offered.
    NoStarttls,
    /// The TLS handshake (certificate, protocol).
    Tls(String),
    /// AUTH refused.
    Auth(String),
    /// The server offers neither AUTH PLAIN nor AUTH LOGIN.
    NoAuthMechanism,
    /// No answer in time.
    Timeout,
}

/// The message body parts of one alert.
struct Content {
    subject: String,
    text: String,
    html: Option<String>,
}

/// Sends alerts over email.
pub struct Email {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    credentials: Option<(String, Secret)>,
    hello: ClientId,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Option<Environment<'static>>,
    html: bool,
    timeout: Duration,
    limiter: RecipientLimiter,
    attempt: Option<Attempt>,
    suppressed: Counter,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("server", &format!("{}:{}", self.host, self.port))
            .field("security", &self.security)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// Installs rustls's ring provider once (another part of herald may have already).
fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TLS settings for `host`, trusting `ca_file` besides the system's roots.
fn tls_parameters(host: &str, ca_file: Option<&PathBuf>) -> Result<TlsParameters, String> {
    install_crypto_provider();
    let mut builder = TlsParametersBuilder::new(host.to_string());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|err| format!("tls_ca_file: cannot read {}: {err}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| {
                format!(
                    "tls_ca_file: {} is not PEM certificates: {err}",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "tls_ca_file: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        for cert in certs {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|err| format!("tls_ca_file: {}: {err}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|err| format!("cannot set up TLS for {host}: {err}"))
}

impl Email {
    /// Checks the settings and prepares the sender (no I/O besides reading
    /// `tls_ca_file`).
    ///
    /// # Errors
    ///
    /// `key: problem` when the settings are unusable.
    pub fn new(sink: &str, config: &EmailConfig) -> Result<Email, String> {
        config
            .validate()
            .map_err(|(key, problem)| format!("{key}: {problem}"))?;
        let host = config.host.trim().to_string();
        let tls = match config.security {
            Security::None => None,
            Security::Starttls | Security::Tls => {
                Some(tls_parameters(&host, config.tls_ca_file.as_ref())?)
            }
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        };
        if credentials.is_some() && config.security == Security::None {
            warn!(
                server = %format!("{host}:{}", config.port()),
                "email: security = \"none\" sends the SMTP password in clear text"
            );
        }
        let from = parse_mailbox(&config.from)?;
        let to = config
            .to
            .iter()
            .map(|to| parse_mailbox(to))
            .collect::<Result<Vec<_>, _>>()?;
        let subject = config
            .subject_template
            .as_deref()
            .map(subject_environment)
            .transpose()?;
        let port = config.port();
        Ok(Email {
            suppressed: counter!(EMAIL_RECIPIENTS_SUPPRESSED, "sink" => sink.to_string()),
            host,
            port,
            security: config.security,
            tls,
            credentials,
            hello: ClientId::default(),
            from,
            to,
            subject,
            html: config.html,
            timeout: Duration::from_millis(config.timeout_ms),
            limiter: RecipientLimiter::new(Duration::from_secs(config.per_recipient_rate_limit_s)),
            attempt: None,
        })
    }

    /// `host:port`.
    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Removes the password from a message (no server should echo it; belt and braces).
    fn redact(&self, message: String) -> String {
        match &self.credentials {
            Some((_, password)) if !password.expose().is_empty() => {
                message.replace(password.expose(), REDACTED)
            }
            _ => message,
        }
    }

    /// Connects, says EHLO, secures the connection and logs in, as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        tokio::time::timeout(self.timeout, self.connect_steps())
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    async fn connect_steps(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        let wrapper = match self.security {
            Security::Tls => self.tls.clone(),
            Security::Starttls | Security::None => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await
        .map_err(|err| {
            if is_tls_failure(&err) {
                ConnectError::Tls(error_text(&err))
            } else {
                ConnectError::Connect(error_text(&err))
            }
        })?;
        if self.security == Security::Starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(ConnectError::NoStarttls);
            }
            if let Some(tls) = &self.tls {
                conn.starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|err| ConnectError::Tls(error_text(&err)))?;
            }
        }
        if let Some((user, password)) = &self.credentials {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            if conn.server_info().get_auth_mechanism(&mechanisms).is_none() {
                conn.abort().await;
                return Err(ConnectError::NoAuthMechanism);
            }
            let credentials = Credentials::new(user.clone(), password.expose().to_string());
            if let Err(err) = conn.auth(&mechanisms, &credentials).await {
                conn.abort().await;
                return Err(ConnectError::Auth(error_text(&err)));
            }
        }
        Ok(conn)
    }

    /// A connection failure as an operator reads it.
    fn describe(&self, err: &ConnectError) -> String {
        let server = self.server();
        let message = match err {
            ConnectError::Connect(err) => format!(
                "cannot connect to the SMTP server {server}: {err}; check host, port and that the server is up"
            ),
            ConnectError::Timeout => format!(
                "no answer from the SMTP server {server} within {} ms; check host, port and firewalls (a port that expects TLS at once, such as 465, needs security = \"tls\")",
                self.timeout.as_millis()
            ),
            ConnectError::NoStarttls => format!(
                "the SMTP server {server} does not offer STARTTLS; use security = \"tls\" if it speaks TLS from the first byte (port 465), or security = \"none\" only for a trusted relay"
            ),
            ConnectError::Tls(err) => {
                let plain_port = if self.security == Security::Tls {
                    "; if the port starts in plain text (587, 25), use security = \"starttls\""
                } else {
                    ""
                };
                format!(
                    "TLS with the SMTP server {server} failed: {err}; its certificate must name {} and be signed by a CA the system trusts or one in tls_ca_file{plain_port}",
                    self.host
                )
            }
            ConnectError::NoAuthMechanism => format!(
                "the SMTP server {server} offers no AUTH PLAIN or LOGIN{}; remove username and password if it needs no login",
                if self.security == Security::None {
                    " (many servers offer AUTH only over TLS: try security = \"starttls\")"
                } else {
                    ""
                }
            ),
            ConnectError::Auth(err) => {
                let user = self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| user.as_str())
                    .unwrap_or_default();
                format!(
                    "the SMTP server {server} refused the login of {user:?}: {err}; check username and password"
                )
            }
        };
        self.redact(message)
    }

    /// Subject, text and HTML for an alert.
    fn content(&self, event: &Event, rendered: &Rendered) -> Content {
        let subject = match &self.subject {
            None => rendered.title.clone(),
            Some(env) => {
                let mut context: serde_json::Value =
                    serde_json::from_str(&event.to_json()).unwrap_or_default();
                context["title"] = rendered.title.clone().into();
                context["text"] = rendered.text.clone().into();
                let value = minijinja::Value::from(minijinja::value::Serde(&context));
                match env.get_template("subject").and_then(|t| t.render(value)) {
                    Ok(subject) if !subject.trim().is_empty() => subject,
                    Ok(_) => rendered.title.clone(),
                    Err(err) => {
                        warn!(%err, "email: subject_template failed; using the alert title");
                        rendered.title.clone()
                    }
                }
            }
        };
        Content {
            subject: subject_line(&subject),
            text: text_body(rendered),
            html: self.html.then(|| html_body(rendered)),
        }
    }

    /// The message for one recipient.
    fn message(&self, content: &Content, to: &Mailbox) -> Result<Message, String> {
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(content.subject.clone())
            .message_id(None)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")).to_string())
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_string(),
            ));
        match &content.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                content.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(content.text.clone())),
        }
        .map_err(|err| format!("cannot build the message for {}: {err}", to.email))
    }

    /// Sends to every pending recipient of the current attempt, updating their
    /// states; returns the retryable failures as `recipient: reason`.
    async fn send_round(&mut self, event: &Event, rendered: &Rendered) -> Vec<String> {
        let content = self.content(event, rendered);
        let key = event.get(Field::TaskId).unwrap_or("").to_string();
        let mut retry = Vec::new();
        let mut conn: Option<AsyncSmtpConnection> = None;
        let pending: Vec<usize> = self
            .attempt
            .as_ref()
            .map(|a| {
                a.recipients
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r == Recipient::Pending)
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        for (n, &index) in pending.iter().enumerate() {
            let to = self.to[index].clone();
            let address = to.email.to_string();
            let message = match self.message(&content, &to) {
                Ok(message) => message,
                Err(problem) => {
                    self.set(index, Recipient::Refused(problem));
                    continue;
                }
            };
            if conn.as_ref().is_none_or(AsyncSmtpConnection::has_broken) {
                match self.connect().await {
                    Ok(new) => conn = Some(new),
                    Err(err) => {
                        let reason = self.describe(&err);
                        for &rest in &pending[n..] {
                            retry.push(format!("{}: {reason}", self.to[rest].email));
                        }
                        return retry;
                    }
                }
            }
            let Some(connection) = conn.as_mut() else {
                break;
            };
            let sent = tokio::time::timeout(
                self.timeout,
                connection.send(message.envelope(), &message.formatted()),
            )
            .await;
            match sent {
                Ok(Ok(_)) => {
                    self.limiter
                        .record(&key, &address.to_lowercase(), Instant::now());
                    self.set(index, Recipient::Sent);
                }
                Ok(Err(err)) if needs_login(&err) => {
                    // Not about this recipient: the server wants a login first.
                    let reason = self.redact(format!(
                        "{}; the server wants a login: set username and password",
                        error_text(&err)
                    ));
                    for &rest in &pending[n..] {
                        retry.push(format!("{}: {reason}", self.to[rest].email));
                    }
                    return retry;
                }
                Ok(Err(err)) if err.is_permanent() => {
                    let reason = self.redact(error_text(&err));
                    warn!(recipient = %address, %reason, "email: the SMTP server refused the message for good");
                    self.set(index, Recipient::Refused(reason));
                }
                Ok(Err(err)) if err.is_transient() => {
                    retry.push(format!("{address}: {}", self.redact(error_text(&err))));
                }
                Ok(Err(err)) => {
                    // The connection broke: everyone left waits for the retry.
                    let reason = self.redact(error_text(&err));
                    for &rest in &pending[n..] {
                        retry.push(format!("{}: {reason}", self.to[rest].email));
                    }
                    return retry;
                }
                Err(_) => {
                    let reason = format!(
                        "no answer from the SMTP server {} within {} ms",
                        self.server(),
                        self.timeout.as_millis()
                    );
                    for &rest in &pending[n..] {
                        retry.push(format!("{}: {reason}", self.to[rest].email));
                    }
                    return retry;
                }
            }
        }
        if let Some(mut connection) = conn
            && !connection.has_broken()
        {
            let _ = tokio::time::timeout(self.timeout, connection.quit()).await;
        }
        retry
    }

    fn set(&mut self, index: usize, state: Recipient) {
        if let Some(slot) = self
            .attempt
            .as_mut()
            .and_then(|a| a.recipients.get_mut(index))
        {
            *slot = state;
        }
    }
}

/// An SMTP error with its causes, on one line (lettre repeats some layers).
fn error_text(err: &lettre::transport::smtp::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

/// `530 Authentication required`: a setting to fix, not a refused recipient.
fn needs_login(err: &lettre::transport::smtp::Error) -> bool {
    err.status().is_some_and(|code| code.to_string() == "530")
}

/// Whether a connection error came from TLS (lettre reports TLS handshake
/// failures as connection errors): a rustls error, or the `InvalidData` I/O
/// error it is wrapped in, somewhere in the chain.
fn is_tls_failure(err: &lettre::transport::smtp::Error) -> bool {
    if err.is_tls() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<rustls::Error>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

impl Notifier for Email {
    async fn notify(&mut self, event: &Event, rendered: &Rendered) -> Result<(), SinkError> {
        let identity = event.to_json();
        if self.attempt.as_ref().is_none_or(|a| a.event != identity) {
            // A new event: decide per recipient whether the limit holds it back.
            let key = event.get(Field::TaskId).unwrap_or("");
            let now = Instant::now();
            let mut recipients = Vec::with_capacity(self.to.len());
            for to in &self.to {
                let address = to.email.to_string().to_lowercase();
                if !key.is_empty() && self.limiter.limited(key, &address, now) {
                    info!(recipient = %address, task_id = key, "email: per-recipient rate limit; not sending");
                    self.suppressed.increment(1);
                    recipients.push(Recipient::Suppressed);
                } else {
                    recipients.push(Recipient::Pending);
                }
            }
            self.attempt = Some(Attempt {
                event: identity,
                recipients,
            });
        }
        let retry = self.send_round(event, rendered).await;
        let Some(attempt) = &self.attempt else {
            return Ok(());
        };
        let sent: Vec<String> = attempt
            .recipients
            .iter()
            .zip(&self.to)
            .filter(|(r, _)| **r == Recipient::Sent)
            .map(|(_, to)| to.email.to_string())
            .collect();
        let refused: Vec<String> = attempt
            .recipients
            .iter()
            .zip(&self.to)
            .filter_map(|(r, to)| match r {
                Recipient::Refused(reason) => Some(format!("{}: {reason}", to.email)),
                _ => None,
            })
            .collect();
        let summary = |head: String| {
            let mut message = head;
            if !refused.is_empty() {
                message.push_str(&format!("; refused for good: {}", refused.join("; ")));
            }
            if !sent.is_empty() {
                message.push_str(&format!("; delivered to {}", sent.join(", ")));
            }
            message
        };
        if !retry.is_empty() {
            return Err(SinkError::retryable(summary(format!(
                "email not delivered yet: {}",
                retry.join("; ")
            ))));
        }
        if !refused.is_empty() {
            let message = summary(format!(
                "email refused by the SMTP server {} for {} recipient(s)",
                self.server(),
                refused.len()
            ));
            return Err(if sent.is_empty() {
                SinkError::permanent(message)
            } else {
                SinkError::partial(message.clone(), vec![(0, message)])
            });
        }
        Ok(())
    }
}

/// Checks the server can be reached with these settings: connect, EHLO,
/// STARTTLS or TLS, AUTH when configured, then `MAIL FROM` (is the sender
/// accepted?), `RSET` and QUIT. Sends no mail.
///
/// # Errors
///
/// What is wrong and how to fix it (never the password).
pub async fn check_connection(config: &EmailConfig) -> Result<String, String> {
    // `herald check` runs without the metrics recorder: the name counts nothing.
    let email = Email::new("check", config)?;
    let mut conn = email.connect().await.map_err(|err| email.describe(&err))?;
    let sender = Mail::new(Some(email.from.email.clone()), Vec::new());
    match tokio::time::timeout(email.timeout, conn.command(sender)).await {
        Ok(Ok(_)) => {
            let _ = tokio::time::timeout(email.timeout, conn.command(Rset)).await;
            let _ = tokio::time::timeout(email.timeout, conn.quit()).await;
        }
        Ok(Err(err)) => {
            conn.abort().await;
            let hint = if needs_login(&err) {
                "the server wants a login: set username and password"
            } else {
                "check `from`: servers often accept only their own domains, or the logged-in user's address"
            };
            return Err(email.redact(format!(
                "the SMTP server {} does not accept mail from {}: {}; {hint}",
                email.server(),
                email.from.email,
                error_text(&err)
            )));
        }
        Err(_) => {
            return Err(format!(
                "the SMTP server {} did not answer MAIL FROM within {} ms",
                email.server(),
                email.timeout.as_millis()
            ));
        }
    }
    let security = match email.security {
        Security::None => "without encryption (security = \"none\")".to_string(),
        security => format!("over TLS (security = \"{}\")", security.as_str()),
    };
    let login = match &email.credentials {
        Some((user, _)) => format!(", logged in as {user:?}"),
        None => String::new(),
    };
    Ok(format!(
        "SMTP server {} answers {security}{login}; alerts go from {} to {} recipient(s)",
        email.server(),
        email.from.email,
        email.to.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> EmailConfig {
        toml::from_str(&format!(
            "host = \"smtp.corp.local\"\nfrom = \"Herald <herald@corp.local>\"\nto = [\"ops@corp.local\"]\n{extra}"
        ))
        .unwrap()
    }

    fn rendered(title: &str, text: &str) -> Rendered {
        Rendered {
            title: title.into(),
            text: text.into(),
            links: vec![
                ("QMC".into(), "https://sense.lab/qmc/tasks".into()),
                (
                    "App".into(),
                    "https://sense.lab/sense/app/a?b=1&c=\"2\"".into(),
                ),
            ],
        }
    }

    #[test]
    fn defaults_are_starttls_on_587_with_html_and_a_5_minute_per_recipient_limit() {
        let c = config("");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.security, Security::Starttls);
        assert_eq!(c.port(), 587);
        assert!(c.html);
        assert_eq!(c.per_recipient_rate_limit_s, 300);
        assert_eq!(c.timeout_ms, 10_000);
        assert_eq!(config("security = \"tls\"").port(), 465);
        assert_eq!(config("security = \"none\"").port(), 25);
        assert_eq!(config("security = \"none\"\nport = 2525").port(), 2525);
    }

    #[test]
    fn unknown_keys_and_security_values_are_refused() {
        let err = toml::from_str::<EmailConfig>(
            "host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nrecipients = []",
        )
        .unwrap_err();
        assert!(err.to_string().contains("recipients"), "{err}");
        let err = toml::from_str::<EmailConfig>(
            "host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nsecurity = \"ssl\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("starttls"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let key = |extra: &str, host: &str| {
            let mut c = config(extra);
            c.host = host.into();
            c.validate().unwrap_err().0
        };
        assert_eq!(key("", ""), "host");
        assert_eq!(key("", "smtp://smtp.corp.local"), "host");
        assert_eq!(key("", "smtp.corp.local:587"), "host");
        assert_eq!(config("").validate(), Ok(()));
        let mut v6 = config("");
        v6.host = "::1".into();
        assert_eq!(v6.validate(), Ok(()));
        let key = |extra: &str| config(extra).validate().unwrap_err().0;
        assert_eq!(key("port = 0"), "port");
        assert_eq!(key("port = 465"), "security");
        assert_eq!(key("security = \"tls\"\nport = 587"), "security");
        assert_eq!(key("security = \"none\"\nport = 465"), "security");
        assert_eq!(key("username = \"u\""), "username");
        assert_eq!(key("password = \"p\""), "username");
        assert_eq!(key("username = \"\"\npassword = \"p\""), "username");
        assert_eq!(key("username = \"u\"\npassword = \"\""), "password");
        assert_eq!(key("timeout_ms = 0"), "timeout_ms");
        assert_eq!(key("subject_template = \"{% if %}\""), "subject_template");
        assert_eq!(
            key("security = \"none\"\ntls_ca_file = \"/tmp/ca.pem\""),
            "tls_ca_file"
        );
        let mut c = config("");
        c.from = "not an address".into();
        assert_eq!(c.validate().unwrap_err().0, "from");
        c = config("");
        c.to.clear();
        assert_eq!(c.validate().unwrap_err().0, "to");
        c.to = vec!["ops@corp.local".into(), "oops".into()];
        assert_eq!(c.validate().unwrap_err().0, "to");
        c.to = vec!["ops@corp.local".into(), "Ops <OPS@corp.local>".into()];
        assert!(c.validate().unwrap_err().1.contains("twice"));
        c.to = vec![
            "Ops Team <ops@corp.local>".into(),
            "o'brien@corp.local".into(),
        ];
        assert_eq!(c.validate(), Ok(()));
        assert!(
            config("security = \"none\"\nusername = \"u\"\npassword = \"p\"")
                .validate()
                .is_ok(),
            "plain text with a password is allowed when chosen explicitly"
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_or_serialized_config() {
        let c = config("username = \"u\"\npassword = \"hunter2secret\"");
        assert!(!format!("{c:?}").contains("hunter2secret"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2secret"));
        let email = Email::new("test", &c).unwrap();
        assert!(!format!("{email:?}").contains("hunter2secret"));
        assert_eq!(
            email.redact("535 bad hunter2secret".into()),
            "535 bad <redacted>"
        );
    }

    #[test]
    fn html_escapes_markup_and_quotes_and_tabulates_key_value_lines() {
        let html = html_body(&rendered(
            "Reload of \"Sales\" <b>&</b> O'Brien 😀",
            "Task: Reload of <Sales> & \"Co\"\nHost: pro2-win1\nPath: C:\\ProgramData\\Qlik\nfree text <script>alert('x')</script>\nMessage: a: b",
        ));
        assert!(html.contains(
            "<h2>Reload of &quot;Sales&quot; &lt;b&gt;&amp;&lt;/b&gt; O&#39;Brien 😀</h2>"
        ));
        assert!(html.contains(">Task</th><td"), "{html}");
        assert!(
            html.contains(">Reload of &lt;Sales&gt; &amp; &quot;Co&quot;</td>"),
            "{html}"
        );
        assert!(html.contains(">C:\\ProgramData\\Qlik</td>"), "{html}");
        assert!(html.contains(">a: b</td>"), "{html}");
        assert!(
            html.contains("free text &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(
            html.contains(
                "<a href=\"https://sense.lab/sense/app/a?b=1&amp;c=&quot;2&quot;\">App</a>"
            )
        );
        assert!(html.contains("<a href=\"https://sense.lab/qmc/tasks\">QMC</a>"));
    }

    #[test]
    fn links_that_are_not_http_are_not_anchors() {
        let html = html_body(&Rendered {
            title: "t".into(),
            text: "x".into(),
            links: vec![("Bad".into(), "javascript:alert(1)".into())],
        });
        assert!(!html.contains("href"), "{html}");
    }

    #[test]
    fn the_text_body_ends_with_the_links() {
        let text = text_body(&rendered("t", "Task: x"));
        assert_eq!(
            text,
            "Task: x\n\nQMC: https://sense.lab/qmc/tasks\nApp: https://sense.lab/sense/app/a?b=1&c=\"2\"\n"
        );
    }

    #[test]
    fn subjects_are_one_line_and_cut_visibly() {
        assert_eq!(subject_line("a\r\nb\tc  d"), "a b c d");
        let long = subject_line(&"x".repeat(1000));
        assert_eq!(long.chars().count(), SUBJECT_MAX);
        assert!(long.ends_with("… [cut]"));
    }

    #[test]
    fn messages_are_7_bit_with_short_lines_even_for_long_unicode_text() {
        let email = Email::new("test", &config("")).unwrap();
        let text = format!(
            "Message: C:\\x \"q\" O'Brien 😀 line\r\nnext {}",
            "é".repeat(4000)
        );
        let content = Content {
            subject: subject_line("🔴 Reload task failed: O'Brien \"x\" \\ y"),
            text: text_body(&rendered("t", &text)),
            html: Some(html_body(&rendered("t", &text))),
        };
        let message = email
            .message(&content, &parse_mailbox("O'Brien <ob@corp.local>").unwrap())
            .unwrap();
        let bytes = message.formatted();
        assert!(bytes.is_ascii(), "encoded for any SMTP server");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.split("\r\n").all(|line| line.len() <= 998),
            "no line over SMTP's limit"
        );
        assert!(text.contains("Auto-Submitted: auto-generated"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("Subject: =?utf-8?"), "{}", &text[..600]);
        assert_eq!(message.envelope().to().len(), 1);
    }

    #[test]
    fn the_recipient_limiter_takes_slots_per_key_and_recipient() {
        let mut limiter = RecipientLimiter::new(Duration::from_secs(300));
        let now = Instant::now();
        assert!(!limiter.limited("t1", "a@x", now));
        limiter.record("t1", "a@x", now);
        assert!(limiter.limited("t1", "a@x", now + Duration::from_secs(299)));
        assert!(!limiter.limited("t1", "b@x", now));
        assert!(!limiter.limited("t2", "a@x", now));
        assert!(!limiter.limited("t1", "a@x", now + Duration::from_secs(300)));
        for i in 0..MAX_KEYS + 10 {
            limiter.record(&format!("k{i}"), "a@x", now);
        }
        assert!(limiter.slots.len() <= MAX_KEYS);
        let off = RecipientLimiter::new(Duration::ZERO);
        assert!(!off.limited("t1", "a@x", now));
    }

    /// A scripted SMTP server on 127.0.0.1 (no STARTTLS, no AUTH): answers MAIL
    /// for senders containing "nologin" with 530 and "blocked" with 550, RCPT
    /// for addresses containing "unknown" with 550 and "busy" with 451, and
    /// records the recipients of accepted messages.
    mod fake {
        use std::sync::{Arc, Mutex};

        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        use tokio::net::TcpListener;

        pub struct Fake {
            pub port: u16,
            pub accepted: Arc<Mutex<Vec<String>>>,
        }

        pub async fn start() -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let accepted = Arc::new(Mutex::new(Vec::new()));
            let record = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let record = record.clone();
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut lines = BufReader::new(read).lines();
                        let _ = write.write_all(b"220 fake ESMTP\r\n").await;
                        let mut rcpt = Vec::new();
                        let mut data = false;
                        while let Ok(Some(line)) = lines.next_line().await {
                            if data {
                                if line == "." {
                                    data = false;
                                    record.lock().unwrap().append(&mut rcpt);
                                    let _ = write.write_all(b"250 ok\r\n").await;
                                }
                                continue;
                            }
                            let upper = line.to_ascii_uppercase();
                            let answer: &[u8] = if upper.starts_with("EHLO") {
                                b"250-fake\r\n250 8BITMIME\r\n"
                            } else if upper.starts_with("MAIL") && line.contains("nologin") {
                                b"530 5.7.0 Authentication required\r\n"
                            } else if upper.starts_with("MAIL") && line.contains("blocked") {
                                b"550 5.7.1 Sender address rejected\r\n"
                            } else if upper.starts_with("RCPT") && line.contains("unknown") {
                                b"550 5.1.1 unknown mailbox\r\n"
                            } else if upper.starts_with("RCPT") && line.contains("busy") {
                                b"451 4.3.0 try later\r\n"
                            } else if upper.starts_with("RCPT") {
                                rcpt.push(line[8..].trim().to_string());
                                b"250 ok\r\n"
                            } else if upper.starts_with("DATA") {
                                data = true;
                                b"354 go\r\n"
                            } else if upper.starts_with("QUIT") {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            } else {
                                b"250 ok\r\n"
                            };
                            if write.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Fake { port, accepted }
        }
    }

    fn failed_task(execution: &str) -> Event {
        use crate::parse::{ParseConfig, Parser};
        Parser::new(&ParseConfig::default())
            .unwrap()
            .parse(
                format!("/scheduler-reload-failed/;pro2-win1;Reload of Sales;Sales;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;e7af59a0-c243-480d-9571-08727551a66f;2021-02-16 09:24:59,099;INFO;{execution};Max retries reached").as_bytes(),
                "10.0.0.5:1".parse().unwrap(),
                jiff::Timestamp::now(),
            )
            .unwrap()
    }

    fn local(port: u16, to: &[&str]) -> EmailConfig {
        let to: Vec<String> = to.iter().map(|t| format!("{t:?}")).collect();
        toml::from_str(&format!(
            "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"herald@corp.local\"\nto = [{}]\ntimeout_ms = 5000",
            to.join(", ")
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_refused_recipient_is_final_and_the_others_are_not_sent_twice() {
        let fake = fake::start().await;
        let mut email = Email::new(
            "test",
            &local(
                fake.port,
                &["a@corp.local", "busy@corp.local", "unknown@corp.local"],
            ),
        )
        .unwrap();
        let event = failed_task("14a81bf5-f81c-4047-b1a1-000000000001");
        let alert = rendered(
            "Reload task failed: Reload of Sales",
            "Task: Reload of Sales",
        );

        let err = email.notify(&event, &alert).await.unwrap_err();
        assert!(err.retryable, "busy@ may succeed later: {err}");
        assert!(err.message.contains("busy@corp.local"), "{err}");
        assert!(
            err.message
                .contains("unknown@corp.local: permanent error (550)"),
            "{err}"
        );
        assert_eq!(*fake.accepted.lock().unwrap(), ["<a@corp.local>"]);

        // The driver's retry: only busy@ is tried again (still busy).
        let err = email.notify(&event, &alert).await.unwrap_err();
        assert!(err.retryable);
        assert_eq!(
            fake.accepted.lock().unwrap().len(),
            1,
            "a@ is not sent twice"
        );
    }

    #[tokio::test]
    async fn a_permanent_refusal_after_partial_delivery_is_a_partial_failure() {
        let fake = fake::start().await;
        let mut email = Email::new(
            "test",
            &local(fake.port, &["a@corp.local", "unknown@corp.local"]),
        )
        .unwrap();
        let alert = rendered("t", "x");
        let err = email
            .notify(&failed_task("14a81bf5-f81c-4047-b1a1-000000000002"), &alert)
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.rejected.len(), 1, "{err:?}");
        assert!(err.message.contains("delivered to a@corp.local"), "{err}");

        // Everyone refused: a permanent error for the event.
        let mut only_unknown =
            Email::new("test", &local(fake.port, &["unknown@corp.local"])).unwrap();
        let err = only_unknown
            .notify(&failed_task("14a81bf5-f81c-4047-b1a1-000000000003"), &alert)
            .await
            .unwrap_err();
        assert!(!err.retryable && err.rejected.is_empty(), "{err:?}");
    }

    #[tokio::test]
    async fn the_per_recipient_limit_holds_back_only_those_who_got_the_last_alert() {
        let fake = fake::start().await;
        let mut email =
            Email::new("test", &local(fake.port, &["a@corp.local", "b@corp.local"])).unwrap();
        let alert = rendered("t", "x");
        email
            .notify(&failed_task("14a81bf5-f81c-4047-b1a1-000000000004"), &alert)
            .await
            .unwrap();
        assert_eq!(fake.accepted.lock().unwrap().len(), 2);
        // Same task, new execution, inside the window: nobody gets it.
        email
            .notify(&failed_task("14a81bf5-f81c-4047-b1a1-000000000005"), &alert)
            .await
            .unwrap();
        assert_eq!(fake.accepted.lock().unwrap().len(), 2);
        // A recipient without a slot (say they were refused last time) gets it.
        email
            .limiter
            .slots
            .retain(|(_, recipient), _| recipient == "a@corp.local");
        email
            .notify(&failed_task("14a81bf5-f81c-4047-b1a1-000000000006"), &alert)
            .await
            .unwrap();
        assert_eq!(
            fake.accepted.lock().unwrap().last().map(String::as_str),
            Some("<b@corp.local>")
        );
        assert_eq!(fake.accepted.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retryable_and_named_without_the_password() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut c = local(port, &["a@corp.local"]);
        c.username = Some("herald".into());
        c.password = Some(Secret::resolve("s3cr3t-pass").unwrap());
        let mut email = Email::new("test", &c).unwrap();
        let err = email
            .notify(
                &failed_task("14a81bf5-f81c-4047-b1a1-000000000007"),
                &rendered("t", "x"),
            )
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(
            err.message.contains(&format!(
                "cannot connect to the SMTP server 127.0.0.1:{port}"
            )),
            "{err}"
        );
        assert!(!err.message.contains("s3cr3t-pass"));
        let problem = check_connection(&c).await.unwrap_err();
        assert!(problem.contains("cannot connect"), "{problem}");
        assert!(!problem.contains("s3cr3t-pass"));
    }

    #[tokio::test]
    async fn check_connection_reports_a_plain_server_and_starttls_missing() {
        let fake = fake::start().await;
        let summary = check_connection(&local(fake.port, &["a@corp.local"]))
            .await
            .unwrap();
        assert!(summary.contains("without encryption"), "{summary}");
        let mut c = local(fake.port, &["a@corp.local"]);
        c.security = Security::Starttls;
        let problem = check_connection(&c).await.unwrap_err();
        assert!(problem.contains("does not offer STARTTLS"), "{problem}");
    }

    #[tokio::test]
    async fn a_server_that_wants_a_login_is_a_setting_to_fix_not_a_refusal() {
        let fake = fake::start().await;
        let mut c = local(fake.port, &["a@corp.local", "b@corp.local"]);
        c.from = "nologin@corp.local".into();
        let mut email = Email::new("test", &c).unwrap();
        let err = email
            .notify(
                &failed_task("14a81bf5-f81c-4047-b1a1-000000000008"),
                &rendered("t", "x"),
            )
            .await
            .unwrap_err();
        assert!(err.retryable, "{err}");
        assert!(err.message.contains("set username and password"), "{err}");
        assert!(err.message.contains("b@corp.local"), "{err}");
        let problem = check_connection(&c).await.unwrap_err();
        assert!(
            problem.contains("does not accept mail from nologin@corp.local")
                && problem.contains("set username and password"),
            "{problem}"
        );
        c.from = "blocked@corp.local".into();
        let problem = check_connection(&c).await.unwrap_err();
        assert!(problem.contains("check `from`"), "{problem}");
    }

    #[tokio::test]
    async fn credentials_for_a_server_without_auth_are_named() {
        let fake = fake::start().await;
        let mut c = local(fake.port, &["a@corp.local"]);
        c.username = Some("herald".into());
        c.password = Some(Secret::resolve("pw-xyz").unwrap());
        let problem = check_connection(&c).await.unwrap_err();
        assert!(
            problem.contains("offers no AUTH PLAIN or LOGIN"),
            "{problem}"
        );
        assert!(problem.contains("security = \"starttls\""), "{problem}");
    }
}
