//! `herald check --connect` for an email sink: connects as configured, asks
//! whether the sender is accepted (`MAIL FROM`), then `RSET` and QUIT. It sends
//! no mail.

use lettre::transport::smtp::commands::{Mail, Rset};

use super::connect::{error_text, needs_login};
use super::{Email, EmailConfig, Security};

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
            return Err(crate::redact::string(format!(
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
    use super::super::testing::{fake, local};
    use super::*;
    use crate::secret::Secret;

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
