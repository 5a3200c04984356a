//! The `nats` sink: each event's JSON (docs/EVENTS.md) published to a NATS
//! JetStream stream, for sites that hand their logs to a distributed log that
//! other systems consume.
//!
//! - An event counts as delivered only when the stream acknowledged it. A
//!   batch is published in windows of [`WINDOW`] events, each window's
//!   acknowledgements awaited before the next; a batch with any publish
//!   unacknowledged (timeout, lost connection) is retried by the driver.
//! - Each publish carries a `Nats-Msg-Id` ([`subject::message_id`]): the same
//!   for the same event on every retry, and after a restart from the disk
//!   buffer. JetStream stores a message whose id it saw within the stream's
//!   duplicate window once, so a batch retried after a lost acknowledgement is
//!   stored once (exactly once within the window; the window is 2 minutes
//!   unless the stream says otherwise). It also carries `Nats-Expected-Stream`,
//!   so a subject that some other stream takes is refused, not stored there.
//! - The subject is a template over the event's JSON fields
//!   ([`subject::SubjectTemplate`]), `qliksense.{{ type }}.{{ source }}.{{ host }}`
//!   by default; every value becomes one safe token.
//! - The stream is looked up when the sink connects, and again when no stream
//!   answered for a subject: if it is gone (deleted, or a memory stream lost
//!   in a server restart) the batch is retried, and with `create_stream = true`
//!   the stream is created again; if it exists but does not take the subject,
//!   those events are refused (to the dead-letter file, saying which subject),
//!   as are events whose subject another stream takes. An existing stream is
//!   never changed.
//! - One connection per sink, made on the first delivery and kept: async-nats
//!   reconnects it by itself (0.5 s doubling to 10 s), and this module logs
//!   connection changes and errors at most once per [`LOG_EVERY`]. A
//!   connection that cannot be made is a retryable error that says why (refused
//!   login, untrusted certificate, nothing listening).
//!
//! The keys and their checks are in `config`; subjects and message ids in
//! `subject`. This file holds the sink and `herald check --connect`'s probe.

mod config;
mod subject;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, ConnectErrorKind, Event as NatsEvent, ServerAddr};
use bytes::Bytes;
use metrics::{Counter, counter};
use tracing::{info, warn};

pub use config::NatsConfig;
use subject::{SubjectTemplate, message_id};

use crate::event::{Event, prefetch};
use crate::metrics::SINK_DUPLICATES;
use crate::sinks::backoff::Backoff;
use crate::sinks::mqtt::LOG_EVERY;
use crate::sinks::{Sink, SinkError};

/// Waits between reconnection attempts: from half a second up to 10 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Publishes sent before their acknowledgements are awaited; a bigger batch
/// goes in windows of this many.
const WINDOW: usize = 1000;

/// Publishes that may await their acknowledgement at once: a window, and the
/// one before it when it failed (its acknowledgements are waited for in the
/// background, at most the timeout).
const MAX_ACK_INFLIGHT: usize = 2 * WINDOW;

/// The delay before connection attempt `attempts` (async-nats counts from 1,
/// and asks before the first attempt too: that one goes at once).
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    RECONNECT.delay(u32::try_from(attempts - 2).unwrap_or(u32::MAX))
}

/// Publishes events to a JetStream stream.
pub struct NatsSink {
    config: NatsConfig,
    servers: Vec<ServerAddr>,
    subjects: SubjectTemplate,
    connection: Option<Connection>,
    watch: Arc<Watch>,
    body: Vec<u8>,
    /// Events the stream had already stored (a retried batch).
    duplicates: Counter,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("servers", &self.config.describe_servers())
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

/// A connection and what is known about the stream through it.
struct Connection {
    jetstream: jetstream::Context,
    /// The stream was found (or created) through this connection.
    stream_ready: bool,
}

/// What the connection's event callback tells the sink.
#[derive(Debug, Default)]
struct Watch {
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The client gave up (it will not reconnect): make a new one.
    closed: bool,
    connected: bool,
    ever_connected: bool,
    last_error: Option<String>,
    last_log: Option<Instant>,
    unlogged: u32,
    /// A problem was logged since the connection was last up.
    problem_logged: bool,
}

impl Watch {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs what the client reports: problems at most once per
    /// [`LOG_EVERY`], and the connection coming back after a logged problem.
    fn on(&self, event: &NatsEvent, servers: &str) {
        let mut state = self.state();
        match event {
            NatsEvent::Connected => {
                state.connected = true;
                state.last_error = None;
                if std::mem::take(&mut state.problem_logged) {
                    info!(servers, "connected to NATS again");
                } else if !state.ever_connected {
                    info!(servers, "connected to NATS");
                }
                state.ever_connected = true;
            }
            NatsEvent::Disconnected => {
                state.connected = false;
                state.log_problem(servers, "lost the connection; reconnecting".into());
            }
            NatsEvent::Closed => {
                state.connected = false;
                state.closed = true;
            }
            NatsEvent::LameDuckMode => {
                info!(
                    servers,
                    "the NATS server is shutting down (lame duck mode); herald will reconnect to another"
                );
            }
            NatsEvent::ClientError(err) => {
                let message = err.to_string();
                let message = message.strip_prefix("nats: ").unwrap_or(&message);
                let problem = describe_problem(message);
                state.last_error = Some(problem.clone());
                state.log_problem(servers, format!("{problem}; retrying"));
            }
            NatsEvent::ServerError(err) => {
                let problem = format!("the server reported: {err}");
                state.last_error = Some(problem.clone());
                state.log_problem(servers, problem);
            }
            NatsEvent::SlowConsumer(_) | NatsEvent::Draining => {}
        }
    }
}

impl WatchState {
    /// Logs `message` unless a problem was logged less than [`LOG_EVERY`] ago.
    fn log_problem(&mut self, servers: &str, message: String) {
        if self.last_log.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            self.unlogged += 1;
            return;
        }
        if self.unlogged > 0 {
            warn!(
                servers,
                "NATS: {message} ({} more problems since the last message)", self.unlogged
            );
        } else {
            warn!(servers, "NATS: {message}");
        }
        self.last_log = Some(Instant::now());
        self.unlogged = 0;
        self.problem_logged = true;
    }
}

