//! The `herald` command: argument parsing, logging and metrics set-up, and the
//! exit code. Everything else lives in the library.
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
use herald::config::{self, Config, LogFormat};
use herald::{appenders, http, pipeline, redact, replay, send, service};
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

/// `print!` that ends the command quietly when the reader went away; see
/// [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that ends the command quietly when the reader went away; see
/// [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
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
    redact_panics();
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
        Command::Run { config } => config_path(config).and_then(|path| run(&path)),
        Command::Check { config, connect } => {
            config_path(config).and_then(|path| check(&path, connect))
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
        } => send_samples(
            &to,
            &kind,
            file.as_deref(),
            SendLimits {
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
            replay_dead_letters(
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
        } => write_appenders(
            &appenders::Target {
                host: herald,
                log_port,
                user_port,
                task_port,
            },
            &out,
            force,
        ),
        Command::Tap(args) => tap(&args),
        Command::Import {
            butler_sos,
            butler,
            out,
            force,
        } => import(butler_sos, butler, out.as_deref(), force),
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

/// `herald import`: reads a Butler SOS or Butler config and prints or writes
/// the herald config for it, then says what to do next.
fn import(
    butler_sos: Option<PathBuf>,
    butler: Option<PathBuf>,
    out: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    use herald::import::Tool;
    let (tool, path) = match (butler_sos, butler) {
        (Some(path), _) => (Tool::ButlerSos, path),
        (None, Some(path)) => (Tool::Butler, path),
        (None, None) => anyhow::bail!("give --butler-sos PATH or --butler PATH"),
    };
    let yaml = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the {} config {}", tool.name(), path.display()))?;
    let imported = herald::import::import(tool, &yaml, &path.display().to_string())
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    match out {
        Some(out) => {
            if out.exists() && !force {
                anyhow::bail!(
                    "{} exists already; nothing was written. Use --force to replace it",
                    out.display()
                );
            }
            std::fs::write(out, &imported.toml)
                .with_context(|| format!("cannot write {}", out.display()))?;
            say(&format!("herald import: wrote {}", out.display()));
        }
        None => out!("{}", imported.toml),
    }
    if !imported.variables.is_empty() {
        say(
            "herald import: set these environment variables before starting herald (their values are in the YAML):",
        );
        for variable in &imported.variables {
            say(&format!("  {}  (from {})", variable.name, variable.from));
        }
    }
    if !imported.not_carried_over.is_empty() {
        say(&format!(
            "herald import: {} setting(s) not carried over; the config's header lists them",
            imported.not_carried_over.len()
        ));
    }
    let config = out.map_or("<the config>".to_string(), |out| out.display().to_string());
    say(&format!(
        "herald import: next, review it and run `herald check --config {config}`"
    ));
    Ok(())
}

/// `herald tap`: prints what a running herald streams until it ends or
/// `--count` events were shown.
fn tap(args: &herald::tap::client::TapArgs) -> anyhow::Result<()> {
    let options = args.options().map_err(anyhow::Error::msg)?;
    let summary = match herald::tap::client::run(
        &options,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    ) {
        Ok(summary) => summary,
        // The reader went away (`herald tap | head`): done.
        Err(herald::tap::client::TapError::Io(err))
            if err.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    if options.count.is_none_or(|count| summary.shown < count) {
        say(&format!(
            "herald tap: the stream ended ({} events shown, {} not shown)",
            summary.shown, summary.not_shown
        ));
    }
    Ok(())
}

/// Loads the config and installs its redactor for everything herald writes out.
fn load(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    redact::install(config.redactor());
    Ok(config)
}

/// Prints a line on standard error, redacted.
fn say(line: &str) {
    eprintln!("{}", redact::text(line));
}

fn check(path: &Path, connect: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let resolution = pipeline::resolve_allowlist(&config.ingest.allow)?.resolution;
    outln!(
        "# herald: effective configuration of {} (defaults filled in)",
        path.display()
    );
    out!("{}", config.to_toml());
    for host in &resolution.unresolved {
        say(&format!(
            "herald: warning: ingest.allow: host name {host:?} does not resolve; its datagrams will be refused until it does"
        ));
    }
    say(&format!(
        "herald: {} is valid: {} listener(s), {} allowlist entr{} after resolving, {} sink(s)",
        path.display(),
        config.ingest.listen.len(),
        resolution.allowlist.len(),
        if resolution.allowlist.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config.sinks.len()
    ));
    if connect {
        check_connections(&config)?;
    }
    Ok(())
}

/// Connects to every sink with a server and reports; fails if any is unusable.
fn check_connections(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut problems = 0;
    for (name, sink) in &config.sinks {
        let Some(result) = runtime.block_on(herald::sinks::check_connection(&sink.kind)) else {
            continue;
        };
        match result {
            Ok(summary) => say(&format!("herald: sinks.{name}: ok: {summary}")),
            Err(problem) => {
                problems += 1;
                say(&format!("herald: sinks.{name}: {problem}"));
            }
        }
    }
    if problems > 0 {
        anyhow::bail!("{problems} sink(s) cannot be used; see above");
    }
    Ok(())
}

/// `herald send`'s options other than where to send.
struct SendLimits {
    from: Option<IpAddr>,
    count: Option<u64>,
    duration: Option<Duration>,
    rate: Option<f64>,
    sockets: usize,
}

fn send_samples(
    to: &str,
    kind: &str,
    file: Option<&Path>,
    limits: SendLimits,
    json: bool,
) -> anyhow::Result<()> {
    let datagrams = match file {
        Some(file) => {
            send::lines(file).with_context(|| format!("cannot read {}", file.display()))?
        }
        None => send::samples(kind).map_err(anyhow::Error::msg)?,
    };
    let to = send::resolve(to, limits.from).map_err(|err| anyhow::anyhow!("--to: {err}"))?;
    let options = send::SendOptions {
        to,
        from: limits.from,
        count: limits.count,
        duration: limits.duration,
        rate: limits.rate,
        sockets: limits.sockets,
    };
    let bar = match options.count {
        Some(count) if options.duration.is_none() => indicatif::ProgressBar::new(count),
        _ => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} datagrams {per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report =
        send::send(&datagrams, &options, |sent| bar.set_position(sent)).with_context(|| {
            format!(
                "cannot send from {}",
                options
                    .from
                    .map_or("any address".into(), |ip| ip.to_string())
            )
        })?;
    bar.finish_and_clear();
    if json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|(problem, count)| {
                serde_json::json!({
                    "kind": problem.kind,
                    "reason": problem.reason,
                    "hint": problem.hint,
                    "count": count,
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "to": to.to_string(),
                "sent": report.sent,
                "failed": report.failed,
                "problems": problems,
                "elapsed_s": report.elapsed.as_secs_f64(),
                "rate": report.rate(),
            })
        );
    } else {
        outln!(
            "sent {} datagram(s) to {to} in {:.3} s ({:.1}/s)",
            report.sent,
            report.elapsed.as_secs_f64(),
            report.rate(),
        );
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} datagram(s) could not be sent: {}",
            report.failed,
            report.problems_text()
        );
    }
    if !report.is_clean() {
        anyhow::bail!("sending to {to} failed: {}", report.problems_text());
    }
    Ok(())
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

fn replay_dead_letters(path: &Path, options: &replay::ReplayOptions) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herald-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bar = indicatif::ProgressBar::new(replay::file_size(&options.dead_letter));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying {bytes}/{total_bytes} {wide_bar} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = runtime.block_on(replay::replay(&config, options, |read| {
        bar.set_position(read)
    }))?;
    bar.finish_and_clear();
    runtime.shutdown_timeout(Duration::from_secs(1));
    let verb = if options.dry_run {
        "would send"
    } else {
        "sent"
    };
    outln!(
        "{}: {} record(s) read, {} left out by --reason, --since or a drop rule",
        options.dead_letter.display(),
        summary.records,
        summary.filtered
    );
    for (sink, events) in &summary.sent {
        outln!("  {verb} {events} event(s) to sinks.{sink}");
    }
    if summary.sent.is_empty() {
        outln!("  nothing to send");
    }
    if summary.unsendable > 0 {
        outln!(
            "  {} record(s) could not be sent anywhere (not an event, a sink that no longer exists, a datagram that still does not parse, or no sink matches)",
            summary.unsendable
        );
        for (line, reason) in &summary.unsendable_reasons {
            outln!("    line {line}: {reason}");
        }
        if summary.unsendable > summary.unsendable_reasons.len() as u64 {
            outln!(
                "    (the first {} are shown)",
                summary.unsendable_reasons.len()
            );
        }
    }
    if summary.failed > 0 {
        outln!("  {} event(s) failed again", summary.failed);
    }
    match &summary.out {
        Some(out) => anyhow::bail!(
            "{} record(s) were not delivered; they are in {}",
            summary.failed + summary.unsendable,
            out.display()
        ),
        None => Ok(()),
    }
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

fn write_appenders(target: &appenders::Target, out: &Path, force: bool) -> anyhow::Result<()> {
    let files = appenders::generate(target);
    let path_of =
        |file: &appenders::AppenderFile| out.join(file.service).join("LocalLogConfig.xml");
    // Nothing is written unless everything may be: a refusal leaves the
    // directory as it was.
    let existing: Vec<String> = files
        .iter()
        .map(path_of)
        .filter(|path| path.symlink_metadata().is_ok())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() && !force {
        anyhow::bail!(
            "{} already exist{}; nothing was written. Use --force to replace {}, or --out to write elsewhere",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" },
        );
    }
    for file in &files {
        let dir = out.join(file.service);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = path_of(file);
        std::fs::write(&path, &file.xml)
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!(
            "wrote {}  ->  copy to C:\\ProgramData\\Qlik\\Sense\\{}\\LocalLogConfig.xml on every node",
            path.display(),
            file.service
        );
    }
    outln!(
        "Then restart the Qlik Sense services, add the nodes to ingest.allow, and open UDP {}, {} and {} to this server.",
        target.log_port,
        target.user_port,
        target.task_port
    );
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    raise_open_file_limit();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(herald::metrics::EVENT_LATENCY.into()),
            &herald::metrics::LATENCY_BUCKETS,
        )
        .context("cannot set up metrics")?
        .install_recorder()
        .context("cannot set up metrics")?;
    herald::metrics::describe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herald-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let mut hangups = hangups();
        if let Some(every) = service::spawn_watchdog() {
            debug!(?every, "pinging the service manager's watchdog");
        }
        let mut running = pipeline::start(&config)?;
        // Histogram samples wait in buckets until drained; without a scrape they
        // would pile up, so drain them on a timer (the exporter's "upkeep").
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        if config.http.enabled {
            let listener = http::bind(config.http.listen)
                .with_context(|| format!("cannot serve HTTP on {} (http.listen)", config.http.listen))?;
            info!(listen = %listener.local_addr()?, "serving the status page (/), /metrics, /health and /tap");
            // The status page's 15 minutes of history.
            let board = std::sync::Arc::new(herald::status::StatusBoard::new());
            let render = metrics.clone();
            tokio::spawn(herald::status::keep_history(board.clone(), move || render.render()));
            let state = http::HttpState {
                metrics,
                health: running.health.clone(),
                token: config.http.token.clone(),
                metrics_public: config.http.metrics_public,
                board,
            };
            tokio::spawn(http::serve(listener, state));
        }
        let how_to_stop = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            "; stop with Ctrl+C"
        } else {
            ""
        };
        info!(config = %path.display(), sinks = config.sinks.len(), "herald is running{how_to_stop}");
        service::ready(&ready_status(&config));
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(()) = hangups.recv() => {
                    service::reloading();
                    reload(path, &mut running);
                    service::ready(&ready_status(running.config()));
                }
            }
        }
        service::stopping(Duration::from_millis(config.pipeline.shutdown_grace_ms));
        info!("stopping: draining queues and flushing sinks");
        running.stop().await?;
        Ok(())
    });
    // Anything still running (only after a drain timeout) is abandoned.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The one line `systemctl status` shows while herald runs.
