//! The pipeline: wires ingest → parse/route workers → sink queues → sink drivers,
//! and owns start-up and shutdown.
//!
//! ```text
//! ingest thread (one per socket) ──try_send──▶ bounded batch channel ──▶ worker threads
//!   worker: parse, categorise, route ──push──▶ each sink's queue (memory or disk buffer)
//!     ──▶ sink driver task: batch, deliver, retry, acknowledge
//! ```
//!
//! Shutdown follows the data: the stop flag ends the ingest threads, whose
//! senders drop; the workers finish the queued batches and exit; then each sink
//! queue is closed and its driver delivers what is left. When
//! `pipeline.shutdown_grace_ms` ends first, every driver stops where it is and
//! keeps what is left (disk buffer, or the dead-letter file for a memory
//! buffer); [`Running::stop`] reports where.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::gauge;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

mod reload;
mod worker;

pub use reload::ReloadReport;

use crate::budget::ByteBudget;
use crate::config::{Config, EMPTY_ALLOWLIST};
use crate::deadletter::{self, DeadLetters};
use crate::gaps::SenderGaps;
use crate::ingest::allowlist::{AllowEntry, Resolution, SharedAllowlist, resolve};
use crate::ingest::{self, Batch, BindError};
use crate::metrics::{ALLOWLIST_ENTRIES, ALLOWLIST_UNRESOLVED, HostLabels, WorkerMetrics};
use crate::parse::Parser;
use crate::route::{Enricher, Matcher};
use crate::sinks::driver::{SinkState, SinkStatus, Stopped};
use crate::sinks::queue::{Kept, SinkQueue};
use crate::sinks::{self, StartError};
use crate::swap::Swap;
use crate::tap::Taps;
use worker::{Route, Routing, STREAMS_PER_HOST, Worker, WorkerShared};

/// Why the pipeline could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// No allowlist entry resolved.
    #[error("ingest.allow: none of the entries resolved ({unresolved}); {EMPTY_ALLOWLIST}")]
    AllowlistUnresolved {
        /// The names that did not resolve.
        unresolved: String,
    },
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A sink could not be set up.
    #[error(transparent)]
    Sink(#[from] StartError),
    /// The dead-letter file cannot be opened.
    #[error("dead_letter.path: cannot open the dead-letter file")]
    DeadLetter(#[source] std::io::Error),
    /// A thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    /// A sink did not stop even after the grace period ended (a bug: every
    /// driver stops at once then). What it held may be lost.
    #[error(
        "{0} sink(s) did not stop within {1:?} of the end of pipeline.shutdown_grace_ms; what they held may be lost"
    )]
    StuckSinks(usize, Duration),
}

/// What `/health` reports, shared with the HTTP endpoint.
#[derive(Debug)]
pub struct Health {
    /// When the pipeline started.
    pub started: Instant,
    /// Each listener: configured name, bound address, granted receive buffer.
    pub listeners: Mutex<Vec<(String, SocketAddr, usize)>>,
    /// The live allowlist.
    pub allowlist: Arc<SharedAllowlist>,
    /// Allowlist host names that did not resolve at the last attempt.
    pub unresolved: Mutex<Vec<String>>,
    /// Every sink's status (a reload replaces them).
    pub sinks: Mutex<Vec<Arc<SinkStatus>>>,
    /// Set once shutdown begins.
    pub stopping: AtomicBool,
    /// The last config reload: when, and what came of it.
    pub last_reload: Mutex<Option<LastReload>>,
    /// Each Sense appender's row counter, for loss detection per sender.
    pub senders: Arc<SenderGaps>,
    /// The taps open on the event stream (`GET /tap`).
    pub taps: Arc<Taps>,
    /// The config in effect, as TOML with secrets redacted (for the status page).
    pub config_toml: Mutex<String>,
}

/// A config reload as `/health` shows it.
#[derive(Debug, Clone)]
pub struct LastReload {
    /// When it happened.
    pub at: jiff::Timestamp,
    /// `applied` or `failed`.
    pub result: &'static str,
    /// What changed, what waits for a restart, or why it failed.
    pub detail: String,
}

