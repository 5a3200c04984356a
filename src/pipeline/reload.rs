//! Applying a new config to a running pipeline (`SIGHUP`, `systemctl reload`).
//!
//! The caller has already loaded and validated the new file; an invalid file
//! never gets here, so herald keeps running on the config it has. What a
//! reload applies at once, without losing or repeating an event:
//!
//! * the allowlist (resolved first; a list of which nothing resolves is
//!   refused, as at start), read by the receive threads at their next batch;
//! * routing: each sink's `match`, the categorisation rules and the static
//!   tags, swapped as a whole between two batches of every worker;
//! * sinks: a changed sink gets a new driver that takes over its queue (and
//!   the batch the old driver held: the old one finishes the delivery it is
//!   in, then gives way); a sink whose memory queue settings changed gets a
//!   new queue while the old one drains; added sinks start, removed ones
//!   drain and stop. A disk buffer stays with its sink (one queue opens it at
//!   a time), so its own settings change at the next restart.
//!
//! Every new sink is built before anything changes: if one cannot start, the
//! reload fails and everything stays as it was. Listening addresses added to
//! `ingest.listen` are bound first (a port in use fails the reload) and get
//! their receive threads; removed ones are closed; unchanged ones keep their
//! sockets. The HTTP endpoint, workers, parsing, logging, the other ingest
//! settings and the dead-letter file keep their running values until the
//! next restart; the report names each such key.

use std::sync::{Arc, PoisonError};

use tracing::info;

use super::{PipelineError, Route, Routing, Running, resolve_allowlist};
use crate::config::Config;
use crate::route::{Enricher, Matcher};
use crate::sinks;

/// Longest a reload waits for the workers to let go of the old routes before
/// closing the queues of removed sinks (they refresh every 200 ms at most).
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a reload changes a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A new driver takes over the same queue from the old one.
    TakeOver,
    /// A new queue and driver; the old queue drains with its old driver.
    NewQueue,
    /// A sink the running config did not have.
    Added,
}

/// A driver a reload started, not yet in place.
struct Started {
    name: String,
    driver: sinks::Driver,
    change: Change,
    /// Passes on what the old driver hands over ([`Change::TakeOver`]).
    relay: Option<tokio::sync::oneshot::Sender<crate::sinks::driver::Handover>>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The parts applied, e.g. `ingest.allow`, `sinks.events.match`.
    pub applied: Vec<String>,
    /// The keys that changed but take effect only at the next restart.
    pub at_restart: Vec<String>,
}

