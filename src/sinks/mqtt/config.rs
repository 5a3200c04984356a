//! The `mqtt` sink's settings: the keys, their defaults, the checks that name
//! the key and say what to do, and the rumqttc options built from them
//! (credentials, keep-alive, TLS). Nothing here connects; reading the TLS files
//! is the only I/O.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};

use super::PACKET_MAX;
use super::topics::{Preset, check_topic, split_topics, topic_environment};
use crate::secret::Secret;
use crate::sinks::tls;

/// Settings of a `mqtt` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker's host name or IP address (no scheme, no port).
    pub host: String,
    /// The broker's port; default 1883, or 8883 with `tls = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The MQTT client id; default `herald-<random>`, different for every sink
    /// and run. Two clients with the same id disconnect each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name to log in with (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password to log in with (a secret: use `${MQTT_PASSWORD}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Connect over TLS (mqtts). The broker's certificate is always verified,
    /// against the system's CAs plus `tls_ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// Extra CA certificates (PEM) to trust, for a broker with an internal CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM, with its chain) for brokers that require one
    /// (with `tls_client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key_file: Option<PathBuf>,
    /// Quality of service: 0 (at most once), 1 (at least once, the default) or
    /// 2 (exactly once, as far as the broker is concerned).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish with the retain flag (the broker keeps the last message per topic).
    #[serde(default)]
    pub retain: bool,
    /// Topic template over the event's JSON fields, e.g.
    /// `"sense/{{ type }}/{{ host }}"`; one topic per non-empty line. Instead of `preset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Topics like an existing tool: `"butler-sos"`, `"butler"` or `"herald"`
    /// (the default when `topic` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Replaces the preset's first topic level (`qliksense` for the Butler presets,
    /// `herald` for `herald`), e.g. `"prod/qliksense"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_topic: Option<String>,
    /// Seconds between keep-alive pings; 0 turns them off.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Publishes that may wait for the connection; beyond that a publish fails
    /// at once (and the driver retries it).
    #[serde(default = "default_queue_messages")]
    pub queue_messages: usize,
    /// QoS 1 and 2 publishes that may await their acknowledgement at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// How long a publish may take to be acknowledged, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_qos() -> u8 {
    1
}

fn default_keep_alive_s() -> u64 {
    30
}

fn default_queue_messages() -> usize {
    1000
}

