//! Where the config file is, and where the paths written in it point.
//!
//! [`locate`] finds the file: `--config`, then `$HERALD_CONFIG`, then
//! `./config/herald.toml` (a checkout), then `/etc/herald/herald.toml` (an
//! installed service); when none exists its error lists every place tried.
//!
//! A relative path in a config resolves against the directory the config file
//! is in, never against the current directory, so a config means the same
//! from any directory and under a service manager (whose current directory is
//! `/`). [`Config::resolve_paths`] holds the one list of path keys; the `file:`
//! references are resolved the same way while they are read ([`in_dir`]).
//!
//! It does not create, open or check any of those paths: the sinks do that
//! when they start.

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::{Config, DEFAULT_PATH};
use crate::sinks::SinkKind;

/// The variable that names the config file when `--config` is not given.
pub const ENV_VAR: &str = "HERALD_CONFIG";

/// Where an installed herald's config lives.
pub const SYSTEM_PATH: &str = "/etc/herald/herald.toml";

/// The files looked for, in order, when neither `--config` nor
/// `$HERALD_CONFIG` names one.
pub fn default_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(DEFAULT_PATH)];
    if cfg!(unix) {
        candidates.push(PathBuf::from(SYSTEM_PATH));
    }
    candidates
}

/// No config file was named and none of the usual places has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// What was tried, in order, each with why it was passed over.
    pub tried: Vec<String>,
    /// `$HERALD_CONFIG` named a file that does not exist.
    pub from_env: Option<PathBuf>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.from_env {
            return write!(
                f,
                "no config file at {} (named by ${ENV_VAR}); fix ${ENV_VAR}, or pass the file with --config PATH",
                path.display()
            );
        }
        writeln!(f, "no config file found; looked for, in order:")?;
        for place in &self.tried {
            writeln!(f, "  {place}")?;
        }
        write!(
            f,
            "pass one with --config PATH (or set ${ENV_VAR}); config/examples/ in the source has examples"
        )
    }
}

impl std::error::Error for NotFound {}

/// The config file to use: `explicit` (`--config`) as given, else
/// `$HERALD_CONFIG`, else the first of [`default_candidates`] that exists.
///
/// # Errors
///
/// [`NotFound`] when `$HERALD_CONFIG` names a file that does not exist, or no
/// file was named and none of the candidates exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, NotFound> {
    locate_in(
        explicit,
        std::env::var_os(ENV_VAR),
        &default_candidates(),
        std::env::current_dir().ok().as_deref(),
    )
}

/// [`locate`] with the variable's value, the candidates and the current
/// directory (for the message) given.
pub fn locate_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    candidates: &[PathBuf],
    current_dir: Option<&Path>,
) -> Result<PathBuf, NotFound> {
    // A named file is used as it is: reading it says what is wrong with it.
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let env = env.filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(path) = env {
        if path.exists() {
            return Ok(path);
        }
        return Err(NotFound {
            tried: Vec::new(),
            from_env: Some(path),
        });
    }
    let mut tried = vec![
        "--config PATH: not given".to_string(),
        format!("${ENV_VAR}: not set"),
    ];
    for candidate in candidates {
        if candidate.exists() {
            return Ok(candidate.clone());
        }
        let shown = match current_dir {
            Some(dir) if candidate.is_relative() => format!(
                "./{}: does not exist (in {})",
                candidate.display(),
                dir.display()
            ),
            _ => format!("{}: does not exist", candidate.display()),
        };
        tried.push(shown);
    }
    Err(NotFound {
        tried,
        from_env: None,
    })
}

/// The directory relative paths in the config file at `path` resolve
/// against: the file's directory, absolute and with symbolic links resolved
/// (so that `..` in a path means the real parent).
pub fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    dir.canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// `path` resolved against `dir` when it is relative; as it is otherwise.
/// Leading `.` and `..` components are applied to `dir`, so the result reads
/// `/srv/data/events.jsonl`, not `/srv/config/../data/events.jsonl`.
pub fn in_dir(dir: &Path, path: &Path) -> PathBuf {
    if !path.is_relative() || path.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    let mut resolved = dir.to_path_buf();
    let mut components = path.components().peekable();
    while let Some(component) = components.peek() {
        match component {
            Component::CurDir => {}
            // `/..` is `/`.
            Component::ParentDir if resolved.has_root() && resolved.parent().is_none() => {}
            Component::ParentDir
                if matches!(
                    resolved.components().next_back(),
                    Some(Component::Normal(_))
                ) =>
            {
                resolved.pop();
            }
            // A plain name: the rest is kept as written.
            _ => break,
        }
        components.next();
    }
    resolved.extend(components);
    resolved
}

