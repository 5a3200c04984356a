//! The driver's batching, retries and giving up, the stop's grace period,
//! `Retry-After`, latency sampling and backoff, against test sinks that fail
//! or record what they get.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::metrics::SinkMetrics;
use crate::parse::{ParseConfig, Parser};
use crate::sinks::queue::{Capacity, Overflow, Stage};

/// Fails the first `failures` deliveries, then records what it gets.
struct Flaky {
    failures: usize,
    permanent: bool,
    calls: Arc<AtomicUsize>,
    delivered: Arc<Mutex<Vec<usize>>>,
}

impl Sink for Flaky {
    async fn deliver(&mut self, batch: &[Arc<Event>]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures {
            return Err(if self.permanent {
                SinkError::permanent("400 bad request")
            } else {
                SinkError::retryable("connection refused")
            });
        }
        self.delivered.lock().unwrap().push(batch.len());
        Ok(())
    }
}

fn config(max_retries: Option<u32>) -> DeliveryConfig {
    let mut config: DeliveryConfig =
        toml::from_str("batch_max_events = 4\nflush_interval_ms = 10").unwrap();
    config.max_retries = max_retries;
    config.retry_initial_ms = 1;
    config.retry_max_ms = 5;
    config
}

fn event() -> Arc<Event> {
    let datagram = b"/qseow-proxy-session/;pro2-win1;Start session;LAB;goran;AppAccess;/hub/;Start session for user 'LAB\\goran'";
    Arc::new(
        Parser::new(&ParseConfig::default())
            .unwrap()
            .parse(
                datagram,
                "127.0.0.1:1".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap(),
    )
}

/// A memory-buffered queue of 100 events named `name`, holding `events`
/// events, and its sink's status.
fn queued(name: &str, events: usize, dead: DeadLetters) -> (Arc<SinkQueue>, Arc<SinkStatus>) {
    let queue = Arc::new(SinkQueue::new(
        name,
        Capacity {
            events: 100,
            bytes: 1 << 30,
        },
        Overflow::DropOldest,
        SinkMetrics::register(name),
        dead,
    ));
    let status = Arc::new(SinkStatus::new(name, "test", queue.clone()));
    let mut stage = Stage::default();
    for _ in 0..events {
        queue.push(&event(), &mut stage);
    }
    queue.commit(&mut stage);
    (queue, status)
}

struct Outcome {
    delivered: Vec<usize>,
    calls: usize,
    state: SinkState,
    stopped: Stopped,
}

/// Runs the driver over `events` events; closes the queue once the sink has
/// been called `close_after_calls` times, plus a moment for any call that
/// should not happen; ends the grace period `grace` after closing.
async fn drive_with(
    config: DeliveryConfig,
    failures: usize,
    permanent: bool,
    events: usize,
    close_after_calls: usize,
    grace: Duration,
    dead: DeadLetters,
) -> Outcome {
    let (queue, status) = queued("test", events, dead.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let sink = Flaky {
        failures,
        permanent,
        calls: calls.clone(),
        delivered: delivered.clone(),
    };
    let mut task = tokio::spawn(run(
        sink,
        status.clone(),
        config,
        dead,
        Control::new(None).0,
    ));
    wait_for(|| calls.load(Ordering::SeqCst) >= close_after_calls).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    queue.close();
    let stopped = match tokio::time::timeout(grace, &mut task).await {
        Ok(stopped) => stopped.unwrap(),
        Err(_) => {
            queue.abort();
            task.await.unwrap()
        }
    };
    let delivered = delivered.lock().unwrap().clone();
    Outcome {
        delivered,
        calls: calls.load(Ordering::SeqCst),
        state: status.state(),
        stopped,
    }
}

async fn drive(
    failures: usize,
    permanent: bool,
    max_retries: Option<u32>,
    events: usize,
    close_after_calls: usize,
) -> Outcome {
    drive_with(
        config(max_retries),
        failures,
        permanent,
        events,
        close_after_calls,
        Duration::from_millis(500),
        DeadLetters::disabled(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn delivers_in_batches_and_drains_a_closed_queue() {
    let outcome = drive(0, false, None, 10, 0).await;
    assert_eq!(outcome.delivered, [4, 4, 2]);
    assert_eq!(outcome.calls, 3);
    assert_eq!(outcome.state, SinkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn retries_a_failed_batch_until_it_goes_through() {
    let outcome = drive(25, false, None, 3, 26).await;
    assert_eq!(outcome.delivered, [3]);
    assert_eq!(outcome.calls, 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn gives_up_after_max_retries_when_they_are_limited() {
    let outcome = drive(100, false, Some(2), 3, 3).await;
    assert!(outcome.delivered.is_empty());
    assert_eq!(outcome.calls, 3, "no call after the last retry");
    assert_eq!(outcome.state, SinkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_sink_that_never_recovers_stops_at_the_end_of_the_grace_period_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, writer) = crate::deadletter::start(&crate::deadletter::DeadLetterConfig {
        path: dir.path().join("dead.jsonl"),
        max_bytes: 0,
        max_files: 1,
        queue_records: 10,
        queue_bytes: 16 * 1024 * 1024,
    })
    .unwrap();
    let outcome = drive_with(
        config(None),
        usize::MAX,
        false,
        3,
        5,
        Duration::from_millis(200),
        dead.clone(),
    )
    .await;
    assert!(outcome.delivered.is_empty());
    assert!(outcome.calls >= 5);
    assert_eq!(outcome.state, SinkState::Stopped);
    assert_eq!(
        outcome.stopped.kept,
        Kept {
            disk_buffer: 0,
            dead_letter: 3,
            lost: 0
        }
    );
    dead.finish();
    drop(dead);
    writer.join().unwrap();
    let text = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    assert_eq!(text.matches("\"reason\":\"shutdown\"").count(), 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_stop_ends_a_long_retry_wait_at_once() {
    let mut config = config(None);
    config.retry_initial_ms = 60_000;
    config.retry_max_ms = 60_000;
    let started = std::time::Instant::now();
    let outcome = drive_with(
        config,
        1,
        false,
        3,
        1,
        Duration::from_secs(30),
        DeadLetters::disabled(),
    )
    .await;
    assert_eq!(
        outcome.delivered,
        [3],
        "the retry right after the stop went through"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.stopped.kept, Kept::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn retry_after_is_capped() {
    let mut config = config(None);
    config.retry_after_max_ms = 20;
    // Asks for an hour; the cap makes it 20 ms, so the retry comes quickly.
    struct SlowDown(Arc<AtomicUsize>);
    impl Sink for SlowDown {
        async fn deliver(&mut self, _batch: &[Arc<Event>]) -> Result<(), SinkError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut err = SinkError::retryable("429");
                err.retry_after = Some(Duration::from_secs(3600));
                return Err(err);
            }
            Ok(())
        }
    }
    let (queue, status) = queued("capped", 1, DeadLetters::disabled());
    let calls = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(run(
        SlowDown(calls.clone()),
        status,
        config,
        DeadLetters::disabled(),
        Control::new(None).0,
    ));
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "the retry waited for the Retry-After of an hour"
    );
    queue.close();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_batch_being_retried_counts_as_in_flight_until_it_is_delivered() {
    let (queue, status) = queued("in-flight", 6, DeadLetters::disabled());
    let calls = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let sink = Flaky {
        failures: 3,
        permanent: false,
        calls: calls.clone(),
        delivered: delivered.clone(),
    };
    let mut config = config(None);
    config.retry_initial_ms = 200;
    config.retry_max_ms = 200;
    let task = tokio::spawn(run(
        sink,
        status.clone(),
        config,
        DeadLetters::disabled(),
        Control::new(None).0,
    ));
    wait_for(|| calls.load(Ordering::SeqCst) >= 1).await;
    // Batches of 4: the first is being retried, the rest waits.
    assert_eq!((queue.in_flight(), queue.len()), (4, 2));
    let health = crate::http::sink_json(&status);
    assert_eq!(health["in_flight"], 4, "{health}");
    wait_for(|| delivered.lock().unwrap().len() == 2).await;
    queue.close();
    task.await.unwrap();
    assert_eq!(*delivered.lock().unwrap(), [4, 2]);
    assert_eq!((queue.in_flight(), queue.len()), (0, 0));
}

/// Polls `done` every millisecond, for up to 5 s.
async fn wait_for(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn does_not_retry_a_permanent_error() {
    let outcome = drive(1, true, None, 6, 2).await;
    assert_eq!(outcome.delivered, [2]);
    assert_eq!(outcome.calls, 2);
}

#[test]
fn latency_sampling_takes_every_seventeenth_event_across_batches() {
    let mut sampler = LatencySampler::new(1000);
    let mut taken = Vec::new();
    let mut offset = 0;
    for len in [10, 10, 20, 0, 1, 40] {
        taken.extend(sampler.positions(len).map(|i| offset + i));
        offset += len;
    }
    assert_eq!(taken, [0, 17, 34, 51, 68]);
}

#[test]
fn latency_sampling_moves_through_full_batches_instead_of_always_taking_the_oldest() {
    let mut sampler = LatencySampler::new(8);
    let positions: std::collections::BTreeSet<usize> =
        (0..17).flat_map(|_| sampler.positions(8)).collect();
    assert_eq!(
        positions.len(),
        8,
        "every position of the batch: {positions:?}"
    );
}

#[test]
fn latency_sampling_takes_every_event_of_a_sink_that_sends_one_at_a_time() {
    let mut sampler = LatencySampler::new(1);
    let taken: Vec<usize> = (0..3).flat_map(|_| sampler.positions(1)).collect();
    assert_eq!(taken, [0, 0, 0]);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let mut config = config(None);
    config.retry_initial_ms = 100;
    config.retry_max_ms = 1000;
    let ms = |attempt| backoff(&config, attempt).as_millis();
    assert!((75..=125).contains(&ms(0)));
    assert!((150..=250).contains(&ms(1)));
    assert!((750..=1250).contains(&ms(10)));
}
