//! The `mqtt` sink: each event's JSON (docs/EVENTS.md) published to an MQTT
//! 3.1.1 broker, on topics from a template or from a preset that mimics the
//! tools Sense admins already run (Butler SOS, Butler).
//!
//! One connection per sink, kept by a background task that polls rumqttc's event
//! loop forever: it reconnects with a short backoff, logs connection problems at
//! most once per [`LOG_EVERY`], and never logs the password.
//!
//! Delivery is confirmed: with `qos` 1 or 2 a publish only counts when the broker
//! has acknowledged it (PUBACK, or PUBCOMP for QoS 2); with `qos` 0 when it has
//! been written to the connection. The background task matches acknowledgements
//! to publishes by packet id; what is waiting when the connection fails is failed
//! at once with the reason (say "refused the credentials (not authorised)"), and
//! a publish that is not acknowledged within `timeout_ms` is a retryable error
//! carrying the last connection error. The driver then retries, so delivery is
//! at least once: a retry after a lost acknowledgement can publish twice.
//!
//! Topics:
//!
//! - `preset = "butler-sos"` (Butler SOS's defaults): log and qix-perf events on
//!   `qliksense/logevent` and `qliksense/logevent/<subsystem, lower-cased, dots as
//!   slashes>`; session and connection events on `qliksense/userevent` and, by
//!   command, `qliksense/userevent/session/start|stop` or
//!   `qliksense/userevent/connection/open|close`. Task events have no topic.
//! - `preset = "butler"` (Butler's defaults): a failed task on
//!   `qliksense/task_failure` with the task name as payload (as Butler sends it)
//!   and `qliksense/task_failure_full` with the event JSON; aborted tasks on
//!   `qliksense/task_aborted` and `qliksense/task_aborted_full`. Butler publishes
//!   nothing for successful or distribute tasks; herald adds `task_success(_full)`
//!   and `task_distribute(_full)` the same way. Other events have no topic.
//! - `preset = "herald"` (the default): `herald/<type>/<source>`.
//! - `topic`: a template over the event's JSON fields, e.g.
//!   `"sense/{{ type }}/{{ host }}"`; each non-empty line of the result is one
//!   topic, and a result with none publishes nothing. The `topic_path` filter
//!   turns a value into topic levels like the subsystem topics above.
//!
//! `base_topic` replaces a preset's first level (`qliksense` or `herald`). An
//! event a preset has no topic for is not published (a warning says so once per
//! event type); give the sink a `match` table to route only what it publishes.
//!
//! The sink is a [`Notifier`], wrapped by the alert layer's
//! [`AlertSink`](crate::sinks::alert::AlertSink) like every other notifier (its
//! de-duplication and rate limits default to off for MQTT). This file holds the
//! notifier and `herald check --connect`'s probe; the keys and their checks are
//! in `config`, the topic layouts in `topics`, the connection task and the
//! acknowledgement tracking in `connection`, and the plain-words messages for
//! connection and TLS errors in `describe`.

mod config;
mod connection;
mod describe;
mod topics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Outgoing, Packet, QoS};
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use config::MqttConfig;
use config::random_client_id;
pub use connection::LOG_EVERY;
use connection::{Shared, connection_task};
use describe::Describe;
use topics::Topics;
pub use topics::{Payload, Preset, topic_path};

use crate::event::{Event, EventType, Field};
use crate::sinks::SinkError;
use crate::sinks::alert::{Notifier, Rendered};