impl Running {
    /// Applies what can change while running from `new` (see the module
    /// docs) and says what changed and what waits for a restart.
    ///
    /// # Errors
    ///
    /// [`PipelineError::AllowlistUnresolved`] when none of the new allowlist
    /// entries resolves; nothing is applied then.
    pub fn reload(&mut self, new: &Config) -> Result<ReloadReport, PipelineError> {
        let mut report = ReloadReport::default();
        let old = &self.config;

        // Resolve first: a refused allowlist must leave everything as it was.
        let allowlist = if new.ingest.allow == old.ingest.allow {
            None
        } else {
            Some(resolve_allowlist(&new.ingest.allow)?)
        };

        let mut ingest_old = toml_of(&old.ingest);
        let mut ingest_new = toml_of(&new.ingest);
        for table in [&mut ingest_old, &mut ingest_new] {
            if let toml::Value::Table(table) = table {
                table.remove("allow");
                table.remove("listen");
            }
        }
        if ingest_old != ingest_new {
            report
                .at_restart
                .push("ingest (except allow and listen)".into());
        }

        // New listening addresses are bound before anything changes (a port
        // in use fails the reload); addresses kept keep their sockets. New
        // sockets get the running ingest settings.
        let mut bound = Vec::new();
        for &addr in &new.ingest.listen {
            if !self.ingest.iter().any(|listener| listener.addr == addr) {
                bound.push(crate::ingest::bind_one(addr, &old.ingest)?);
            }
        }
        for (key, changed) in [
            ("http", toml_of(&old.http) != toml_of(&new.http)),
            ("pipeline", toml_of(&old.pipeline) != toml_of(&new.pipeline)),
            ("parse", toml_of(&old.parse) != toml_of(&new.parse)),
            ("log", toml_of(&old.log) != toml_of(&new.log)),
            ("metrics", toml_of(&old.metrics) != toml_of(&new.metrics)),
            (
                "dead_letter",
                toml_of(&old.dead_letter) != toml_of(&new.dead_letter),
            ),
            ("data_dir", old.data_dir != new.data_dir),
        ] {
            if changed {
                report.at_restart.push(key.into());
            }
        }

        // Sinks. Build every new driver first: if one cannot start, nothing
        // changes (the new drivers wait for a handover and are told to give
        // way at once).
        let current = self.routing.load();
        let mut started: Vec<Started> = Vec::new();
        for (name, sink) in &new.sinks {
            let change = match (old.sinks.get(name), self.drivers.get(name)) {
                (Some(was), Some(_)) if without_match(was) == without_match(sink) => {
                    if toml_of(&was.delivery.match_) != toml_of(&sink.delivery.match_) {
                        report.applied.push(format!("sinks.{name}.match"));
                    }
                    continue;
                }
                (Some(was), Some(_)) if queue_settings(was) == queue_settings(sink) => {
                    Change::TakeOver
                }
                (Some(was), Some(_)) if is_disk(was) || is_disk(sink) => {
                    // A disk buffer is opened by one queue at a time: keep
                    // it, and change its settings at the next restart.
                    report
                        .at_restart
                        .push(format!("sinks.{name} (buffer and queue settings)"));
                    Change::TakeOver
                }
                (Some(_), Some(_)) => Change::NewQueue,
                _ => Change::Added,
            };
            // A take-over reuses the queue and gets what the old driver hands
            // over, relayed once the old one is told to give way (below).
            let (queue, from, relay) = match change {
                Change::TakeOver => {
                    let (relay, handover) = tokio::sync::oneshot::channel();
                    let queue = self.drivers[name].status.queue.clone();
                    (Ok(queue), Some(handover), Some(relay))
                }
                Change::NewQueue | Change::Added => (
                    sinks::open_queue(name, sink, &old.data_dir, &self.dead),
                    None,
                    None,
                ),
            };
            let result = queue.and_then(|queue| {
                sinks::start(
                    name,
                    sink,
                    &old.data_dir,
                    &self.dead,
                    queue,
                    from,
                    &mut self.sink_tasks,
                )
                .map(|driver| (driver, relay))
            });
            match result {
                Ok((driver, relay)) => started.push(Started {
                    name: name.clone(),
                    driver,
                    change,
                    relay,
                }),
                Err(err) => {
                    for started in started {
                        let _ = started.driver.succession.retire.send(true);
                    }
                    return Err(PipelineError::Sink(err));
                }
            }
        }

        // The new routes: every sink of the new config, on its queue.
        let mut routes = Vec::with_capacity(new.sinks.len());
        for (name, sink) in &new.sinks {
            let queue = match started.iter().find(|started| &started.name == name) {
                Some(started) => started.driver.status.queue.clone(),
                None => match current.routes.iter().find(|route| &route.sink == name) {
                    Some(route) => route.queue.clone(),
                    None => continue,
                },
            };
            routes.push(Route {
                sink: name.clone(),
                matcher: Matcher::new(&sink.delivery.match_),
                queue,
            });
        }
        let removed: Vec<String> = self
            .drivers
            .keys()
            .filter(|name| !new.sinks.contains_key(*name))
            .cloned()
            .collect();
        let tags_changed = old.tags != new.tags;
        let categorise_changed = toml_of(&old.categorise) != toml_of(&new.categorise);
        if tags_changed {
            report.applied.push("tags".into());
        }
        if categorise_changed {
            report.applied.push("categorise".into());
        }
        let enricher = if tags_changed || categorise_changed {
            // Validated with the config.
            Enricher::new(&new.tags, &new.categorise).unwrap_or_default()
        } else {
            current.enricher.clone()
        };
        drop(current);
        let old_routing = self.routing.replace(Routing { routes, enricher });

        // Listeners: start the new, stop those no longer configured.
        let listen_changed = !bound.is_empty()
            || self
                .ingest
                .iter()
                .any(|listener| !new.ingest.listen.contains(&listener.addr));
        for listener in bound {
            let Some(tx) = &self.tx else { break };
            let info = (
                listener.name.clone(),
                listener.bound.local_addr,
                listener.bound.receive_buffer_bytes,
            );
            self.health
                .listeners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(info);
            let thread = super::spawn_ingest(
                listener,
                &old.ingest,
                &self.health.allowlist,
                tx,
                &self.handoff,
            )?;
            self.ingest.push(thread);
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ingest)
            .into_iter()
            .partition(|listener| new.ingest.listen.contains(&listener.addr));
        self.ingest = kept;
        for listener in dropped {
            info!(listener = %listener.addr, "no longer listening (removed from ingest.listen)");
            listener
                .stop
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.ingest_stopped.push(listener.thread);
        }
        if listen_changed {
            self.health
                .listeners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|(name, _, _)| new.ingest.listen.iter().any(|a| a.to_string() == *name));
            report.applied.push("ingest.listen".into());
        }

