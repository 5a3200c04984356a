//! Feeds arbitrary text to the config loader (`Config::from_toml`: TOML, then
//! `${VAR}` and `file:` expansion, then deserializing and validating): it may
//! refuse the text, but must not panic, and a config it accepts must print
//! (what `herald check` shows).
//!
//! Only valid UTF-8 is fed: `Config::load` reads the file as UTF-8 text, so
//! nothing else reaches the loader.
//!
//! What the loader may touch: `${VAR}` reads an environment variable, which is
//! harmless. `file:PATH` reads a file; reading a regular file is harmless too,
//! but a device, FIFO or kernel file (`/dev/zero`, `/dev/stdin`, `/proc/kmsg`)
//! could never end or block, which would stall the run rather than find a bug.
//! So an input is skipped unless every string in it that starts with `file:`
//! names a regular file inside this target's own directory ([`SANDBOX`], made
//! on the first run with a few small files). Nothing is written anywhere else,
//! and the loader itself writes nothing and opens no socket (host names in
//! `ingest.allow` are resolved later, when herald starts, not when loading).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use herald::config::Config;
use libfuzzer_sys::fuzz_target;

/// The directory (in the temporary directory) that `file:` references may read
/// from; `fuzz/seed-config.sh` points the seeds' secrets at its files, e.g.
/// `file:/tmp/herald-fuzz-config/token`.
const SANDBOX: &str = "herald-fuzz-config";

/// The files made in [`SANDBOX`]: a token, a webhook URL, a password with a
/// trailing newline, an address and an empty file.
const FILES: [(&str, &str); 5] = [
    ("token", "0123456789abcdef0123456789abcdef"),
    ("url", "https://hooks.example.com/services/T0/B0/x"),
    ("password", "s3cret\n"),
    ("listen", "127.0.0.1:9996"),
    ("empty", ""),
];

fn sandbox() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(SANDBOX);
        std::fs::create_dir_all(&dir).expect("create the sandbox directory");
        for (name, text) in FILES {
            std::fs::write(dir.join(name), text).expect("write a sandbox file");
        }
        dir.canonicalize().expect("the sandbox directory")
    })
}

/// Whether every `file:` string in `value` names a regular file in the sandbox.
/// (A secret's value is resolved once more when it is deserialized, so a
/// variable whose value starts with `file:` counts as such a string too.)
fn reads_only_the_sandbox(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(text) => {
            let variable = text
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|name| std::env::var(name).ok());
            let text = variable.as_deref().unwrap_or(text);
            text.strip_prefix("file:").is_none_or(|path| {
                Path::new(path).canonicalize().is_ok_and(|path| {
                    path.starts_with(sandbox()) && path.metadata().is_ok_and(|m| m.is_file())
                })
            })
        }
        toml::Value::Array(items) => items.iter().all(reads_only_the_sandbox),
        toml::Value::Table(table) => table.values().all(reads_only_the_sandbox),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Text that is not TOML is refused before any expansion, so it is fed as is.
    if let Ok(table) = toml::from_str::<toml::Table>(text)
        && !table.values().all(reads_only_the_sandbox)
    {
        return;
    }
    if let Ok(config) = Config::from_toml(text, Path::new("fuzz.toml")) {
        let shown = config.to_toml();
        assert!(
            !shown.starts_with("# cannot show the config"),
            "an accepted config cannot be shown: {shown}"
        );
    }
});
