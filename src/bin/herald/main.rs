//! The `herald` command: argument parsing and the exit code. What each command
//! does lives in [`commands`] (the short-lived ones) and [`daemon`] (`herald
//! run`); logging and the panic hook in [`logging`]; everything else in the
//! library.
//!
//! A command that loads a config installs its redactor first ([`load`]); from
//! then on every log line, every line printed about the config and the final
//! error pass through it ([`herald::redact`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use herald::config::{self, Config};
use herald::{appenders, redact, replay};

/// `print!` that ends the command quietly when the reader went away; see
/// [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that ends the command quietly when the reader went away; see
/// [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output. A reader that went away (`herald check | head`)
/// ends the command quietly, as it ends other command-line tools, where
/// `print!` would panic.
fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("herald: cannot write to standard output: {err}");
        std::process::exit(1);
    }
}

mod commands;
mod daemon;
mod logging;

/// Receives Qlik Sense log4net UDP events and routes them to files, metrics and alerts.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file for `herald` without a subcommand, which runs (like `herald
    /// run --config PATH`). Default: $HERALD_CONFIG, else
    /// ./config/herald.toml, else /etc/herald/herald.toml.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// `--config`, for the commands that read a config: run, check and replay.
#[derive(Debug, Default, Args)]
struct ConfigArg {
    /// Config file. Default: $HERALD_CONFIG, else ./config/herald.toml, else
    /// /etc/herald/herald.toml.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive and route events until stopped (the default).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate a config file and print the effective configuration.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also connect to every sink that has a server (InfluxDB, ...) and say
        /// whether it is reachable, exists and accepts the credentials.
        #[arg(long)]
        connect: bool,
    },
    /// Send sample datagrams (or lines from a file) to a herald or Butler port.
    Send {
        /// Where to send: HOST:PORT, e.g. localhost:9996, 10.1.0.5:9996 or [::1]:9996.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// Which sample: all, engine, proxy, repository, scheduler, qix-perf, session,
        /// connection, task-failed, task-aborted, task-success, task-distribute,
        /// engine-reload-failed.
        #[arg(long, default_value = "all", conflicts_with = "file")]
        kind: String,
        /// Send the lines of this file instead, one datagram per line.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Datagrams to send in total, cycling through the set (default: each once).
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, e.g. 30s or 2m (with --count: whichever comes first).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Datagrams per second (default, or 0: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Source address to send from, e.g. 127.0.0.2.
        #[arg(long)]
        from: Option<IpAddr>,
        /// Send from this many sockets (source ports) in turn, as several Sense
        /// services on one node do (spreads the load over herald instances
        /// that share a port with ingest.reuse_port).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        sockets: u16,
    },
    /// Send what a dead-letter file kept through the sinks again, once the cause
    /// is fixed. Events go back to the sink that gave up on them; datagrams are
    /// parsed again and go to every sink whose match they meet. What still
    /// fails goes to a new dead-letter file; the file read is not changed.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The dead-letter file (dead_letter.path), or a rotated copy of it.
        #[arg(long)]
        dead_letter: PathBuf,
        /// Send only to this sink (events that failed elsewhere go here too).
        #[arg(long)]
        sink: Option<String>,
        /// Only records with this reason: sink_failed, shutdown, unknown_tag, ...
        #[arg(long)]
        reason: Option<String>,
        /// Only records from this time on: an RFC 3339 time such as
        /// 2026-12-01T08:00:00Z, or an age such as 2h or 30m.
        #[arg(long, value_parser = parse_since)]
        since: Option<jiff::Timestamp>,
        /// Read, parse and route, and say what would be sent, without sending.
        #[arg(long)]
        dry_run: bool,
        /// Where what still fails goes (default: <dead-letter>.replay-<time>.jsonl).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Watch the events a running herald routes, live: filtered like a sink's
    /// match table, at most --limit a second (the rest are counted, never
    /// queued). Uses herald's HTTP endpoint (GET /tap).
    Tap(Box<herald::tap::client::TapArgs>),
    /// Turn a Butler SOS or Butler config (YAML) into a herald config: ports,
    /// allowlist, InfluxDB, MQTT, alerts, categorisation and tags. Secrets
    /// become ${VARIABLE} references; what herald does not do is listed in the
    /// output's header.
    #[command(group(clap::ArgGroup::new("from").required(true).args(["butler_sos", "butler"])))]
    Import {
        /// A Butler SOS config file (production.yaml).
        #[arg(long, value_name = "PATH")]
        butler_sos: Option<PathBuf>,
        /// A Butler config file (production.yaml).
        #[arg(long, value_name = "PATH")]
        butler: Option<PathBuf>,
        /// Write the herald config here instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace the --out file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Write the LocalLogConfig.xml files that make Sense send its events to herald.
    Appenders {
        /// Host name or address of this herald server, as the Sense nodes reach it.
        #[arg(long)]
        herald: String,
        /// Directory to write Engine/, Proxy/, Repository/ and Scheduler/ into.
        #[arg(long, default_value = "appenders")]
        out: PathBuf,
        /// Port for log events.
        #[arg(long, default_value_t = 9996)]
        log_port: u16,
        /// Port for user session and connection events.
        #[arg(long, default_value_t = 9997)]
        user_port: u16,
        /// Port for task events.
        #[arg(long, default_value_t = 9998)]
        task_port: u16,
        /// Replace LocalLogConfig.xml files that already exist in the directory.
        #[arg(long)]
        force: bool,
    },
    /// Print a completion script for a shell, e.g.
    /// `herald completions bash > /usr/share/bash-completion/completions/herald`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (herald.1 and one per command) into a directory.
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    logging::redact_panics();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: ConfigArg::default(),
    });
    // `herald --config PATH run` (the option before the command) still works
    // for the commands that read a config; the others refuse it.
    let config_path = |arg: ConfigArg| -> anyhow::Result<PathBuf> {
        Ok(config::locate(
            arg.config.or_else(|| cli.config.clone()).as_deref(),
        )?)
    };
    if cli.config.is_some()
        && let Some(name) = command.without_config()
    {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "`herald {name}` reads no config; --config applies to run, check and replay"
                ),
            )
            .exit();
    }
    let result = match command {
        Command::Run { config } => config_path(config).and_then(|path| daemon::run(&path)),
        Command::Check { config, connect } => {
            config_path(config).and_then(|path| commands::check(&path, connect))
        }
        Command::Send {
            to,
            kind,
            file,
            count,
            duration,
            rate,
            from,
            sockets,
            json,
        } => commands::send_samples(
            &to,
            &kind,
            file.as_deref(),
            commands::SendLimits {
                from,
                count,
                duration,
                rate,
                sockets: usize::from(sockets),
            },
            json,
        ),
        Command::Replay {
            config,
            dead_letter,
            sink,
            reason,
            since,
            dry_run,
            out,
        } => config_path(config).and_then(|path| {
            commands::replay_dead_letters(
                &path,
                &replay::ReplayOptions {
                    dead_letter,
                    sink,
                    reason,
                    since,
                    dry_run,
                    out,
                },
            )
        }),
        Command::Appenders {
            herald,
            out,
            log_port,
            user_port,
            task_port,
            force,
        } => commands::write_appenders(
            &appenders::Target {
                host: herald,
                log_port,
                user_port,
                task_port,
            },
            &out,
            force,
        ),
        Command::Tap(args) => commands::tap(&args),
        Command::Import {
            butler_sos,
            butler,
            out,
            force,
        } => commands::import(butler_sos, butler, out.as_deref(), force),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Man { out } => write_man_pages(&out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say(&format!("herald: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The name of a command that reads no config, for refusing `--config`.
    fn without_config(&self) -> Option<&'static str> {
        match self {
            Command::Send { .. } => Some("send"),
            Command::Appenders { .. } => Some("appenders"),
            Command::Tap(_) => Some("tap"),
            Command::Import { .. } => Some("import"),
            Command::Completions { .. } => Some("completions"),
            Command::Man { .. } => Some("man"),
            Command::Run { .. } | Command::Check { .. } | Command::Replay { .. } => None,
        }
    }
}

/// Loads the config and installs its redactor for everything herald writes out.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    redact::install(config.redactor());
    Ok(config)
}

/// Prints a line on standard error, redacted.
pub(crate) fn say(line: &str) {
    eprintln!("{}", redact::text(line));
}

/// `--since`: an RFC 3339 time, or an age (`2h`) before now.
fn parse_since(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let age = parse_duration(text).map_err(|_| {
        format!("{text:?} is neither a time like 2026-12-01T08:00:00Z nor an age like 2h")
    })?;
    let age = jiff::SignedDuration::try_from(age).map_err(|err| err.to_string())?;
    jiff::Timestamp::now()
        .checked_sub(age)
        .map_err(|err| err.to_string())
}

/// Reads `30s`, `2m`, `1h`, `500ms` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// The manual pages, from the same definitions as `--help`.
fn write_man_pages(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    clap_mangen::generate_to(Cli::command(), out)
        .with_context(|| format!("cannot write the manual pages to {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("herald").chain(args.iter().copied()))
    }

    fn help(command: &str) -> String {
        let mut cli = Cli::command();
        cli.build();
        let sub = cli
            .find_subcommand_mut(command)
            .unwrap_or_else(|| panic!("no command {command}"));
        sub.render_long_help().to_string()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_offered_only_by_the_commands_that_read_one() {
        for command in ["run", "check", "replay"] {
            assert!(help(command).contains("--config <PATH>"), "{command}");
        }
        for command in ["send", "appenders"] {
            assert!(!help(command).contains("--config"), "{command}");
        }
        let error = parse(&["send", "--to", "localhost:9996", "--config", "x.toml"])
            .expect_err("send takes no --config");
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn config_may_come_before_the_command_or_stand_alone() {
        let cli = parse(&["--config", "a.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        let cli = parse(&["check", "-c", "b.toml"]).unwrap();
        let Some(Command::Check { config, .. }) = cli.command else {
            panic!("check")
        };
        assert_eq!(config.config, Some(PathBuf::from("b.toml")));
        let cli = parse(&["--config", "c.toml", "run"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
        assert!(matches!(cli.command, Some(Command::Run { .. })));
        let cli = parse(&["--config", "c.toml", "send", "--to", "h:1"]).unwrap();
        assert_eq!(cli.command.and_then(|c| c.without_config()), Some("send"));
    }

    #[test]
    fn send_to_is_host_and_port() {
        let cli = parse(&["send", "--to", "sense-node1.corp.local:9996"]).unwrap();
        let Some(Command::Send { to, .. }) = cli.command else {
            panic!("send")
        };
        assert_eq!(to, "sense-node1.corp.local:9996");
        assert!(help("send").contains("--to <HOST:PORT>"));
    }

    #[test]
    fn completions_and_manual_pages_cover_every_command() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "herald",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for word in ["check", "send", "--to", "appenders", "--force", "replay"] {
            assert!(script.contains(word), "{word}");
        }
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(dir.path()).unwrap();
        for page in [
            "herald.1",
            "herald-run.1",
            "herald-check.1",
            "herald-send.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}");
        }
        let main = std::fs::read_to_string(dir.path().join("herald.1")).unwrap();
        assert!(
            !main.contains("herald\\-man"),
            "the hidden command has no page"
        );
        assert!(!dir.path().join("herald-man.1").exists());
    }

    #[test]
    fn appenders_take_force() {
        let cli = parse(&["appenders", "--herald", "h", "--force"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Appenders { force: true, .. })
        ));
    }
}