/// What to check when the server refuses the login.
const LOGIN_HINT: &str = "check username and password, token, nkey_seed or credentials_file";
/// What to do when the server's certificate is not trusted.
const TLS_HINT: &str = "for a server with an internal CA give its certificate in tls_ca_file";

/// The stream does not exist, and herald is not to create it.
fn no_stream(config: &NatsConfig) -> String {
    format!(
        "NATS at {} has no stream {}; create it (nats stream add {} --subjects '{}') or set create_stream = true",
        config.describe_servers(),
        config.stream,
        config.stream,
        config.stream_config().subjects.join(" ")
    )
}

/// Adds what to do to the client's words for a connection problem.
fn describe_problem(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("authorization violation") || lower.contains("authentication") {
        format!("the server refused the login ({message}); {LOGIN_HINT}")
    } else if lower.contains("certificate") || lower.contains("tls") {
        format!("TLS failed ({message}); {TLS_HINT}")
    } else {
        message.to_string()
    }
}

impl NatsSink {
    /// Checks the settings and compiles the subject template; connects on the
    /// first delivery.
    ///
    /// # Errors
    ///
    /// `key: problem` when the settings are unusable.
    pub fn new(name: &str, config: &NatsConfig) -> Result<NatsSink, String> {
        let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
        config.validate().map_err(key_err)?;
        let servers = config.servers().map_err(key_err)?;
        let subjects =
            SubjectTemplate::new(&config.subject).map_err(|err| format!("subject: {err}"))?;
        Ok(NatsSink {
            config: config.clone(),
            servers,
            subjects,
            connection: None,
            watch: Arc::new(Watch::default()),
            body: Vec::with_capacity(4096),
            duplicates: counter!(SINK_DUPLICATES, "sink" => name.to_string()),
        })
    }

    fn last_error_note(&self) -> String {
        let state = self.watch.state();
        match &state.last_error {
            Some(err) if !state.connected => format!("; last connection error: {err}"),
            _ => String::new(),
        }
    }

    /// The connection, made if there is none (or the last one gave up), with
    /// the stream looked up (or created).
    async fn connection(&mut self) -> Result<&mut Connection, SinkError> {
        if self.connection.is_some() && self.watch.state().closed {
            self.connection = None;
        }
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let client = connect(&self.config, &self.servers, Some(self.watch.clone()))
                    .await
                    .map_err(SinkError::retryable)?;
                self.watch.state().closed = false;
                let jetstream = jetstream::ContextBuilder::new()
                    .timeout(self.config.timeout())
                    .ack_timeout(self.config.timeout())
                    .max_ack_inflight(MAX_ACK_INFLIGHT)
                    .backpressure_on_inflight(true)
                    .build(client);
                Connection {
                    jetstream,
                    stream_ready: false,
                }
            }
        };
        let connection = self.connection.insert(connection);
        if !connection.stream_ready {
            let found = find_stream(&connection.jetstream, &self.config).await;
            match found {
                Ok(Some(_)) => {}
                Ok(None) if self.config.create_stream => {
                    let stream = self.config.stream_config();
                    connection
                        .jetstream
                        .create_stream(stream.clone())
                        .await
                        .map_err(|err| {
                            SinkError::retryable(format!(
                                "cannot create the stream {} on NATS at {}: {err}",
                                self.config.stream,
                                self.config.describe_servers()
                            ))
                        })?;
                    info!(
                        stream = %self.config.stream,
                        subjects = ?stream.subjects,
                        "created the JetStream stream"
                    );
                }
                Ok(None) => return Err(SinkError::retryable(no_stream(&self.config))),
                Err(err) => return Err(SinkError::retryable(err)),
            }
            connection.stream_ready = true;
        }
        Ok(connection)
    }

    /// Explains a failed publish or acknowledgement.
    fn publish_error(
        &self,
        subject: &str,
        kind: PublishErrorKind,
        err: &dyn std::fmt::Display,
    ) -> SinkError {
        let servers = self.config.describe_servers();
        let stream = &self.config.stream;
        let message = match kind {
            PublishErrorKind::StreamNotFound => format!(
                "no JetStream stream on NATS at {servers} takes the subject {subject}; add it to the subjects of the stream {stream}"
            ),
            PublishErrorKind::TimedOut => format!(
                "NATS at {servers} did not acknowledge the publish to {subject} within {} ms{}",
                self.config.timeout_ms,
                self.last_error_note()
            ),
            PublishErrorKind::BrokenPipe => format!(
                "the connection to NATS at {servers} was lost before the publish to {subject} was acknowledged{}",
                self.last_error_note()
            ),
            _ => format!("publishing to {subject} on NATS at {servers} failed: {err}"),
        };
        SinkError::retryable(message)
    }
}

