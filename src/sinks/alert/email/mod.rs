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
//!
//! The parts: `config` (the keys and their checks), `body` (subject, text and
//! HTML of a message), `limiter` (the per-recipient limit), `connect` (opening
//! the SMTP connection and wording its failures), `notifier` (the [`Email`]
//! notifier: one message per recipient, and the outcome across retries) and
//! `check` (`herald check --connect`).

mod body;
mod check;
mod config;
mod connect;
mod limiter;
mod notifier;
#[cfg(test)]
mod testing;

pub use body::{escape_html, html_body, text_body};
pub use check::check_connection;
pub use config::{EmailConfig, Security};
pub use notifier::Email;

/// Recipients an email sink did not send to because of the per-recipient limit.
pub const EMAIL_RECIPIENTS_SUPPRESSED: &str = "herald_email_recipients_suppressed_total";
