//! The `nats` sink's settings: the keys, their defaults, the checks that name
//! the key and say what to do, and the async-nats connect options and stream
//! definition built from them (servers, login, TLS). Nothing here connects;
//! reading the TLS and credentials files is the only I/O.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::{ConnectOptions, ServerAddr};
use serde::{Deserialize, Serialize};

use super::subject::{SubjectTemplate, is_valid_stream_name};
use crate::secret::Secret;
use crate::sinks::tls;

/// Settings of a `nats` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, or several servers of one cluster: `nats://host:4222`,
    /// `tls://host:4222` or `host:port`.
    pub url: Urls,
    /// The JetStream stream that stores the events, e.g. `"QLIK"`.
    pub stream: String,
    /// Create the stream when it does not exist (with `stream_subjects`,
    /// `stream_max_age_days`, `stream_max_bytes`, `stream_replicas`,
    /// `stream_storage` and `duplicate_window_s`). An existing stream is never
    /// changed.
    #[serde(default)]
    pub create_stream: bool,
    /// The subject of each event: a template over the event's JSON fields;
    /// every value is made one safe subject token.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The subjects a created stream takes; default: the subject template's
    /// fixed first tokens followed by `>` (`qliksense.>` for the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_subjects: Option<Vec<String>>,
    /// How long a created stream keeps events, in days; 0 (the default): no
    /// limit by age.
    #[serde(default)]
    pub stream_max_age_days: u64,
    /// How many bytes a created stream keeps before dropping its oldest; 0
    /// (the default): no limit by size.
    #[serde(default)]
    pub stream_max_bytes: u64,
    /// Copies of a created stream in a JetStream cluster (1 to 5).
    #[serde(default = "default_replicas")]
    pub stream_replicas: usize,
    /// Where a created stream keeps its messages: `"file"` (the default) or
    /// `"memory"`.
    #[serde(default)]
    pub stream_storage: Storage,
    /// A created stream's duplicate window in seconds: a message whose
    /// `Nats-Msg-Id` the stream saw this recently is stored once.
    #[serde(default = "default_duplicate_window_s")]
    pub duplicate_window_s: u64,
    /// User name to log in with (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password to log in with (a secret: use `${NATS_PASSWORD}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Token to log in with (a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// NKey seed (`SU...`) to log in with (a secret: use `file:/path` or `${VAR}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (user JWT and NKey seed) to log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Require TLS (also implied by a `tls://` URL). The server's certificate
    /// is always verified, against the system's CAs plus `tls_ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// Extra CA certificates (PEM) to trust, for a server with an internal CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM, with its chain) for servers that verify
    /// clients (with `tls_client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key_file: Option<PathBuf>,
    /// How long the stream may take to acknowledge a publish, and a connection
    /// to be made, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// One server URL or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// One server.
    One(String),
    /// Servers of one cluster; herald connects to one of them.
    Many(Vec<String>),
}

impl Urls {
    /// The URLs as written.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Urls::One(url) => std::slice::from_ref(url),
            Urls::Many(urls) => urls,
        }
    }
}

/// Where a created stream keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// On disk (survives a server restart).
    #[default]
    File,
    /// In memory only.
    Memory,
}

/// The subject template herald uses unless `subject` says otherwise.
pub const DEFAULT_SUBJECT: &str = "qliksense.{{ type }}.{{ source }}.{{ host }}";

fn default_subject() -> String {
    DEFAULT_SUBJECT.to_string()
}

fn default_replicas() -> usize {
    1
}