/// No `flush`: an event counts as delivered once the stream acknowledged it,
/// so nothing delivered waits anywhere.
impl Sink for NatsSink {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        // Subjects and payloads first: a template that fails for an event
        // refuses that event only.
        let mut publishes = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (index, event) in prefetch::ahead(batch).enumerate() {
            self.body.clear();
            event.write_json(&mut self.body);
            match self.subjects.render(&self.body) {
                Ok(subject) => publishes.push(Publish {
                    index,
                    subject,
                    id: message_id(event),
                    payload: Bytes::copy_from_slice(&self.body),
                }),
                Err(err) => rejected.push((index, err)),
            }
        }
        let stream = self.config.stream.clone();
        let mut duplicates = 0u64;
        // Published, but no stream answered for their subject.
        let mut unanswered: Vec<(usize, String)> = Vec::new();
        for window in publishes.chunks(WINDOW) {
            let mut acks = Vec::with_capacity(window.len());
            {
                let connection = self.connection().await?;
                for publish in window {
                    let message = PublishMessage::build()
                        .payload(publish.payload.clone())
                        .message_id(&publish.id)
                        .expected_stream(&stream);
                    match connection
                        .jetstream
                        .send_publish(publish.subject.clone(), message)
                        .await
                    {
                        Ok(ack) => acks.push((publish, ack)),
                        Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                            rejected.push((
                                publish.index,
                                format!("the event is larger than the server's max_payload: {err}"),
                            ));
                        }
                        Err(err) => {
                            return Err(self.publish_error(&publish.subject, err.kind(), &err));
                        }
                    }
                }
            }
            for (publish, ack) in acks {
                match ack.await {
                    Ok(ack) => duplicates += u64::from(ack.duplicate),
                    Err(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                        unanswered.push((publish.index, publish.subject.clone()));
                    }
                    Err(err)
                        if jetstream_code(&err) == Some(jetstream::ErrorCode::STREAM_NOT_MATCH) =>
                    {
                        rejected.push((
                            publish.index,
                            format!(
                                "the subject {} belongs to a stream other than {stream}; change `subject`, or the subjects of the streams",
                                publish.subject
                            ),
                        ));
                    }
                    Err(err) => {
                        return Err(self.publish_error(&publish.subject, err.kind(), &err));
                    }
                }
            }
        }
        if duplicates > 0 {
            self.duplicates.increment(duplicates);
            tracing::debug!(duplicates, stream = %stream, "JetStream had already stored some events of a retried batch; stored once");
        }
        if !unanswered.is_empty() {
            // No stream answered: either the stream is gone (deleted, or a
            // memory stream lost in a server restart), or it does not take
            // these subjects.
            let Some(connection) = self.connection.as_mut() else {
                return Err(SinkError::retryable("the connection to NATS was dropped"));
            };
            match find_stream(&connection.jetstream, &self.config).await {
                Ok(Some((subjects, _))) => {
                    for (index, subject) in unanswered {
                        rejected.push((
                            index,
                            format!(
                                "the stream {stream} takes {} but not the subject {subject}; change `subject`, or the stream's subjects",
                                subjects.join(", ")
                            ),
                        ));
                    }
                }
                Ok(None) => {
                    connection.stream_ready = false;
                    return Err(SinkError::retryable(format!(
                        "the stream {stream} is gone from NATS at {}; {}",
                        self.config.describe_servers(),
                        if self.config.create_stream {
                            "herald creates it again"
                        } else {
                            "create it again, or set create_stream = true"
                        }
                    )));
                }
                Err(err) => return Err(SinkError::retryable(err)),
            }
        }
        if !rejected.is_empty() {
            return Err(SinkError::partial(
                format!("{} event(s) cannot be published to NATS", rejected.len()),
                rejected,
            ));
        }
        Ok(())
    }
}

