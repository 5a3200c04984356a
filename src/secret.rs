//! Secrets in config: passwords, tokens and webhook URLs.
//!
//! A [`Secret`] is written in config as a literal, as `${ENV_VAR}` (read from the
//! environment) or as `file:/path/to/file` (read from a file, trailing newline
//! stripped), so it never has to sit in the config file. The reference is resolved
//! once, by [`Secret::resolve`], when the config is loaded: a value read from the
//! environment or a file is taken as it is, never resolved again (an environment
//! value starting with `file:` is not a path). A secret is never shown: `Debug`,
//! `Display` and `Serialize` (what `herald check` prints) all write `"<redacted>"`.
//!
//! Keeping the value out of everything else herald writes is [`crate::redact`]'s
//! job: the config loader collects every secret deserialised ([`collect`]) and
//! hands the values to the redactor.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted secret looks like in output.
pub const REDACTED: &str = "<redacted>";

/// A secret value from config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
}

impl Secret {
    /// Resolves a config string: `${VAR}`, `file:PATH` or a literal.
    ///
    /// # Errors
    ///
    /// When the variable is unset or the file cannot be read; the message says which.
    pub fn resolve(text: &str) -> Result<Secret, String> {
        if let Some(name) = text
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            let value = std::env::var(name).map_err(|_| {
                format!("environment variable {name} is not set (referenced as ${{{name}}})")
            })?;
            return Ok(Secret { value });
        }
        if let Some(path) = text.strip_prefix("file:") {
            let value = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read secret file {path}: {err}"))?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value).to_string();
            return Ok(Secret { value });
        }
        Ok(Secret {
            value: text.to_string(),
        })
    }

    /// The value, for use on the wire only. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Takes the value as it is: the config loader has already resolved `${VAR}` and
/// `file:` references, and resolving again would read an environment value that
/// starts with `file:` as a path.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        COLLECTED.with(|collected| {
            if let Some(values) = collected.borrow_mut().as_mut() {
                values.push(value.clone());
            }
        });
        Ok(Secret { value })
    }
}

thread_local! {
    /// The values of the secrets deserialised inside [`collect`] on this thread.
    static COLLECTED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `load` and returns its result with the value of every [`Secret`] it
/// deserialised (on this thread), so that none can be missed by the redactor.
pub fn collect<T>(load: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = COLLECTED.with(|collected| collected.replace(Some(Vec::new())));
    let result = load();
    let values = COLLECTED
        .with(|collected| collected.replace(outer))
        .unwrap_or_default();
    (result, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_environment_variables() {
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var("HERALD_TEST_SECRET_A", "s3cret") };
        let secret = Secret::resolve("${HERALD_TEST_SECRET_A}").unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert!(
            Secret::resolve("${HERALD_TEST_SECRET_UNSET}")
                .unwrap_err()
                .contains("HERALD_TEST_SECRET_UNSET")
        );
    }

    #[test]
    fn reads_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\r\n").unwrap();
        let secret = Secret::resolve(&format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.expose(), "abc");
    }

    #[test]
    fn deserialising_takes_the_value_as_it_is_and_collects_it() {
        let ((secret, other), values) = collect(|| {
            let secret: Secret = serde_json::from_str("\"file:/etc/passwd\"").unwrap();
            let other: Secret = serde_json::from_str("\"${HOME}\"").unwrap();
            (secret, other)
        });
        assert_eq!(secret.expose(), "file:/etc/passwd");
        assert_eq!(other.expose(), "${HOME}");
        assert_eq!(values, ["file:/etc/passwd", "${HOME}"]);
        // Outside `collect`, nothing is kept.
        let _: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(collect(|| ()).1, Vec::<String>::new());
    }

    #[test]
    fn never_shows_its_value() {
        let secret = Secret::resolve("hunter2").unwrap();
        assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
    }
}
