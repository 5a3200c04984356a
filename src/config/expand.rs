//! `${VAR}` and `file:` references anywhere in the config, resolved once
//! before the config is deserialized.

use std::path::Path;

/// Replaces every string that is exactly `${VAR}` with the variable's value and
/// every string starting with `file:` with that file's contents (trailing newline
/// stripped), so any value can stay out of the config file. A relative `file:`
/// path is read from `dir` (the config file's directory) when given. This is the only
/// place references are resolved, once: a value read here is never taken for a
/// reference again. Secrets are still redacted wherever they are shown, because
/// their fields have the secret type.
pub(super) fn expand_strings(
    table: &mut toml::Table,
    prefix: &str,
    dir: Option<&Path>,
) -> Result<(), (String, String)> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        expand_value(value, &path, dir)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    dir: Option<&Path>,
) -> Result<(), (String, String)> {
    match value {
        toml::Value::String(text) if is_reference(text) => {
            let reference = match (dir, text.strip_prefix("file:")) {
                (Some(dir), Some(file)) => {
                    format!("file:{}", super::in_dir(dir, Path::new(file)).display())
                }
                _ => text.clone(),
            };
            *text = crate::secret::Secret::resolve(&reference)
                .map_err(|problem| (path.to_string(), problem))?
                .expose()
                .to_string();
        }
        toml::Value::Table(inner) => expand_strings(inner, path, dir)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), dir)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a config string refers to the environment or a file.
fn is_reference(text: &str) -> bool {
    (text.starts_with("${") && text.ends_with('}')) || text.starts_with("file:")
}
