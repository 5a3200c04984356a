//! The connection to the broker: a background task that polls rumqttc's event
//! loop for as long as the sink lives, reconnecting with backoff (0.5 s doubling
//! to 10 s, with jitter) and logging failures at most once per [`LOG_EVERY`],
//! and the tracker that matches the broker's acknowledgements to the publishes
//! waiting for them. It does not choose topics or build payloads, and it never
//! logs the password.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{Notify, oneshot};
use tracing::{info, warn};

use super::describe::Describe;
use crate::sinks::backoff::Backoff;

/// Connection errors are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Waits between reconnection attempts: from half a second up to 10 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Told the outcome of one publish.
type Waiter = oneshot::Sender<Result<(), String>>;

/// Matches publishes to their acknowledgements. The notifier pushes a waiter and
/// enqueues its publish under the same lock, so waiters are in the order rumqttc
/// takes the publishes from its channel; rumqttc reports each publish it sends
/// (with its packet id) in that order, and then its acknowledgement.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Enqueued, not yet sent: in channel order.
    pub(super) queued: VecDeque<Waiter>,
    /// Sent with QoS 1 or 2, by packet id.
    inflight: HashMap<u16, Waiter>,
    /// Taken by rumqttc but held back: its packet id was still in flight.
    collided: Option<(u16, Waiter)>,
    /// Whether the connection is up.
    pub(super) connected: bool,
    /// Why the last connection attempt failed (cleared on connect).
    pub(super) last_error: Option<String>,
}

impl Tracker {
    /// rumqttc sent the next publish with packet id `pkid`.
    fn sent(&mut self, pkid: u16, qos: QoS) {
        // While a collision is pending rumqttc takes no new publish, so this is it.
        let waiter = match self.collided.take() {
            Some((_, waiter)) => Some(waiter),
            None => self.queued.pop_front(),
        };
        let Some(waiter) = waiter else { return };
        if qos == QoS::AtMostOnce {
            let _ = waiter.send(Ok(()));
        } else {
            self.inflight.insert(pkid, waiter);
        }
    }

    /// rumqttc took the next publish but holds it until `pkid` is acknowledged.
    fn collision(&mut self, pkid: u16) {
        if let Some(waiter) = self.queued.pop_front() {
            self.collided = Some((pkid, waiter));
        }
    }

    /// The broker acknowledged `pkid` (PUBACK for QoS 1, PUBCOMP for QoS 2).
    fn acknowledged(&mut self, pkid: u16) {
        if let Some(waiter) = self.inflight.remove(&pkid) {
            let _ = waiter.send(Ok(()));
        }
    }

    /// The connection failed: nothing waiting will be sent any more.
    fn fail_all(&mut self, message: &str) {
        let waiters = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, w)| w))
            .chain(self.collided.take().map(|(_, w)| w));
        for waiter in waiters {
            let _ = waiter.send(Err(message.to_string()));
        }
    }
}

/// What the notifier and its connection task share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    tracker: Mutex<Tracker>,
    pub(super) closing: AtomicBool,
    pub(super) close: Notify,
}

impl Shared {
    pub(super) fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the connection: polls the event loop forever, reconnecting with backoff.
pub(super) async fn connection_task(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    qos: QoS,
    describe: Describe,
) {
    let mut failed_attempts = 0u32;
    let mut last_log: Option<Instant> = None;
    let mut failures_since_log = 0u32;
    let mut last_logged: Option<String> = None;
    let mut ever_connected = false;
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let polled = if closing {
            if !shared.tracker().connected {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
                Ok(polled) => polled,
                Err(_) => break,
            }
        } else {
            eventloop.poll().await
        };
        match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                failed_attempts = 0;
                let mut tracker = shared.tracker();
                tracker.connected = true;
                tracker.last_error = None;
                drop(tracker);
                if !ever_connected || last_log.is_some() {
                    info!(broker = %describe.broker, "connected to the MQTT broker");
                }
                ever_connected = true;
                last_log = None;
                last_logged = None;
                failures_since_log = 0;
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                shared.tracker().sent(pkid, qos);
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                shared.tracker().collision(pkid);
            }
            Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) if qos == QoS::AtLeastOnce => {
                shared.tracker().acknowledged(ack.pkid);
            }
            Ok(rumqttc::Event::Incoming(Packet::PubComp(comp))) if qos == QoS::ExactlyOnce => {
                shared.tracker().acknowledged(comp.pkid);
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect))
                if shared.closing.load(Ordering::Acquire) =>
            {
                break;
            }
            Ok(_) => {}
            Err(err) => {
                let was_connected = shared.tracker().connected;
                let message = if was_connected {
                    describe.lost(&err)
                } else {
                    describe.connection_error(&err)
                };
                {
                    let mut tracker = shared.tracker();
                    // With a clean session, rumqttc drops whatever was in flight or
                    // in its channel when it reconnects; say so now rather than
                    // leave the notifier waiting. Under the lock, so no publish is
                    // enqueued in between.
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state.events.clear();
                    eventloop.state.collision = None;
                    tracker.fail_all(&message);
                    tracker.connected = false;
                    tracker.last_error = Some(message.clone());
                }
                if shared.closing.load(Ordering::Acquire) {
                    break;
                }
                failures_since_log += 1;
                // A new kind of failure is logged at once, the same one again at
                // most every LOG_EVERY.
                let changed = last_logged.as_deref() != Some(message.as_str());
                if changed || last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    let earlier = failures_since_log - 1;
                    if earlier > 0 {
                        warn!(broker = %describe.broker, "{message}; retrying ({earlier} more failed attempts since the last message)");
                    } else {
                        warn!(broker = %describe.broker, "{message}; retrying");
                    }
                    last_log = Some(Instant::now());
                    last_logged = Some(message);
                    failures_since_log = 0;
                }
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT.delay(failed_attempts)) => {}
                    () = shared.close.notified() => break,
                }
                failed_attempts = failed_attempts.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_matches_acknowledgements_to_publishes_in_order() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let (c, mut rc) = oneshot::channel();
        tracker.queued.extend([a, b, c]);
        tracker.sent(1, QoS::AtLeastOnce);
        tracker.sent(2, QoS::AtLeastOnce);
        tracker.acknowledged(2);
        assert_eq!(rb.try_recv().unwrap(), Ok(()));
        assert!(ra.try_recv().is_err(), "1 is not acknowledged yet");
        // 3 collides with 1, which is still in flight; sent once 1 is acknowledged.
        tracker.collision(1);
        tracker.acknowledged(1);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
        tracker.sent(1, QoS::AtLeastOnce);
        tracker.acknowledged(1);
        assert_eq!(rc.try_recv().unwrap(), Ok(()));
        // A stray acknowledgement changes nothing.
        tracker.acknowledged(9);
    }

    #[test]
    fn the_tracker_fails_everything_waiting_when_the_connection_fails() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        tracker.queued.extend([a, b]);
        tracker.sent(1, QoS::ExactlyOnce);
        tracker.fail_all("refused");
        assert_eq!(ra.try_recv().unwrap(), Err("refused".to_string()));
        assert_eq!(rb.try_recv().unwrap(), Err("refused".to_string()));
        assert!(tracker.queued.is_empty() && tracker.inflight.is_empty());
    }

    #[test]
    fn qos_0_publishes_complete_when_sent() {
        let mut tracker = Tracker::default();
        let (a, mut ra) = oneshot::channel();
        tracker.queued.push_back(a);
        tracker.sent(0, QoS::AtMostOnce);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
    }
}
