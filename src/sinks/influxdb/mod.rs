//! The `influxdb` sink: batches of line protocol to InfluxDB 1.x (`/write`) or
//! 2.x/3.x (`/api/v2/write`), gzipped, stamped with each event's own time.
//!
//! When InfluxDB refuses a batch as malformed (400, 413, 422) the batch is split
//! in halves and each half sent again ([`isolate`]), down to single lines, so
//! only the events InfluxDB really cannot take go to the dead-letter file;
//! points already written are rewritten identically, which InfluxDB stores
//! once. Everything else (network errors, 5xx, 429, auth and missing-database
//! errors) is retried by the driver. [`check_connection`] says plainly when the
//! server, the database or bucket, or the credentials are wrong (`herald check
//! --connect` and start-up).

pub mod line;
pub mod schema;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::isolate::{self, PostRange, Refusals};
use super::transport;
use super::{Sink, SinkError};
use crate::event::{Event, prefetch};
use crate::secret::Secret;
pub use schema::{Api, Schema};

/// Settings of an `influxdb` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxdbConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `v1` (database, user, password) or `v2` (org, bucket, token; InfluxDB 3 too).
    #[serde(default)]
    pub api: Api,
    /// Which names to write: `herald` or `butler-sos`.
    #[serde(default)]
    pub schema: Schema,
    /// v1: the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// v1: the retention policy; default: the database's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
    /// v1: user name, when authentication is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// v1: password (`${ENV}` or `file:/path` keep it out of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// v2: the organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// v2: the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// v2: the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Gzip request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "transport::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust for `https` URLs. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

impl InfluxdbConfig {
    /// Checks the keys that depend on `api`; returns the key and the problem.
    /// (`url` is checked with every HTTP sink's, by the config loader.)
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first thing wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self.api {
            Api::V1 => {
                if self.database.as_deref().is_none_or(str::is_empty) {
                    return Err(("database", "api = \"v1\" needs database = \"...\"".into()));
                }
                if self.password.is_some() != self.username.is_some() {
                    return Err((
                        "username",
                        "give both username and password, or neither".into(),
                    ));
                }
                if self.org.is_some() || self.bucket.is_some() || self.token.is_some() {
                    return Err(("api", "org, bucket and token are for api = \"v2\"; set api = \"v2\" or remove them".into()));
                }
            }
            Api::V2 => {
                for (key, value) in [("org", &self.org), ("bucket", &self.bucket)] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        return Err((key, format!("api = \"v2\" needs {key} = \"...\"")));
                    }
                }
                if self.token.is_none() {
                    return Err(("token", "api = \"v2\" needs token = \"${INFLUX_TOKEN}\" (or a literal, or file:/path)".into()));
                }
                if self.database.is_some() || self.username.is_some() || self.password.is_some() {
                    return Err(("api", "database, username and password are for api = \"v1\"; use org, bucket and token".into()));
                }
            }
        }
        Ok(())
    }

    /// An HTTP client with this sink's timeout and extra CAs.
    fn client(&self) -> Result<reqwest::Client, String> {
        transport::client(self.timeout_ms, self.tls_ca_file.as_deref())
    }

    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The write URL with its query string.
    fn write_url(&self) -> Result<reqwest::Url, String> {
        let mut url = match self.api {
            Api::V1 => reqwest::Url::parse(&format!("{}/write", self.base())),
            Api::V2 => reqwest::Url::parse(&format!("{}/api/v2/write", self.base())),
        }
        .map_err(|err| format!("url: {err}"))?;
        {
            let mut query = url.query_pairs_mut();
            match self.api {
                Api::V1 => {
                    query.append_pair("db", self.database.as_deref().unwrap_or(""));
                    if let Some(rp) = &self.retention_policy {
                        query.append_pair("rp", rp);
                    }
                }
                Api::V2 => {
                    query.append_pair("org", self.org.as_deref().unwrap_or(""));
                    query.append_pair("bucket", self.bucket.as_deref().unwrap_or(""));
                }
            }
            query.append_pair("precision", "ns");
        }
        Ok(url)
    }

    /// Adds the configured credentials to a request.
    fn authorise(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.api {
            Api::V1 => match (&self.username, &self.password) {
                (Some(user), Some(password)) => request.basic_auth(user, Some(password.expose())),
                _ => request,
            },
            Api::V2 => match &self.token {
                Some(token) => request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Token {}", token.expose()),
                ),
                None => request,
            },
        }
    }
}