impl Config {
    /// Resolves every relative path in the config against `dir` (the config
    /// file's directory). This is the one list of keys that hold paths:
    /// `data_dir`, `dead_letter.path`, and each sink's file keys
    /// ([`SinkKind::paths_mut`]).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let mut paths = vec![&mut self.data_dir];
        if let Some(dead) = self.dead_letter.as_mut() {
            paths.push(&mut dead.path);
        }
        for sink in self.sinks.values_mut() {
            paths.extend(sink.kind.paths_mut());
        }
        for path in paths {
            *path = in_dir(dir, path);
        }
    }
}

impl SinkKind {
    /// The sink's keys that hold file paths: the `file` sink's `path` and
    /// every TLS file.
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            SinkKind::File(file) => vec![&mut file.path],
            SinkKind::Stdout(_) | SinkKind::Null(_) => Vec::new(),
            SinkKind::Influxdb(influx) => influx.tls_ca_file.iter_mut().collect(),
            SinkKind::Loki(loki) => loki.tls_ca_file.iter_mut().collect(),
            SinkKind::Slack(slack) => slack.tls_ca_file.iter_mut().collect(),
            SinkKind::Teams(teams) => teams.tls_ca_file.iter_mut().collect(),
            SinkKind::Webhook(webhook) => webhook.tls_ca_file.iter_mut().collect(),
            SinkKind::Email(email) => email.tls_ca_file.iter_mut().collect(),
            SinkKind::Mqtt(mqtt) => mqtt
                .tls_ca_file
                .iter_mut()
                .chain(mqtt.tls_client_cert_file.iter_mut())
                .chain(mqtt.tls_client_key_file.iter_mut())
                .collect(),
            SinkKind::Nats(nats) => nats
                .tls_ca_file
                .iter_mut()
                .chain(nats.tls_client_cert_file.iter_mut())
                .chain(nats.tls_client_key_file.iter_mut())
                .chain(nats.credentials_file.iter_mut())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(dir: &Path) -> Vec<PathBuf> {
        vec![
            dir.join("config").join("herald.toml"),
            dir.join("etc").join("herald.toml"),
        ]
    }