impl Health {
    /// Each listener now: configured name, bound address, granted receive buffer.
    pub fn listeners(&self) -> Vec<(String, SocketAddr, usize)> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every sink's status now.
    pub fn sinks(&self) -> Vec<Arc<SinkStatus>> {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `ok`, `degraded` (a sink retrying or failing, or its buffer refusing
    /// writes) or `stopping`, and whether that counts as healthy (`ok`).
    pub fn overall(&self) -> (&'static str, bool) {
        if self.stopping.load(Ordering::Relaxed) {
            return ("stopping", false);
        }
        let healthy = self.sinks().iter().all(|sink| {
            matches!(sink.state(), SinkState::Ok | SinkState::Stopped)
                && sink.queue.buffer_status().error.is_none()
        });
        if healthy {
            ("ok", true)
        } else {
            ("degraded", false)
        }
    }

    /// Allowlist host names that did not resolve.
    pub fn unresolved(&self) -> Vec<String> {
        self.unresolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The allowlist as configured and as resolved at start.
#[derive(Debug)]
pub struct ResolvedAllowlist {
    /// The entries as configured.
    pub entries: Vec<AllowEntry>,
    /// The resolved list and the names that did not resolve.
    pub resolution: Resolution,
    /// Each host name's addresses, kept for the next refresh.
    pub known: Vec<(String, Vec<IpAddr>)>,
}

/// Resolves the allowlist, failing closed when nothing in it resolves.
///
/// # Errors
///
/// [`PipelineError::AllowlistUnresolved`].
pub fn resolve_allowlist(entries: &[String]) -> Result<ResolvedAllowlist, PipelineError> {
    // Entries were validated with the config; a failure here cannot happen.
    let entries: Vec<AllowEntry> = entries
        .iter()
        .filter_map(|e| AllowEntry::parse(e).ok())
        .collect();
    let (resolution, known) = resolve(&entries, &[]);
    if resolution.allowlist.is_empty() {
        return Err(PipelineError::AllowlistUnresolved {
            unresolved: resolution.unresolved.join(", "),
        });
    }
    for host in &resolution.unresolved {
        warn!(
            host,
            "ingest.allow: host name does not resolve; its datagrams will be refused until it does"
        );
    }
    Ok(ResolvedAllowlist {
        entries,
        resolution,
        known,
    })
}

/// A pipeline that is running.
pub struct Running {
    /// Live status for `/health`.
    pub health: Arc<Health>,
    stop: Arc<AtomicBool>,
    ingest: Vec<IngestThread>,
    /// Receive threads a reload stopped, joined at the stop.
    ingest_stopped: Vec<JoinHandle<()>>,
    /// Where receive threads hand batches; dropped at the stop so the
    /// workers see the end once the receive threads are gone.
    tx: Option<crossbeam_channel::Sender<Batch>>,
    handoff: Arc<ByteBudget>,
    workers: Vec<JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
    routing: Arc<Swap<Routing>>,
    allow_entries: Arc<Swap<Vec<AllowEntry>>>,
    /// The config in effect, for telling what a reload changes.
    config: Config,
    /// Every sink's driver, by name.
    drivers: BTreeMap<String, sinks::Driver>,
    /// Queues of sinks a reload removed, still draining.
    retiring: Vec<Arc<SinkQueue>>,
    sink_tasks: JoinSet<Stopped>,
    dead: DeadLetters,
    dead_letter_writer: Option<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Starts every stage. Must be called inside a multi-threaded tokio runtime.
///
/// # Errors
///
/// When a socket, file or thread cannot be set up, or no allowlist entry resolves.
pub fn start(config: &Config) -> Result<Running, PipelineError> {
    let ResolvedAllowlist {
        entries,
        resolution,
        known,
    } = resolve_allowlist(&config.ingest.allow)?;
    gauge!(ALLOWLIST_ENTRIES).set(resolution.allowlist.len() as f64);
    gauge!(ALLOWLIST_UNRESOLVED).set(resolution.unresolved.len() as f64);
    let allowlist = Arc::new(SharedAllowlist::new(resolution.allowlist));

    let listeners = ingest::bind_all(&config.ingest)?;

    let (dead, dead_letter_writer) = match &config.dead_letter {
        Some(dead_config) => {
            let (dead, writer) =
                deadletter::start(dead_config).map_err(PipelineError::DeadLetter)?;
            (dead, Some(writer))
        }
        None => (DeadLetters::disabled(), None),
    };

    let mut sink_tasks = JoinSet::new();
    let drivers = sinks::spawn_all(&config.sinks, &config.data_dir, &dead, &mut sink_tasks)?;
    let routes: Vec<Route> = drivers
        .iter()
        .zip(&config.sinks)
        .map(|(driver, (name, sink))| Route {
            sink: name.clone(),
            matcher: Matcher::new(&sink.delivery.match_),
            queue: driver.status.queue.clone(),
        })
        .collect();
    let statuses: Vec<_> = drivers.iter().map(|driver| driver.status.clone()).collect();
    let drivers: BTreeMap<String, sinks::Driver> =
        config.sinks.keys().cloned().zip(drivers).collect();
    let routing = Arc::new(Swap::new(Routing {
        routes,
        // Validated with the config.
        enricher: Enricher::new(&config.tags, &config.categorise).unwrap_or_default(),
    }));

    let (tx, rx) = crossbeam_channel::bounded::<Batch>(config.pipeline.queue_batches);
    let handoff = Arc::new(ByteBudget::new(config.pipeline.queue_bytes));
    let hosts = Arc::new(HostLabels::new(config.metrics.max_hosts));
    // A Sense node runs up to about six appenders (one per service, plus
    // qix-perf); room for all of them on every host that gets a label.
    let senders = Arc::new(SenderGaps::new(
        hosts.clone(),
        (config.metrics.max_hosts + 1) * STREAMS_PER_HOST,
    ));
    let taps = Taps::new();
    let shared = Arc::new(WorkerShared {
        routing: routing.clone(),
        dead: dead.clone(),
        metrics: WorkerMetrics::register(),
        hosts,
        handoff: handoff.clone(),
        senders: senders.clone(),
        taps: taps.clone(),
        sequence: AtomicU64::new(0),
    });
    let parser = Parser::new(&config.parse)
        .map_err(|err| PipelineError::Thread(std::io::Error::other(err)))?;
    let mut worker_threads = Vec::new();
    let workers = config.pipeline.workers;
    for index in 0..workers {
        let rx = rx.clone();
        let worker = Worker::new(parser.clone(), shared.clone());
        worker_threads.push(
            std::thread::Builder::new()
                .name(format!("worker {index}"))
                .spawn(move || worker::run(&rx, worker))
                .map_err(PipelineError::Thread)?,
        );
    }
    drop(rx);

    let stop = Arc::new(AtomicBool::new(false));
    let listener_info: Vec<_> = listeners
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.bound.local_addr,
                l.bound.receive_buffer_bytes,
            )
        })
        .collect();
    let mut ingest_threads = Vec::new();
    for listener in listeners {
        ingest_threads.push(spawn_ingest(
            listener,
            &config.ingest,
            &allowlist,
            &tx,
            &handoff,
        )?);
    }

    let health = Arc::new(Health {
        started: Instant::now(),
        listeners: Mutex::new(listener_info),
        allowlist: allowlist.clone(),
        unresolved: Mutex::new(resolution.unresolved),
        sinks: Mutex::new(statuses),
        stopping: AtomicBool::new(false),
        last_reload: Mutex::new(None),
        senders,
        taps,
        config_toml: Mutex::new(config.to_toml()),
    });
    // The refresher runs even without host names in the list: a reload may
    // add some.
    let allow_entries = Arc::new(Swap::new(entries));
    let refresher = {
        let health = health.clone();
        let stop = stop.clone();
        let entries = allow_entries.clone();
        let every = Duration::from_secs(config.ingest.allow_refresh_seconds);
        Some(
            std::thread::Builder::new()
                .name("allowlist refresh".into())
                .spawn(move || refresh_allowlist(&entries, known, &health, &stop, every))
                .map_err(PipelineError::Thread)?,
        )
    };

    Ok(Running {
        health,
        stop,
        ingest: ingest_threads,
        ingest_stopped: Vec::new(),
        tx: Some(tx),
        handoff,
        workers: worker_threads,
        refresher,
        routing,
        allow_entries,
        config: config.clone(),
        drivers,
        retiring: Vec::new(),
        sink_tasks,
        dead,
        dead_letter_writer,
        grace: Duration::from_millis(config.pipeline.shutdown_grace_ms),
    })
}

/// What a stop did with the events still queued when its grace period ended.
#[derive(Debug, Clone, Default)]
pub struct StopReport {
    /// Per sink that had something left: its name, buffer type and what was kept where.
    pub sinks: Vec<Stopped>,
    /// Totals over every sink.
    pub kept: Kept,
}

/// How long after the grace period the stop waits for drivers that are
/// already told to stop (they stop at once; this only guards against a bug).
const STOP_SLACK: Duration = Duration::from_secs(5);

impl Running {
    /// The config in effect: the one started with, with what reloads applied.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops ingest, lets the workers finish, gives every sink the grace period
    /// (`pipeline.shutdown_grace_ms`) to deliver what is queued, then keeps what
    /// is left: in each disk buffer for the next start, or in the dead-letter
    /// file (`reason="shutdown"`) for memory-buffered sinks.
    ///
    /// # Errors
    ///
    /// [`PipelineError::StuckSinks`] when a sink's driver does not stop after
    /// it was told to.
    pub async fn stop(mut self) -> Result<StopReport, PipelineError> {
        self.health.stopping.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for listener in &self.ingest {
            listener.stop.store(true, Ordering::Relaxed);
        }
        self.tx = None;
        let grace = self.grace;
        let threads: Vec<_> = self
            .ingest
            .drain(..)
            .map(|listener| listener.thread)
            .chain(self.ingest_stopped.drain(..))
            .chain(self.workers.drain(..))
            .chain(self.refresher.take())
            .collect();
        let queues: Vec<Arc<SinkQueue>> = std::mem::take(&mut self.drivers)
            .into_values()
            .map(|driver| driver.status.queue.clone())
            .chain(std::mem::take(&mut self.retiring))
            .collect();
        for queue in &queues {
            queue.begin_stop();
        }
        let mut sink_tasks = std::mem::take(&mut self.sink_tasks);
        // When the grace period ends, every sink stops where it is (and a
        // worker waiting on a full `block` queue gives up waiting).
        let end_of_grace = {
            let queues = queues.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                for queue in &queues {
                    queue.abort();
                }
            })
        };
        // Ingest threads come first in the list: once they are gone the
        // workers see a closed channel, finish and exit.
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await
        .ok();
        for queue in &queues {
            queue.close();
        }
        let mut report = StopReport::default();
        let joined = tokio::time::timeout(grace + STOP_SLACK, async {
            while let Some(stopped) = sink_tasks.join_next().await {
                let Ok(stopped) = stopped else { continue };
                report.kept += stopped.kept;
                if stopped.kept != Kept::default() {
                    report.sinks.push(stopped);
                }
            }
        })
        .await;
        end_of_grace.abort();
        // A driver that panicked or hangs did not keep its queue: keep it here.
        for queue in &queues {
            queue.abort();
            let kept = queue.keep(Vec::new());
            if kept != Kept::default() {
                report.kept += kept;
                report.sinks.push(Stopped {
                    sink: queue.name().to_string(),
                    buffer: queue.buffer_status().type_name,
                    kept,
                });
            }
        }
        // The dead-letter writer writes what it was given and ends.
        self.dead.finish();
        if let Some(writer) = self.dead_letter_writer.take() {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .ok();
        }
        if joined.is_err() {
            return Err(PipelineError::StuckSinks(sink_tasks.len(), STOP_SLACK));
        }
        let kept = report.kept;
        if kept == Kept::default() {
            info!("shutdown complete: every queued event was delivered");
        } else {
            for stopped in &report.sinks {
                warn!(sink = %stopped.sink, buffer = stopped.buffer,
                    in_disk_buffer = stopped.kept.disk_buffer,
                    in_dead_letter_file = stopped.kept.dead_letter, lost = stopped.kept.lost,
                    "sink still had events when the grace period ended");
            }
            if kept.lost > 0 {
                error!(
                    in_disk_buffer = kept.disk_buffer,
                    in_dead_letter_file = kept.dead_letter,
                    lost = kept.lost,
                    "shutdown complete; events that memory-buffered sinks could not deliver were lost because the dead-letter file could not take them (configure [dead_letter], or use buffer = {{ type = \"disk\" }})"
                );
            } else {
                info!(
                    in_disk_buffer = kept.disk_buffer,
                    in_dead_letter_file = kept.dead_letter,
                    "shutdown complete; undelivered events are kept: disk buffers resume at the next start, and `herald replay` re-sends the dead-letter file"
                );
            }
        }
        Ok(report)
    }
}

