//! The commands that do their work and end: `check`, `send`, `replay`,
//! `appenders`, `import` and `tap`. Each reads its options, calls the library,
//! and says what happened on standard output and standard error; none keeps
//! running (that is [`crate::daemon`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use herald::config::Config;
use herald::{appenders, pipeline, replay, send};

use crate::{daemon, load, logging, say};

/// `herald import`: reads a Butler SOS or Butler config and prints or writes
/// the herald config for it, then says what to do next.
pub(crate) fn import(
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
pub(crate) fn tap(args: &herald::tap::client::TapArgs) -> anyhow::Result<()> {
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

pub(crate) fn check(path: &Path, connect: bool) -> anyhow::Result<()> {
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
pub(crate) struct SendLimits {
    pub(crate) from: Option<IpAddr>,
    pub(crate) count: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) rate: Option<f64>,
    pub(crate) sockets: usize,
}

pub(crate) fn send_samples(
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

pub(crate) fn replay_dead_letters(
    path: &Path,
    options: &replay::ReplayOptions,
) -> anyhow::Result<()> {
    let config = load(path)?;
    logging::init_logging(&config);
    let runtime = daemon::runtime()?;
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

pub(crate) fn write_appenders(
    target: &appenders::Target,
    out: &Path,
    force: bool,
) -> anyhow::Result<()> {
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
