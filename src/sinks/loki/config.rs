//! A `loki` sink's settings: the keys, their defaults, their validation (with
//! the key and the fix named), and what they make of a request: the push URL,
//! the HTTP client and the tenant and credential headers.
//!
//! Nothing here sends anything.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Field, Level, TaskOutcome};
use crate::secret::Secret;
use crate::sinks::transport;

/// The push endpoint, appended to `url`.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Settings of a `loki` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Base URL, e.g. `http://127.0.0.1:3100`.
    pub url: String,
    /// Stream labels, from a bounded set: `type`, `source`, `level`, `host`,
    /// `outcome`, `command`. Default: `["type", "source", "level", "host"]`.
    #[serde(default = "default_labels")]
    pub labels: Vec<LokiLabel>,
    /// Static labels added to every stream, e.g. `{ job = "herald", env = "prod" }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub static_labels: std::collections::BTreeMap<String, String>,
    /// Tenant for multi-tenant Loki (`X-Scope-OrgID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Basic-auth user (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Bearer token (instead of basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Gzip request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust for `https` URLs. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// A label herald can put on a Loki stream; all have few distinct values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LokiLabel {
    /// The event type.
    Type,
    /// The Sense service.
    Source,
    /// The level.
    Level,
    /// The Sense host name.
    Host,
    /// The task outcome.
    Outcome,
    /// The session/connection command.
    Command,
}

impl LokiLabel {
    /// The label name on the stream (the same as in config).
    pub fn name(self) -> &'static str {
        match self {
            LokiLabel::Type => "type",
            LokiLabel::Source => "source",
            LokiLabel::Level => "level",
            LokiLabel::Host => "host",
            LokiLabel::Outcome => "outcome",
            LokiLabel::Command => "command",
        }
    }

    /// The label's value for `event`; `None` when the event has none (the label
    /// is then left off its stream).
    pub fn value(self, event: &Event) -> Option<&str> {
        match self {
            LokiLabel::Type => Some(event.event_type.as_str()),
            LokiLabel::Source => Some(event.source.as_str()),
            LokiLabel::Level => event.level.map(Level::as_str),
            LokiLabel::Host => event.host(),
            LokiLabel::Outcome => event.outcome.map(TaskOutcome::as_str),
            LokiLabel::Command => event.get(Field::Command),
        }
    }
}

