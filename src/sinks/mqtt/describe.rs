//! Connection failures in plain words: what a failed connection attempt, a lost
//! connection, a refused login or a failed TLS handshake means and which key to
//! change, naming the broker and never the password. It only words errors that
//! rumqttc and rustls report; it does not connect or retry.

use std::path::PathBuf;

use rumqttc::{ConnectReturnCode, ConnectionError};

use super::{CONNECT_TIMEOUT, MqttConfig};

/// Context for turning a connection error into a message.
#[derive(Debug, Clone)]
pub(super) struct Describe {
    pub(super) broker: String,
    port: u16,
    tls: bool,
    host: String,
    username: Option<String>,
    client_id: String,
    ca_file: Option<PathBuf>,
    client_cert: bool,
}

impl Describe {
    pub(super) fn new(config: &MqttConfig, client_id: &str) -> Describe {
        Describe {
            broker: config.broker(),
            port: config.effective_port(),
            tls: config.tls,
            host: config.host.trim().to_string(),
            username: config.username.clone(),
            client_id: client_id.to_string(),
            ca_file: config.tls_ca_file.clone(),
            client_cert: config.tls_client_cert_file.is_some(),
        }
    }

    /// A clear message for a failed connection attempt (never holds the password).
    pub(super) fn connection_error(&self, err: &ConnectionError) -> String {
        let b = &self.broker;
        match err {
            ConnectionError::ConnectionRefused(code) => return self.refused(*code),
            ConnectionError::NetworkTimeout => {
                return format!(
                    "MQTT broker at {b} did not answer within {} s (a firewall dropping packets, or {})",
                    CONNECT_TIMEOUT.as_secs(),
                    if self.tls {
                        "a port that does not speak TLS"
                    } else {
                        "a TLS port: set tls = true"
                    }
                );
            }
            _ => {}
        }
        if let Some(tls) = find_error::<rustls::Error>(err) {
            return self.tls_error(tls);
        }
        if let ConnectionError::Tls(rumqttc::TlsError::Io(io)) = err
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return format!(
                "TLS: the MQTT broker at {b} closed the connection during the TLS handshake (is port {} a TLS port? for plain MQTT set tls = false)",
                self.port
            );
        }
        if let Some(io) = find_error::<std::io::Error>(err) {
            use std::io::ErrorKind;
            return match io.kind() {
                ErrorKind::ConnectionRefused => format!(
                    "cannot reach MQTT broker at {b}: connection refused (is it running and listening on port {}?)",
                    self.port
                ),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe => self.closed(),
                _ if io.to_string().contains("lookup") => {
                    format!(
                        "cannot resolve the MQTT broker's host {:?}: {io}",
                        self.host
                    )
                }
                _ => format!("cannot reach MQTT broker at {b}: {io}"),
            };
        }
        match err {
            ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => self.closed(),
            ConnectionError::NotConnAck(packet) => format!(
                "MQTT broker at {b} answered the login with {packet:?} instead of CONNACK (is it an MQTT 3.1.1 broker?)"
            ),
            other => format!("MQTT connection to {b} failed: {other}"),
        }
    }

    /// A connection that was up has failed.
    pub(super) fn lost(&self, err: &ConnectionError) -> String {
        let b = &self.broker;
        if let Some(io) = find_error::<std::io::Error>(err) {
            return format!("lost the connection to the MQTT broker at {b}: {io}");
        }
        match err {
            ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
                format!("lost the connection to the MQTT broker at {b}: it closed the connection")
            }
            ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp) => format!(
                "lost the connection to the MQTT broker at {b}: it did not answer a keep-alive ping"
            ),
            other => format!("lost the connection to the MQTT broker at {b}: {other}"),
        }
    }

    fn closed(&self) -> String {
        let hint = if self.tls {
            if self.client_cert {
                " (it may not accept the client certificate)"
            } else {
                " (if it requires a client certificate, set tls_client_cert_file and tls_client_key_file)"
            }
        } else {
            " (if it is a TLS port, set tls = true)"
        };
        format!("MQTT broker at {} closed the connection{hint}", self.broker)
    }

    fn refused(&self, code: ConnectReturnCode) -> String {
        let b = &self.broker;
        match code {
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword => {
                let who = match &self.username {
                    Some(user) => format!(" for user {user:?}; check username and password"),
                    None if self.client_cert => {
                        "; it did not accept the client certificate as a login".to_string()
                    }
                    None => "; no username is set: set username and password".to_string(),
                };
                let code = if code == ConnectReturnCode::BadUserNamePassword {
                    "bad user name or password, "
                } else {
                    ""
                };
                format!("MQTT broker at {b} refused the credentials ({code}not authorised){who}")
            }
            ConnectReturnCode::BadClientId => format!(
                "MQTT broker at {b} refused the client id {:?} (identifier rejected); set client_id to one it accepts",
                self.client_id
            ),
            ConnectReturnCode::ServiceUnavailable => {
                format!("MQTT broker at {b} is unavailable (it answered: server unavailable)")
            }
            ConnectReturnCode::RefusedProtocolVersion => {
                format!("MQTT broker at {b} does not accept MQTT 3.1.1 (protocol version refused)")
            }
            ConnectReturnCode::Success => format!("MQTT broker at {b} accepted the connection"),
        }
    }

    fn tls_error(&self, err: &rustls::Error) -> String {
        use rustls::CertificateError;
        let b = &self.broker;
        let untrusted = match &self.ca_file {
            Some(path) => format!(
                "it is signed by a CA that is neither a system CA nor in tls_ca_file ({})",
                path.display()
            ),
            None => "it is signed by a CA that is not a system CA; set tls_ca_file to the CA that signed it".to_string(),
        };
        match err {
            rustls::Error::InvalidCertificate(cert) => {
                let why = match cert {
                    CertificateError::UnknownIssuer => untrusted,
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => format!(
                        "it is not issued for {:?} (connect with a name or address the certificate lists)",
                        self.host
                    ),
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "it has expired".to_string()
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        "it is not valid yet (check the clocks)".to_string()
                    }
                    other => format!("{other:?}"),
                };
                format!("TLS: the broker's certificate is not trusted: {why} (MQTT broker at {b})")
            }
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
                if !self.client_cert =>
            {
                format!(
                    "TLS: the MQTT broker at {b} requires a client certificate; set tls_client_cert_file and tls_client_key_file"
                )
            }
            rustls::Error::AlertReceived(alert) => format!(
                "TLS: the MQTT broker at {b} refused the handshake ({alert:?}){}",
                if self.client_cert {
                    "; it may not accept the client certificate"
                } else {
                    "; if it requires a client certificate, set tls_client_cert_file and tls_client_key_file"
                }
            ),
            rustls::Error::InvalidMessage(_) => format!(
                "TLS: the handshake with the MQTT broker at {b} failed: {err} (is port {} a TLS port? for plain MQTT set tls = false)",
                self.port
            ),
            other => format!("TLS: the handshake with the MQTT broker at {b} failed: {other}"),
        }
    }
}

