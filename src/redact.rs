//! Redaction: every secret value herald knows is removed from what it writes out.
//!
//! A [`Redactor`] is built when the config is loaded (`Config::redactor`) and
//! installed process-wide ([`install`]) by the command that runs with that
//! config. Every output channel passes its text through [`text`] or [`bytes`]:
//! each log line ([`RedactingWriter`]), `/health`, `herald check`, the errors
//! the command prints, dead-letter records and sink error messages.
//!
//! It works on values, not on config keys or on how a URL is spelled. It knows:
//!
//! * the value of every [`crate::secret::Secret`] (passwords, tokens, webhook
//!   URLs, header values, HMAC keys);
//! * of every URL, secret or not: the password of its userinfo, every query
//!   value, and every path segment that looks like a token (at least
//!   16 characters mixing two of lower case, upper case and digits, such as the
//!   last part of a Slack webhook or a Teams workflow id);
//! * each URL as written, as an HTTP client prints it (scheme and host in lower
//!   case, default port such as `:443` dropped, `/` path added) and without its
//!   userinfo (which HTTP clients move into a header).
//!
//! Each value is registered as written, percent-decoded, percent-encoded
//! (upper- and lower-case hex, `+` for a space), and as JSON and Rust debug
//! output escape it. A secret URL becomes `<redacted>`; any other URL keeps its
//! scheme, host, port and the rest of its path, with the secret parts replaced.
//!
//! What it does not do: a value shorter than [`MIN_LEN`] characters is not
//! registered, because replacing it everywhere would mangle ordinary text (a
//! URL as a whole is still replaced, whatever the length of its password); a
//! user name is not treated as secret; and text from the network (events) is
//! passed through as it is, apart from the known values.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io;
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::Url;
use tracing_subscriber::fmt::MakeWriter;

use crate::secret::REDACTED;

/// Shortest value, in characters, that is redacted wherever it appears.
pub const MIN_LEN: usize = 6;

/// Shortest URL path segment taken for a token.
const TOKEN_MIN_LEN: usize = 16;

/// What percent-encoding leaves alone: RFC 3986's unreserved characters.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Replaces every known secret value in a text with `<redacted>`.
#[derive(Default)]
pub struct Redactor {
    /// Every spelling of every value; `None` when there is none.
    matcher: Option<AhoCorasick>,
    /// What each pattern of `matcher` is replaced with, by pattern index.
    replacements: Vec<String>,
    /// The patterns, by index (for [`Redactor::with`]).
    patterns: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("spellings", &self.replacements.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for the values of both `self` and `other` (after a config
    /// reload: the new config's secrets, and the old one's that sinks still
    /// draining may write).
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn with(&self, other: &Redactor) -> Result<Redactor, String> {
        let mut builder = Builder::default();
        for (pattern, replacement) in self
            .patterns
            .iter()
            .zip(&self.replacements)
            .chain(other.patterns.iter().zip(&other.replacements))
        {
            builder.add(pattern.clone(), replacement.clone());
        }
        builder.build()
    }

    /// Starts an empty set of values.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `text` with every known value replaced; borrowed when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        if !matcher.is_match(text) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        matcher.replace_all_with(text, &mut out, |found, _, out| {
            out.push_str(&self.replacements[found.pattern().as_usize()]);
            true
        });
        Cow::Owned(out)
    }

    /// As [`Redactor::redact`], for bytes (a log line, a dead-letter record).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(bytes);
        };
        if !matcher.is_match(bytes) {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        matcher.replace_all_with_bytes(bytes, &mut out, |found, _, out| {
            out.extend_from_slice(self.replacements[found.pattern().as_usize()].as_bytes());
            true
        });
        Cow::Owned(out)
    }

    /// How many spellings it replaces.
    pub fn len(&self) -> usize {
        self.replacements.len()
    }

    /// Whether it replaces nothing.
    pub fn is_empty(&self) -> bool {
        self.replacements.is_empty()
    }
}