        // Drivers that give way hand their batch to their successors.
        let mut closing: Vec<Arc<crate::sinks::queue::SinkQueue>> = Vec::new();
        for Started {
            name,
            driver,
            change,
            relay,
        } in started
        {
            let previous = self.drivers.insert(name.clone(), driver);
            match (change, previous) {
                (Change::TakeOver, Some(previous)) => {
                    let _ = previous.succession.retire.send(true);
                    if let Some(relay) = relay {
                        let handover = previous.succession.handover;
                        tokio::spawn(async move {
                            if let Ok(batch) = handover.await {
                                let _ = relay.send(batch);
                            }
                        });
                    }
                    report.applied.push(format!("sinks.{name}"));
                }
                (Change::NewQueue, Some(previous)) => {
                    closing.push(previous.status.queue.clone());
                    report.applied.push(format!("sinks.{name}"));
                }
                (_, _) => report.applied.push(format!("sinks.{name} (added)")),
            }
        }
        for name in removed {
            if let Some(previous) = self.drivers.remove(&name) {
                closing.push(previous.status.queue.clone());
                report.applied.push(format!("sinks.{name} (removed)"));
            }
        }
        // A queue no route leads to any more is closed once every worker has
        // let go of the old routes (they could still push to it until then);
        // its driver then delivers what it holds and stops.
        self.retiring.extend(closing.iter().cloned());
        if !closing.is_empty() {
            tokio::spawn(async move {
                let since = std::time::Instant::now();
                while Arc::strong_count(&old_routing) > 1 && since.elapsed() < RELEASE_WAIT {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                for queue in closing {
                    queue.close();
                }
            });
        }
        *self
            .health
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self
            .drivers
            .values()
            .map(|driver| driver.status.clone())
            .collect();

        if let Some(resolved) = allowlist {
            for host in &resolved.resolution.unresolved {
                tracing::warn!(
                    host,
                    "ingest.allow: host name does not resolve; its datagrams will be refused until it does"
                );
            }
            info!(
                entries = resolved.resolution.allowlist.len(),
                "allowlist replaced by the reloaded config"
            );
            self.health.allowlist.replace(resolved.resolution.allowlist);
            *self
                .health
                .unresolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                resolved.resolution.unresolved;
            self.allow_entries.replace(resolved.entries);
            report.applied.push("ingest.allow".into());
        }

        // What is running now: the new config, except for what waits for a
        // restart, which keeps its running value until then.
        let mut applied = old.clone();
        applied.ingest.allow = new.ingest.allow.clone();
        applied.ingest.listen = new.ingest.listen.clone();
        applied.tags = new.tags.clone();
        applied.categorise = new.categorise.clone();
        applied.sinks = new.sinks.clone();
        applied.redact_secrets_of(new);
        *self
            .health
            .config_toml
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = applied.to_toml();
        self.config = applied;
        Ok(report)
    }
}

/// A config section as TOML, for telling whether it changed (secrets show as
/// `<redacted>`, so a changed secret alone does not count).
fn toml_of<T: serde::Serialize>(value: &T) -> toml::Value {
    toml::Value::try_from(value).unwrap_or(toml::Value::Boolean(false))
}

/// A sink's queue settings: what its queue was opened with.
fn queue_settings(sink: &crate::sinks::SinkConfig) -> toml::Value {
    let delivery = &sink.delivery;
    toml_of(&(
        &delivery.buffer,
        delivery.queue_events,
        delivery.queue_bytes,
        delivery.overflow,
    ))
}

fn is_disk(sink: &crate::sinks::SinkConfig) -> bool {
    matches!(sink.delivery.buffer, crate::buffer::BufferConfig::Disk(_))
}

/// A sink's config without its `match`.
fn without_match(sink: &crate::sinks::SinkConfig) -> toml::Value {
    let mut value = toml_of(sink);
    if let toml::Value::Table(table) = &mut value {
        table.remove("match");
    }
    value
}
