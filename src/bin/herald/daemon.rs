//! `herald run`: starts the pipeline, the metrics recorder and the HTTP
//! endpoint, tells the service manager it is ready, reloads the config on
//! SIGHUP and stops on SIGTERM or Ctrl+C, giving the sinks their grace period.
//! The pipeline itself (ingest, parse, route, sinks) is the library's.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use herald::config::Config;
use herald::{http, pipeline, redact, service};
use tracing::{debug, error, info, warn};

use crate::{load, logging};

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    logging::init_logging(&config);
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
    let runtime = runtime()?;
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

/// The runtime the sinks and the HTTP endpoint run on, for `herald run` and
/// `herald replay` alike: two worker threads named `herald-async`.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herald-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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
