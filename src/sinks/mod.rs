//! Sinks: where events go. One file per destination, each behind [`Sink`].
//!
//! A sink only implements delivery of a batch. Its queue (memory or disk
//! buffer, overflow policy, what is kept at a stop) is [`queue`]'s job; batching,
//! retries with backoff, acknowledgement, metrics, health state and the
//! dead-letter file for what it gives up on are the generic [`driver`]'s, written
//! once. [`spawn_all`] is the one place every sink type is built. Each
//! `[sinks.<name>]` table has the common keys of [`SinkConfig`] plus its type's
//! own keys ([`config`]).

pub mod alert;
pub mod backoff;
pub mod config;
pub mod driver;
pub mod file;
pub mod influxdb;
pub mod isolate;
pub mod loki;
pub mod mqtt;
pub mod nats;
pub mod queue;
pub mod stdout;
pub mod tls;
pub mod transport;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::deadletter::DeadLetters;
use crate::event::Event;
use crate::metrics::SinkMetrics;
use alert::{AlertSink, Notifier};
pub use config::{DeliveryConfig, NullConfig, SinkConfig, SinkKind};
use driver::{SinkStatus, Stopped};
use queue::{Capacity, SinkQueue};

/// A destination for events.
pub trait Sink: Send + 'static {
    /// Delivers a batch. On error nothing of the batch counts as delivered: the
    /// driver retries the whole batch or gives up on it.
    fn deliver(
        &mut self,
        batch: &[Arc<Event>],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes delivered events durable; called when the queue runs dry and at shutdown.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct SinkError {
    /// What went wrong, for logs and the dead-letter file.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// How long the destination asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// A partial failure: these events of the batch (index, reason) were refused
    /// for good and everything else was delivered. Only with `retryable == false`.
    pub rejected: Vec<(usize, String)>,
}

impl SinkError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            retryable: true,
            retry_after: None,
            status: None,
            rejected: Vec::new(),
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            retryable: false,
            retry_after: None,
            status: None,
            rejected: Vec::new(),
        }
    }

    /// Some events of the batch were refused for good; the rest were delivered.
    pub fn partial(message: impl Into<String>, rejected: Vec<(usize, String)>) -> SinkError {
        SinkError {
            rejected,
            ..SinkError::permanent(message)
        }
    }

    /// An I/O error (retryable: disks fill and free up, mounts come back).
    pub fn io(err: std::io::Error) -> SinkError {
        SinkError::retryable(err.to_string())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

/// A sink that could not be started: its name and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("sinks.{sink}: cannot start the sink: {problem}")]
pub struct StartError {
    /// The sink's name.
    pub sink: String,
    /// What is wrong, in words that name the key.
    pub problem: String,
}

/// A running sink as the pipeline holds it: its live status (with its queue)
/// and how to make its driver give way to a successor.
#[derive(Debug)]
pub struct Driver {
    /// The status `/health` shows.
    pub status: Arc<SinkStatus>,
    /// Makes the driver give way (see [`driver::Control`]).
    pub succession: driver::Succession,
}

/// Builds every configured sink and starts its driver on `tasks`. A
/// disk-buffered sink keeps its buffer in `<data_dir>/buffer/<sink name>/`.
/// Returns the drivers in config order. Must be called inside a tokio runtime.
///
/// # Errors
///
/// [`StartError`] for the first sink that cannot be built (a file that cannot
/// be opened, a template that does not compile, unusable TLS settings, a disk
/// buffer another process uses).
pub fn spawn_all(
    sinks: &BTreeMap<String, SinkConfig>,
    data_dir: &Path,
    dead: &DeadLetters,
    tasks: &mut JoinSet<Stopped>,
) -> Result<Vec<Driver>, StartError> {
    sinks
        .iter()
        .map(|(name, config)| {
            let queue = open_queue(name, config, data_dir, dead)?;
            start(name, config, data_dir, dead, queue, None, tasks)
        })
        .collect()
}

/// Opens the queue (memory or disk buffer) of the sink `name`.
///
/// # Errors
///
/// [`StartError`] when its disk buffer is in use by another process.
pub fn open_queue(
    name: &str,
    config: &SinkConfig,
    data_dir: &Path,
    dead: &DeadLetters,
) -> Result<Arc<SinkQueue>, StartError> {
    SinkQueue::open(
        name,
        Capacity {
            events: config.delivery.queue_events,
            bytes: config.delivery.queue_bytes,
        },
        config.delivery.overflow,
        &config.delivery.buffer,
        &buffer_dir(data_dir, name),
        SinkMetrics::register(name),
        dead.clone(),
    )
    .map(Arc::new)
    .map_err(|err| StartError {
        sink: name.to_string(),
        problem: err.to_string(),
    })
}

/// Builds the sink `name` on `queue` and starts its driver; the one place that
/// knows how each `type` is built. With `from`, the driver first takes over
/// the batch a predecessor on the same queue hands over.
///
/// # Errors
///
/// [`StartError`] when the sink cannot be built.
pub fn start(
    name: &str,
    config: &SinkConfig,
    data_dir: &Path,
    dead: &DeadLetters,
    queue: Arc<SinkQueue>,
    from: Option<tokio::sync::oneshot::Receiver<driver::Handover>>,
    tasks: &mut JoinSet<Stopped>,
) -> Result<Driver, StartError> {
    let status = Arc::new(SinkStatus::new(name, config.kind.type_name(), queue));
    let (control, succession) = driver::Control::new(from);
    let start = Start {
        state_dir: matches!(config.delivery.buffer, crate::buffer::BufferConfig::Disk(_))
            .then(|| buffer_dir(data_dir, name)),
        status: status.clone(),
        delivery: config.delivery.clone(),
        dead: dead.clone(),
        control,
    };
    spawn_one(name, config, start, tasks).map_err(|problem| StartError {
        sink: name.to_string(),
        problem,
    })?;
    Ok(Driver { status, succession })
}

/// What every sink's driver is started with.
struct Start {
    /// Where the sink keeps state across restarts, when it has a disk buffer.
    state_dir: Option<PathBuf>,
    status: Arc<SinkStatus>,
    delivery: DeliveryConfig,
    dead: DeadLetters,
    control: driver::Control,
}

/// Where the disk buffer of the sink `name` lives.
pub fn buffer_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("buffer").join(name)
}