/// Largest publish herald sends (payload and topic); larger events are refused.
const PACKET_MAX: usize = 4 * 1024 * 1024;
/// How long `check_connection` waits for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes events to an MQTT broker.
pub struct Mqtt {
    client: AsyncClient,
    shared: Arc<Shared>,
    topics: Topics,
    preset: Option<Preset>,
    qos: QoS,
    retain: bool,
    timeout: Duration,
    broker: String,
    body: Vec<u8>,
    /// Event types already warned about having no topic.
    warned: [bool; EventType::ALL.len()],
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("broker", &self.broker)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl Mqtt {
    /// Builds the client and starts its connection task (needs a Tokio runtime).
    ///
    /// # Errors
    ///
    /// `key: problem` when the settings are unusable (including unreadable TLS
    /// files); an unreachable broker is not an error here.
    pub fn new(config: &MqttConfig) -> Result<Mqtt, String> {
        let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
        config.validate().map_err(key_err)?;
        let topics = Topics::new(config).map_err(key_err)?;
        let client_id = config.client_id.clone().unwrap_or_else(random_client_id);
        let options = config.options(client_id.clone()).map_err(key_err)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the MQTT sink needs the async runtime".to_string())?;
        let (client, eventloop) = AsyncClient::new(options, config.queue_messages);
        let shared = Arc::new(Shared::default());
        runtime.spawn(connection_task(
            eventloop,
            shared.clone(),
            config.qos_level(),
            Describe::new(config, &client_id),
        ));
        Ok(Mqtt {
            client,
            shared,
            topics,
            preset: if config.topic.is_some() {
                None
            } else {
                Some(config.preset.unwrap_or(Preset::Herald))
            },
            qos: config.qos_level(),
            retain: config.retain,
            timeout: Duration::from_millis(config.timeout_ms),
            broker: config.broker(),
            body: Vec::with_capacity(4096),
            warned: [false; EventType::ALL.len()],
        })
    }

    /// The topics and payloads for `event` (empty: it is not published).
    ///
    /// # Errors
    ///
    /// When a topic template fails or renders an invalid topic.
    pub fn publications(&self, event: &Event) -> Result<Vec<(String, Payload)>, String> {
        self.topics.publications(event)
    }

    fn last_error_note(&self) -> String {
        let tracker = self.shared.tracker();
        match &tracker.last_error {
            Some(err) if !tracker.connected => format!("; last connection error: {err}"),
            _ => String::new(),
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
        self.shared.close.notify_one();
    }
}

impl Notifier for Mqtt {
    async fn notify(&mut self, event: &Event, _rendered: &Rendered) -> Result<(), SinkError> {
        let publications = self
            .publications(event)
            .map_err(|err| SinkError::permanent(format!("MQTT: {err}")))?;
        if publications.is_empty() {
            let index = EventType::ALL
                .iter()
                .position(|t| *t == event.event_type)
                .unwrap_or(0);
            if !self.warned[index] {
                self.warned[index] = true;
                match self.preset {
                    Some(preset) => warn!(
                        broker = %self.broker,
                        "the MQTT preset {:?} has no topic for {} events; they are not published (give this sink a match table to route only the events it publishes)",
                        preset.as_str(),
                        event.event_type.as_str()
                    ),
                    None => info!(
                        broker = %self.broker,
                        "the MQTT topic template rendered no topic for a {} event; it is not published",
                        event.event_type.as_str()
                    ),
                }
            }
            return Ok(());
        }
        self.body.clear();
        event.write_json(&mut self.body);
        let longest_topic = publications.iter().map(|(t, _)| t.len()).max();
        if self.body.len() + longest_topic.unwrap_or(0) > PACKET_MAX {
            return Err(SinkError::permanent(format!(
                "MQTT: the event is {} bytes of JSON, more than the {PACKET_MAX} herald publishes",
                self.body.len()
            )));
        }
        let mut waiting = Vec::with_capacity(publications.len());
        {
            let mut tracker = self.shared.tracker();
            for (topic, payload) in publications {
                let payload = match payload {
                    Payload::Json => self.body.clone(),
                    Payload::TaskName => event
                        .get(Field::TaskName)
                        .filter(|name| !name.is_empty())
                        .unwrap_or("(unnamed task)")
                        .as_bytes()
                        .to_vec(),
                };
                let (tx, rx) = oneshot::channel();
                tracker.queued.push_back(tx);
                if let Err(err) =
                    self.client
                        .try_publish(topic.as_str(), self.qos, self.retain, payload)
                {
                    tracker.queued.pop_back();
                    let why = match err {
                        rumqttc::ClientError::TryRequest(_) | rumqttc::ClientError::Request(_)
                            if !tracker.connected =>
                        {
                            format!(
                                "queue_messages publishes are already waiting for the MQTT broker at {}{}",
                                self.broker,
                                tracker
                                    .last_error
                                    .as_ref()
                                    .map(|e| format!("; last connection error: {e}"))
                                    .unwrap_or_default()
                            )
                        }
                        _ => format!(
                            "cannot hand the publish to {topic} to the MQTT connection (queue full or connection task stopped)"
                        ),
                    };
                    return Err(SinkError::retryable(why));
                }
                waiting.push((topic, rx));
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        for (topic, rx) in waiting {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(message))) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT publish to {topic} failed: {message}"
                    )));
                }
                Ok(Err(_)) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT publish to {topic} failed: the connection task stopped"
                    )));
                }
                Err(_) => {
                    return Err(SinkError::retryable(format!(
                        "MQTT broker at {} did not acknowledge the publish to {topic} within {} ms{}",
                        self.broker,
                        self.timeout.as_millis(),
                        self.last_error_note()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Connects with these settings, waits for the broker's CONNACK (5 s) and
/// disconnects.
///
/// # Errors
///
/// What is wrong and how to fix it: unreachable, untrusted certificate,
/// credentials refused, bad settings.
pub async fn check_connection(config: &MqttConfig) -> Result<String, String> {
    let key_err = |(key, problem): (&'static str, String)| format!("{key}: {problem}");
    config.validate().map_err(key_err)?;
    // Not the sink's own id: a broker disconnects a client whose id connects again,
    // and a running herald should not be kicked off by `herald check --connect`.
    let client_id = match &config.client_id {
        Some(id) => format!("{id}-check"),
        None => random_client_id(),
    };
    let options = config.options(client_id.clone()).map_err(key_err)?;
    let describe = Describe::new(config, &client_id);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let first = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), eventloop.poll())
        .await
        .map_err(|_| describe.connection_error(&ConnectionError::NetworkTimeout))?;
    match first {
        Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
            let _ = client.disconnect().await;
            // Send the DISCONNECT; the broker then closes the connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = eventloop.poll().await {
                    if event == rumqttc::Event::Outgoing(Outgoing::Disconnect) {
                        break;
                    }
                }
            })
            .await;
            Ok(format!(
                "MQTT broker at {} accepted the connection ({})",
                config.broker(),
                config.describe_login()
            ))
        }
        Ok(other) => Err(format!(
            "MQTT broker at {} answered the login with {other:?} instead of CONNACK",
            config.broker()
        )),
        Err(err) => Err(describe.connection_error(&err)),
    }
}