/// The `influxdb` sink.
#[derive(Debug)]
pub struct InfluxdbSink {
    config: Arc<InfluxdbConfig>,
    client: reqwest::Client,
    url: reqwest::Url,
    body: Vec<u8>,
    /// Where each event's line starts in `body` (plus the end, last).
    starts: Vec<usize>,
}

impl InfluxdbSink {
    /// Builds the sink (no I/O).
    ///
    /// # Errors
    ///
    /// When the URL or the TLS settings are unusable.
    pub fn new(config: &InfluxdbConfig) -> Result<InfluxdbSink, String> {
        Ok(InfluxdbSink {
            client: config.client()?,
            url: config.write_url()?,
            config: Arc::new(config.clone()),
            body: Vec::with_capacity(1 << 20),
            starts: Vec::new(),
        })
    }
}

/// What InfluxDB refuses as malformed, never to be written: a bad line (400),
/// a body too large (413), a type conflict (422).
const REFUSALS: Refusals = Refusals {
    destination: "InfluxDB",
    items: "points",
    bad_data: &[400, 413, 422],
};

impl PostRange for InfluxdbSink {
    /// Posts the lines of events `range` (indexes into `starts`).
    async fn post(&mut self, range: std::ops::Range<usize>) -> Result<(), SinkError> {
        let lines = &self.body[self.starts[range.start]..self.starts[range.end]];
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        request = if self.config.gzip {
            request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(transport::gzip(lines))
        } else {
            request.body(lines.to_vec())
        };
        let response = self
            .config
            .authorise(request)
            .send()
            .await
            .map_err(|err| transport::network_error(&err))?;
        transport::check(response).await.map(drop)
    }
}

impl Sink for InfluxdbSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        self.body.clear();
        self.starts.clear();
        for event in prefetch::ahead(batch) {
            self.starts.push(self.body.len());
            schema::write(&mut self.body, event, self.config.schema, self.config.api);
        }
        self.starts.push(self.body.len());
        isolate::deliver(&REFUSALS, batch.len(), self).await
    }
}

/// Checks that InfluxDB answers, the database or bucket exists and the
/// credentials work. Returns a one-line summary, or what is wrong and the fix.
///
/// # Errors
///
/// A message naming the problem and how to fix it.
pub async fn check_connection(config: &InfluxdbConfig) -> Result<String, String> {
    let client = config.client()?;
    let base = config.base();
    let unreachable = |err: reqwest::Error| {
        format!(
            "cannot reach InfluxDB at {base}: {}; check url and that InfluxDB is running",
            transport::network_error(&err).message
        )
    };
    match config.api {
        Api::V1 => {
            let ping = client
                .get(format!("{base}/ping"))
                .send()
                .await
                .map_err(unreachable)?;
            if !ping.status().is_success() {
                return Err(format!(
                    "{base}/ping answered HTTP {}; is this InfluxDB 1.x?",
                    ping.status().as_u16()
                ));
            }
            let version = header(&ping, "x-influxdb-version");
            let query = config
                .authorise(client.post(url_with(
                    &format!("{base}/query"),
                    &[("q", "SHOW DATABASES")],
                )?))
                .send()
                .await
                .map_err(unreachable)?;
            let status = query.status().as_u16();
            let body = query.text().await.unwrap_or_default();
            if status == 401 || status == 403 {
                return Err(format!(
                    "InfluxDB at {base} refused the credentials (HTTP {status}); check username and password"
                ));
            }
            if status != 200 {
                return Err(format!(
                    "InfluxDB at {base} answered SHOW DATABASES with HTTP {status}: {body}"
                ));
            }
            let database = config.database.as_deref().unwrap_or("");
            if !database_listed(&body, database) {
                return Err(format!(
                    "database {database:?} does not exist on {base}; create it with: influx -execute 'CREATE DATABASE \"{database}\"'"
                ));
            }
            Ok(format!(
                "InfluxDB {version} at {base}: database {database:?} is ready"
            ))
        }
        Api::V2 => {
            let health = client
                .get(format!("{base}/health"))
                .send()
                .await
                .map_err(unreachable)?;
            if !health.status().is_success() {
                return Err(format!(
                    "{base}/health answered HTTP {}; is this InfluxDB 2.x or 3.x?",
                    health.status().as_u16()
                ));
            }
            let org = config.org.as_deref().unwrap_or("");
            let bucket = config.bucket.as_deref().unwrap_or("");
            let response = config
                .authorise(client.get(url_with(
                    &format!("{base}/api/v2/buckets"),
                    &[("org", org), ("name", bucket)],
                )?))
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            match status {
                200 if bucket_listed(&body, bucket) => Ok(format!(
                    "InfluxDB at {base}: bucket {bucket:?} in org {org:?} is ready"
                )),
                200 => Err(format!(
                    "bucket {bucket:?} does not exist in org {org:?} on {base}; create it (influx bucket create -n {bucket} -o {org})"
                )),
                401 | 403 => Err(format!(
                    "InfluxDB at {base} refused the token (HTTP {status}); check token and its write permission on {bucket:?}"
                )),
                404 => Err(format!(
                    "org {org:?} or bucket {bucket:?} not found on {base}: {body}"
                )),
                _ => Err(format!("InfluxDB at {base} answered HTTP {status}: {body}")),
            }
        }
    }
}

