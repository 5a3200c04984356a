//! The memory buffer's byte budget under each overflow policy.

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
    let size = template.memory_bytes() as u64;
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