fn default_duplicate_window_s() -> u64 {
    120
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl NatsConfig {
    /// The servers, parsed.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first URL that is not a NATS server URL.
    pub fn servers(&self) -> Result<Vec<ServerAddr>, (&'static str, String)> {
        let urls = self.url.as_slice();
        if urls.is_empty() {
            return Err((
                "url",
                "lists no server; give one, e.g. \"nats://nats.corp.local:4222\"".into(),
            ));
        }
        urls.iter()
            .map(|url| {
                let shown = without_userinfo(url);
                let addr: ServerAddr = url.trim().parse().map_err(|err| {
                    (
                        "url",
                        format!("{shown:?} is not a NATS server URL ({err}); write nats://host:4222 or tls://host:4222"),
                    )
                })?;
                if addr.is_websocket() {
                    return Err((
                        "url",
                        format!("{shown:?}: herald connects over nats:// or tls://, not websockets"),
                    ));
                }
                if addr.has_user_pass() {
                    return Err((
                        "url",
                        format!(
                            "{} holds a user name or password; put them in `username` and `password` (a secret: ${{NATS_PASSWORD}}) instead",
                            addr.host()
                        ),
                    ));
                }
                if addr.host().is_empty() {
                    return Err(("url", format!("{url:?} names no host")));
                }
                Ok(addr)
            })
            .collect()
    }

    /// The servers as shown in messages: `host:port, host:port`.
    pub fn describe_servers(&self) -> String {
        match self.servers() {
            Ok(servers) => servers
                .iter()
                .map(|s| format!("{}:{}", s.host(), s.port()))
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => self.url.as_slice().join(", "),
        }
    }

    /// Whether the connection must be TLS.
    pub fn requires_tls(&self) -> bool {
        self.tls
            || self
                .url
                .as_slice()
                .iter()
                .any(|url| url.trim().to_ascii_lowercase().starts_with("tls://"))
    }

    /// How herald logs in, for messages (never the secret itself).
    pub fn describe_login(&self) -> String {
        if let Some(user) = &self.username {
            format!("as user {user:?}")
        } else if self.token.is_some() {
            "with a token".into()
        } else if self.nkey_seed.is_some() {
            "with an NKey".into()
        } else if let Some(path) = &self.credentials_file {
            format!("with the credentials in {}", path.display())
        } else {
            "without credentials".into()
        }
    }

    /// The publish acknowledgement (and connection) timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the keys (no I/O); returns the key and the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.servers()?;
        if !is_valid_stream_name(&self.stream) {
            return Err((
                "stream",
                format!(
                    "{:?} is not a stream name: give a name without spaces, '.', '*', '>', '/' or '\\', e.g. \"QLIK\"",
                    self.stream
                ),
            ));
        }
        let template = SubjectTemplate::new(&self.subject).map_err(|err| ("subject", err))?;
        if self.create_stream {
            match &self.stream_subjects {
                Some(subjects) if subjects.is_empty() => {
                    return Err((
                        "stream_subjects",
                        "is empty; leave it out for the subject template's prefix followed by '>'"
                            .into(),
                    ));
                }
                Some(subjects) => {
                    if let Some(bad) = subjects.iter().find(|s| !is_valid_filter(s)) {
                        return Err((
                            "stream_subjects",
                            format!(
                                "{bad:?} is not a subject: tokens separated by '.', none empty, '*' for one token, '>' last for the rest"
                            ),
                        ));
                    }
                }
                None if template.fixed_prefix().is_none() => {
                    return Err((
                        "stream_subjects",
                        "the subject template starts with a field, so herald cannot tell which subjects the stream should take; list them, e.g. [\"qliksense.>\"]".into(),
                    ));
                }
                None => {}
            }
            if !(1..=5).contains(&self.stream_replicas) {
                return Err(("stream_replicas", "must be 1 to 5".into()));
            }
        }
        let logins = [
            (
                "username",
                self.username.is_some() || self.password.is_some(),
            ),
            ("token", self.token.is_some()),
            ("nkey_seed", self.nkey_seed.is_some()),
            ("credentials_file", self.credentials_file.is_some()),
        ];
        let given: Vec<&str> = logins
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| *key)
            .collect();
        if given.len() > 1 {
            return Err((
                given[1],
                format!("give one way to log in; {} are set", given.join(" and ")),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err((
                "username",
                "give both username and password, or neither".into(),
            ));
        }
        if let Some(seed) = &self.nkey_seed
            && !seed.expose().trim().starts_with("SU")
        {
            return Err((
                "nkey_seed",
                "is not a user NKey seed (one starts with \"SU\"); use file:/path/to/user.nk or ${NATS_NKEY_SEED}".into(),
            ));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err((
                "timeout_ms",
                "must be 1 to 600000 (milliseconds); the default is 10000".into(),
            ));
        }
        self.tls_files()
            .check(self.requires_tls(), "set tls = true or use tls:// URLs")?;
        Ok(())
    }

    /// The TLS files as configured.
    fn tls_files(&self) -> tls::TlsFiles<'_> {
        tls::TlsFiles {
            ca_file: self.tls_ca_file.as_deref(),
            cert_file: self.tls_client_cert_file.as_deref(),
            key_file: self.tls_client_key_file.as_deref(),
        }
    }

    /// The connect options: login, TLS, timeouts, reconnect pacing. Reads the
    /// TLS and credentials files.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for a file that cannot be read or used.
    pub async fn options(&self) -> Result<ConnectOptions, (&'static str, String)> {
        let mut options = ConnectOptions::new()
            .name("herald")
            .no_echo()
            .connection_timeout(self.timeout())
            .request_timeout(Some(self.timeout()))
            .reconnect_delay_callback(super::reconnect_delay);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_string());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_string());
        }
        if let Some(seed) = &self.nkey_seed {
            let seed = seed.expose().trim().to_string();
            if let Err(err) = nkeys::KeyPair::from_seed(&seed) {
                return Err(("nkey_seed", format!("is not a usable NKey seed: {err}")));
            }
            options = options.nkey(seed);
        }
        if let Some(path) = &self.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|err| {
                (
                    "credentials_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            options = options.credentials(&text).map_err(|err| {
                (
                    "credentials_file",
                    format!(
                        "{} is not a NATS credentials file (a user JWT and NKey seed, as `nsc` writes): {err}",
                        path.display()
                    ),
                )
            })?;
        }
        if self.requires_tls() {
            let config = self
                .tls_files()
                .client_config()
                .map_err(<(&'static str, String)>::from)?;
            options = options.tls_client_config(config).require_tls(true);
        }
        Ok(options)
    }

    /// The stream `create_stream` creates.
    pub fn stream_config(&self) -> stream::Config {
        let subjects = self.stream_subjects.clone().unwrap_or_else(|| {
            let prefix = SubjectTemplate::new(&self.subject)
                .ok()
                .and_then(|t| t.fixed_prefix().map(str::to_string))
                .unwrap_or_default();
            vec![format!("{prefix}>")]
        });
        stream::Config {
            name: self.stream.clone(),
            subjects,
            max_age: Duration::from_secs(self.stream_max_age_days.saturating_mul(86_400)),
            max_bytes: if self.stream_max_bytes == 0 {
                -1
            } else {
                i64::try_from(self.stream_max_bytes).unwrap_or(i64::MAX)
            },
            num_replicas: self.stream_replicas,
            storage: match self.stream_storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
            description: Some("Qlik Sense log events from herald".into()),
            ..Default::default()
        }
    }
}

