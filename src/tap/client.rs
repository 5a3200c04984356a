//! `herald tap`: connects to a running herald's `GET /tap`, and prints the
//! events it streams, as text lines for people or as the JSON lines sinks
//! write.
//!
//! Plain HTTP over a TCP socket (the endpoint serves nothing else); the token
//! goes in an `Authorization` header. Text from events is printed with
//! control characters escaped, so a datagram cannot move the cursor or
//! recolour a terminal.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use super::query::{TapQuery, encode};

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One readable line per event.
    Text,
    /// The event's JSON, one object per line (as the file sink writes).
    Json,
}

/// What `herald tap` was asked for.
#[derive(Debug, Clone)]
pub struct TapOptions {
    /// `http://HOST:PORT` of herald's HTTP endpoint.
    pub url: String,
    /// `http.token`, when herald has one.
    pub token: Option<String>,
    /// Which events, how many a second.
    pub query: TapQuery,
    /// How to print them.
    pub format: Format,
    /// Stop after this many events.
    pub count: Option<u64>,
}

/// Why a tap ended early.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The URL is not `http://HOST[:PORT]`.
    #[error("--url {0:?}: use http://HOST:PORT, e.g. http://127.0.0.1:9995 (herald's http.listen)")]
    Url(String),
    /// No connection.
    #[error("cannot connect to {0}: {1} (is herald running, and is http.listen this address?)")]
    Connect(String, #[source] io::Error),
    /// herald refused the token.
    #[error(
        "herald refused the request (401): set HERALD_HTTP_TOKEN (or --token) to the value of http.token"
    )]
    Unauthorised,
    /// herald answered with an error.
    #[error("herald answered {status}: {body}")]
    Refused {
        /// The status line's code and reason.
        status: String,
        /// What it said.
        body: String,
    },
    /// The connection failed while streaming.
    #[error("the stream from herald broke off: {0}")]
    Io(#[from] io::Error),
}

/// What a tap showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapSummary {
    /// Events printed.
    pub shown: u64,
    /// Events that matched but were over the limit, as herald last reported.
    pub not_shown: u64,
}

/// `herald tap`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct TapArgs {
    /// herald's HTTP endpoint (http.listen).
    #[arg(long, default_value = "http://127.0.0.1:9995")]
    pub url: String,
    /// http.token, if herald has one; better set HERALD_HTTP_TOKEN, which
    /// other users of this machine cannot read from the process list.
    #[arg(long)]
    pub token: Option<String>,
    /// Event types: log, qix_perf, session, connection, task, engine_reload_failed.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Sources: engine, proxy, repository, scheduler.
    #[arg(long = "source", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Levels: DEBUG, INFO, WARN, ERROR, FATAL.
    #[arg(long = "level", value_delimiter = ',')]
    pub levels: Vec<String>,
    /// The lowest level shown.
    #[arg(long)]
    pub min_level: Option<String>,
    /// Task outcomes: failed, aborted, success, distribute.
    #[arg(long = "outcome", value_delimiter = ',')]
    pub outcomes: Vec<String>,
    /// Sense host names.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Subsystem prefixes, e.g. System.Scheduler.
    #[arg(long = "subsystem")]
    pub subsystems: Vec<String>,
    /// Text the message contains (case-sensitive).
    #[arg(long = "message")]
    pub messages: Vec<String>,
    /// Task IDs.
    #[arg(long = "task-id")]
    pub task_ids: Vec<String>,
    /// Task names or globs, e.g. 'Finance*'.
    #[arg(long = "task-name")]
    pub task_names: Vec<String>,
    /// App IDs.
    #[arg(long = "app-id")]
    pub app_ids: Vec<String>,
    /// App names or globs.
    #[arg(long = "app-name")]
    pub app_names: Vec<String>,
    /// Users: DIRECTORY\userid or userid; globs allowed.
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Users whose events are not shown.
    #[arg(long = "exclude-user")]
    pub exclude_users: Vec<String>,
    /// qix-perf methods or globs, e.g. 'Doc::*'.
    #[arg(long = "method")]
    pub methods: Vec<String>,
    /// qix-perf object types.
    #[arg(long = "object-type")]
    pub object_types: Vec<String>,
    /// Events shown a second at most (1 to 1000); herald counts the rest as
    /// not shown and never slows down for a tap.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    pub limit: u32,
    /// text (one line per event) or json (the event as sinks write it).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

impl TapArgs {
    /// The options these arguments ask for; the token from `--token` or
    /// `HERALD_HTTP_TOKEN`.
    ///
    /// # Errors
    ///
    /// A filter value herald would refuse (an unknown type, an ID that is no
    /// GUID), named with its option.
    pub fn options(&self) -> Result<TapOptions, String> {
        let mut pairs: Vec<(&str, &String)> = Vec::new();
        for (key, values) in [
            ("types", &self.types),
            ("sources", &self.sources),
            ("levels", &self.levels),
            ("outcomes", &self.outcomes),
            ("hosts", &self.hosts),
            ("subsystem_prefixes", &self.subsystems),
            ("message_contains", &self.messages),
            ("task_ids", &self.task_ids),
            ("task_names", &self.task_names),
            ("app_ids", &self.app_ids),
            ("app_names", &self.app_names),
            ("users", &self.users),
            ("exclude_users", &self.exclude_users),
            ("methods", &self.methods),
            ("object_types", &self.object_types),
        ] {
            pairs.extend(values.iter().map(|value| (key, value)));
        }
        if let Some(level) = &self.min_level {
            pairs.push(("min_level", level));
        }
        let limit = self.limit.to_string();
        pairs.push(("limit", &limit));
        let query = super::query::from_pairs(pairs)?;
        Ok(TapOptions {
            url: self.url.clone(),
            token: self
                .token
                .clone()
                .or_else(|| std::env::var("HERALD_HTTP_TOKEN").ok())
                .filter(|token| !token.is_empty()),
            query,
            format: self.format,
            count: self.count,
        })
    }
}

