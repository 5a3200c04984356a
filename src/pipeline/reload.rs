//! Applying a new config to a running pipeline (`SIGHUP`, `systemctl reload`).
//!
//! The caller has already loaded and validated the new file; an invalid file
//! never gets here, so herald keeps running on the config it has. What a
//! reload applies at once, without losing or repeating an event:
//!
//! * the allowlist (resolved first; a list of which nothing resolves is
//!   refused, as at start), read by the receive threads at their next batch;
//! * routing: each sink's `match`, the categorisation rules and the static
//!   tags, swapped as a whole between two batches of every worker.
//!
//! Everything else (listeners, the HTTP endpoint, workers, parsing, the
//! dead-letter file, and sinks added, removed or changed in anything but
//! `match`) keeps its running value until the next restart; the report names
//! each such key so the log can say so.

use tracing::info;

use super::{PipelineError, Route, Routing, Running, resolve_allowlist};
use crate::config::Config;
use crate::route::{Enricher, Matcher};

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
            }
        }
        if ingest_old != ingest_new {
            report.at_restart.push("ingest (except allow)".into());
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

        // Sinks: `match` applies now; anything else, and sinks added or
        // removed, at the next restart.
        let current = self.routing.load();
        let mut routes = Vec::with_capacity(current.routes.len());
        for route in &current.routes {
            let matcher = match new.sinks.get(&route.sink) {
                Some(sink) => {
                    let was = &old.sinks[&route.sink];
                    if toml_of(&was.delivery.match_) != toml_of(&sink.delivery.match_) {
                        report.applied.push(format!("sinks.{}.match", route.sink));
                    }
                    if without_match(was) != without_match(sink) {
                        report.at_restart.push(format!("sinks.{}", route.sink));
                    }
                    Matcher::new(&sink.delivery.match_)
                }
                None => {
                    report
                        .at_restart
                        .push(format!("sinks.{} (removed)", route.sink));
                    route.matcher.clone()
                }
            };
            routes.push(Route {
                sink: route.sink.clone(),
                matcher,
                queue: route.queue.clone(),
            });
        }
        for name in new.sinks.keys() {
            if !old.sinks.contains_key(name) {
                report.at_restart.push(format!("sinks.{name} (added)"));
            }
        }
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
        self.routing.replace(Routing { routes, enricher });

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
        applied.tags = new.tags.clone();
        applied.categorise = new.categorise.clone();
        for (name, sink) in &mut applied.sinks {
            if let Some(new_sink) = new.sinks.get(name) {
                sink.delivery.match_ = new_sink.delivery.match_.clone();
            }
        }
        self.config = applied;
        Ok(report)
    }
}

/// A config section as TOML, for telling whether it changed (secrets show as
/// `<redacted>`, so a changed secret alone does not count).
fn toml_of<T: serde::Serialize>(value: &T) -> toml::Value {
    toml::Value::try_from(value).unwrap_or(toml::Value::Boolean(false))
}

/// A sink's config without its `match`.
fn without_match(sink: &crate::sinks::SinkConfig) -> toml::Value {
    let mut value = toml_of(sink);
    if let toml::Value::Table(table) = &mut value {
        table.remove("match");
    }
    value
}
