//! The `mqtt` sink: each event's JSON (docs/EVENTS.md) published to an MQTT
//! 3.1.1 broker, on topics from a template or from a preset that mimics the
//! tools Sense admins already run (Butler SOS, Butler).
//!
//! One connection per sink, kept by a background task that polls rumqttc's event
//! loop forever: it reconnects with a short backoff, logs connection problems at
//! most once per [`LOG_EVERY`], and never logs the password.
//!
//! Delivery is confirmed: with `qos` 1 or 2 a publish only counts when the broker
//! has acknowledged it (PUBACK, or PUBCOMP for QoS 2); with `qos` 0 when it has
//! been written to the connection. The background task matches acknowledgements
//! to publishes by packet id; what is waiting when the connection fails is failed
//! at once with the reason (say "refused the credentials (not authorised)"), and
//! a publish that is not acknowledged within `timeout_ms` is a retryable error
//! carrying the last connection error. The driver then retries, so delivery is
//! at least once: a retry after a lost acknowledgement can publish twice.
//!
//! Topics:
//!
//! - `preset = "butler-sos"` (Butler SOS's defaults): log and qix-perf events on
//!   `qliksense/logevent` and `qliksense/logevent/<subsystem, lower-cased, dots as
//!   slashes>`; session and connection events on `qliksense/userevent` and, by
//!   command, `qliksense/userevent/session/start|stop` or
//!   `qliksense/userevent/connection/open|close`. Task events have no topic.
//! - `preset = "butler"` (Butler's defaults): a failed task on
//!   `qliksense/task_failure` with the task name as payload (as Butler sends it)
//!   and `qliksense/task_failure_full` with the event JSON; aborted tasks on
//!   `qliksense/task_aborted` and `qliksense/task_aborted_full`. Butler publishes
//!   nothing for successful or distribute tasks; herald adds `task_success(_full)`
//!   and `task_distribute(_full)` the same way. Other events have no topic.
//! - `preset = "herald"` (the default): `herald/<type>/<source>`.
//! - `topic`: a template over the event's JSON fields, e.g.
//!   `"sense/{{ type }}/{{ host }}"`; each non-empty line of the result is one
//!   topic, and a result with none publishes nothing. The `topic_path` filter
//!   turns a value into topic levels like the subsystem topics above.
//!
//! `base_topic` replaces a preset's first level (`qliksense` or `herald`). An
//! event a preset has no topic for is not published (a warning says so once per
//! event type); give the sink a `match` table to route only what it publishes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use minijinja::Environment;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tracing::{info, warn};

use super::{Notifier, Rendered};
use crate::event::{Event, EventType, Field, TaskOutcome};
use crate::secret::Secret;
use crate::sinks::SinkError;

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

/// Topic layouts of existing tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Butler SOS: `qliksense/logevent[/<subsystem>]`, `qliksense/userevent[/...]`.
    ButlerSos,
    /// Butler: `qliksense/task_failure[_full]`, `qliksense/task_aborted[_full]`.
    Butler,
    /// `herald/<type>/<source>`.
    Herald,
}

impl Preset {
    /// The name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::ButlerSos => "butler-sos",
            Preset::Butler => "butler",
            Preset::Herald => "herald",
        }
    }

    /// The first topic level unless `base_topic` replaces it.
    fn default_base(self) -> &'static str {
        match self {
            Preset::ButlerSos | Preset::Butler => "qliksense",
            Preset::Herald => "herald",
        }
    }
}