impl Start {
    fn spawn<S: Sink>(self, sink: S, tasks: &mut JoinSet<Stopped>) {
        tasks.spawn(driver::run(
            sink,
            self.status,
            self.delivery,
            self.dead,
            self.control,
        ));
    }
}

/// Builds the sink `name` and starts its driver.
fn spawn_one(
    name: &str,
    config: &SinkConfig,
    start: Start,
    tasks: &mut JoinSet<Stopped>,
) -> Result<(), String> {
    match &config.kind {
        SinkKind::File(file) => {
            let sink = file::FileSink::new(file).map_err(|err| err.to_string())?;
            start.spawn(sink, tasks);
        }
        SinkKind::Stdout(stdout) => start.spawn(stdout::StdoutSink::new(stdout), tasks),
        SinkKind::Null(_) => start.spawn(NullSink, tasks),
        SinkKind::Influxdb(influx) => {
            start.spawn(influxdb::InfluxdbSink::new(influx)?, tasks);
            // Say at start-up what is wrong with InfluxDB (read-only checks), but
            // start anyway: the driver queues and retries until it is back. Loki's
            // check writes (an empty push), so it only runs under `check --connect`.
            let (name, influx) = (name.to_string(), influx.clone());
            tokio::spawn(async move {
                match influxdb::check_connection(&influx).await {
                    Ok(summary) => info!(sink = %name, "{summary}"),
                    Err(problem) => warn!(sink = %name, "{problem}; events are queued and retried"),
                }
            });
        }
        SinkKind::Loki(loki) => start.spawn(loki::LokiSink::new(loki)?, tasks),
        SinkKind::Nats(nats) => start.spawn(nats::NatsSink::new(name, nats)?, tasks),
        SinkKind::Webhook(webhook) if !config.kind.is_alert() => {
            start.spawn(webhook::WebhookBatchSink::new(webhook)?, tasks);
        }
        SinkKind::Webhook(webhook) => {
            let sink = alert_sink(name, webhook::Webhook::new(webhook)?, config, &start)?;
            start.spawn(sink, tasks);
        }
        SinkKind::Slack(slack) => {
            let sink = alert_sink(name, alert::slack::Slack::new(slack)?, config, &start)?;
            start.spawn(sink, tasks);
        }
        SinkKind::Teams(teams) => {
            let sink = alert_sink(name, alert::teams::Teams::new(teams)?, config, &start)?;
            start.spawn(sink, tasks);
        }
        SinkKind::Mqtt(mqtt) => {
            let sink = alert_sink(name, mqtt::Mqtt::new(mqtt)?, config, &start)?;
            start.spawn(sink, tasks);
        }
        SinkKind::Email(email) => {
            let sink = alert_sink(name, alert::email::Email::new(name, email)?, config, &start)?;
            start.spawn(sink, tasks);
        }
    }
    Ok(())
}

/// Wraps an alert notifier with the gate and templates of its sink's config;
/// a disk-buffered one remembers its deliveries across restarts.
fn alert_sink<N: Notifier>(
    name: &str,
    notifier: N,
    config: &SinkConfig,
    start: &Start,
) -> Result<AlertSink<N>, String> {
    let alert = config.alert.clone().unwrap_or_default();
    let mut sink = AlertSink::new(name, notifier, &alert, config.kind.default_pace())
        .map_err(|(key, problem)| format!("{key}: {problem}"))?;
    if let Some(dir) = &start.state_dir {
        let path = dir.join("delivered");
        if let Err(err) = sink.remember_in(&path) {
            warn!(sink = name, path = %path.display(), %err,
                "cannot keep the record of delivered alerts on disk; after a restart a duplicate could be sent");
        }
    }
    Ok(sink)
}

/// Connects to a sink's server, if it has one, and says whether it can be used:
/// `None` for sinks without a server (file, stdout, null).
pub async fn check_connection(kind: &SinkKind) -> Option<Result<String, String>> {
    match kind {
        SinkKind::Influxdb(config) => Some(influxdb::check_connection(config).await),
        SinkKind::Loki(config) => Some(loki::check_connection(config).await),
        SinkKind::Mqtt(config) => Some(mqtt::check_connection(config).await),
        SinkKind::Nats(config) => Some(nats::check_connection(config).await),
        SinkKind::Email(config) => Some(alert::email::check_connection(config).await),
        SinkKind::File(_)
        | SinkKind::Stdout(_)
        | SinkKind::Null(_)
        | SinkKind::Slack(_)
        | SinkKind::Teams(_)
        | SinkKind::Webhook(_) => None,
    }
}

/// A sink that discards everything (benchmarks measure the pipeline with it).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    async fn deliver(&mut self, _batch: &[Arc<Event>]) -> Result<(), SinkError> {
        Ok(())
    }
}
