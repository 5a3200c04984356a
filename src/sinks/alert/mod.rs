//! What every alert sink (Slack, Teams, webhook, MQTT, email) shares: the
//! delivery rules and the message templates. Each destination only implements
//! [`Notifier`], and [`AlertSink`] turns it into a [`Sink`] for the generic driver.
//!
//! For each event, in order:
//!
//! 1. **De-duplication**: Sense can emit the same scheduler event twice; an event
//!    whose (outcome, execution id) was delivered within `dedupe_window_s` is
//!    suppressed and counted (`reason="duplicate"`). Events without an execution
//!    id are never de-duplicated.
//! 2. **Rate limit**: the `rate_limit_key` template (default: the task id) names a
//!    slot; an event whose slot had a *successful* delivery within
//!    `rate_limit_window_s` is suppressed and counted (`reason="rate_limited"`).
//!    A failed send takes no slot, so its retry is never suppressed (Butler's
//!    limiter did take it). An empty key is never limited.
//! 3. **Pacing**: at most `pace_per_second` messages per second with a burst of
//!    `pace_burst` (Slack allows about one per second per webhook).
//! 4. **Rendering**: the title and text templates (minijinja, over the event's
//!    JSON fields plus `links`) are rendered; if a template fails, a plain
//!    fallback message still goes out and the failure is counted.
//! 5. **Delivery**, with the driver's retries (429 honours `Retry-After`) and, after
//!    the last retry, the dead-letter file.
//!
//! Memory is bounded: the de-duplication and rate-limit tables drop expired
//! entries, and never hold more than [`MAX_KEYS`] keys.

pub mod email;
pub mod memory;
pub mod slack;
pub mod teams;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, counter};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Sink, SinkError};
use crate::event::{Event, Field, TaskOutcome};

/// Suppressed alerts, by sink and reason.
pub const ALERTS_SUPPRESSED: &str = "herald_alerts_suppressed_total";
/// Alert templates that failed to render (a fallback message was sent).
pub const ALERT_TEMPLATE_ERRORS: &str = "herald_alert_template_errors_total";

/// Most keys the de-duplication and rate-limit tables hold.
pub const MAX_KEYS: usize = 10_000;

/// Rate-limit keys are rendered from event fields, which a sender controls, so
/// the tables keep a keyed hash of each key: an entry has a fixed size however
/// long the key is, and a sender cannot pick keys that collide.
#[derive(Debug, Default)]
pub struct SlotHasher(std::hash::RandomState);

impl SlotHasher {
    /// The table key for `key`.
    pub fn slot(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.0, key)
    }
}

/// The keys every alert sink takes, besides its own and the delivery keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Template naming an event's rate-limit slot; empty result: not limited.
    #[serde(default = "default_rate_limit_key")]
    pub rate_limit_key: String,
    /// At most one delivered alert per slot in this many seconds; 0: no limit.
    #[serde(default = "default_rate_limit_window_s")]
    pub rate_limit_window_s: u64,
    /// Suppress a second alert for the same (outcome, execution id) within this
    /// many seconds; 0: no de-duplication.
    #[serde(default = "default_dedupe_window_s")]
    pub dedupe_window_s: u64,
    /// Most messages per second; 0: unpaced. Default depends on the type (Slack
    /// and Teams 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_per_second: Option<f64>,
    /// Messages that may go at once before pacing applies.
    #[serde(default = "default_pace_burst")]
    pub pace_burst: u32,
    /// Base URL of the Sense hub/QMC (e.g. `https://sense.corp.local`), for links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sense_url: Option<String>,
    /// Template for the title (subject, header); default: by event kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_template: Option<String>,
    /// Template for the body text; default: by event kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_template: Option<String>,
}

fn default_rate_limit_key() -> String {
    "{{ task_id }}".into()
}

fn default_rate_limit_window_s() -> u64 {
    300
}

