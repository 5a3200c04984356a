//! What the config's types alone cannot check: pure (no sockets, no DNS, no
//! files), and every problem names its key and the fix.

use super::*;

impl Config {
    /// Checks what types alone cannot; returns every problem, each with its
    /// key.
    pub(super) fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut invalid = |key: &str, problem: String| problems.push((key.to_string(), problem));
        let ingest = &self.ingest;
        if ingest.listen.is_empty() {
            invalid(
                "ingest.listen",
                "no address to listen on; add e.g. listen = [\"0.0.0.0:9996\", \"0.0.0.0:9997\", \"0.0.0.0:9998\"]".into(),
            );
        }
        if ingest.allow.is_empty() {
            invalid("ingest.allow", EMPTY_ALLOWLIST.into());
        }
        for (i, entry) in ingest.allow.iter().enumerate() {
            if let Err(problem) = AllowEntry::parse(entry) {
                invalid(&format!("ingest.allow[{i}]"), problem);
            }
        }
        if !(1..=65_535).contains(&ingest.max_datagram_bytes) {
            invalid(
                "ingest.max_datagram_bytes",
                format!(
                    "{} is out of range; use 1 to 65535 (65507 is the IPv4 maximum)",
                    ingest.max_datagram_bytes
                ),
            );
        }
        if ingest.recv_batch == 0 || ingest.recv_batch > 1024 {
            invalid(
                "ingest.recv_batch",
                "use 1 to 1024 (64 is a good value)".into(),
            );
        }
        if self.http.enabled && !self.http.listen.ip().is_loopback() && self.http.token.is_none() {
            invalid(
                "http.listen",
                format!(
                    "{} can be reached from other machines, and /health shows every sink's state and last error; \
                     set http.token = \"${{HERALD_HTTP_TOKEN}}\" (clients then send Authorization: Bearer <token>), \
                     or listen on 127.0.0.1",
                    self.http.listen
                ),
            );
        }
        if self
            .http
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            invalid(
                "http.token",
                "is shorter than 16 characters; use a long random value, e.g. from `openssl rand -hex 32`".into(),
            );
        }
        if ingest.allow_refresh_seconds == 0 {
            invalid("ingest.allow_refresh_seconds", "must be at least 1".into());
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            invalid(
                "log.level",
                format!(
                    "{:?} is not a log filter ({err}); use error, warn, info, debug or trace",
                    self.log.level
                ),
            );
        }
        if self.pipeline.workers == 0 || self.pipeline.workers > 64 {
            invalid(
                "pipeline.workers",
                "use 1 to 64 (one per core is plenty)".into(),
            );
        }
        if self.pipeline.queue_batches == 0 {
            invalid("pipeline.queue_batches", "must be at least 1".into());
        }
        if self.pipeline.queue_bytes < MIN_QUEUE_BYTES {
            invalid(
                "pipeline.queue_bytes",
                format!(
                    "must be at least {MIN_QUEUE_BYTES} (1 MiB); the default is 67108864 (64 MiB)"
                ),
            );
        }
        if let Err(err) = crate::parse::Parser::new(&self.parse) {
            let key = self
                .parse
                .host_time_zones
                .iter()
                .find(|(_, zone)| crate::parse::time_zone(zone).is_err())
                .map_or("parse.time_zone".to_string(), |(host, _)| {
                    format!("parse.host_time_zones.{host}")
                });
            invalid(&key, err.to_string());
        }
        if self.parse.max_text_bytes == 0 || self.parse.max_field_bytes == 0 {
            invalid(
                "parse.max_text_bytes",
                "field caps must be at least 1 byte".into(),
            );
        }
        for (i, rule) in self.categorise.rules.iter().enumerate() {
            for (key, problem) in rule.match_.problems() {
                invalid(&format!("categorise.rules[{i}].match.{key}"), problem);
            }
        }
        if let Err(err) = Categoriser::new(&self.categorise) {
            let detail = err.source.to_string();
            invalid(
                &format!(
                    "categorise.rules[{}].filters[{}].value",
                    err.rule, err.filter
                ),
                format!(
                    "invalid regex {:?}: {}",
                    err.value,
                    detail.lines().last().unwrap_or("")
                ),
            );
        }
        if self.sinks.is_empty() {
            invalid(
                "sinks",
                "no sinks configured, so every event would be dropped; add one, e.g.\n  [sinks.events]\n  type = \"file\"\n  path = \"data/events.jsonl\"".into(),
            );
        }
        if self.sinks.len() > MAX_SINKS {
            invalid(
                "sinks",
                format!(
                    "{} sinks configured; at most {MAX_SINKS} are supported",
                    self.sinks.len()
                ),
            );
        }
        for (name, sink) in &self.sinks {
            let key = |field: &str| format!("sinks.{name}.{field}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                invalid(
                    &format!("sinks.{name}"),
                    "sink names may only use letters, digits, `_` and `-`".into(),
                );
            }
            if let Some((field, url)) = sink.kind.http_url()
                && let Err(problem) = crate::sinks::transport::check_url(url)
            {
                invalid(&key(field), problem);
            }
            let delivery = &sink.delivery;
            for (field, problem) in delivery.match_.problems() {
                invalid(&key(&format!("match.{field}")), problem);
            }
            if delivery.queue_events == 0 {
                invalid(&key("queue_events"), "must be at least 1".into());
            }
            if delivery.queue_bytes < MIN_QUEUE_BYTES {
                invalid(
                    &key("queue_bytes"),
                    format!(
                        "must be at least {MIN_QUEUE_BYTES} (1 MiB); the default is 134217728 (128 MiB)"
                    ),
                );
            }
            if delivery.batch_max_events == 0 {
                invalid(&key("batch_max_events"), "must be at least 1".into());
            }
            if delivery.retry_initial_ms > delivery.retry_max_ms {
                invalid(
                    &key("retry_initial_ms"),
                    "must not exceed retry_max_ms".into(),
                );
            }
            if let crate::buffer::BufferConfig::Disk(disk) = &delivery.buffer {
                if disk.max_bytes < crate::buffer::MIN_DISK_BYTES {
                    invalid(
                        &key("buffer.max_bytes"),
                        format!(
                            "{} bytes is too small for a disk buffer; use at least {} (64 KiB), e.g. 1073741824 (1 GiB)",
                            disk.max_bytes,
                            crate::buffer::MIN_DISK_BYTES
                        ),
                    );
                }
                if disk.sync_interval_ms == 0 {
                    invalid(
                        &key("buffer.sync_interval_ms"),
                        "must be at least 1 (500 syncs twice a second)".into(),
                    );
                }
            }
            if let Some(alert) = &sink.alert
                && let Err((field, problem)) = crate::sinks::alert::Templates::new(alert)
            {
                invalid(&key(field), problem);
            }
            match &sink.kind {
                SinkKind::File(file) if file.path.as_os_str().is_empty() => {
                    invalid(
                        &key("path"),
                        "is empty; give a file such as \"data/events.jsonl\"".into(),
                    );
                }
                SinkKind::Influxdb(influx) => {
                    if let Err((field, problem)) = influx.validate() {
                        invalid(&key(field), problem);
                    }
                }
                SinkKind::Loki(loki) => {
                    if let Err((field, problem)) = loki.validate() {
                        invalid(&key(field), problem);
                    }
                }
                SinkKind::Mqtt(mqtt) => {
                    if let Err((field, problem)) = mqtt.validate() {
                        invalid(&key(field), problem);
                    }
                }
                SinkKind::Nats(nats) => {
                    if let Err((field, problem)) = nats.validate() {
                        invalid(&key(field), problem);
                    }
                }
                SinkKind::Email(email) => {
                    if let Err((field, problem)) = email.validate() {
                        invalid(&key(field), problem);
                    }
                }
                SinkKind::Webhook(webhook) => {
                    if let Err(problem) = crate::sinks::webhook::Webhook::new(webhook) {
                        // The problem starts with the key it is about.
                        let (field, problem) = problem
                            .split_once(": ")
                            .filter(|(field, _)| matches!(*field, "headers" | "tls_ca_file"))
                            .map_or(("headers", problem.as_str()), |(f, p)| (f, p));
                        invalid(&key(field), problem.to_string());
                    }
                }
                _ => {}
            }
        }
        if let Some(dead) = &self.dead_letter
            && dead.path.as_os_str().is_empty()
        {
            invalid(
                "dead_letter.path",
                "is empty; give a file such as \"data/dead-letter.jsonl\"".into(),
            );
        }
        problems
    }
}