fn default_max_inflight() -> u16 {
    100
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl MqttConfig {
    /// The port to connect to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 8883 } else { 1883 })
    }

    /// `host:port` for messages.
    pub fn broker(&self) -> String {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.effective_port())
        } else {
            format!("{host}:{}", self.effective_port())
        }
    }

    pub(super) fn qos_level(&self) -> QoS {
        match self.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    /// The TLS files as configured.
    fn tls_files(&self) -> tls::TlsFiles<'_> {
        tls::TlsFiles {
            ca_file: self.tls_ca_file.as_deref(),
            cert_file: self.tls_client_cert_file.as_deref(),
            key_file: self.tls_client_key_file.as_deref(),
        }
    }

    /// Checks the keys (no I/O); returns the key and the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err((
                "host",
                "is empty; give the broker's host name or IP address, e.g. \"mqtt.corp.local\""
                    .into(),
            ));
        }
        if host.contains("://") {
            return Err((
                "host",
                format!(
                    "{:?} is a URL; give the host name only (and tls = true for mqtts://, port for a non-default port)",
                    self.host
                ),
            ));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err() {
            return Err((
                "host",
                format!(
                    "{:?} is not a host name or IP address; give the port in `port`",
                    self.host
                ),
            ));
        }
        if self.tls && bare.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err((
                "host",
                "an IPv6 address cannot be used with tls = true (the MQTT client cannot check a certificate for it); use the broker's host name".into(),
            ));
        }
        if self.port == Some(0) {
            return Err(("port", "must be 1 to 65535".into()));
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 65_535)
        {
            return Err((
                "client_id",
                "must be 1 to 65535 bytes; leave it out for herald-<random>".into(),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err((
                "username",
                "give both username and password, or neither".into(),
            ));
        }
        self.tls_files().check(
            self.tls,
            "set tls = true (the broker's TLS port is usually 8883)",
        )?;
        if self.qos > 2 {
            return Err((
                "qos",
                format!("{} is not a QoS level; use 0, 1 or 2", self.qos),
            ));
        }
        match (&self.topic, self.preset) {
            (Some(_), Some(_)) => {
                return Err(("topic", "set either topic or preset, not both".into()));
            }
            (Some(topic), None) => {
                if self.base_topic.is_some() {
                    return Err((
                        "base_topic",
                        "only applies to a preset; put the prefix in topic".into(),
                    ));
                }
                let env = topic_environment(topic).map_err(|err| ("topic", err))?;
                if !topic.contains("{{") && !topic.contains("{%") {
                    // A fixed topic: check it now rather than at the first event.
                    let rendered = env
                        .get_template("topic")
                        .and_then(|t| t.render(()))
                        .map_err(|err| ("topic", format!("{err:#}")))?;
                    let topics = split_topics(&rendered).map_err(|err| ("topic", err))?;
                    if topics.is_empty() {
                        return Err(("topic", "is empty".into()));
                    }
                }
            }
            (None, _) => {
                if let Some(base) = &self.base_topic {
                    check_topic(base).map_err(|err| ("base_topic", err))?;
                    if base.ends_with('/') || base.starts_with('/') {
                        return Err((
                            "base_topic",
                            format!("{base:?}: leave out the leading and trailing '/'"),
                        ));
                    }
                }
            }
        }
        if self.keep_alive_s > u64::from(u16::MAX) {
            return Err((
                "keep_alive_s",
                "must be at most 65535 (0 turns keep-alive off)".into(),
            ));
        }
        if self.queue_messages == 0 {
            return Err(("queue_messages", "must be at least 1".into()));
        }
        if self.max_inflight == 0 {
            return Err(("max_inflight", "must be at least 1".into()));
        }
        if self.timeout_ms < 100 {
            return Err((
                "timeout_ms",
                "must be at least 100 (10000 is a good value)".into(),
            ));
        }
        Ok(())
    }

    /// The rumqttc options (credentials, TLS, keep-alive) for `client_id`.
    pub(super) fn options(&self, client_id: String) -> Result<MqttOptions, (&'static str, String)> {
        let bare = self
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        // rumqttc joins host and port with ':', so an IPv6 address needs brackets.
        let host = if bare.contains(':') {
            format!("[{bare}]")
        } else {
            bare.to_string()
        };
        let mut options = MqttOptions::new(client_id, host, self.effective_port());
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s))
            .set_clean_session(true)
            .set_inflight(self.max_inflight)
            .set_request_channel_capacity(self.queue_messages)
            // Only acknowledgements come in; events of any size go out.
            .set_max_packet_size(64 * 1024, PACKET_MAX + 1024);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options.set_credentials(user.clone(), password.expose());
        }
        if self.tls {
            let tls = tls_client_config(self)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        Ok(options)
    }

    /// How the connection is made, for messages: "TLS, user \"x\"".
    pub(super) fn describe_login(&self) -> String {
        let mut parts = vec![if self.tls { "TLS" } else { "plain TCP, no TLS" }.to_string()];
        if self.tls_client_cert_file.is_some() {
            parts.push("client certificate".into());
        }
        match &self.username {
            Some(user) => parts.push(format!("user {user:?}")),
            None if self.tls_client_cert_file.is_none() => parts.push("anonymous".into()),
            None => {}
        }
        parts.join(", ")
    }
}