/// `base` with a query string.
fn url_with(base: &str, pairs: &[(&str, &str)]) -> Result<reqwest::Url, String> {
    reqwest::Url::parse_with_params(base, pairs).map_err(|err| format!("url {base:?}: {err}"))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(unknown version)")
        .to_string()
}

/// Whether a `GET /api/v2/buckets` answer lists `bucket`.
fn bucket_listed(body: &str, bucket: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|value| {
        value["buckets"]
            .as_array()
            .is_some_and(|buckets| buckets.iter().any(|b| b["name"] == bucket))
    })
}

/// Whether a `SHOW DATABASES` answer lists `database`.
fn database_listed(body: &str, database: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    value["results"][0]["series"][0]["values"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|row| row[0] == database))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> InfluxdbConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn v1_write_url_has_database_policy_and_precision() {
        let c = config(
            "url = \"http://db:8086/\"\ndatabase = \"sense logs\"\nretention_policy = \"week\"",
        );
        assert_eq!(
            c.write_url().unwrap().as_str(),
            "http://db:8086/write?db=sense+logs&rp=week&precision=ns"
        );
    }

    #[test]
    fn v2_write_url_has_org_and_bucket() {
        let c = config(
            "url = \"https://db\"\napi = \"v2\"\norg = \"acme\"\nbucket = \"sense\"\ntoken = \"t\"",
        );
        assert_eq!(
            c.write_url().unwrap().as_str(),
            "https://db/api/v2/write?org=acme&bucket=sense&precision=ns"
        );
    }

    #[test]
    fn validation_names_the_missing_key() {
        assert_eq!(
            config("url = \"http://db\"").validate().unwrap_err().0,
            "database"
        );
        let v2 = config("url = \"http://db\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"");
        assert_eq!(v2.validate().unwrap_err().0, "token");
        let mixed = config("url = \"http://db\"\ndatabase = \"d\"\ntoken = \"t\"");
        assert_eq!(mixed.validate().unwrap_err().0, "api");
    }

    #[test]
    fn show_databases_answer_is_read() {
        let body = r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["_internal"],["herald"]]}]}]}"#;
        assert!(database_listed(body, "herald"));
        assert!(!database_listed(body, "other"));
    }

    #[test]
    fn the_token_is_redacted_in_debug_output() {
        let c = config(
            "url = \"http://db\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"supersecret\"",
        );
        assert!(!format!("{c:?}").contains("supersecret"));
        assert!(!toml::to_string(&c).unwrap().contains("supersecret"));
    }
}