fn ready_status(config: &Config) -> String {
    let listen: Vec<String> = config
        .ingest
        .listen
        .iter()
        .map(ToString::to_string)
        .collect();
    let http = if config.http.enabled {
        format!("; /metrics on {}", config.http.listen)
    } else {
        String::new()
    };
    format!(
        "receiving on {}; {} sink(s){http}",
        listen.join(", "),
        config.sinks.len()
    )
}

fn init_logging(config: &Config) {
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
fn redact_panics() {
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

/// Raises the soft limit on open files to the hard limit. Every HTTP client,
/// sink connection and buffer segment holds a descriptor, and the usual soft
/// limit of 1,024 is below what the HTTP endpoint alone may hold
/// ([`http::MAX_CONNECTIONS`]). systemd, for one, starts services with a soft
/// limit of 1,024 under a much higher hard limit, which a process has to ask for.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only to the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let err = std::io::Error::last_os_error();
        debug!(%err, "cannot read the open-file limit; keeping it");
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            let err = std::io::Error::last_os_error();
            debug!(%err, soft = before, hard = limit.rlim_max, "cannot raise the open-file limit; keeping it");
            return;
        }
        limit = raised;
    }
    debug!(
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        was = before,
        "open-file limit"
    );
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// SIGHUP (`systemctl reload`, `kill -HUP`, a closed terminal) asks for a
/// config reload; each one arrives on the returned channel. Without this a
/// hangup would end herald at once, losing what its queues hold.
fn hangups() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(err) => warn!(%err, "cannot catch SIGHUP; a hangup would stop herald at once"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Reloads the config file at `path` into the running pipeline: an invalid
/// file changes nothing (herald keeps running on the config it has), and
/// what can only change at a restart is named in the log.
fn reload(path: &Path, running: &mut pipeline::Running) {
    info!(config = %path.display(), "reloading the config (SIGHUP)");
    let outcome = Config::load(path)
        .map_err(|err| format!("{:#}", anyhow::Error::from(err)))
        .and_then(|config| {
            running
                .reload(&config)
                .map_err(|err| format!("{:#}", anyhow::Error::from(err)))
        });
    let last = match outcome {
        Ok(report) => {
            // Logs, /health and the status page redact the new secrets too.
            redact::install(running.config().redactor());
            metrics::counter!(herald::metrics::CONFIG_RELOADS, "result" => "applied").increment(1);
            let applied = if report.applied.is_empty() {
                "nothing changed".to_string()
            } else {
                report.applied.join(", ")
            };
            info!(config = %path.display(), applied, "config reloaded");
            let mut detail = format!("applied: {applied}");
            if !report.at_restart.is_empty() {
                let keys = report.at_restart.join(", ");
                warn!(config = %path.display(), keys,
                    "these changes take effect at the next restart (systemctl restart herald); until then herald keeps their running values");
                detail.push_str(&format!("; at the next restart: {keys}"));
            }
            pipeline::LastReload {
                at: jiff::Timestamp::now(),
                result: "applied",
                detail,
            }
        }
        Err(problem) => {
            metrics::counter!(herald::metrics::CONFIG_RELOADS, "result" => "failed").increment(1);
            error!(config = %path.display(), %problem,
                "config reload failed; herald keeps running on the previous config");
            pipeline::LastReload {
                at: jiff::Timestamp::now(),
                result: "failed",
                detail: problem,
            }
        }
    };
    *running
        .health
        .last_reload
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(last);
}

/// Resolves on Ctrl+C or, on Unix, SIGTERM (what service managers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                warn!(%err, "cannot listen for SIGTERM; stop with Ctrl+C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
            report.starts_with("thread 'sink-slack' panicked at src/main.rs:"),
            "{report}"
        );
        assert!(!report.contains("s3cr3t-token-value"), "{report}");
        assert!(report.contains("https://hooks.example.com/"), "{report}");
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