/// A fresh client id: `herald-` and 12 random hex digits.
pub(super) fn random_client_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("herald-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// The rustls client config for `tls = true`: the platform's CAs plus
/// `tls_ca_file`, and the client certificate when one is configured.
/// Verification cannot be turned off.
fn tls_client_config(config: &MqttConfig) -> Result<rustls::ClientConfig, (&'static str, String)> {
    config.tls_files().client_config().map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, names};
    use super::*;

    #[test]
    fn defaults_are_qos_1_port_1883_or_8883_with_tls_and_the_herald_preset() {
        let plain = config("");
        assert_eq!(plain.qos, 1);
        assert_eq!(plain.effective_port(), 1883);
        assert_eq!(plain.keep_alive_s, 30);
        assert_eq!(plain.queue_messages, 1000);
        assert!(!plain.retain);
        assert_eq!(config("tls = true").effective_port(), 8883);
        assert_eq!(config("tls = true\nport = 8884").broker(), "mqtt.lab:8884");
        assert_eq!(names(&plain, "engine"), ["herald/log/engine"]);
    }

    #[test]
    fn tls_uses_herald_s_own_rustls_config_never_rumqttc_s_certificate_loading() {
        // rumqttc 0.25 builds its own rustls set-up (rustls-pemfile, and
        // rustls-webpki 0.102 with known advisories) only for
        // TlsConfiguration::Simple; herald always hands it a finished
        // ClientConfig, which verifies through rustls-platform-verifier and
        // rustls-webpki 0.103. The dependency audit relies on this.
        let options = config("tls = true").options("herald-test".into()).unwrap();
        assert!(matches!(
            options.transport(),
            Transport::Tls(TlsConfiguration::Rustls(_))
        ));
        let plain = config("").options("herald-test".into()).unwrap();
        assert!(matches!(plain.transport(), Transport::Tcp));
    }

    fn invalid(extra: &str) -> (&'static str, String) {
        match toml::from_str::<MqttConfig>(extra) {
            Ok(c) => c.validate().unwrap_err(),
            Err(err) => panic!("{extra}: {err}"),
        }
    }

    #[test]
    fn validation_names_the_key_and_says_what_to_do() {
        let cases = [
            ("host = \"\"", "host", "is empty"),
            ("host = \"mqtts://broker\"", "host", "host name only"),
            ("host = \"broker:1883\"", "host", "`port`"),
            ("host = \"::1\"\ntls = true", "host", "IPv6"),
            ("host = \"b\"\nport = 0", "port", "1 to 65535"),
            ("host = \"b\"\nusername = \"u\"", "username", "both"),
            ("host = \"b\"\npassword = \"p\"", "username", "both"),
            (
                "host = \"b\"\ntls = true\ntls_client_cert_file = \"c.pem\"",
                "tls_client_cert_file",
                "both",
            ),
            (
                "host = \"b\"\ntls_ca_file = \"ca.pem\"",
                "tls_ca_file",
                "tls = true",
            ),
            ("host = \"b\"\nqos = 3", "qos", "0, 1 or 2"),
            (
                "host = \"b\"\ntopic = \"x\"\npreset = \"butler\"",
                "topic",
                "not both",
            ),
            (
                "host = \"b\"\ntopic = \"x\"\nbase_topic = \"y\"",
                "base_topic",
                "preset",
            ),
            (
                "host = \"b\"\ntopic = \"{% if %}\"",
                "topic",
                "does not compile",
            ),
            ("host = \"b\"\ntopic = \"sense/#\"", "topic", "wildcards"),
            (
                "host = \"b\"\nbase_topic = \"a/\"",
                "base_topic",
                "trailing",
            ),
            (
                "host = \"b\"\nbase_topic = \"a/+\"",
                "base_topic",
                "wildcards",
            ),
            (
                "host = \"b\"\nqueue_messages = 0",
                "queue_messages",
                "at least 1",
            ),
            (
                "host = \"b\"\nmax_inflight = 0",
                "max_inflight",
                "at least 1",
            ),
            (
                "host = \"b\"\nkeep_alive_s = 70000",
                "keep_alive_s",
                "65535",
            ),
            ("host = \"b\"\ntimeout_ms = 5", "timeout_ms", "at least 100"),
            ("host = \"b\"\nclient_id = \"\"", "client_id", "1 to 65535"),
        ];
        for (toml, key, text) in cases {
            let (got_key, problem) = invalid(toml);
            assert_eq!(got_key, key, "{toml}: {problem}");
            assert!(problem.contains(text), "{toml}: {problem}");
        }
        assert_eq!(
            config("username = \"u\"\npassword = \"p\"\nport = 1884").validate(),
            Ok(())
        );
    }

    #[test]
    fn unknown_keys_and_presets_are_refused() {
        let err = toml::from_str::<MqttConfig>("host = \"b\"\nbroker = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `broker`"), "{err}");
        let err = toml::from_str::<MqttConfig>("host = \"b\"\npreset = \"sos\"").unwrap_err();
        assert!(err.to_string().contains("butler-sos"), "{err}");
    }

    #[test]
    fn the_password_is_never_shown() {
        let c = config("username = \"u\"\npassword = \"hunter2\"");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn unreadable_tls_files_name_their_key() {
        let c = config("tls = true\ntls_ca_file = \"/nonexistent/ca.pem\"");
        let (key, problem) = tls_client_config(&c).unwrap_err();
        assert_eq!(key, "tls_ca_file");
        assert!(problem.contains("/nonexistent/ca.pem"), "{problem}");
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let c = config(&format!(
            "tls = true\ntls_ca_file = \"{}\"",
            not_pem.display()
        ));
        let (key, problem) = tls_client_config(&c).unwrap_err();
        assert_eq!(key, "tls_ca_file");
        assert!(problem.contains("no PEM certificate"), "{problem}");
    }

    #[test]
    fn client_ids_differ_per_sink() {
        let (a, b) = (random_client_id(), random_client_id());
        assert_ne!(a, b);
        assert!(a.starts_with("herald-") && a.len() == 19, "{a}");
    }
}