/// Collects the values a [`Redactor`] replaces.
#[derive(Debug, Default)]
pub struct Builder {
    /// Spelling → what replaces it.
    patterns: BTreeMap<String, String>,
}

impl Builder {
    /// A secret value: replaced in every spelling; when it is a URL, its
    /// normalised spellings and its secret parts too.
    pub fn secret(&mut self, value: &str) -> &mut Builder {
        self.value(value);
        if let Some(url) = parse_url(value) {
            for spelling in url_spellings(value, &url) {
                self.add(spelling, REDACTED.to_string());
            }
            self.url_parts(&url);
        }
        self
    }

    /// A URL that is not secret as a whole (an InfluxDB or Loki base URL): its
    /// password, query values and token-like path segments are replaced, and
    /// so is the URL itself, by a copy with those parts replaced.
    pub fn url(&mut self, text: &str) -> &mut Builder {
        let Some(url) = parse_url(text) else {
            return self;
        };
        for spelling in url_spellings(text, &url) {
            if let Some(masked) = masked(&spelling) {
                self.add(spelling, masked);
            }
        }
        self.url_parts(&url);
        self
    }

    /// Builds the redactor.
    ///
    /// # Errors
    ///
    /// When the values are beyond what the matcher can hold (far more than a
    /// config has); nothing could then be redacted, so the config is refused.
    pub fn build(&self) -> Result<Redactor, String> {
        let (patterns, replacements): (Vec<String>, Vec<String>) = self
            .patterns
            .iter()
            .map(|(pattern, replacement)| (pattern.clone(), replacement.clone()))
            .unzip();
        if patterns.is_empty() {
            return Ok(Redactor::default());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|err| format!("too many secret values to redact: {err}"))?;
        Ok(Redactor {
            matcher: Some(matcher),
            replacements,
            patterns,
        })
    }

    /// A value in every spelling, unless too short.
    fn value(&mut self, value: &str) {
        for spelling in spellings(value) {
            self.add(spelling, REDACTED.to_string());
        }
    }

    /// The secret parts of a URL: password, query values, token-like segments, fragment.
    fn url_parts(&mut self, url: &Url) {
        if let Some(password) = url.password() {
            self.value(password);
        }
        for pair in url.query().unwrap_or("").split('&') {
            self.value(pair.split_once('=').map_or(pair, |(_, value)| value));
        }
        for segment in url.path().split('/').filter(|s| looks_like_token(s)) {
            self.value(segment);
        }
        if let Some(fragment) = url.fragment() {
            self.value(fragment);
        }
    }

    fn add(&mut self, pattern: String, replacement: String) {
        if pattern.chars().count() < MIN_LEN || pattern == replacement {
            return;
        }
        // When two values share a spelling, the wholly redacted one wins.
        let slot = self.patterns.entry(pattern).or_default();
        if slot.as_str() != REDACTED {
            *slot = replacement;
        }
    }
}

/// A URL with a host, in any scheme.
fn parse_url(text: &str) -> Option<Url> {
    Url::parse(text.trim()).ok().filter(Url::has_host)
}

/// How a URL may be printed: as written, normalised, without userinfo; each
/// also without a trailing `/` (a base URL before a path is added).
fn url_spellings(text: &str, url: &Url) -> BTreeSet<String> {
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let mut out = BTreeSet::new();
    for spelling in [text.trim(), url.as_str(), bare.as_str()] {
        out.insert(spelling.to_string());
        out.insert(spelling.trim_end_matches('/').to_string());
    }
    out
}