/// The first error of type `T` in `err`'s chain, looking inside I/O errors too
/// (whose `source` skips the error they wrap).
fn find_error<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_error::<T>(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    fn describe() -> Describe {
        Describe::new(
            &config(
                "tls = true\nusername = \"herald\"\npassword = \"hunter2\"\ntls_ca_file = \"/etc/ca.pem\"",
            ),
            "herald-1",
        )
    }

    #[test]
    fn refused_credentials_say_not_authorised_without_the_password() {
        for code in [
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::BadUserNamePassword,
        ] {
            let message = describe().connection_error(&ConnectionError::ConnectionRefused(code));
            assert!(
                message.starts_with("MQTT broker at mqtt.lab:8883 refused the credentials ("),
                "{message}"
            );
            assert!(message.contains("not authorised"), "{message}");
            assert!(message.contains("\"herald\""), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn an_untrusted_certificate_says_so() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let err = ConnectionError::Tls(rumqttc::TlsError::Io(io));
        let message = describe().connection_error(&err);
        assert!(
            message.starts_with("TLS: the broker's certificate is not trusted: "),
            "{message}"
        );
        assert!(message.contains("/etc/ca.pem"), "{message}");
    }

    #[test]
    fn a_refused_tcp_connection_names_the_port() {
        let err = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let message = describe().connection_error(&err);
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("port 8883"), "{message}");
    }
}