/// Longest MQTT topic, in bytes.
const TOPIC_MAX: usize = 65_535;
/// Largest publish herald sends (payload and topic); larger events are refused.
const PACKET_MAX: usize = 4 * 1024 * 1024;
/// How long `check_connection` waits for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection errors are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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

    fn qos_level(&self) -> QoS {
        match self.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
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
        if self.tls_client_cert_file.is_some() != self.tls_client_key_file.is_some() {
            return Err((
                "tls_client_cert_file",
                "give both tls_client_cert_file and tls_client_key_file, or neither".into(),
            ));
        }
        if !self.tls {
            for (key, set) in [
                ("tls_ca_file", self.tls_ca_file.is_some()),
                ("tls_client_cert_file", self.tls_client_cert_file.is_some()),
            ] {
                if set {
                    return Err((
                        key,
                        "is set but tls is off; set tls = true (the broker's TLS port is usually 8883)"
                            .into(),
                    ));
                }
            }
        }
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
    fn options(&self, client_id: String) -> Result<MqttOptions, (&'static str, String)> {
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
    fn describe_login(&self) -> String {
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
fn random_client_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("herald-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

// ---------------------------------------------------------------------------
// TLS

/// System CA bundles, as `rustls-native-certs` finds them on Unix: `SSL_CERT_FILE`,
/// else the first of the distributions' usual places that exists.
const SYSTEM_CA_FILES: [&str; 7] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

fn system_roots() -> Vec<CertificateDer<'static>> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            return CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
        }
    }
    Vec::new()
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, (&'static str, String)> {
    std::fs::read(path).map_err(|err| (key, format!("cannot read {}: {err}", path.display())))
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, (&'static str, String)> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| (key, format!("{} is not PEM: {err}", path.display())))?;
    if certs.is_empty() {
        return Err((
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The rustls client config: system CAs plus `tls_ca_file`, and the client
/// certificate when one is configured. Verification cannot be turned off.
fn tls_client_config(config: &MqttConfig) -> Result<rustls::ClientConfig, (&'static str, String)> {
    // Another part of the process may have installed one already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots());
    if let Some(path) = &config.tls_ca_file {
        for cert in read_certs("tls_ca_file", path)? {
            roots.add(cert).map_err(|err| {
                (
                    "tls_ca_file",
                    format!(
                        "{}: a certificate is unusable as a CA: {err}",
                        path.display()
                    ),
                )
            })?;
        }
    }
    if roots.is_empty() {
        return Err((
            "tls_ca_file",
            "no CA to verify the broker with: the system has no CA bundle (e.g. /etc/ssl/certs/ca-certificates.crt); set tls_ca_file".into(),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| ("tls", format!("cannot start TLS: {err}")))?
    .with_root_certificates(roots);
    match (&config.tls_client_cert_file, &config.tls_client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs("tls_client_cert_file", cert_path)?;
            let pem = read_file("tls_client_key_file", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
                (
                    "tls_client_key_file",
                    format!(
                        "{} holds no usable PEM private key: {err}",
                        key_path.display()
                    ),
                )
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|err| {
                (
                    "tls_client_key_file",
                    format!(
                        "{} cannot be used with tls_client_cert_file: {err}",
                        key_path.display()
                    ),
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

// ---------------------------------------------------------------------------
// Topics

/// What goes in a publish's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The event JSON.
    Json,
    /// The task name only (Butler's basic task topics).
    TaskName,
}

/// How topics are chosen.
#[derive(Debug)]
enum Topics {
    Preset { preset: Preset, base: String },
    Template(Box<Environment<'static>>),
}

/// `System.Engine.Engine` → `system/engine/engine` (Butler SOS's subsystem topics);
/// wildcard characters become `_` so the result is always a valid topic.
pub fn topic_path(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '.' => '/',
            '+' | '#' | '\0' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Checks a topic a publish may use.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic.len() > TOPIC_MAX {
        return Err(format!("is {} bytes; MQTT allows {TOPIC_MAX}", topic.len()));
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(format!(
            "{topic:?} contains {c:?}, which a publish topic cannot have (wildcards are for subscriptions)"
        ));
    }
    Ok(())
}

/// The non-empty, trimmed lines of a rendered topic template, each checked.
fn split_topics(rendered: &str) -> Result<Vec<String>, String> {
    rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| check_topic(line).map(|()| line.to_string()))
        .collect()
}

fn topic_environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_filter("topic_path", |value: String| topic_path(&value));
    env.add_template_owned("topic", source.to_string())
        .map_err(|err| format!("does not compile: {err:#}"))?;
    Ok(env)
}

impl Topics {
    fn new(config: &MqttConfig) -> Result<Topics, (&'static str, String)> {
        match &config.topic {
            Some(topic) => Ok(Topics::Template(Box::new(
                topic_environment(topic).map_err(|err| ("topic", err))?,
            ))),
            None => {
                let preset = config.preset.unwrap_or(Preset::Herald);
                Ok(Topics::Preset {
                    preset,
                    base: config
                        .base_topic
                        .clone()
                        .unwrap_or_else(|| preset.default_base().to_string()),
                })
            }
        }
    }

    /// The topics `event` goes to, with what each carries; empty: not published.
    fn publications(&self, event: &Event) -> Result<Vec<(String, Payload)>, String> {
        match self {
            Topics::Preset { preset, base } => Ok(preset_topics(*preset, base, event)),
            Topics::Template(env) => {
                let context: serde_json::Value =
                    serde_json::from_str(&event.to_json()).unwrap_or_default();
                let rendered = env
                    .get_template("topic")
                    .and_then(|t| {
                        t.render(minijinja::value::Value::from(minijinja::value::Serde(
                            &context,
                        )))
                    })
                    .map_err(|err| format!("topic template failed: {err:#}"))?;
                let topics = split_topics(&rendered).map_err(|err| format!("topic {err}"))?;
                Ok(topics.into_iter().map(|t| (t, Payload::Json)).collect())
            }
        }
    }
}

/// A preset's topics for `event` (see the module docs).
fn preset_topics(preset: Preset, base: &str, event: &Event) -> Vec<(String, Payload)> {
    match preset {
        Preset::Herald => vec![(
            format!(
                "{base}/{}/{}",
                event.event_type.as_str(),
                event.source.as_str()
            ),
            Payload::Json,
        )],
        Preset::ButlerSos => match event.event_type {
            EventType::Log | EventType::QixPerf => {
                let mut topics = vec![(format!("{base}/logevent"), Payload::Json)];
                if let Some(subsystem) = event.get(Field::Subsystem).filter(|s| !s.is_empty()) {
                    topics.push((
                        format!("{base}/logevent/{}", topic_path(subsystem)),
                        Payload::Json,
                    ));
                }
                topics
            }
            EventType::Session | EventType::Connection => {
                let mut topics = vec![(format!("{base}/userevent"), Payload::Json)];
                let command = event.get(Field::Command).unwrap_or_default();
                let by_command = [
                    ("Start session", "session/start"),
                    ("Stop session", "session/stop"),
                    ("Open connection", "connection/open"),
                    ("Close connection", "connection/close"),
                ]
                .into_iter()
                .find(|(name, _)| command.eq_ignore_ascii_case(name));
                if let Some((_, path)) = by_command {
                    topics.push((format!("{base}/userevent/{path}"), Payload::Json));
                }
                topics
            }
            EventType::Task | EventType::EngineReloadFailed => Vec::new(),
        },
        Preset::Butler => match (event.event_type, event.outcome) {
            (EventType::Task, Some(outcome)) => {
                let name = match outcome {
                    TaskOutcome::Failed => "task_failure",
                    TaskOutcome::Aborted => "task_aborted",
                    TaskOutcome::Success => "task_success",
                    TaskOutcome::Distribute => "task_distribute",
                };
                vec![
                    (format!("{base}/{name}"), Payload::TaskName),
                    (format!("{base}/{name}_full"), Payload::Json),
                ]
            }
            _ => Vec::new(),
        },
    }
}

// ---------------------------------------------------------------------------
// Connection errors

/// Context for turning a connection error into a message.
#[derive(Debug, Clone)]
struct Describe {
    broker: String,
    port: u16,
    tls: bool,
    host: String,
    username: Option<String>,
    client_id: String,
    ca_file: Option<PathBuf>,
    client_cert: bool,
}

impl Describe {
    fn new(config: &MqttConfig, client_id: &str) -> Describe {
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
    fn connection_error(&self, err: &ConnectionError) -> String {
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
    fn lost(&self, err: &ConnectionError) -> String {
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

// ---------------------------------------------------------------------------
// Acknowledgement tracking

/// Told the outcome of one publish.
type Waiter = oneshot::Sender<Result<(), String>>;

/// Matches publishes to their acknowledgements. The notifier pushes a waiter and
/// enqueues its publish under the same lock, so waiters are in the order rumqttc
/// takes the publishes from its channel; rumqttc reports each publish it sends
/// (with its packet id) in that order, and then its acknowledgement.
#[derive(Debug, Default)]
struct Tracker {
    /// Enqueued, not yet sent: in channel order.
    queued: VecDeque<Waiter>,
    /// Sent with QoS 1 or 2, by packet id.
    inflight: HashMap<u16, Waiter>,
    /// Taken by rumqttc but held back: its packet id was still in flight.
    collided: Option<(u16, Waiter)>,
    /// Whether the connection is up.
    connected: bool,
    /// Why the last connection attempt failed (cleared on connect).
    last_error: Option<String>,
}

impl Tracker {
    /// rumqttc sent the next publish with packet id `pkid`.
    fn sent(&mut self, pkid: u16, qos: QoS) {
        // While a collision is pending rumqttc takes no new publish, so this is it.
        let waiter = match self.collided.take() {
            Some((_, waiter)) => Some(waiter),
            None => self.queued.pop_front(),
        };
        let Some(waiter) = waiter else { return };
        if qos == QoS::AtMostOnce {
            let _ = waiter.send(Ok(()));
        } else {
            self.inflight.insert(pkid, waiter);
        }
    }

    /// rumqttc took the next publish but holds it until `pkid` is acknowledged.
    fn collision(&mut self, pkid: u16) {
        if let Some(waiter) = self.queued.pop_front() {
            self.collided = Some((pkid, waiter));
        }
    }

    /// The broker acknowledged `pkid` (PUBACK for QoS 1, PUBCOMP for QoS 2).
    fn acknowledged(&mut self, pkid: u16) {
        if let Some(waiter) = self.inflight.remove(&pkid) {
            let _ = waiter.send(Ok(()));
        }
    }

    /// The connection failed: nothing waiting will be sent any more.
    fn fail_all(&mut self, message: &str) {
        let waiters = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, w)| w))
            .chain(self.collided.take().map(|(_, w)| w));
        for waiter in waiters {
            let _ = waiter.send(Err(message.to_string()));
        }
    }
}

/// What the notifier and its connection task share.
#[derive(Debug, Default)]
struct Shared {
    tracker: Mutex<Tracker>,
    closing: AtomicBool,
    close: Notify,
}

impl Shared {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the connection: polls the event loop forever, reconnecting with backoff.
async fn connection_task(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    qos: QoS,
    describe: Describe,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_log: Option<Instant> = None;
    let mut failures_since_log = 0u32;
    let mut last_logged: Option<String> = None;
    let mut ever_connected = false;
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let polled = if closing {
            if !shared.tracker().connected {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
                Ok(polled) => polled,
                Err(_) => break,
            }
        } else {
            eventloop.poll().await
        };
        match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                let mut tracker = shared.tracker();
                tracker.connected = true;
                tracker.last_error = None;
                drop(tracker);
                if !ever_connected || last_log.is_some() {
                    info!(broker = %describe.broker, "connected to the MQTT broker");
                }
                ever_connected = true;
                last_log = None;
                last_logged = None;
                failures_since_log = 0;
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                shared.tracker().sent(pkid, qos);
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                shared.tracker().collision(pkid);
            }
            Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) if qos == QoS::AtLeastOnce => {
                shared.tracker().acknowledged(ack.pkid);
            }
            Ok(rumqttc::Event::Incoming(Packet::PubComp(comp))) if qos == QoS::ExactlyOnce => {
                shared.tracker().acknowledged(comp.pkid);
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect))
                if shared.closing.load(Ordering::Acquire) =>
            {
                break;
            }
            Ok(_) => {}
            Err(err) => {
                let was_connected = shared.tracker().connected;
                let message = if was_connected {
                    describe.lost(&err)
                } else {
                    describe.connection_error(&err)
                };
                {
                    let mut tracker = shared.tracker();
                    // With a clean session, rumqttc drops whatever was in flight or
                    // in its channel when it reconnects; say so now rather than
                    // leave the notifier waiting. Under the lock, so no publish is
                    // enqueued in between.
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state.events.clear();
                    eventloop.state.collision = None;
                    tracker.fail_all(&message);
                    tracker.connected = false;
                    tracker.last_error = Some(message.clone());
                }
                if shared.closing.load(Ordering::Acquire) {
                    break;
                }
                failures_since_log += 1;
                // A new kind of failure is logged at once, the same one again at
                // most every LOG_EVERY.
                let changed = last_logged.as_deref() != Some(message.as_str());
                if changed || last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    let earlier = failures_since_log - 1;
                    if earlier > 0 {
                        warn!(broker = %describe.broker, "{message}; retrying ({earlier} more failed attempts since the last message)");
                    } else {
                        warn!(broker = %describe.broker, "{message}; retrying");
                    }
                    last_log = Some(Instant::now());
                    last_logged = Some(message);
                    failures_since_log = 0;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shared.close.notified() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The notifier

/// Publishes events to an MQTT broker.
pub struct Mqtt {
    client: AsyncClient,
    shared: Arc<Shared>,
    topics: Topics,
    preset: Option<Preset>,
    qos: QoS,
    retain: bool,
    timeout: Duration,
    broker: String,
    body: Vec<u8>,
    /// Event types already warned about having no topic.
    warned: [bool; EventType::ALL.len()],
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("broker", &self.broker)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl Mqtt {
    /// Builds the client and starts its connection task (needs a Tokio runtime).
    ///
    /// # Errors
    ///
    /// `key: problem` when the settings are unusable (including unreadable TLS
    /// files); an unreachable broker is not an error here.
    pub fn new(config: &MqttConfig) -> Result<Mqtt, String> {
        let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
        config.validate().map_err(key_err)?;
        let topics = Topics::new(config).map_err(key_err)?;
        let client_id = config.client_id.clone().unwrap_or_else(random_client_id);
        let options = config.options(client_id.clone()).map_err(key_err)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the MQTT sink needs the async runtime".to_string())?;
        let (client, eventloop) = AsyncClient::new(options, config.queue_messages);
        let shared = Arc::new(Shared::default());
        runtime.spawn(connection_task(
            eventloop,
            shared.clone(),
            config.qos_level(),
            Describe::new(config, &client_id),
        ));
        Ok(Mqtt {
            client,
            shared,
            topics,
            preset: if config.topic.is_some() {
                None
            } else {
                Some(config.preset.unwrap_or(Preset::Herald))
            },
            qos: config.qos_level(),
            retain: config.retain,
            timeout: Duration::from_millis(config.timeout_ms),
            broker: config.broker(),
            body: Vec::with_capacity(4096),
            warned: [false; EventType::ALL.len()],
        })
    }

    /// The topics and payloads for `event` (empty: it is not published).
    ///
    /// # Errors
    ///
    /// When a topic template fails or renders an invalid topic.
    pub fn publications(&self, event: &Event) -> Result<Vec<(String, Payload)>, String> {
        self.topics.publications(event)
    }

    fn last_error_note(&self) -> String {
        let tracker = self.shared.tracker();
        match &tracker.last_error {
            Some(err) if !tracker.connected => format!("; last connection error: {err}"),
            _ => String::new(),
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
        self.shared.close.notify_one();
    }
}

impl Notifier for Mqtt {
    async fn notify(&mut self, event: &Event, _rendered: &Rendered) -> Result<(), SinkError> {
        let publications = self
            .publications(event)
            .map_err(|err| SinkError::permanent(format!("MQTT: {err}")))?;
        if publications.is_empty() {
            let index = EventType::ALL
                .iter()
                .position(|t| *t == event.event_type)
                .unwrap_or(0);
            if !self.warned[index] {
                self.warned[index] = true;
                match self.preset {
                    Some(preset) => warn!(
                        broker = %self.broker,
                        "the MQTT preset {:?} has no topic for {} events; they are not published (give this sink a match table to route only the events it publishes)",
                        preset.as_str(),
                        event.event_type.as_str()
                    ),
                    None => info!(
                        broker = %self.broker,
                        "the MQTT topic template rendered no topic for a {} event; it is not published",
                        event.event_type.as_str()
                    ),
                }
            }
            return Ok(());
        }
        self.body.clear();
        event.write_json(&mut self.body);
        let longest_topic = publications.iter().map(|(t, _)| t.len()).max();
        if self.body.len() + longest_topic.unwrap_or(0) > PACKET_MAX {
            return Err(SinkError::permanent(format!(
                "MQTT: the event is {} bytes of JSON, more than the {PACKET_MAX} herald publishes",
                self.body.len()
            )));
        }
        let mut waiting = Vec::with_capacity(publications.len());
        {
            let mut tracker = self.shared.tracker();
            for (topic, payload) in publications {
                let payload = match payload {
                    Payload::Json => self.body.clone(),
                    Payload::TaskName => event
                        .get(Field::TaskName)
                        .filter(|name| !name.is_empty())
                        .unwrap_or("(unnamed task)")
                        .as_bytes()
                        .to_vec(),
                };
                let (tx, rx) = oneshot::channel();
                tracker.queued.push_back(tx);
                if let Err(err) =
                    self.client
                        .try_publish(topic.as_str(), self.qos, self.retain, payload)
                {
                    tracker.queued.pop_back();
                    let why = match err {
                        rumqttc::ClientError::TryRequest(_) | rumqttc::ClientError::Request(_)
                            if !tracker.connected =>
                        {
                            format!(
                                "queue_messages publishes are already waiting for the MQTT broker at {}{}",
                                self.broker,
                                tracker
                                    .last_error
                                    .as_ref()
                                    .map(|e| format!("; last connection error: {e}"))
                                    .unwrap_or_default()
                            )
                        }
                        _ => format!(
                            "cannot hand the publish to {topic} to the MQTT connection (queue full or connection task stopped)"
                        ),
                    };
                    return Err(SinkError::retryable(why));
                }
                waiting.push((topic, rx));
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        for (topic, rx) in waiting {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(message))) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT publish to {topic} failed: {message}"
                    )));
                }
                Ok(Err(_)) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT publish to {topic} failed: the connection task stopped"
                    )));
                }
                Err(_) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT broker at {} did not acknowledge the publish to {topic} within {} ms{}",
                        self.broker,
                        self.timeout.as_millis(),
                        self.last_error_note()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Connects with these settings, waits for the broker's CONNACK (5 s) and
/// disconnects.
///
/// # Errors
///
/// What is wrong and how to fix it: unreachable, untrusted certificate,
/// credentials refused, bad settings.
pub async fn check_connection(config: &MqttConfig) -> Result<String, String> {
    let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
    config.validate().map_err(key_err)?;
    // Not the sink's own id: a broker disconnects a client whose id connects again,
    // and a running herald should not be kicked off by `herald check --connect`.
    let client_id = match &config.client_id {
        Some(id) => format!("{id}-check"),
        None => random_client_id(),
    };
    let options = config.options(client_id.clone()).map_err(key_err)?;
    let describe = Describe::new(config, &client_id);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let first = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), eventloop.poll())
        .await
        .map_err(|_| describe.connection_error(&ConnectionError::NetworkTimeout))?;
    match first {
        Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
            let _ = client.disconnect().await;
            // Send the DISCONNECT; the broker then closes the connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = eventloop.poll().await {
                    if event == rumqttc::Event::Outgoing(Outgoing::Disconnect) {
                        break;
                    }
                }
            })
            .await;
            Ok(format!(
                "MQTT broker at {} accepted the connection ({})",
                config.broker(),
                config.describe_login()
            ))
        }
        Ok(other) => Err(format!(
            "MQTT broker at {} answered the login with {other:?} instead of CONNACK",
            config.broker()
        )),
        Err(err) => Err(describe.connection_error(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        crate::send::sample_event(kind)
    }

    fn config(extra: &str) -> MqttConfig {
        toml::from_str(&format!("host = \"mqtt.lab\"\n{extra}")).unwrap()
    }

    fn topics(config: &MqttConfig, kind: &str) -> Vec<(String, Payload)> {
        config.validate().unwrap();
        Topics::new(config)
            .unwrap()
            .publications(&event(kind))
            .unwrap()
    }

    fn names(config: &MqttConfig, kind: &str) -> Vec<String> {
        topics(config, kind).into_iter().map(|(t, _)| t).collect()
    }

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
    fn herald_preset_is_type_and_source_under_the_base_topic() {
        let c = config("preset = \"herald\"\nbase_topic = \"prod/sense\"");
        assert_eq!(names(&c, "qix-perf"), ["prod/sense/qix_perf/engine"]);
        assert_eq!(names(&c, "task-failed"), ["prod/sense/task/scheduler"]);
        assert_eq!(names(&c, "session"), ["prod/sense/session/proxy"]);
    }

    #[test]
    fn butler_sos_preset_publishes_log_events_to_base_and_subsystem_topics() {
        let c = config("preset = \"butler-sos\"");
        assert_eq!(
            names(&c, "engine"),
            [
                "qliksense/logevent",
                "qliksense/logevent/system/engine/engine"
            ]
        );
        let scheduler = names(&c, "scheduler");
        assert_eq!(scheduler[0], "qliksense/logevent");
        assert!(
            scheduler[1].starts_with("qliksense/logevent/system/scheduler/"),
            "{scheduler:?}"
        );
        assert_eq!(names(&c, "qix-perf").len(), 2);
        assert!(
            topics(&c, "engine")
                .iter()
                .all(|(_, payload)| *payload == Payload::Json)
        );
    }

    #[test]
    fn butler_sos_preset_publishes_user_events_by_command() {
        let c = config("preset = \"butler-sos\"");
        assert_eq!(
            names(&c, "session"),
            ["qliksense/userevent", "qliksense/userevent/session/start"]
        );
        assert_eq!(
            names(&c, "connection"),
            ["qliksense/userevent", "qliksense/userevent/connection/open"]
        );
        let based = config("preset = \"butler-sos\"\nbase_topic = \"site1\"");
        assert_eq!(
            names(&based, "session"),
            ["site1/userevent", "site1/userevent/session/start"]
        );
    }

    #[test]
    fn butler_sos_preset_has_no_topic_for_task_events() {
        let c = config("preset = \"butler-sos\"");
        assert!(names(&c, "task-failed").is_empty());
        assert!(names(&c, "engine-reload-failed").is_empty());
    }

    #[test]
    fn butler_preset_publishes_the_task_name_and_the_full_event_like_butler() {
        let c = config("preset = \"butler\"");
        assert_eq!(
            topics(&c, "task-failed"),
            [
                ("qliksense/task_failure".to_string(), Payload::TaskName),
                ("qliksense/task_failure_full".to_string(), Payload::Json),
            ]
        );
        assert_eq!(
            names(&c, "task-aborted"),
            ["qliksense/task_aborted", "qliksense/task_aborted_full"]
        );
        assert_eq!(
            names(&c, "task-success"),
            ["qliksense/task_success", "qliksense/task_success_full"]
        );
        assert_eq!(
            names(&c, "task-distribute"),
            [
                "qliksense/task_distribute",
                "qliksense/task_distribute_full"
            ]
        );
        assert!(names(&c, "engine").is_empty());
        assert!(names(&c, "session").is_empty());
    }

    #[test]
    fn a_topic_template_renders_event_fields_and_one_topic_per_line() {
        let c = config("topic = \"sense/{{ type }}/{{ host }}\"");
        assert_eq!(names(&c, "engine"), ["sense/log/pro2-win1"]);
        let c = config(
            "topic = \"\"\"\nsense/all\n{% if subsystem %}sense/{{ subsystem | topic_path }}{% endif %}\n\"\"\"",
        );
        assert_eq!(
            names(&c, "engine"),
            ["sense/all", "sense/system/engine/engine"]
        );
        assert_eq!(names(&c, "task-failed"), ["sense/all"]);
        let only_tasks =
            config("topic = \"{% if type == 'task' %}alerts/{{ outcome }}{% endif %}\"");
        assert_eq!(names(&only_tasks, "task-failed"), ["alerts/failed"]);
        assert!(names(&only_tasks, "engine").is_empty());
    }

    #[test]
    fn a_template_that_renders_a_wildcard_is_refused() {
        let c = config("topic = \"sense/{{ 'a+b' }}/{{ type }}\"");
        c.validate().unwrap();
        let err = Topics::new(&c)
            .unwrap()
            .publications(&event("engine"))
            .unwrap_err();
        assert!(err.contains("'+'"), "{err}");
    }

    #[test]
    fn topic_path_lower_cases_and_turns_dots_into_levels() {
        assert_eq!(
            topic_path("System.Scheduler.Scheduler.Slave.Tasks.ReloadTask"),
            "system/scheduler/scheduler/slave/tasks/reloadtask"
        );
        assert_eq!(topic_path("A+B#C"), "a_b_c");
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

    #[tokio::test]
    async fn new_reports_bad_settings_as_key_and_problem() {
        let err = Mqtt::new(&config("qos = 7")).unwrap_err();
        assert!(err.starts_with("qos: "), "{err}");
    }

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

    #[test]
    fn the_tracker_matches_acknowledgements_to_publishes_in_order() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let (c, mut rc) = oneshot::channel();
        tracker.queued.extend([a, b, c]);
        tracker.sent(1, QoS::AtLeastOnce);
        tracker.sent(2, QoS::AtLeastOnce);
        tracker.acknowledged(2);
        assert_eq!(rb.try_recv().unwrap(), Ok(()));
        assert!(ra.try_recv().is_err(), "1 is not acknowledged yet");
        // 3 collides with 1, which is still in flight; sent once 1 is acknowledged.
        tracker.collision(1);
        tracker.acknowledged(1);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
        tracker.sent(1, QoS::AtLeastOnce);
        tracker.acknowledged(1);
        assert_eq!(rc.try_recv().unwrap(), Ok(()));
        // A stray acknowledgement changes nothing.
        tracker.acknowledged(9);
    }

    #[test]
    fn the_tracker_fails_everything_waiting_when_the_connection_fails() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        tracker.queued.extend([a, b]);
        tracker.sent(1, QoS::ExactlyOnce);
        tracker.fail_all("refused");
        assert_eq!(ra.try_recv().unwrap(), Err("refused".to_string()));
        assert_eq!(rb.try_recv().unwrap(), Err("refused".to_string()));
        assert!(tracker.queued.is_empty() && tracker.inflight.is_empty());
    }

    #[test]
    fn qos_0_publishes_complete_when_sent() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        tracker.queued.push_back(a);
        tracker.sent(0, QoS::AtMostOnce);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn client_ids_differ_per_sink() {
        let (a, b) = (random_client_id(), random_client_id());
        assert_ne!(a, b);
        assert!(a.starts_with("herald-") && a.len() == 19, "{a}");
    }

    /// A minimal MQTT 3.1.1 server: answers CONNECT with `connack_code` and, when
    /// `ack` is set, each QoS 1 PUBLISH with its PUBACK. Returns its port and the
    /// topics it received.
    async fn fake_broker(connack_code: u8, ack: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let topics = Arc::new(Mutex::new(Vec::new()));
        let seen = topics.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    loop {
                        let mut header = [0u8; 1];
                        if socket.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let (mut length, mut shift) = (0usize, 0);
                        loop {
                            let mut byte = [0u8; 1];
                            if socket.read_exact(&mut byte).await.is_err() {
                                return;
                            }
                            length |= usize::from(byte[0] & 0x7f) << shift;
                            shift += 7;
                            if byte[0] & 0x80 == 0 {
                                break;
                            }
                        }
                        let mut body = vec![0u8; length];
                        if socket.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let reply: Vec<u8> = match header[0] >> 4 {
                            1 => vec![0x20, 0x02, 0x00, connack_code],
                            3 => {
                                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                                let topic = String::from_utf8_lossy(&body[2..2 + topic_len]);
                                seen.lock().unwrap().push(topic.into_owned());
                                let pkid = &body[2 + topic_len..4 + topic_len];
                                if ack {
                                    vec![0x40, 0x02, pkid[0], pkid[1]]
                                } else {
                                    Vec::new()
                                }
                            }
                            12 => vec![0xd0, 0x00],
                            _ => Vec::new(),
                        };
                        if !reply.is_empty() && socket.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, topics)
    }

    fn rendered() -> Rendered {
        Rendered {
            title: String::new(),
            text: String::new(),
            links: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_publish_returns_once_the_broker_acknowledges_it() {
        let (port, topics) = fake_broker(0, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\npreset = \"butler\""
            ))
            .unwrap(),
        )
        .unwrap();
        for _ in 0..3 {
            mqtt.notify(&event("task-failed"), &rendered())
                .await
                .unwrap();
        }
        assert_eq!(
            topics.lock().unwrap().as_slice(),
            ["qliksense/task_failure", "qliksense/task_failure_full"].repeat(3)
        );
    }

    #[tokio::test]
    async fn an_unacknowledged_publish_times_out_as_retryable() {
        let (port, _) = fake_broker(0, false).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\ntimeout_ms = 300"
            ))
            .unwrap(),
        )
        .unwrap();
        let err = mqtt
            .notify(&event("engine"), &rendered())
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(
            err.message,
            format!(
                "MQTT broker at 127.0.0.1:{port} did not acknowledge the publish to herald/log/engine within 300 ms"
            )
        );
    }

    #[tokio::test]
    async fn a_refused_login_fails_the_publish_at_once_with_the_reason() {
        let (port, topics) = fake_broker(5, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\nusername = \"u\"\npassword = \"p\""
            ))
            .unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        let err = mqtt
            .notify(&event("engine"), &rendered())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "not a timeout");
        assert!(err.retryable);
        assert!(
            err.message.contains(&format!(
                "MQTT broker at 127.0.0.1:{port} refused the credentials (not authorised) for user \"u\""
            )),
            "{}",
            err.message
        );
        assert!(topics.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_event_without_a_topic_is_not_published() {
        let (port, topics) = fake_broker(0, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\npreset = \"butler\""
            ))
            .unwrap(),
        )
        .unwrap();
        mqtt.notify(&event("engine"), &rendered()).await.unwrap();
        mqtt.notify(&event("task-aborted"), &rendered())
            .await
            .unwrap();
        assert_eq!(
            topics.lock().unwrap().as_slice(),
            ["qliksense/task_aborted", "qliksense/task_aborted_full"]
        );
    }
}