fn default_labels() -> Vec<LokiLabel> {
    vec![
        LokiLabel::Type,
        LokiLabel::Source,
        LokiLabel::Level,
        LokiLabel::Host,
    ]
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Whether `name` is a valid Loki (Prometheus) label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

impl LokiConfig {
    /// Checks the keys; returns the key and the problem. (Whether `url` is
    /// an http or https URL is checked with every HTTP sink's, by the config
    /// loader.)
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.base().ends_with(PUSH_PATH) {
            return Err((
                "url",
                format!(
                    "give Loki's base URL without {PUSH_PATH} (herald adds it), e.g. {:?}",
                    self.base().trim_end_matches(PUSH_PATH)
                ),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err((
                "username",
                "give both username and password, or neither".into(),
            ));
        }
        if self.bearer_token.is_some() && self.username.is_some() {
            return Err((
                "bearer_token",
                "use either basic auth (username and password) or bearer_token, not both".into(),
            ));
        }
        if self.tenant.as_deref().is_some_and(str::is_empty) {
            return Err((
                "tenant",
                "is empty; give the tenant ID (X-Scope-OrgID) or remove the key".into(),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms", "must be at least 1".into()));
        }
        if self.labels.is_empty() {
            return Err((
                "labels",
                "is empty; list some of \"type\", \"source\", \"level\", \"host\", \"outcome\", \"command\", \
                 e.g. labels = [\"type\", \"source\", \"level\", \"host\"]"
                    .into(),
            ));
        }
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(label) {
                return Err((
                    "labels",
                    format!("lists \"{}\" twice; list each label once", label.name()),
                ));
            }
        }
        // Loki refuses a stream without labels; `type` and `source` are the only
        // labels every event has.
        if !self
            .labels
            .iter()
            .any(|label| matches!(label, LokiLabel::Type | LokiLabel::Source))
            && self.static_labels.is_empty()
        {
            return Err((
                "labels",
                "some events would have no label at all, which Loki refuses; add \"type\" or \"source\" \
                 to labels, or set static_labels = { job = \"herald\" }"
                    .into(),
            ));
        }
        for (name, value) in &self.static_labels {
            if !valid_label_name(name) {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} is not a valid Loki label name; use letters, digits and `_`, \
                         not starting with a digit (e.g. \"sense_env\")"
                    ),
                ));
            }
            if name.starts_with("__") {
                return Err((
                    "static_labels",
                    format!("{name:?}: names starting with `__` are reserved by Loki; rename it"),
                ));
            }
            if self.labels.iter().any(|label| label.name() == name) {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} is also in labels, so a stream would have it twice; \
                         rename the static label or remove it from labels"
                    ),
                ));
            }
            if value.is_empty() {
                return Err((
                    "static_labels",
                    format!(
                        "{name:?} has an empty value, which Loki drops; give a value or remove it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An HTTP client with this sink's timeout and extra CAs.
    pub(super) fn client(&self) -> Result<reqwest::Client, String> {
        transport::client(self.timeout_ms, self.tls_ca_file.as_deref())
    }

    /// The base URL without its query (which may carry a key) and without a
    /// trailing `/`: for messages, and for telling whether it names the push
    /// path itself.
    pub(super) fn base(&self) -> &str {
        self.url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
    }

    /// The URL of Loki's `path` (such as [`PUSH_PATH`]) under the base URL:
    /// `path` appended to the base's path, the base's query (a gateway may
    /// want one) kept.
    pub(super) fn endpoint(&self, path: &str) -> Result<reqwest::Url, String> {
        let mut url =
            reqwest::Url::parse(&self.url).map_err(|err| format!("url {:?}: {err}", self.url))?;
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_fragment(None);
        Ok(url)
    }

    /// The push URL.
    pub(super) fn push_url(&self) -> Result<reqwest::Url, String> {
        self.endpoint(PUSH_PATH)
    }

    /// Adds the tenant and the configured credentials to a request.
    pub(super) fn authorise(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        if let Some(tenant) = &self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            request = request.basic_auth(user, Some(password.expose()));
        } else if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::loki::config_from as config;

    #[test]
    fn the_push_url_is_under_the_base_url() {
        assert_eq!(
            config("url = \"https://logs.example.com/\"")
                .push_url()
                .unwrap()
                .as_str(),
            "https://logs.example.com/loki/api/v1/push"
        );
        assert_eq!(
            config("url = \"http://gw:8080/tenant-a\"")
                .push_url()
                .unwrap()
                .as_str(),
            "http://gw:8080/tenant-a/loki/api/v1/push"
        );
    }

    #[test]
    fn a_query_on_the_base_url_stays_a_query() {
        let c = config("url = \"https://gw.example.com/loki/?org=sense#top\"");
        assert_eq!(
            c.push_url().unwrap().as_str(),
            "https://gw.example.com/loki/loki/api/v1/push?org=sense"
        );
        assert_eq!(
            c.endpoint("/ready").unwrap().as_str(),
            "https://gw.example.com/loki/ready?org=sense"
        );
        // Messages name the server, not the query.
        assert_eq!(c.base(), "https://gw.example.com/loki");
        assert!(
            config("url = \"http://loki:3100/loki/api/v1/push?x=1\"")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_valid_config_passes() {
        let c = config(
            "url = \"https://loki:3100\"\ntenant = \"sense\"\nusername = \"u\"\npassword = \"p\"\n\
             static_labels = { job = \"herald\", _env2 = \"x\" }",
        );
        assert_eq!(c.validate(), Ok(()));
        let c = config(
            "url = \"http://loki\"\nbearer_token = \"t\"\nlabels = [\"level\"]\nstatic_labels = { job = \"h\" }",
        );
        assert_eq!(c.validate(), Ok(()));
    }

    /// The key and message of the first problem.
    fn problem(text: &str) -> (&'static str, String) {
        config(text).validate().unwrap_err()
    }

    #[test]
    fn validation_names_the_key_and_the_fix() {
        let (key, message) = problem("url = \"http://loki:3100/loki/api/v1/push\"");
        assert_eq!(key, "url");
        assert!(message.contains("\"http://loki:3100\""), "{message}");

        let (key, message) = problem("url = \"http://loki\"\nusername = \"u\"");
        assert_eq!(key, "username");
        assert!(message.contains("both username and password"), "{message}");
        assert_eq!(
            problem("url = \"http://loki\"\npassword = \"p\"").0,
            "username"
        );
        let (key, message) = problem(
            "url = \"http://loki\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"",
        );
        assert_eq!(key, "bearer_token");
        assert!(message.contains("not both"), "{message}");
        assert_eq!(problem("url = \"http://loki\"\ntenant = \"\"").0, "tenant");
    }

    #[test]
    fn validation_checks_labels() {
        let (key, message) = problem("url = \"http://loki\"\nlabels = []");
        assert_eq!(key, "labels");
        assert!(message.contains("labels = [\"type\""), "{message}");
        let (key, message) =
            problem("url = \"http://loki\"\nlabels = [\"type\", \"host\", \"host\"]");
        assert_eq!(key, "labels");
        assert!(message.contains("\"host\" twice"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nlabels = [\"level\", \"host\"]");
        assert_eq!(key, "labels");
        assert!(message.contains("static_labels"), "{message}");
        assert!(toml::from_str::<LokiConfig>("url = \"x\"\nlabels = [\"user\"]").is_err());
    }

    #[test]
    fn validation_checks_static_label_names_and_values() {
        for name in ["\"9lives\"", "\"sense-env\"", "\"\"", "\"é\""] {
            let (key, message) = problem(&format!(
                "url = \"http://loki\"\nstatic_labels = {{ {name} = \"x\" }}"
            ));
            assert_eq!(key, "static_labels", "{name}");
            assert!(message.contains("not a valid Loki label name"), "{message}");
        }
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { __name = \"x\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("reserved"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { host = \"x\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("also in labels"), "{message}");
        let (key, message) = problem("url = \"http://loki\"\nstatic_labels = { job = \"\" }");
        assert_eq!(key, "static_labels");
        assert!(message.contains("empty value"), "{message}");
    }

    #[test]
    fn label_names_follow_loki_rules() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("_x9"));
        assert!(valid_label_name("Env_2"));
        assert!(!valid_label_name(""));
        assert!(!valid_label_name("2x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name("a.b"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = config(
            "url = \"http://loki\"\nusername = \"u\"\npassword = \"hunter2\"\nbearer_token = \"tok3n\"",
        );
        let shown = format!("{c:?}{}", toml::to_string(&c).unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
    }
}