/// What the tests of every part of this sink share.
#[cfg(test)]
mod testing {
    use super::{MqttConfig, Payload, Topics};
    use crate::event::Event;

    pub fn event(kind: &str) -> Event {
        crate::send::sample_event(kind)
    }

    pub fn config(extra: &str) -> MqttConfig {
        toml::from_str(&format!("host = \"mqtt.lab\"\n{extra}")).unwrap()
    }

    pub fn topics(config: &MqttConfig, kind: &str) -> Vec<(String, Payload)> {
        config.validate().unwrap();
        Topics::new(config)
            .unwrap()
            .publications(&event(kind))
            .unwrap()
    }

    pub fn names(config: &MqttConfig, kind: &str) -> Vec<String> {
        topics(config, kind).into_iter().map(|(t, _)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::testing::{config, event};
    use super::*;

    #[tokio::test]
    async fn new_reports_bad_settings_as_key_and_problem() {
        let err = Mqtt::new(&config("qos = 7")).unwrap_err();
        assert!(err.starts_with("qos: "), "{err}");
    }

    /// A minimal MQTT 3.1.1 server: answers CONNECT with `connack_code` and, when
    /// `ack` is set, each QoS 1 PUBLISH with its PUBACK. Returns its port and the
    /// topics it received.
    async fn fake_broker(connack_code: u8, ack: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let topics = Arc::new(Mutex::new(Vec::new()));
        let seen = topics.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    loop {
                        let mut header = [0u8; 1];
                        if socket.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let (mut length, mut shift) = (0usize, 0);
                        loop {
                            let mut byte = [0u8; 1];
                            if socket.read_exact(&mut byte).await.is_err() {
                                return;
                            }
                            length |= usize::from(byte[0] & 0x7f) << shift;
                            shift += 7;
                            if byte[0] & 0x80 == 0 {
                                break;
                            }
                        }
                        let mut body = vec![0u8; length];
                        if socket.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let reply: Vec<u8> = match header[0] >> 4 {
                            1 => vec![0x20, 0x02, 0x00, connack_code],
                            3 => {
                                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                                let topic = String::from_utf8_lossy(&body[2..2 + topic_len]);
                                seen.lock().unwrap().push(topic.into_owned());
                                let pkid = &body[2 + topic_len..4 + topic_len];
                                if ack {
                                    vec![0x40, 0x02, pkid[0], pkid[1]]
                                } else {
                                    Vec::new()
                                }
                            }
                            12 => vec![0xd0, 0x00],
                            _ => Vec::new(),
                        };
                        if !reply.is_empty() && socket.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, topics)
    }

    fn rendered() -> Rendered {
        Rendered {
            title: String::new(),
            text: String::new(),
            links: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_publish_returns_once_the_broker_acknowledges_it() {
        let (port, topics) = fake_broker(0, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\npreset = \"butler\""
            ))
            .unwrap(),
        )
        .unwrap();
        for _ in 0..3 {
            mqtt.notify(&event("task-failed"), &rendered())
                .await
                .unwrap();
        }
        assert_eq!(
            topics.lock().unwrap().as_slice(),
            ["qliksense/task_failure", "qliksense/task_failure_full"].repeat(3)
        );
    }

    #[tokio::test]
    async fn an_unacknowledged_publish_times_out_as_retryable() {
        let (port, _) = fake_broker(0, false).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\ntimeout_ms = 300"
            ))
            .unwrap(),
        )
        .unwrap();
        let err = mqtt
            .notify(&event("engine"), &rendered())
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(
            err.message,
            format!(
                "MQTT broker at 127.0.0.1:{port} did not acknowledge the publish to herald/log/engine within 300 ms"
            )
        );
    }

    #[tokio::test]
    async fn a_refused_login_fails_the_publish_at_once_with_the_reason() {
        let (port, topics) = fake_broker(5, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\nusername = \"u\"\npassword = \"p\""
            ))
            .unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        let err = mqtt
            .notify(&event("engine"), &rendered())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "not a timeout");
        assert!(err.retryable);
        assert!(
            err.message.contains(&format!(
                "MQTT broker at 127.0.0.1:{port} refused the credentials (not authorised) for user \"u\""
            )),
            "{}",
            err.message
        );
        assert!(topics.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_event_without_a_topic_is_not_published() {
        let (port, topics) = fake_broker(0, true).await;
        let mut mqtt = Mqtt::new(
            &toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\npreset = \"butler\""
            ))
            .unwrap(),
        )
        .unwrap();
        mqtt.notify(&event("engine"), &rendered()).await.unwrap();
        mqtt.notify(&event("task-aborted"), &rendered())
            .await
            .unwrap();
        assert_eq!(
            topics.lock().unwrap().as_slice(),
            ["qliksense/task_aborted", "qliksense/task_aborted_full"]
        );
    }
}
