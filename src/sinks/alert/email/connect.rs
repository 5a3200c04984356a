//! Opening the SMTP connection as configured (connect, EHLO, STARTTLS or TLS
//! from the first byte, AUTH PLAIN/LOGIN) within the timeout, the TLS
//! parameters it uses (the system's CAs plus `tls_ca_file`), and wording its
//! failures for an operator, never with the password. It sends no mail.

use std::path::PathBuf;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, TlsParameters, TlsParametersBuilder,
};

use super::Security;
use super::notifier::Email;
use crate::sinks::tls;

/// Why the connection could not be set up.
#[derive(Debug)]
pub(super) enum ConnectError {
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

/// TLS settings for `host`, trusting `ca_file` besides the system's roots.
pub(super) fn tls_parameters(
    host: &str,
    ca_file: Option<&PathBuf>,
) -> Result<TlsParameters, String> {
    tls::install_provider();
    let mut builder = TlsParametersBuilder::new(host.to_string());
    if let Some(path) = ca_file {
        for cert in tls::read_ca_file(path).map_err(|err| err.to_string())? {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|err| format!("{}: {}: {err}", tls::CA_FILE_KEY, path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|err| format!("cannot set up TLS for {host}: {err}"))
}

impl Email {
    /// Connects, says EHLO, secures the connection and logs in, as configured.
    pub(super) async fn connect(&self) -> Result<AsyncSmtpConnection, ConnectError> {
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
    pub(super) fn describe(&self, err: &ConnectError) -> String {
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
        crate::redact::string(message)
    }
}

/// An SMTP error with its causes, on one line (lettre repeats some layers).
pub(super) fn error_text(err: &lettre::transport::smtp::Error) -> String {
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
pub(super) fn needs_login(err: &lettre::transport::smtp::Error) -> bool {
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