    #[test]
    fn config_is_looked_up_flag_then_variable_then_checkout_then_system() {
        let dir = tempfile::tempdir().unwrap();
        let [checkout, system] = [0, 1].map(|i| candidates(dir.path())[i].clone());
        let named = dir.path().join("named.toml");
        let from_env = dir.path().join("env.toml");
        for file in [&checkout, &system, &named, &from_env] {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, "").unwrap();
        }
        let all = candidates(dir.path());
        let env = Some(from_env.clone().into_os_string());
        let found = |explicit: Option<&Path>, env: Option<OsString>| {
            locate_in(explicit, env, &all, None).unwrap()
        };
        assert_eq!(found(Some(&named), env.clone()), named);
        assert_eq!(found(None, env), from_env);
        assert_eq!(found(None, Some(OsString::new())), checkout);
        assert_eq!(found(None, None), checkout);
        std::fs::remove_file(&checkout).unwrap();
        assert_eq!(found(None, None), system);
        // A named file is taken even when it does not exist: reading it says so.
        let missing = dir.path().join("missing.toml");
        assert_eq!(found(Some(&missing), None), missing);
    }

    #[test]
    fn with_no_config_anywhere_the_error_lists_every_place_tried() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("etc").join("herald.toml");
        let tried = [PathBuf::from("no-such-dir/herald.toml"), system.clone()];
        let err = locate_in(None, None, &tried, Some(dir.path())).unwrap_err();
        let message = err.to_string();
        for expected in [
            "--config PATH: not given".to_string(),
            "$HERALD_CONFIG: not set".to_string(),
            format!(
                "./no-such-dir/herald.toml: does not exist (in {})",
                dir.path().display()
            ),
            format!("{}: does not exist", system.display()),
            "pass one with --config PATH".to_string(),
        ] {
            assert!(
                message.contains(&expected),
                "{expected:?} missing from:\n{message}"
            );
        }
    }

    #[test]
    fn a_variable_naming_a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let all = candidates(dir.path());
        std::fs::create_dir_all(all[0].parent().unwrap()).unwrap();
        std::fs::write(&all[0], "").unwrap();
        let err = locate_in(None, Some(missing.clone().into_os_string()), &all, None).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("$HERALD_CONFIG"), "{message}");
        assert!(message.contains("--config"), "{message}");
    }

    /// Every string under a key that names a file or directory, anywhere.
    fn path_values(value: &toml::Value, key: &str, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::String(text)
                if key == "path" || key == "data_dir" || key.ends_with("_file") =>
            {
                out.push((key.to_string(), text.clone()));
            }
            toml::Value::Table(table) => {
                for (inner, value) in table {
                    path_values(value, inner, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn loading_resolves_every_path_key_and_file_reference_against_the_file_s_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::write(dir.path().join("hook.txt"), "https://hooks.example.com/x\n").unwrap();
        // Validating a webhook sink builds its client, which reads the CA file.
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        std::fs::copy(bundle, dir.path().join("ca.pem"))
            .unwrap_or_else(|err| panic!("{bundle} (package ca-certificates): {err}"));
        let tls = "tls_ca_file = \"ca.pem\"\n";
        let text = format!(
            "[ingest]\nlisten = [\"127.0.0.1:9996\"]\nallow = [\"127.0.0.1\"]\n\
             [dead_letter]\npath = \"dead.jsonl\"\n\
             [sinks.file]\ntype = \"file\"\npath = \"out/events.jsonl\"\n\
             [sinks.influx]\ntype = \"influxdb\"\nurl = \"https://influx:8086\"\ndatabase = \"d\"\n{tls}\
             [sinks.loki]\ntype = \"loki\"\nurl = \"https://loki:3100\"\n{tls}\
             [sinks.slack]\ntype = \"slack\"\nwebhook_url = \"file:hook.txt\"\n{tls}\
             [sinks.teams]\ntype = \"teams\"\nwebhook_url = \"file:./hook.txt\"\n{tls}\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/y\"\n{tls}\
             [sinks.mail]\ntype = \"email\"\nhost = \"smtp\"\nfrom = \"h@x.org\"\nto = [\"o@x.org\"]\n{tls}\
             [sinks.mqtt]\ntype = \"mqtt\"\nhost = \"broker\"\ntls = true\n{tls}\
             tls_client_cert_file = \"../certs/client.pem\"\ntls_client_key_file = \"/etc/herald/client.key\"\n"
        );
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}\n{text}"));
        let effective: toml::Value = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        let mut paths = Vec::new();
        path_values(&effective, "", &mut paths);
        // data_dir, dead_letter.path, the file sink's path, seven CA files and
        // the MQTT client certificate and key.
        assert_eq!(paths.len(), 12, "{paths:?}");
        for (key, value) in &paths {
            assert!(Path::new(value).is_absolute(), "{key} = {value}");
        }
        assert_eq!(config.data_dir, real.join("data"));
        let parent = real.parent().unwrap();
        let SinkKind::Mqtt(mqtt) = &config.sinks["mqtt"].kind else {
            panic!("not mqtt")
        };
        assert_eq!(
            mqtt.tls_client_cert_file.as_deref(),
            Some(parent.join("certs/client.pem").as_path())
        );
        assert_eq!(
            mqtt.tls_client_key_file.as_deref(),
            Some(Path::new("/etc/herald/client.key"))
        );
        let SinkKind::Slack(slack) = &config.sinks["slack"].kind else {
            panic!("not slack")
        };
        assert_eq!(slack.webhook_url.expose(), "https://hooks.example.com/x");
    }

    #[test]
    fn relative_paths_resolve_against_the_directory() {
        let dir = Path::new("/srv/herald/config");
        let cases = [
            ("events.jsonl", "/srv/herald/config/events.jsonl"),
            ("./events.jsonl", "/srv/herald/config/events.jsonl"),
            ("../data/events.jsonl", "/srv/herald/data/events.jsonl"),
            ("../../../../x", "/x"),
            ("data/../x", "/srv/herald/config/data/../x"),
            (
                "/var/lib/herald/events.jsonl",
                "/var/lib/herald/events.jsonl",
            ),
            ("", ""),
        ];
        for (written, resolved) in cases {
            assert_eq!(
                in_dir(dir, Path::new(written)),
                Path::new(resolved),
                "{written}"
            );
        }
    }

    #[test]
    fn the_config_dir_is_absolute_and_real() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(config_dir(&dir.path().join("herald.toml")), real);
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(config_dir(Path::new("herald.toml")), cwd);
        assert_eq!(config_dir(Path::new("./herald.toml")), cwd);
    }
}