fn default_dedupe_window_s() -> u64 {
    600
}

fn default_pace_burst() -> u32 {
    3
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            rate_limit_key: default_rate_limit_key(),
            rate_limit_window_s: default_rate_limit_window_s(),
            dedupe_window_s: default_dedupe_window_s(),
            pace_per_second: None,
            pace_burst: default_pace_burst(),
            sense_url: None,
            title_template: None,
            text_template: None,
        }
    }
}

/// The keys of [`AlertConfig`], for splitting a sink table.
pub const ALERT_KEYS: [&str; 8] = [
    "rate_limit_key",
    "rate_limit_window_s",
    "dedupe_window_s",
    "pace_per_second",
    "pace_burst",
    "sense_url",
    "title_template",
    "text_template",
];

const DEFAULT_TITLE: &str = r#"{%- if type == "task" -%}
{%- if outcome == "failed" %}🔴 Reload task failed: {{ task_name }}
{%- elif outcome == "aborted" %}🟠 Reload task aborted: {{ task_name }}
{%- elif outcome == "success" %}🟢 Task succeeded: {{ task_name }}
{%- else %}Task {{ outcome }}: {{ task_name }}{% endif -%}
{%- elif type == "engine_reload_failed" -%}🔴 Reload failed in the engine{% if app_id %} (app {{ app_id }}){% endif %}
{%- else -%}{{ level | default("") }} on {{ host | default("?") }}: {{ source }} {{ type }}
{%- endif -%}"#;

const DEFAULT_TEXT: &str = r#"{%- if type == "task" -%}
Task: {{ task_name }}
{% if app_name %}App: {{ app_name }}
{% endif %}Host: {{ host }}
{% if user_full %}User: {{ user_full }}
{% endif %}Time: {{ time }}
Execution: {{ execution_id }}
Message: {{ message | default("") }}
{%- else -%}
Host: {{ host | default("?") }}
Time: {{ time }}
{% if subsystem %}Subsystem: {{ subsystem }}
{% endif %}{% if user_full %}User: {{ user_full }}
{% endif %}{% if app_id %}App: {{ app_id }}
{% endif %}Message: {{ message | default("") }}
{%- if exception_message %}
Exception: {{ exception_message }}{% endif -%}
{%- endif -%}"#;

/// A rendered alert, ready for any destination's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line: subject, header.
    pub title: String,
    /// The body, several lines.
    pub text: String,
    /// Labelled links (QMC, hub, app) when `sense_url` is set.
    pub links: Vec<(String, String)>,
}

/// Compiled templates and the context they render over.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    sense_url: Option<String>,
}