/// `url` as shown in messages: a user name or password in it left out.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("…@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Whether `filter` is a subject a stream can take: tokens separated by '.',
/// none empty, `*` for one token, `>` only as the last.
fn is_valid_filter(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    !filter.is_empty()
        && tokens.iter().enumerate().all(|(i, token)| {
            !token.is_empty()
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
                && (*token == "*"
                    || (*token == ">" && i == tokens.len() - 1)
                    || !token.contains(['*', '>']))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NatsConfig {
        toml::from_str(&format!(
            "url = \"nats://127.0.0.1:4222\"\nstream = \"QLIK\"\n{extra}"
        ))
        .expect("a nats config")
    }

    fn problem(extra: &str) -> (&'static str, String) {
        config(extra).validate().expect_err("a problem")
    }

    #[test]
    fn the_defaults_are_valid_and_create_a_stream_for_the_subject_prefix() {
        let c = config("create_stream = true");
        c.validate().unwrap();
        assert_eq!(c.subject, DEFAULT_SUBJECT);
        let stream = c.stream_config();
        assert_eq!(stream.name, "QLIK");
        assert_eq!(stream.subjects, ["qliksense.>"]);
        assert_eq!(stream.duplicate_window, Duration::from_secs(120));
        assert_eq!(stream.max_bytes, -1);
        assert_eq!(stream.max_age, Duration::ZERO);
        assert_eq!(c.describe_login(), "without credentials");
    }

    #[test]
    fn a_list_of_servers_is_taken_and_each_is_checked() {
        let c: NatsConfig = toml::from_str(
            "url = [\"nats://a.corp.local:4222\", \"b.corp.local:4223\"]\nstream = \"QLIK\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.describe_servers(), "a.corp.local:4222, b.corp.local:4223");
        let bad: NatsConfig =
            toml::from_str("url = [\"http://a:4222\"]\nstream = \"QLIK\"").unwrap();
        let (key, message) = bad.validate().unwrap_err();
        assert_eq!(key, "url");
        assert!(message.contains("nats://host:4222"), "{message}");
        let empty: NatsConfig = toml::from_str("url = []\nstream = \"QLIK\"").unwrap();
        assert_eq!(empty.validate().unwrap_err().0, "url");
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let c: NatsConfig =
            toml::from_str("url = \"nats://herald:s3cret@nats1:4222\"\nstream = \"QLIK\"").unwrap();
        let (key, message) = c.validate().unwrap_err();
        assert_eq!(key, "url");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("`password`"), "{message}");
    }

    #[test]
    fn stream_names_and_subjects_are_checked() {
        for name in ["", "QL IK", "QLIK.EVENTS", "Q*", "Q>", "a/b"] {
            let c: NatsConfig =
                toml::from_str(&format!("url = \"nats://n:4222\"\nstream = {name:?}")).unwrap();
            assert_eq!(c.validate().unwrap_err().0, "stream", "{name:?}");
        }
        assert_eq!(
            problem("create_stream = true\nstream_subjects = []").0,
            "stream_subjects"
        );
        assert_eq!(
            problem("create_stream = true\nstream_subjects = [\"a..b\"]").0,
            "stream_subjects"
        );
        assert_eq!(
            problem("create_stream = true\nstream_subjects = [\"a.>.b\"]").0,
            "stream_subjects"
        );
        config("create_stream = true\nstream_subjects = [\"a.*.b\", \"c.>\"]")
            .validate()
            .unwrap();
        let (key, message) = problem("create_stream = true\nsubject = \"{{ host }}.{{ type }}\"");
        assert_eq!(key, "stream_subjects");
        assert!(message.contains("list them"), "{message}");
        assert_eq!(
            problem("create_stream = true\nstream_replicas = 0").0,
            "stream_replicas"
        );
    }

    #[test]
    fn one_way_to_log_in() {
        let (key, message) = problem("token = \"t\"\nnkey_seed = \"SUAB\"");
        assert_eq!(key, "nkey_seed");
        assert!(message.contains("token and nkey_seed"), "{message}");
        assert_eq!(problem("username = \"u\"").0, "username");
        let (key, message) = problem("nkey_seed = \"UABC\"");
        assert_eq!(key, "nkey_seed");
        assert!(message.contains("SU"), "{message}");
        assert_eq!(
            problem("tls_client_cert_file = \"/c.pem\"").0,
            "tls_client_cert_file"
        );
        assert_eq!(problem("timeout_ms = 0").0, "timeout_ms");
        let c = config("username = \"herald\"\npassword = \"pw\"");
        c.validate().unwrap();
        assert_eq!(c.describe_login(), "as user \"herald\"");
    }

    #[test]
    fn a_url_in_a_message_never_shows_its_password() {
        assert_eq!(without_userinfo("nats://u:pw@n:4222"), "nats://…@n:4222");
        assert_eq!(without_userinfo("u:pw@n:4222"), "…@n:4222");
        assert_eq!(without_userinfo("nats://n:4222"), "nats://n:4222");
        let c: NatsConfig =
            toml::from_str("url = \"http://u:s3cret@n:4222\"\nstream = \"QLIK\"").unwrap();
        let (_, message) = c.validate().unwrap_err();
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn tls_files_without_tls_are_refused() {
        let (key, message) = problem("tls_ca_file = \"/ca.pem\"");
        assert_eq!(key, "tls_ca_file");
        assert!(message.contains("tls = true"), "{message}");
        config("tls = true\ntls_ca_file = \"/ca.pem\"")
            .validate()
            .unwrap();
        assert_eq!(problem("timeout_ms = 600001").0, "timeout_ms");
    }

    #[test]
    fn tls_is_required_by_the_key_or_a_tls_url() {
        assert!(!config("").requires_tls());
        assert!(config("tls = true").requires_tls());
        let c: NatsConfig = toml::from_str("url = \"tls://n:4222\"\nstream = \"QLIK\"").unwrap();
        assert!(c.requires_tls());
    }

    #[test]
    fn filters_are_tokens_with_wildcards_in_their_place() {
        for good in ["a", "a.b", "a.*", "a.>", ">", "*.b.>"] {
            assert!(is_valid_filter(good), "{good}");
        }
        for bad in ["", "a.", ".a", "a..b", "a.>.b", "a b", "a.b*", "a.>x"] {
            assert!(!is_valid_filter(bad), "{bad}");
        }
    }
}
