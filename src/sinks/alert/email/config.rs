//! The `email` sink's settings: the keys, their defaults and the checks that
//! name the key and say what to do (addresses, port and security that fit
//! together, a subject template that compiles). No I/O.

use std::path::PathBuf;

use lettre::message::Mailbox;
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

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

    pub(super) fn as_str(self) -> &'static str {
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
pub(super) fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim().parse::<Mailbox>().map_err(|err| {
        format!(
            "{text:?} is not an email address ({err}); write \"name@example.com\" or \"Name <name@example.com>\""
        )
    })
}

/// Compiles the subject template.
pub(super) fn subject_environment(template: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_template_owned("subject", template.to_string())
        .map_err(|err| format!("does not compile: {err:#}"))?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

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
}