/// A receive thread and how to stop it on its own (a reload that drops its
/// address).
struct IngestThread {
    /// The address as configured.
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Starts the receive thread of `listener`.
fn spawn_ingest(
    listener: ingest::Listener,
    config: &ingest::IngestConfig,
    allowlist: &Arc<SharedAllowlist>,
    tx: &crossbeam_channel::Sender<Batch>,
    handoff: &Arc<ByteBudget>,
) -> Result<IngestThread, PipelineError> {
    let addr = listener.name.parse().unwrap_or(listener.bound.local_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = ingest::spawn(
        listener,
        config,
        allowlist.clone(),
        tx.clone(),
        handoff.clone(),
        stop.clone(),
    )
    .map_err(PipelineError::Thread)?;
    Ok(IngestThread { addr, stop, thread })
}

/// Re-resolves allowlist host names every `every` until `stop`.
fn refresh_allowlist(
    entries: &Swap<Vec<AllowEntry>>,
    mut known: Vec<(String, Vec<IpAddr>)>,
    health: &Health,
    stop: &AtomicBool,
    every: Duration,
) {
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + every;
        let entries = entries.load();
        if !entries.iter().any(|e| matches!(e, AllowEntry::Host(_))) {
            continue;
        }
        let (resolution, now_known) = resolve(&entries, &known);
        known = now_known;
        if resolution.allowlist.is_empty() {
            warn!("ingest.allow: no entry resolves any more; keeping the previous allowlist");
            continue;
        }
        gauge!(ALLOWLIST_ENTRIES).set(resolution.allowlist.len() as f64);
        gauge!(ALLOWLIST_UNRESOLVED).set(resolution.unresolved.len() as f64);
        if *health.allowlist.load() != resolution.allowlist {
            info!(
                entries = resolution.allowlist.len(),
                "allowlist changed after resolving host names again"
            );
            health.allowlist.replace(resolution.allowlist);
        }
        *health
            .unresolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = resolution.unresolved;
    }
}
