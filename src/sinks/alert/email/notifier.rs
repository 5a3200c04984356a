//! The [`Email`] notifier: one message per recipient over one connection per
//! alert, each recipient's state kept across the driver's retries of an event,
//! and the outcome (delivered, retryable, partial or permanent) from those
//! states. Opening the connection is in `connect`, the message text in `body`.

use std::fmt;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use metrics::{Counter, counter};
use minijinja::Environment;
use tracing::{info, warn};

use super::super::{Notifier, Rendered};
use super::body::{html_body, subject_line, text_body};
use super::config::{parse_mailbox, subject_environment};
use super::connect::{error_text, needs_login, tls_parameters};
use super::limiter::RecipientLimiter;
use super::{EMAIL_RECIPIENTS_SUPPRESSED, EmailConfig, Security};
use crate::event::{Event, Field};
use crate::secret::Secret;
use crate::sinks::SinkError;

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

/// The message body parts of one alert.
struct Content {
    subject: String,
    text: String,
    html: Option<String>,
}

/// Sends alerts over email.
pub struct Email {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: Security,
    pub(super) tls: Option<TlsParameters>,
    pub(super) credentials: Option<(String, Secret)>,
    pub(super) hello: ClientId,
    pub(super) from: Mailbox,
    pub(super) to: Vec<Mailbox>,
    subject: Option<Environment<'static>>,
    html: bool,
    pub(super) timeout: Duration,
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
    pub(super) fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
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
                    let reason = crate::redact::string(format!(
                        "{}; the server wants a login: set username and password",
                        error_text(&err)
                    ));
                    for &rest in &pending[n..] {
                        retry.push(format!("{}: {reason}", self.to[rest].email));
                    }
                    return retry;
                }
                Ok(Err(err)) if err.is_permanent() => {
                    let reason = crate::redact::string(error_text(&err));
                    warn!(recipient = %address, %reason, "email: the SMTP server refused the message for good");
                    self.set(index, Recipient::Refused(reason));
                }
                Ok(Err(err)) if err.is_transient() => {
                    retry.push(format!(
                        "{address}: {}",
                        crate::redact::string(error_text(&err))
                    ));
                }
                Ok(Err(err)) => {
                    // The connection broke: everyone left waits for the retry.
                    let reason = crate::redact::string(error_text(&err));
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

#[cfg(test)]
mod tests {
    use super::super::check_connection;
    use super::super::testing::{config, failed_task, fake, local, rendered};
    use super::*;

    #[test]
    fn the_password_never_shows_in_debug_or_serialized_config() {
        let c = config("username = \"u\"\npassword = \"hunter2secret\"");
        assert!(!format!("{c:?}").contains("hunter2secret"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2secret"));
        let email = Email::new("test", &c).unwrap();
        assert!(!format!("{email:?}").contains("hunter2secret"));
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
}
