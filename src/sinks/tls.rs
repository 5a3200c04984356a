//! The TLS set-up every sink that talks to a server shares: rustls's ring
//! crypto provider, installed once for the whole process; PEM files (extra CAs,
//! a client certificate and its key) read with errors that name the key and the
//! file; and a rustls client config that verifies the server against the
//! platform's trust store plus the extra CAs, optionally presenting a client
//! certificate.
//!
//! Verification cannot be turned off: nothing here builds a config without it,
//! and no setting asks for that. This module opens no connections. The HTTP
//! sinks hand the CAs read here to reqwest's own client builder, and the email
//! sink hands them to lettre's; the MQTT and NATS sinks check and use their
//! files through [`TlsFiles`].

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_platform_verifier::Verifier;

/// The key naming extra CAs in every sink that has one.
pub const CA_FILE_KEY: &str = "tls_ca_file";
/// The key naming a client certificate (PEM, with its chain).
pub const CLIENT_CERT_KEY: &str = "tls_client_cert_file";
/// The key naming the client certificate's private key (PEM).
pub const CLIENT_KEY_KEY: &str = "tls_client_key_file";

/// A TLS setting that cannot be used: the key to fix and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The config key, e.g. `tls_ca_file`.
    pub key: &'static str,
    /// What is wrong, naming the file when there is one.
    pub problem: String,
}

impl SettingError {
    fn new(key: &'static str, problem: String) -> SettingError {
        SettingError { key, problem }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for SettingError {}

impl From<SettingError> for (&'static str, String) {
    fn from(err: SettingError) -> (&'static str, String) {
        (err.key, err.problem)
    }
}

/// A client certificate to present to servers that require one.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate<'a> {
    /// The certificate and its chain (PEM).
    pub cert_file: &'a Path,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: &'a Path,
}

/// The TLS files of a sink that connects to a broker (MQTT, NATS), as
/// configured: extra CAs, and a client certificate with its key.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// `tls_ca_file`.
    pub ca_file: Option<&'a Path>,
    /// `tls_client_cert_file`.
    pub cert_file: Option<&'a Path>,
    /// `tls_client_key_file`.
    pub key_file: Option<&'a Path>,
}