/// One event ready to publish.
struct Publish {
    /// Its place in the batch.
    index: usize,
    subject: String,
    id: String,
    payload: Bytes,
}

/// The JetStream error code of a failed publish, when the server sent one.
fn jetstream_code(
    err: &async_nats::jetstream::context::PublishError,
) -> Option<jetstream::ErrorCode> {
    std::error::Error::source(err)?
        .downcast_ref::<jetstream::Error>()
        .map(jetstream::Error::error_code)
}

/// Connects to the servers, waiting at most the timeout for each.
async fn connect(
    config: &NatsConfig,
    servers: &[ServerAddr],
    watch: Option<Arc<Watch>>,
) -> Result<Client, String> {
    let mut options = config
        .options()
        .await
        .map_err(|(key, problem)| format!("{key}: {problem}"))?;
    if let Some(watch) = watch {
        let described = config.describe_servers();
        options = options.event_callback(move |event| {
            let (watch, described) = (watch.clone(), described.clone());
            async move { watch.on(&event, &described) }
        });
    }
    let attempt = options.connect(servers.to_vec());
    // Each server in turn, with the waits between attempts.
    let limit = (config.timeout() + RECONNECT.base(u32::MAX))
        .saturating_mul(u32::try_from(servers.len()).unwrap_or(u32::MAX));
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => {
            // A certificate the server's chain does not lead to comes back as
            // an I/O error from the handshake.
            let tls = err.kind() == ConnectErrorKind::Tls || {
                let text = err.to_string().to_ascii_lowercase();
                text.contains("certificate") || text.contains("tls")
            };
            let what = match err.kind() {
                _ if tls => format!(
                    "TLS with NATS at {} failed ({err}); {TLS_HINT}",
                    config.describe_servers()
                ),
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    format!(
                        "NATS at {} refused the login {} ({err}); {LOGIN_HINT}",
                        config.describe_servers(),
                        config.describe_login()
                    )
                }
                ConnectErrorKind::TimedOut => format!(
                    "NATS at {} did not answer within {} ms",
                    config.describe_servers(),
                    config.timeout_ms
                ),
                _ => format!(
                    "cannot connect to NATS at {}: {err}",
                    config.describe_servers()
                ),
            };
            Err(what)
        }
        Err(_) => Err(format!(
            "NATS at {} did not answer within {} ms",
            config.describe_servers(),
            limit.as_millis()
        )),
    }
}

/// The stream's subjects and message count, or `None` when it does not exist.
async fn find_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<Option<(Vec<String>, u64)>, String> {
    match jetstream.get_stream(&config.stream).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|err| err.to_string())?;
            Ok(Some((info.config.subjects.clone(), info.state.messages)))
        }
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::JETSTREAM_NOT_ENABLED
                    || js.error_code()
                        == jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
            {
                Err(format!(
                    "JetStream is not enabled on NATS at {} for this account; start nats-server with -js (or jetstream {{}} in its config)",
                    config.describe_servers()
                ))
            }
            GetStreamErrorKind::Request => Err(format!(
                "NATS at {} did not answer the stream lookup ({err}); is JetStream enabled (nats-server -js)?",
                config.describe_servers()
            )),
            _ => Err(format!(
                "cannot look up the stream {} on NATS at {}: {err}",
                config.stream,
                config.describe_servers()
            )),
        },
    }
}

/// Connects with these settings and looks the stream up; creates nothing.
///
/// # Errors
///
/// What is wrong and how to fix it: unreachable, login refused, untrusted
/// certificate, JetStream off, no stream (without `create_stream`).
pub async fn check_connection(config: &NatsConfig) -> Result<String, String> {
    let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
    config.validate().map_err(key_err)?;
    let servers = config.servers().map_err(key_err)?;
    let client = connect(config, &servers, None).await?;
    let jetstream = jetstream::new(client.clone());
    let found = find_stream(&jetstream, config).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
    let login = config.describe_login();
    let servers = config.describe_servers();
    match found? {
        Some((subjects, messages)) => Ok(format!(
            "NATS at {servers} accepted the connection ({login}); the stream {} takes {} and holds {messages} message(s)",
            config.stream,
            subjects.join(", ")
        )),
        None if config.create_stream => Ok(format!(
            "NATS at {servers} accepted the connection ({login}); the stream {} does not exist yet and herald will create it for {}",
            config.stream,
            config.stream_config().subjects.join(", ")
        )),
        None => Err(no_stream(config)),
    }
}
