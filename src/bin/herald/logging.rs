//! What herald writes on standard error while it works: its log (level and
//! format from the config or `HERALD_LOG`, colour only on a terminal) and its
//! panic reports, both through the redactor.

use herald::config::{Config, LogFormat};
use herald::redact;
use tracing_subscriber::EnvFilter;

pub(crate) fn init_logging(config: &Config) {
    // The NATS client logs every connection event in its own words; the NATS
    // sink says the same in herald's, at most once per 10 s. Its own lines
    // show only when a filter names it (HERALD_LOG=info,async_nats=debug).
    let quiet = |text: &str| {
        if text.contains("async_nats") {
            text.to_string()
        } else {
            format!("{text},async_nats=off")
        }
    };
    let filter = std::env::var("HERALD_LOG")
        .ok()
        .and_then(|text| EnvFilter::try_new(quiet(&text)).ok())
        .or_else(|| EnvFilter::try_new(quiet(&config.log.level)).ok())
        .unwrap_or_else(|| EnvFilter::new("info,async_nats=off"));
    let colour = log_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(redact::RedactingWriter::new(std::io::stderr));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Whether log lines get colour: only on a terminal, and not when `NO_COLOR`
/// is set to anything but the empty string (<https://no-color.org>). journald,
/// log files and pipes get plain text.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Prints a panic as the default hook does, but through the redactor: its
/// message may quote a value (a URL, a header) that is a secret.
pub(crate) fn redact_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let report = panic_report(
            thread.name().unwrap_or("<unnamed>"),
            info.location(),
            panic_message(info.payload()),
            &std::backtrace::Backtrace::capture(),
        );
        // Nothing more to do if standard error is gone too.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
    }));
}

/// A panic's message: the text `panic!` was given, or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A panic's report, redacted: thread, place, message, and the backtrace
/// when `RUST_BACKTRACE` asked for one.
fn panic_report(
    thread: &str,
    location: Option<&std::panic::Location<'_>>,
    message: &str,
    backtrace: &std::backtrace::Backtrace,
) -> String {
    let at = location.map_or_else(String::new, |at| {
        format!(" at {}:{}:{}", at.file(), at.line(), at.column())
    });
    let mut report = format!("thread '{thread}' panicked{at}:\n{message}\n");
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        report.push_str(&format!("stack backtrace:\n{backtrace}\n"));
    }
    redact::string(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))));
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn panic_reports_are_redacted() {
        let redactor = redact::Redactor::builder()
            .secret("s3cr3t-token-value")
            .build()
            .expect("redactor");
        redact::install(std::sync::Arc::new(redactor));
        let report = panic_report(
            "sink-slack",
            Some(std::panic::Location::caller()),
            "request to https://hooks.example.com/s3cr3t-token-value failed",
            &std::backtrace::Backtrace::disabled(),
        );
        assert!(
            report.starts_with("thread 'sink-slack' panicked at src/bin/herald/logging.rs:"),
            "{report}"
        );
        assert!(!report.contains("s3cr3t-token-value"), "{report}");
        assert!(report.contains("https://hooks.example.com/"), "{report}");
    }
}