impl TlsFiles<'_> {
    /// Checks that the keys agree with each other and with whether the
    /// connection uses TLS (`tls`): a client certificate comes with its key,
    /// and no file is given that a plain connection would leave unused
    /// (`turn_on` says how to turn TLS on).
    ///
    /// # Errors
    ///
    /// The key to fix and what to do.
    pub fn check(&self, tls: bool, turn_on: &str) -> Result<(), SettingError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(SettingError::new(
                CLIENT_CERT_KEY,
                format!("give both {CLIENT_CERT_KEY} and {CLIENT_KEY_KEY}, or neither"),
            ));
        }
        if !tls {
            for (key, set) in [
                (CA_FILE_KEY, self.ca_file.is_some()),
                (CLIENT_CERT_KEY, self.cert_file.is_some()),
            ] {
                if set {
                    return Err(SettingError::new(
                        key,
                        format!("is set but TLS is off, so it would go unused; {turn_on}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The [`client_config`] for these files.
    ///
    /// # Errors
    ///
    /// As [`client_config`].
    pub fn client_config(&self) -> Result<rustls::ClientConfig, SettingError> {
        let client = match (self.cert_file, self.key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCertificate {
                cert_file,
                key_file,
            }),
            _ => None,
        };
        client_config(self.ca_file, client)
    }
}

/// Installs rustls's ring provider as the process default, once. reqwest and
/// lettre find it there. Another part of the process may have installed one
/// already; either is fine.
pub fn install_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, SettingError> {
    std::fs::read(path)
        .map_err(|err| SettingError::new(key, format!("cannot read {}: {err}", path.display())))
}

/// The certificates in the PEM file `path`, which the setting `key` names.
///
/// # Errors
///
/// When the file cannot be read, is not PEM, or holds no certificate.
pub fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SettingError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            SettingError::new(
                key,
                format!("{} is not PEM certificates: {err}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(SettingError::new(
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The extra CAs of `tls_ca_file`.
///
/// # Errors
///
/// As [`read_certificates`], naming `tls_ca_file`.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, SettingError> {
    read_certificates(CA_FILE_KEY, path)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SettingError> {
    let pem = read_file(CLIENT_KEY_KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        SettingError::new(
            CLIENT_KEY_KEY,
            format!("{} holds no usable PEM private key: {err}", path.display()),
        )
    })
}

/// A rustls client config that verifies servers against the platform's trust
/// store plus the CAs in `ca_file`, and presents `client` when given.
///
/// # Errors
///
/// A file that cannot be read or used (naming its key), a CA file holding a
/// certificate that cannot be a CA, or no CA at all to verify with.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<ClientCertificate<'_>>,
) -> Result<rustls::ClientConfig, SettingError> {
    install_provider();
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match ca_file {
        Some(path) => {
            let certs = read_ca_file(path)?;
            // Checked here so the message names the file; the verifier would
            // only say that a certificate is bad.
            let mut check = rustls::RootCertStore::empty();
            for cert in &certs {
                check.add(cert.clone()).map_err(|err| {
                    SettingError::new(
                        CA_FILE_KEY,
                        format!(
                            "{}: a certificate is unusable as a CA: {err}",
                            path.display()
                        ),
                    )
                })?;
            }
            certs
        }
        None => Vec::new(),
    };
    let has_extra = !extra.is_empty();
    let verifier = Verifier::new_with_extra_roots(extra, provider.clone()).map_err(|err| {
        let problem = if has_extra {
            format!("cannot verify servers with these CAs: {err}")
        } else {
            "no CA to verify the server with: the system has no CA bundle (e.g. /etc/ssl/certs/ca-certificates.crt); set tls_ca_file".to_string()
        };
        SettingError::new(CA_FILE_KEY, problem)
    })?;
    // A custom verifier is how rustls takes the platform's; it verifies fully.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| SettingError::new("tls", format!("cannot start TLS: {err}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let Some(client) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let certs = read_certificates(CLIENT_CERT_KEY, client.cert_file)?;
    let key = read_private_key(client.key_file)?;
    builder.with_client_auth_cert(certs, key).map_err(|err| {
        SettingError::new(
            CLIENT_KEY_KEY,
            format!(
                "{} cannot be used with {CLIENT_CERT_KEY}: {err}",
                client.key_file.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_key_and_the_file() {
        let err = read_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert_eq!(err.key, "tls_ca_file");
        assert!(err.problem.starts_with("cannot read /nonexistent/ca.pem: "));
        assert!(err.to_string().starts_with("tls_ca_file: cannot read"));

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello").unwrap();
        let err = read_ca_file(&empty).unwrap_err();
        assert_eq!(
            err.problem,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                empty.display()
            )
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = read_ca_file(&broken).unwrap_err();
        assert!(
            err.problem
                .starts_with(&format!("{} is not PEM certificates: ", broken.display())),
            "{err}"
        );
    }

    #[test]
    fn a_client_key_that_cannot_be_read_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_key = dir.path().join("key.pem");
        std::fs::write(&not_a_key, "hello").unwrap();
        let err = read_private_key(&not_a_key).unwrap_err();
        assert_eq!(err.key, "tls_client_key_file");
        assert!(err.problem.contains("no usable PEM private key"), "{err}");
    }

    #[test]
    fn tls_files_come_as_a_certificate_with_its_key_and_only_with_tls() {
        let file = Some(Path::new("/etc/herald/x.pem"));
        let fix = "set tls = true";
        let check = |ca_file, cert_file, key_file, tls| {
            TlsFiles {
                ca_file,
                cert_file,
                key_file,
            }
            .check(tls, fix)
            .map_err(|err| (err.key, err.problem))
        };
        assert_eq!(check(None, None, None, false), Ok(()));
        assert_eq!(check(file, file, file, true), Ok(()));
        for (cert, key) in [(file, None), (None, file)] {
            let (key_name, problem) = check(None, cert, key, true).unwrap_err();
            assert_eq!(key_name, "tls_client_cert_file");
            assert_eq!(
                problem,
                "give both tls_client_cert_file and tls_client_key_file, or neither"
            );
        }
        for (ca, cert, name) in [
            (file, None, "tls_ca_file"),
            (None, file, "tls_client_cert_file"),
        ] {
            let (key_name, problem) = check(ca, cert, cert, false).unwrap_err();
            assert_eq!(key_name, name);
            assert_eq!(
                problem,
                "is set but TLS is off, so it would go unused; set tls = true"
            );
        }
    }

    #[test]
    fn the_config_verifies_with_the_platform_store() {
        // Any system with a CA bundle; a config without one fails with a
        // message that says to set tls_ca_file.
        if let Err(err) = client_config(None, None) {
            assert_eq!(err.key, "tls_ca_file");
            assert!(err.problem.contains("set tls_ca_file"), "{err}");
        }
    }
}
