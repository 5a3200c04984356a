//! The memory buffer's byte budget under each overflow policy, and when
//! pushes wake the driver.

use super::*;

fn queue(overflow: Overflow, events: usize, bytes: u64) -> SinkQueue {
    SinkQueue::new(
        "budget",
        Capacity { events, bytes },
        overflow,
        SinkMetrics::register("budget"),
        DeadLetters::disabled(),
    )
}

/// Events numbered by `sequence`, each `size` bytes as the budget counts.
fn events(count: u64) -> (Vec<Arc<Event>>, u64) {
    let template = crate::send::sample_event("engine");
    // A clone's text has no spare capacity; the template's may.
    let size = template.clone().memory_bytes() as u64;
    let events = (0..count)
        .map(|sequence| {
            let mut event = template.clone();
            event.sequence = sequence;
            Arc::new(event)
        })
        .collect();
    (events, size)
}

fn push_all(queue: &SinkQueue, events: &[Arc<Event>]) {
    let mut stage = Stage::default();
    for event in events {
        queue.push(event, &mut stage);
    }
    queue.commit(&mut stage);
}

fn drain(queue: &SinkQueue) -> Vec<u64> {
    std::iter::from_fn(|| queue.pop().map(|(event, _)| event.sequence)).collect()
}

#[test]
fn drop_oldest_keeps_the_newest_that_fit_in_bytes() {
    let (events, size) = events(50);
    let queue = queue(Overflow::DropOldest, 1000, 10 * size);
    push_all(&queue, &events);
    assert!(queue.budget.used() <= 10 * size);
    assert_eq!(drain(&queue), (40..50).collect::<Vec<_>>());
    assert_eq!(queue.budget.used(), 0);
}

#[test]
fn drop_newest_keeps_the_oldest_that_fit_in_bytes() {
    let (events, size) = events(50);
    let queue = queue(Overflow::DropNewest, 1000, 10 * size);
    push_all(&queue, &events);
    assert_eq!(drain(&queue), (0..10).collect::<Vec<_>>());
    assert_eq!(queue.budget.used(), 0);
}

#[test]
fn the_event_count_still_binds_when_events_are_small() {
    let (events, size) = events(50);
    let queue = queue(Overflow::DropOldest, 5, 1000 * size);
    push_all(&queue, &events);
    assert_eq!(drain(&queue), (45..50).collect::<Vec<_>>());
    assert_eq!(queue.budget.used(), 0);
}

#[test]
fn an_event_larger_than_the_budget_still_gets_through_alone() {
    let (events, size) = events(3);
    let queue = queue(Overflow::DropOldest, 10, size / 2);
    push_all(&queue, &events);
    assert_eq!(drain(&queue), vec![2]);
}

/// Whether the driver's wake-up is pending (a permit `notify_one` left).
async fn woken(queue: &SinkQueue) -> bool {
    tokio::time::timeout(Duration::from_millis(20), queue.notified())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_driver_gathering_a_batch_is_woken_once_the_queue_can_fill_it() {
    let (events, size) = events(10);
    let queue = queue(Overflow::DropOldest, 1000, 1000 * size);
    // Holding 5 of a batch of 10: woken for 5 more, not for each push.
    assert!(!queue.wake_when(5, u64::MAX));
    push_all(&queue, &events[..2]);
    push_all(&queue, &events[2..4]);
    assert!(
        !woken(&queue).await,
        "woken before the batch could be filled"
    );
    push_all(&queue, &events[4..5]);
    assert!(
        woken(&queue).await,
        "not woken once the batch could be filled"
    );
    // Asked again with that much queued: no need to wait at all.
    assert!(queue.wake_when(5, u64::MAX));
    drain(&queue);
    // Holding nothing: the first event wakes it.
    assert!(!queue.wake_when(1, 1));
    push_all(&queue, &events[5..6]);
    assert!(woken(&queue).await);
}

#[tokio::test]
async fn bytes_wake_the_driver_too() {
    let (events, size) = events(3);
    let queue = queue(Overflow::DropOldest, 1000, 1000 * size);
    assert!(!queue.wake_when(1000, 3 * size));
    push_all(&queue, &events[..2]);
    assert!(!woken(&queue).await);
    push_all(&queue, &events[2..]);
    assert!(woken(&queue).await);
}

#[tokio::test]
async fn a_driver_is_woken_before_the_ring_can_overflow() {
    // Waiting for more than half the ring (in events, then in bytes) is
    // capped at half, so drop_oldest discards nothing while the driver
    // gathers a batch (unless one commit brings more than half the ring).
    let (events, size) = events(10);
    let by_events = queue(Overflow::DropOldest, 10, 1000 * size);
    assert!(!by_events.wake_when(1000, u64::MAX));
    push_all(&by_events, &events[..4]);
    assert!(!woken(&by_events).await);
    push_all(&by_events, &events[4..5]);
    assert!(woken(&by_events).await);

    let by_bytes = queue(Overflow::DropOldest, 1000, 10 * size);
    assert!(!by_bytes.wake_when(1000, u64::MAX));
    push_all(&by_bytes, &events[..5]);
    assert!(woken(&by_bytes).await);
    assert_eq!(drain(&by_bytes), (0..5).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stop_wakes_a_driver_whatever_it_waits_for() {
    let queue = queue(Overflow::DropOldest, 1000, u64::MAX);
    assert!(!queue.wake_when(1000, u64::MAX));
    queue.close();
    assert!(woken(&queue).await);
}

#[test]
fn bytes_taken_for_an_event_not_yet_in_the_ring_do_not_count() {
    // A push takes its bytes first: the driver must not take that for an
    // event to pop and go round without waiting.
    let queue = queue(Overflow::DropOldest, 1000, 1 << 20);
    queue.budget.take(1000);
    assert!(!queue.wake_when(1, 1));
}