/// A URL spelling with its secret parts replaced, when it has any.
fn masked(spelling: &str) -> Option<String> {
    let url = Url::parse(spelling).ok()?;
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(url.username());
        if url.password().is_some() {
            out.push(':');
            out.push_str(REDACTED);
        }
        out.push('@');
    }
    if let Some(host) = url.host() {
        let _ = write!(out, "{host}");
    }
    if let Some(port) = url.port() {
        let _ = write!(out, ":{port}");
    }
    let path: Vec<&str> = url
        .path()
        .split('/')
        .map(|segment| {
            if looks_like_token(segment) {
                REDACTED
            } else {
                segment
            }
        })
        .collect();
    out.push_str(&path.join("/"));
    if let Some(query) = url.query() {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                None if pair.chars().count() >= MIN_LEN => REDACTED.to_string(),
                None => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if url.fragment().is_some() {
        out.push('#');
        out.push_str(REDACTED);
    }
    if !spelling.ends_with('/') && url.path() == "/" && url.query().is_none() {
        out.truncate(out.trim_end_matches('/').len());
    }
    out.contains(REDACTED).then_some(out)
}

/// Whether a URL path segment looks like a token rather than a word.
fn looks_like_token(segment: &str) -> bool {
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    let classes = [
        decoded.chars().any(|c| c.is_ascii_lowercase()),
        decoded.chars().any(|c| c.is_ascii_uppercase()),
        decoded.chars().any(|c| c.is_ascii_digit()),
    ];
    decoded.chars().count() >= TOKEN_MIN_LEN && classes.iter().filter(|&&c| c).count() >= 2
}

/// The spellings of a value: as written, decoded, encoded, escaped.
fn spellings(value: &str) -> BTreeSet<String> {
    let plain: BTreeSet<String> = [
        value.to_string(),
        percent_decode_str(value).decode_utf8_lossy().into_owned(),
        percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned(),
    ]
    .into();
    let mut out = BTreeSet::new();
    for text in plain {
        let encoded = utf8_percent_encode(&text, COMPONENT).to_string();
        out.insert(encoded.replace("%20", "+"));
        out.insert(lower_hex(&encoded));
        out.insert(encoded);
        out.insert(text);
    }
    let escaped: Vec<String> = out
        .iter()
        .flat_map(|text| {
            let json = serde_json::to_string(text).unwrap_or_default();
            let debug = format!("{text:?}");
            [unquote(&json).to_string(), unquote(&debug).to_string()]
        })
        .collect();
    out.extend(escaped);
    out.retain(|text| !text.is_empty());
    out
}

/// `"text"` without its quotes.
fn unquote(quoted: &str) -> &str {
    quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(quoted)
}

/// Percent-escapes written with lower-case hex digits.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The redactor every output channel uses; none until a config is loaded.
static CURRENT: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Makes `redactor` the one every output channel uses, replacing the previous one.
pub fn install(redactor: Arc<Redactor>) {
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = Some(redactor);
}

fn current() -> Option<Arc<Redactor>> {
    CURRENT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// `text` with every value of the installed redactor replaced.
pub fn text(text: &str) -> Cow<'_, str> {
    match current() {
        Some(redactor) => match redactor.redact(text) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(out) => Cow::Owned(out),
        },
        None => Cow::Borrowed(text),
    }
}

/// As [`text`], for an owned string (returned as it is when nothing matched).
pub fn string(text: String) -> String {
    match self::text(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(out) => out,
    }
}

/// As [`text`], for bytes.
pub fn bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    match current() {
        Some(redactor) => match redactor.redact_bytes(bytes) {
            Cow::Borrowed(_) => Cow::Borrowed(bytes),
            Cow::Owned(out) => Cow::Owned(out),
        },
        None => Cow::Borrowed(bytes),
    }
}

/// A log writer that redacts: each formatted log line is collected whole and
/// passed through [`bytes`] before it reaches the inner writer, so no log call
/// anywhere can print a known secret.
#[derive(Debug)]
pub struct RedactingWriter<M> {
    inner: M,
}