/// How long without a byte from herald before the tap gives up (herald sends
/// its counts every second).
const SILENCE: Duration = Duration::from_secs(15);

/// Streams events to `out` until herald ends the stream or `count` events
/// were printed; notes about events not shown go to `notes`.
///
/// # Errors
///
/// [`TapError`]: a bad URL, no connection, a refused token or query, or a
/// broken connection.
pub fn run(
    options: &TapOptions,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<TapSummary, TapError> {
    let authority = options
        .url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| TapError::Url(options.url.clone()))?;
    let target = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|err| TapError::Connect(target.clone(), err))?
        .next()
        .ok_or_else(|| TapError::Url(options.url.clone()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|err| TapError::Connect(target.clone(), err))?;
    stream.set_read_timeout(Some(SILENCE))?;
    let authorization = options
        .token
        .as_ref()
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /tap?{} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n{authorization}Connection: close\r\n\r\n",
        encode(&options.query)
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code = status.split(' ').nth(1).unwrap_or("").to_string();
    let mut line = String::new();
    // The rest of the head.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    if code == "401" {
        return Err(TapError::Unauthorised);
    }
    if code != "200" {
        let mut body = String::new();
        io::Read::read_to_string(&mut io::Read::take(reader, 4096), &mut body)?;
        return Err(TapError::Refused {
            status: status
                .trim()
                .split_once(' ')
                .map_or("", |(_, rest)| rest)
                .to_string(),
            body: escape_controls(body.trim()),
        });
    }
    let mut summary = TapSummary::default();
    let mut kind = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(name) = line.strip_prefix("event: ") {
            kind = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind == "stats" {
                let stats: Value = serde_json::from_str(data).unwrap_or_default();
                let not_shown = stats["not_shown"].as_u64().unwrap_or(0);
                if not_shown > summary.not_shown {
                    writeln!(
                        notes,
                        "herald tap: {} matching events not shown so far (over --limit {} a second)",
                        not_shown, options.query.limit
                    )?;
                    summary.not_shown = not_shown;
                }
            } else {
                match options.format {
                    Format::Json => writeln!(out, "{data}")?,
                    Format::Text => {
                        let event: Value = serde_json::from_str(data).unwrap_or_default();
                        writeln!(out, "{}", text_line(&event))?;
                    }
                }
                out.flush()?;
                summary.shown += 1;
                if options.count.is_some_and(|count| summary.shown >= count) {
                    break;
                }
            }
        } else if line.is_empty() {
            kind.clear();
        }
    }
    Ok(summary)
}

/// One event as a line for people: time, level, host, what it is, what it says.
pub fn text_line(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("");
    let number = |key: &str| match &event[key] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    let what = match text("type") {
        "task" => format!(
            "task {} {:?} app {:?}: {}",
            text("outcome"),
            text("task_name"),
            text("app_name"),
            text("message")
        ),
        "qix_perf" => format!(
            "qix-perf {} {} {} ms app {} user {}",
            text("method"),
            text("object_type"),
            number("process_time"),
            text("app_id"),
            text("user_full")
        ),
        "session" | "connection" => format!(
            "{} {} {}: {}",
            text("type"),
            text("command"),
            text("user_full"),
            text("message")
        ),
        "engine_reload_failed" => {
            format!("reload failed app {}: {}", text("app_id"), text("message"))
        }
        _ => format!("{}: {}", text("subsystem"), text("message")),
    };
    let level = match text("level") {
        "" => "-",
        level => level,
    };
    escape_controls(&format!(
        "{} {level:<5} {} {} {what}",
        text("time"),
        text("host"),
        text("source"),
    ))
}

/// `text` with control characters (escape sequences, line breaks) written
/// as `\u{..}`.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_say_what_happened_and_cannot_drive_a_terminal() {
        let task = serde_json::json!({
            "type": "task", "source": "scheduler", "time": "2021-02-16T09:24:59.099+01:00",
            "host": "pro2-win1", "level": "INFO", "outcome": "failed",
            "task_name": "Reload of Sales", "app_name": "Sales", "message": "Max retries reached",
        });
        assert_eq!(
            text_line(&task),
            "2021-02-16T09:24:59.099+01:00 INFO  pro2-win1 scheduler task failed \"Reload of Sales\" app \"Sales\": Max retries reached"
        );
        let hostile = serde_json::json!({
            "type": "log", "source": "engine", "time": "t", "host": "h\u{1b}[31m",
            "subsystem": "S", "message": "a\nb\u{7}",
        });
        let line = text_line(&hostile);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("h\\u{1b}[31m") && line.contains("a\\u{a}b\\u{7}"),
            "{line}"
        );
    }

    #[test]
    fn urls_other_than_plain_http_are_refused_with_the_fix() {
        for url in [
            "https://herald:9995",
            "herald:9995",
            "http://",
            "http://h:1/x",
        ] {
            let options = TapOptions {
                url: url.into(),
                token: None,
                query: super::super::query::decode("").unwrap(),
                format: Format::Text,
                count: None,
            };
            let err = run(&options, &mut Vec::new(), &mut Vec::new()).unwrap_err();
            assert!(matches!(err, TapError::Url(_)), "{url}: {err}");
            assert!(err.to_string().contains("http://HOST:PORT"));
        }
    }
}