impl Templates {
    /// Compiles the templates.
    ///
    /// # Errors
    ///
    /// `(key, problem)` when a template does not compile.
    pub fn new(config: &AlertConfig) -> Result<Templates, (&'static str, String)> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let add = |env: &mut Environment<'static>,
                   key: &'static str,
                   name: &'static str,
                   source: String| {
            env.add_template_owned(name, source)
                .map_err(|err| (key, format!("does not compile: {err:#}")))
        };
        add(
            &mut env,
            "title_template",
            "title",
            config
                .title_template
                .clone()
                .unwrap_or_else(|| DEFAULT_TITLE.into()),
        )?;
        add(
            &mut env,
            "text_template",
            "text",
            config
                .text_template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEXT.into()),
        )?;
        add(
            &mut env,
            "rate_limit_key",
            "key",
            config.rate_limit_key.clone(),
        )?;
        Ok(Templates {
            env,
            sense_url: config
                .sense_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    /// The template context: every event field, plus `links`.
    fn context(&self, event: &Event) -> serde_json::Value {
        let mut value: serde_json::Value =
            serde_json::from_str(&event.to_json()).unwrap_or_default();
        let links: serde_json::Map<String, serde_json::Value> = self
            .links(event)
            .into_iter()
            .map(|(name, url)| (name.to_lowercase(), serde_json::Value::String(url)))
            .collect();
        value["links"] = serde_json::Value::Object(links);
        value
    }

    /// Links into Sense for an event, when `sense_url` is configured.
    pub fn links(&self, event: &Event) -> Vec<(String, String)> {
        let Some(base) = &self.sense_url else {
            return Vec::new();
        };
        let mut links = vec![
            ("QMC".to_string(), format!("{base}/qmc/tasks")),
            ("Hub".to_string(), format!("{base}/hub/")),
        ];
        if let Some(app) = event.get(Field::AppId) {
            links.push(("App".to_string(), format!("{base}/sense/app/{app}")));
        }
        links
    }

    fn render_one(
        &self,
        name: &str,
        context: &serde_json::Value,
    ) -> Result<String, minijinja::Error> {
        self.env
            .get_template(name)?
            .render(minijinja::value::Value::from(minijinja::value::Serde(
                context,
            )))
    }

    /// The rate-limit key for an event ("" when it renders empty or fails).
    pub fn key(&self, event: &Event) -> String {
        self.render_one("key", &self.context(event))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Renders title and text; on a template error, a plain fallback (and `Err`
    /// carrying the fallback, so the caller can count it).
    pub fn render(&self, event: &Event) -> Result<Rendered, (Rendered, String)> {
        let context = self.context(event);
        let links = self.links(event);
        match (
            self.render_one("title", &context),
            self.render_one("text", &context),
        ) {
            (Ok(title), Ok(text)) => Ok(Rendered {
                title: title.trim().to_string(),
                text: text.trim().to_string(),
                links,
            }),
            (Err(err), _) | (_, Err(err)) => Err((fallback(event, links), format!("{err:#}"))),
        }
    }
}

/// The message sent when a template fails: plain, from the event's fields.
fn fallback(event: &Event, links: Vec<(String, String)>) -> Rendered {
    let get = |f| event.get(f).unwrap_or("-");
    let title = match event.outcome {
        Some(outcome) => format!("Task {}: {}", outcome.as_str(), get(Field::TaskName)),
        None => format!(
            "{} {} on {}",
            event.level.map_or("", |l| l.as_str()),
            event.event_type.as_str(),
            get(Field::Host)
        ),
    };
    let text = format!(
        "Host: {}\nTime: {}\nExecution: {}\nMessage: {}",
        get(Field::Host),
        crate::event::rfc3339(event.time.instant, event.time.offset, false),
        get(Field::ExecutionId),
        get(Field::Message)
    );
    Rendered { title, text, links }
}

/// Cuts `text` to at most `max` characters, marking the cut visibly.
pub fn cut(text: &str, max: usize) -> String {
    const MARK: &str = " … [cut]";
    match text
        .char_indices()
        .nth(max.saturating_sub(MARK.chars().count()))
    {
        Some((at, _)) if text.chars().count() > max => format!("{}{MARK}", &text[..at]),
        _ => text.to_string(),
    }
}

/// A destination for alerts: sends one rendered alert, or a batch of events.
pub trait Notifier: Send + 'static {
    /// Sends one alert.
    fn notify(
        &mut self,
        event: &Event,
        rendered: &Rendered,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why an alert was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// Same (outcome, execution id) delivered within the window.
    Duplicate,
    /// Its rate-limit slot had a delivery within the window.
    RateLimited,
}

/// De-duplication, rate limits and pacing for one sink.
#[derive(Debug)]
pub struct Gate {
    dedupe_window: Duration,
    rate_window: Duration,
    delivered: HashMap<(TaskOutcome, String), Instant>,
    slots: HashMap<u64, Instant>,
    hasher: SlotHasher,
    pace: Option<(Duration, u32)>,
    tokens: f64,
    refilled: Instant,
}

impl Gate {
    /// A gate for `config`, pacing at `pace_per_second` (0 or less: unpaced).
    pub fn new(config: &AlertConfig, pace_per_second: f64) -> Gate {
        Gate {
            dedupe_window: Duration::from_secs(config.dedupe_window_s),
            rate_window: Duration::from_secs(config.rate_limit_window_s),
            delivered: HashMap::new(),
            slots: HashMap::new(),
            hasher: SlotHasher::default(),
            pace: (pace_per_second > 0.0).then(|| {
                (
                    Duration::from_secs_f64(1.0 / pace_per_second),
                    config.pace_burst.max(1),
                )
            }),
            tokens: f64::from(config.pace_burst.max(1)),
            refilled: Instant::now(),
        }
    }

    /// The de-duplication key of `event`: (outcome, execution id).
    pub fn dedupe_key(event: &Event) -> Option<(TaskOutcome, String)> {
        Some((event.outcome?, event.get(Field::ExecutionId)?.to_string()))
    }

    /// Whether `event` (with rate-limit slot `key`) should be sent now.
    pub fn check(&mut self, event: &Event, key: &str, now: Instant) -> Option<Suppressed> {
        if !self.dedupe_window.is_zero()
            && let Some(dedupe) = Self::dedupe_key(event)
            && self
                .delivered
                .get(&dedupe)
                .is_some_and(|at| now.duration_since(*at) < self.dedupe_window)
        {
            return Some(Suppressed::Duplicate);
        }
        if !self.rate_window.is_zero()
            && !key.is_empty()
            && self
                .slots
                .get(&self.hasher.slot(key))
                .is_some_and(|at| now.duration_since(*at) < self.rate_window)
        {
            return Some(Suppressed::RateLimited);
        }
        None
    }

    /// Records a successful delivery: only now does it take its slot.
    pub fn delivered(&mut self, event: &Event, key: &str, now: Instant) {
        if !self.dedupe_window.is_zero()
            && let Some(dedupe) = Self::dedupe_key(event)
        {
            if self.delivered.len() >= MAX_KEYS {
                let window = self.dedupe_window;
                self.delivered
                    .retain(|_, at| now.duration_since(*at) < window);
            }
            if self.delivered.len() < MAX_KEYS {
                self.delivered.insert(dedupe, now);
            }
        }
        if !self.rate_window.is_zero() && !key.is_empty() {
            if self.slots.len() >= MAX_KEYS {
                let window = self.rate_window;
                self.slots.retain(|_, at| now.duration_since(*at) < window);
            }
            if self.slots.len() < MAX_KEYS {
                self.slots.insert(self.hasher.slot(key), now);
            }
        }
    }

    /// Takes in a delivery made `age` ago (by an earlier run).
    pub fn remember(&mut self, key: (TaskOutcome, String), age: Duration, now: Instant) {
        if let Some(at) = now.checked_sub(age)
            && self.delivered.len() < MAX_KEYS
        {
            self.delivered.insert(key, at);
        }
    }

    /// The deliveries still remembered, with when they happened.
    fn remembered(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (&(TaskOutcome, String), SystemTime)> {
        let wall = SystemTime::now();
        self.delivered.iter().map(move |(key, at)| {
            (
                key,
                wall.checked_sub(now.duration_since(*at)).unwrap_or(wall),
            )
        })
    }

    /// The de-duplication window.
    pub fn dedupe_window(&self) -> Duration {
        self.dedupe_window
    }

    /// How long to wait before the next message may go (and takes its token).
    pub fn pace(&mut self, now: Instant) -> Duration {
        let Some((interval, burst)) = self.pace else {
            return Duration::ZERO;
        };
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed / interval.as_secs_f64()).min(f64::from(burst));
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            interval.mul_f64(-self.tokens)
        }
    }
}

/// Metric handles of one alert sink.
#[derive(Debug, Clone)]
struct AlertMetrics {
    duplicate: Counter,
    rate_limited: Counter,
    template_errors: Counter,
}

/// An alert destination as a [`Sink`]: applies the gate and templates, then the
/// notifier.
#[derive(Debug)]
pub struct AlertSink<N> {
    name: String,
    notifier: N,
    templates: Templates,
    gate: Gate,
    metrics: AlertMetrics,
    memory: Option<memory::DeliveryMemory>,
}

impl<N: Notifier> AlertSink<N> {
    /// Wraps `notifier` for the sink named `name`.
    ///
    /// # Errors
    ///
    /// `(key, problem)` when a template does not compile.
    pub fn new(
        name: &str,
        notifier: N,
        config: &AlertConfig,
        default_pace: f64,
    ) -> Result<AlertSink<N>, (&'static str, String)> {
        Ok(AlertSink {
            name: name.to_string(),
            notifier,
            templates: Templates::new(config)?,
            gate: Gate::new(config, config.pace_per_second.unwrap_or(default_pace)),
            metrics: AlertMetrics {
                duplicate: counter!(ALERTS_SUPPRESSED, "sink" => name.to_string(), "reason" => "duplicate"),
                rate_limited: counter!(ALERTS_SUPPRESSED, "sink" => name.to_string(), "reason" => "rate_limited"),
                template_errors: counter!(ALERT_TEMPLATE_ERRORS, "sink" => name.to_string()),
            },
            memory: None,
        })
    }

    /// Keeps the de-duplication memory in the file at `path`, so that a
    /// restart remembers what was delivered (for disk-buffered sinks, whose
    /// events outlive a run).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or written.
    pub fn remember_in(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        if self.gate.dedupe_window().is_zero() {
            return Ok(());
        }
        let (memory, recent) = memory::DeliveryMemory::open(path, self.gate.dedupe_window())?;
        let now = Instant::now();
        for (key, age) in recent {
            self.gate.remember(key, age, now);
        }
        self.memory = Some(memory);
        Ok(())
    }
}

impl<N: Notifier> Sink for AlertSink<N> {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        for event in batch {
            let key = self.templates.key(event);
            match self.gate.check(event, &key, Instant::now()) {
                Some(Suppressed::Duplicate) => {
                    self.metrics.duplicate.increment(1);
                    continue;
                }
                Some(Suppressed::RateLimited) => {
                    self.metrics.rate_limited.increment(1);
                    continue;
                }
                None => {}
            }
            let wait = self.gate.pace(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let rendered = match self.templates.render(event) {
                Ok(rendered) => rendered,
                Err((fallback, err)) => {
                    self.metrics.template_errors.increment(1);
                    warn!(sink = %self.name, %err, "alert template failed; sending the plain fallback message");
                    fallback
                }
            };
            self.notifier.notify(event, &rendered).await?;
            let now = Instant::now();
            self.gate.delivered(event, &key, now);
            if let Some(memory) = &mut self.memory
                && let Some(delivered) = Gate::dedupe_key(event)
                && let Err(err) = memory.record(&delivered, self.gate.remembered(now))
            {
                warn!(sink = %self.name, %err, "cannot record a delivered alert; after a restart it could be sent again");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        crate::send::sample_event(kind)
    }

    #[test]
    fn default_task_alert_names_task_app_host_user_and_execution() {
        let templates = Templates::new(&AlertConfig {
            sense_url: Some("https://sense.lab/".into()),
            ..AlertConfig::default()
        })
        .unwrap();
        let rendered = templates.render(&event("task-failed")).unwrap();
        assert_eq!(
            rendered.title,
            "🔴 Reload task failed: Manually triggered reload of Test failing reloads 2"
        );
        for part in [
            "App: Test failing reloads 2",
            "Host: pro2-win1",
            "User: LAB\\goran",
            "Execution: 14a81bf5-f81c-4047-b1a1-193b0920de28",
            "Message: Max retries reached",
        ] {
            assert!(rendered.text.contains(part), "{part}: {}", rendered.text);
        }
        assert_eq!(
            rendered.links.last().unwrap(),
            &(
                "App".to_string(),
                "https://sense.lab/sense/app/e7af59a0-c243-480d-9571-08727551a66f".to_string()
            )
        );
    }

    #[test]
    fn default_log_alert_shows_level_host_and_message() {
        let templates = Templates::new(&AlertConfig::default()).unwrap();
        let rendered = templates.render(&event("engine")).unwrap();
        assert_eq!(rendered.title, "ERROR on pro2-win1: engine log");
        assert!(rendered.text.contains("Subsystem: System.Engine.Engine"));
    }

    #[test]
    fn a_failing_template_falls_back_to_a_plain_message() {
        let templates = Templates::new(&AlertConfig {
            title_template: Some("{{ task_name | nosuchfilter }}".into()),
            ..AlertConfig::default()
        })
        .unwrap();
        let (fallback, err) = templates.render(&event("task-failed")).unwrap_err();
        assert!(err.contains("nosuchfilter"), "{err}");
        assert_eq!(
            fallback.title,
            "Task failed: Manually triggered reload of Test failing reloads 2"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_names_its_key() {
        let err = Templates::new(&AlertConfig {
            text_template: Some("{% if %}".into()),
            ..AlertConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.0, "text_template");
    }

    #[test]
    fn the_default_rate_limit_key_is_the_task_id() {
        let templates = Templates::new(&AlertConfig::default()).unwrap();
        assert_eq!(
            templates.key(&event("task-failed")),
            "dec2a02a-1680-44ef-8dc2-e2bfb180af87"
        );
        assert_eq!(templates.key(&event("engine")), "");
    }

    #[test]
    fn duplicates_are_suppressed_only_after_a_delivery() {
        let mut gate = Gate::new(&AlertConfig::default(), 0.0);
        let failed = event("task-failed");
        let now = Instant::now();
        assert_eq!(gate.check(&failed, "", now), None);
        // Not delivered yet (say the send failed): the retry is not a duplicate.
        assert_eq!(gate.check(&failed, "", now), None);
        gate.delivered(&failed, "", now);
        assert_eq!(gate.check(&failed, "", now), Some(Suppressed::Duplicate));
        assert_eq!(
            gate.check(&failed, "", now + Duration::from_secs(601)),
            None
        );
    }

    #[test]
    fn a_rate_limit_slot_is_taken_by_a_successful_delivery_only() {
        let mut gate = Gate::new(&AlertConfig::default(), 0.0);
        let engine = event("engine");
        let now = Instant::now();
        assert_eq!(gate.check(&engine, "task-1", now), None);
        gate.delivered(&engine, "task-1", now);
        assert_eq!(
            gate.check(&engine, "task-1", now + Duration::from_secs(299)),
            Some(Suppressed::RateLimited)
        );
        assert_eq!(gate.check(&engine, "task-2", now), None);
        assert_eq!(
            gate.check(&engine, "task-1", now + Duration::from_secs(300)),
            None
        );
        assert_eq!(
            gate.check(&engine, "", now),
            None,
            "an empty key is never limited"
        );
    }

    #[test]
    fn pacing_allows_a_burst_then_one_per_interval() {
        let mut gate = Gate::new(
            &AlertConfig {
                pace_burst: 2,
                ..AlertConfig::default()
            },
            1.0,
        );
        let now = Instant::now();
        assert_eq!(gate.pace(now), Duration::ZERO);
        assert_eq!(gate.pace(now), Duration::ZERO);
        let wait = gate.pace(now);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn cut_marks_what_it_removed() {
        assert_eq!(cut("short", 10), "short");
        let long = "x".repeat(50);
        let out = cut(&long, 20);
        assert_eq!(out.chars().count(), 20);
        assert!(out.ends_with("… [cut]"));
    }
}