impl<M> RedactingWriter<M> {
    /// Wraps a writer maker such as `std::io::stderr`.
    pub fn new(inner: M) -> RedactingWriter<M> {
        RedactingWriter { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingWriter<M> {
    type Writer = RedactedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine {
            line: Vec::with_capacity(256),
            inner: self.inner.make_writer(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactedLine {
            line: Vec::with_capacity(256),
            inner: self.inner.make_writer_for(meta),
        }
    }
}

/// One log line being written; redacted and passed on when dropped.
#[derive(Debug)]
pub struct RedactedLine<W: io::Write> {
    line: Vec<u8>,
    inner: W,
}

impl<W: io::Write> io::Write for RedactedLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Does nothing: the line goes out whole when it is complete, so that a
    /// secret split across writes is still found.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: io::Write> Drop for RedactedLine<W> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        // Nowhere to report a log line that cannot be written.
        let _ = self.inner.write_all(&bytes(&self.line));
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redactor_with_another_redacts_the_values_of_both() {
        let old = Redactor::builder()
            .secret("old-secret-value")
            .build()
            .unwrap();
        let new = Redactor::builder()
            .url("https://u:new-password-1@loki.example/push")
            .build()
            .unwrap();
        let both = old.with(&new).unwrap();
        let text = "old-secret-value and https://u:new-password-1@loki.example/push";
        let redacted = both.redact(text);
        assert!(!redacted.contains("old-secret-value"), "{redacted}");
        assert!(!redacted.contains("new-password-1"), "{redacted}");
        assert_eq!(both.len(), old.len() + new.len());
    }

    const SIG: &str = "Zx9QwErTy_UiOp-AsDfGh1JkLmNbVcX2zQwE3rTyUi0";
    const WORKFLOW: &str = "3f2a9c41d0b84e7f9a6c5b1d2e3f4a5b";
    const TEAMS: &str = "HTTPS://Prod-12.WestEurope.logic.azure.com:443/workflows/3f2a9c41d0b84e7f9a6c5b1d2e3f4a5b/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zx9QwErTy_UiOp-AsDfGh1JkLmNbVcX2zQwE3rTyUi0";

    fn redactor(secrets: &[&str], urls: &[&str]) -> Redactor {
        let mut builder = Redactor::builder();
        for secret in secrets {
            builder.secret(secret);
        }
        for url in urls {
            builder.url(url);
        }
        builder.build().unwrap()
    }

    #[test]
    fn a_secret_url_is_redacted_however_the_http_client_spells_it() {
        let r = redactor(&[TEAMS], &[]);
        // What the HTTP client prints: scheme and host in lower case, no :443.
        let normalised = Url::parse(TEAMS).unwrap().to_string();
        assert!(normalised.starts_with("https://prod-12.westeurope.logic.azure.com/workflows/"));
        let message = format!("error sending request for url ({normalised}): connection refused");
        assert_eq!(
            r.redact(&message),
            "error sending request for url (<redacted>): connection refused"
        );
        // A server echoing parts of it, decoded or not.
        for echoed in [
            format!("no workflow {WORKFLOW}"),
            format!("bad signature {SIG}"),
            "path /triggers/manual/run".to_string(),
        ] {
            let out = r.redact(&echoed);
            assert!(
                !out.contains(SIG) && !out.contains(WORKFLOW),
                "{echoed} -> {out}"
            );
            assert!(out.contains(REDACTED), "{echoed} -> {out}");
        }
    }

    #[test]
    fn an_upper_case_scheme_and_a_slack_path_are_redacted() {
        let slack = "HTTP://hooks.slack.com/services/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";
        let r = redactor(&[slack], &[]);
        let out = r.redact("error sending request for url (http://hooks.slack.com/services/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)");
        assert_eq!(out, "error sending request for url (<redacted>)");
        assert_eq!(
            r.redact("invalid_token q8Wz3NvY5tLm2KpR7xJc4HsD"),
            "invalid_token <redacted>"
        );
    }

    #[test]
    fn userinfo_passwords_are_redacted_encoded_and_decoded_and_the_url_stays_readable() {
        let r = redactor(&[], &["HTTP://herald:Pa%21ss%2Fw0rd-42@InfluxDB.corp:8086"]);
        for text in [
            "password Pa%21ss%2Fw0rd-42",
            "password Pa!ss/w0rd-42",
            "password Pa%21ss%2fw0rd-42",
            "{\"password\":\"Pa!ss/w0rd-42\"}",
        ] {
            let out = r.redact(text);
            assert!(
                !out.contains("w0rd-42") && out.contains(REDACTED),
                "{text} -> {out}"
            );
        }
        assert_eq!(
            r.redact("url = \"HTTP://herald:Pa%21ss%2Fw0rd-42@InfluxDB.corp:8086\""),
            "url = \"http://herald:<redacted>@influxdb.corp:8086\""
        );
        assert_eq!(
            r.redact(
                "cannot reach InfluxDB at HTTP://herald:Pa%21ss%2Fw0rd-42@InfluxDB.corp:8086/ping"
            ),
            "cannot reach InfluxDB at http://herald:<redacted>@influxdb.corp:8086/ping"
        );
        // The user name and a URL without secrets are left alone.
        assert_eq!(
            r.redact("http://influxdb.corp:8086/write?db=herald"),
            "http://influxdb.corp:8086/write?db=herald"
        );
    }

    #[test]
    fn a_short_password_is_still_redacted_inside_its_url() {
        let r = redactor(&["pw"], &["http://u:pw@db:8086"]);
        assert_eq!(
            r.redact("url http://u:pw@db:8086 and pw upwards"),
            "url http://u:<redacted>@db:8086 and pw upwards"
        );
    }

    #[test]
    fn query_values_of_any_url_are_redacted() {
        let r = redactor(&[], &["https://gw.corp/loki?api_key=k3y-Abc%2B123"]);
        assert_eq!(
            r.redact("https://gw.corp/loki?api_key=k3y-Abc%2B123 and k3y-Abc+123"),
            "https://gw.corp/loki?api_key=<redacted> and <redacted>"
        );
    }

    #[test]
    fn secrets_are_redacted_as_json_and_debug_output_escape_them() {
        let r = redactor(&["pa\"ss\\word"], &[]);
        assert_eq!(r.redact("x pa\"ss\\word"), "x <redacted>");
        assert_eq!(r.redact(r#"{"e":"pa\"ss\\word"}"#), r#"{"e":"<redacted>"}"#);
        assert_eq!(r.redact_bytes(b"e=pa\"ss\\word").as_ref(), b"e=<redacted>");
    }

    #[test]
    fn short_values_and_ordinary_text_are_left_alone() {
        let r = redactor(&["p4ss", "hunter2-secret"], &["http://127.0.0.1:8086"]);
        assert_eq!(r.redact("p4ss passes"), "p4ss passes");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert_eq!(r.redact("x hunter2-secret y"), "x <redacted> y");
        assert!(Redactor::default().is_empty());
    }

    #[test]
    fn path_segments_are_tokens_only_when_long_and_mixed() {
        assert!(looks_like_token(WORKFLOW));
        assert!(looks_like_token("q8Wz3NvY5tLm2KpR7xJc4HsD"));
        assert!(!looks_like_token("T0AB12CD3"));
        assert!(!looks_like_token("powerautomate-workflows"));
        assert!(!looks_like_token("invoke"));
    }

    #[test]
    fn the_installed_redactor_covers_text_bytes_and_every_log_line() {
        let mut builder = Redactor::builder();
        builder.secret("installed-secret-value-1");
        install(Arc::new(builder.build().unwrap()));
        assert_eq!(text("a installed-secret-value-1 b"), "a <redacted> b");
        assert_eq!(bytes(b"installed-secret-value-1").as_ref(), b"<redacted>");

        let lines = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let writer = RedactingWriter::new(move || SharedVec(sink.clone()));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                err = "token installed-secret-value-1 refused",
                "delivery failed"
            );
        });
        let logged = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("delivery failed"), "{logged}");
        assert!(logged.contains("token <redacted> refused"), "{logged}");
        assert!(!logged.contains("installed-secret-value-1"), "{logged}");
    }

    struct SharedVec(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for SharedVec {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
