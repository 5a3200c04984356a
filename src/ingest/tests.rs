use super::*;
use allowlist::Allowlist;
use crossbeam_channel::Receiver;

/// A receive loop on a loopback socket of its own, handing over into a
/// channel of `queue` batches within a budget of `budget` bytes.
fn test_loop(queue: usize, budget: u64) -> (ReceiveLoop, Receiver<Batch>, Arc<ByteBudget>) {
    let (receive_loop, rx, budget, _) = test_loop_at(queue, budget);
    (receive_loop, rx, budget)
}

/// [`test_loop`], and the address its socket listens on.
fn test_loop_at(
    queue: usize,
    budget: u64,
) -> (ReceiveLoop, Receiver<Batch>, Arc<ByteBudget>, SocketAddr) {
    test_loop_with("", queue, budget)
}

/// [`test_loop_at`] with more `[ingest]` keys.
fn test_loop_with(
    keys: &str,
    queue: usize,
    budget: u64,
) -> (ReceiveLoop, Receiver<Batch>, Arc<ByteBudget>, SocketAddr) {
    let config: IngestConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\n{keys}"
    ))
    .unwrap();
    let listener = bind_one("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let addr = listener.bound.local_addr;
    let allowlist = Arc::new(SharedAllowlist::new(Allowlist::new(vec![
        "127.0.0.0/8".parse().unwrap(),
    ])));
    let (tx, rx) = crossbeam_channel::bounded(queue);
    let budget = Arc::new(ByteBudget::new(budget));
    let receive_loop = ReceiveLoop::new(listener, &config, allowlist, tx, budget.clone());
    (receive_loop, rx, budget, addr)
}

/// A filling of `count` datagrams of `len` bytes in a buffer of `capacity`.
fn filling(capacity: usize, count: usize, len: usize) -> Filling {
    let mut filling = Filling::with_capacity(capacity);
    for _ in 0..count {
        filling.push(&vec![b'x'; len], "127.0.0.1:5000".parse().unwrap());
    }
    filling
}

#[test]
fn a_replaced_allowlist_meets_the_first_datagram_read_after_it() {
    let config: IngestConfig =
        toml::from_str("listen = \"127.0.0.1:0\"\nallow = [\"127.0.0.1/32\"]").unwrap();
    let listener = bind_one("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let to = listener.bound.local_addr;
    let shared = Arc::new(SharedAllowlist::new(Allowlist::new(vec![
        "127.0.0.1/32".parse().unwrap(),
    ])));
    let (tx, _rx) = crossbeam_channel::bounded(4);
    let budget = Arc::new(ByteBudget::new(64 << 20));
    let mut receive_loop = ReceiveLoop::new(listener, &config, shared.clone(), tx, budget);
    let outsider = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let mut filling = Filling::with_capacity(MIN_BUFFER_BYTES);
    let read = |receive_loop: &mut ReceiveLoop, filling: &mut Filling| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while receive_loop.receive(socket::Wait::Block, filling, Instant::now()) == 0 {
            assert!(Instant::now() < deadline, "nothing arrived");
        }
    };
    outsider.send_to(b"early", to).unwrap();
    read(&mut receive_loop, &mut filling);
    assert_eq!(filling.len(), 0, "refused before the reload");
    // Replaced between two reads, within one cycle of the loop.
    shared.replace(Allowlist::new(vec!["127.0.0.0/8".parse().unwrap()]));
    outsider.send_to(b"late", to).unwrap();
    read(&mut receive_loop, &mut filling);
    assert_eq!(filling.len(), 1, "admitted after the reload");
}

#[test]
fn a_few_datagrams_go_over_as_a_copy_and_the_buffer_stays() {
    let (mut receive_loop, rx, budget) = test_loop(4, 64 << 20);
    let mut held = filling(MIN_BUFFER_BYTES, 3, 100);
    assert!(receive_loop.hand_off(&mut held, Timestamp::now(), Instant::now()));
    let batch = rx.try_recv().expect("handed over");
    assert_eq!(batch.len(), 3);
    assert!(batch.bytes < 1024, "charged {} bytes", batch.bytes);
    assert_eq!(budget.used(), batch.bytes);
    assert_eq!(held.capacity(), MIN_BUFFER_BYTES, "kept for the next read");
}

#[test]
fn a_full_buffer_goes_over_whole_and_comes_back_when_dropped() {
    let (mut receive_loop, rx, budget) = test_loop(4, 64 << 20);
    let mut held = filling(MIN_BUFFER_BYTES, 200, 400);
    let buffer = held.buffer_ptr();
    assert!(receive_loop.hand_off(&mut held, Timestamp::now(), Instant::now()));
    assert_eq!(held.memory_bytes(), 0, "the buffer went over");
    let batch = rx.try_recv().expect("handed over");
    assert_eq!(batch.len(), 200);
    assert!(batch.bytes >= 80_000);
    assert_eq!(budget.used(), batch.bytes);
    assert!(receive_loop.spares.take().is_none());
    budget.release(batch.bytes);
    drop(batch);
    let spare = receive_loop.spares.take().expect("given back");
    assert_eq!(spare.buffer_ptr(), buffer);
    assert_eq!(spare.len(), 0);
}

#[test]
fn a_batch_the_workers_have_no_room_for_gives_back_its_bytes_and_buffer() {
    // The channel holds one batch.
    let (mut receive_loop, rx, budget) = test_loop(1, 64 << 20);
    let mut first = filling(MIN_BUFFER_BYTES, 200, 400);
    assert!(receive_loop.hand_off(&mut first, Timestamp::now(), Instant::now()));
    let queued = budget.used();
    let mut second = filling(MIN_BUFFER_BYTES, 200, 400);
    assert!(receive_loop.hand_off(&mut second, Timestamp::now(), Instant::now()));
    assert_eq!(budget.used(), queued, "only the queued batch is charged");
    assert_eq!(rx.len(), 1);
    assert!(
        receive_loop.spares.take().is_some(),
        "the dropped batch's buffer"
    );

    // And a budget with no room left for the batch.
    let (mut receive_loop, rx, budget) = test_loop(4, 100_000);
    let mut few = filling(MIN_BUFFER_BYTES, 3, 400);
    assert!(receive_loop.hand_off(&mut few, Timestamp::now(), Instant::now()));
    let queued = budget.used();
    let mut held = filling(MIN_BUFFER_BYTES, 300, 400);
    assert!(receive_loop.hand_off(&mut held, Timestamp::now(), Instant::now()));
    assert_eq!((budget.used(), rx.len()), (queued, 1));
    assert!(receive_loop.spares.take().is_some(), "the refused buffer");
}

#[test]
fn a_slow_stream_frees_the_spares_and_a_buffer_sized_for_a_burst() {
    let (mut receive_loop, _rx, _budget) = test_loop(4, 64 << 20);
    receive_loop
        .spares
        .give_back(Filling::with_capacity(MIN_BUFFER_BYTES));
    let mut held = filling(HANDOFF_MAX_BYTES, 2, 400);
    assert!(receive_loop.hand_off(&mut held, Timestamp::now(), Instant::now()));
    assert!(receive_loop.spares.take().is_none());
    assert_eq!(held.memory_bytes(), 0, "the 4 MiB buffer was freed");
    // A buffer about the stream's size stays.
    let mut held = filling(MIN_BUFFER_BYTES, 2, 400);
    assert!(receive_loop.hand_off(&mut held, Timestamp::now(), Instant::now()));
    assert_eq!(held.capacity(), MIN_BUFFER_BYTES);
}

#[test]
fn quiet_frees_every_buffer() {
    let (mut receive_loop, _rx, _budget) = test_loop(4, 64 << 20);
    receive_loop
        .spares
        .give_back(Filling::with_capacity(MIN_BUFFER_BYTES));
    let mut held = filling(MIN_BUFFER_BYTES, 1, 10);
    receive_loop.quiet(&mut held);
    assert_eq!(held.memory_bytes(), 0);
    assert!(receive_loop.spares.take().is_none());
}

#[test]
fn a_slow_stream_goes_over_in_batches_not_a_datagram_at_a_time() {
    let (mut receive_loop, _rx, _budget, addr) = test_loop_at(4, 64 << 20);
    // A stream of about 500 a second seen in the cycle before; sleeps
    // of 4 ms whatever buffer this machine grants.
    receive_loop.rate = 500.0;
    receive_loop.longest_step = Duration::from_millis(4);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let later = socket.try_clone().unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        wait.recv().unwrap();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(2));
            later.send_to(b"later", addr).unwrap();
        }
    });
    socket.send_to(b"first", addr).unwrap();
    let now = Instant::now();
    go.send(()).unwrap();
    let mut filling = Filling::with_capacity(MIN_BUFFER_BYTES);
    let first = receive_loop.receive(socket::Wait::Block, &mut filling, now);
    assert!(first >= 1);
    receive_loop.linger(first, now + LINGER, &mut filling, now);
    sender.join().unwrap();
    // Sent over about 4 ms, well within the linger: one hand-off, where
    // a linger of one sleep would have handed over the first alone.
    assert_eq!(filling.len(), 3);
}

#[test]
fn a_stream_too_slow_to_gather_anything_goes_over_at_once() {
    let (mut receive_loop, _rx, _budget, addr) = test_loop_at(4, 64 << 20);
    receive_loop.longest_step = Duration::from_millis(4);
    // Ten a second: a 4 ms sleep would catch a datagram one time in 25,
    // so the first goes over alone, without a timer's wake-up.
    receive_loop.rate = 10.0;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(b"lone", addr).unwrap();
    let now = Instant::now();
    let mut filling = Filling::with_capacity(MIN_BUFFER_BYTES);
    let first = receive_loop.receive(socket::Wait::Block, &mut filling, now);
    let read = receive_loop.linger(first, now + LINGER, &mut filling, now);
    assert_eq!((read, filling.len()), (1, 1));
    assert!(now.elapsed() < Duration::from_millis(10), "it slept");
}

#[test]
fn a_flood_of_refused_datagrams_does_not_hold_the_linger() {
    // Every datagram is longer than the largest accepted, so reads come
    // back full and add nothing to the batch.
    // A receive loop stays on the thread that made it.
    let (at, addr) = std::sync::mpsc::channel();
    let (start, started) = std::sync::mpsc::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel();
    let lingering = std::thread::spawn(move || {
        let (mut receive_loop, _rx, _budget, addr) =
            test_loop_with("max_datagram_bytes = 8", 4, 64 << 20);
        receive_loop.rate = 1_000.0;
        at.send(addr).unwrap();
        started.recv().unwrap();
        let now = Instant::now();
        let mut filling = Filling::with_capacity(MIN_BUFFER_BYTES);
        let full = receive_loop.receiver.batch_size();
        receive_loop.linger(full, now + LINGER, &mut filling, now);
        let _ = done.send(filling.len());
    });
    let addr = addr.recv().unwrap();
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while flooding.load(Ordering::Relaxed) {
                let _ = socket.send_to(b"sixteen bytes...", addr);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    start.send(()).unwrap();
    let held = finished.recv_timeout(Duration::from_secs(10));
    flooding.store(false, Ordering::Relaxed);
    flood.join().unwrap();
    assert_eq!(held, Ok(0), "the linger ended, with nothing accepted");
    lingering.join().unwrap();
}

#[test]
fn each_cycle_notes_the_streams_rate_and_a_quiet_poll_resets_it() {
    let (mut receive_loop, _rx, _budget) = test_loop(4, 64 << 20);
    let start = Instant::now();
    receive_loop.cycle_end = start;
    receive_loop.end_cycle(1_000, start + Duration::from_millis(10));
    assert!(
        (receive_loop.rate - 100_000.0).abs() < 1.0,
        "{}",
        receive_loop.rate
    );
    receive_loop.end_cycle(5, start + Duration::from_millis(1010));
    assert!(
        (receive_loop.rate - 5.0).abs() < 0.01,
        "{}",
        receive_loop.rate
    );
    receive_loop.quiet(&mut Filling::default());
    assert_eq!(receive_loop.rate, 0.0);
}

#[test]
fn a_lingering_thread_sleeps_no_longer_than_half_its_buffer_lasts_in_a_burst() {
    // 16 MiB granted (8 MiB asked, as shipped, with CAP_NET_ADMIN): half
    // is 8 MiB, about 4 ms of a burst of a million datagrams a second.
    let step = longest_step(16 << 20);
    assert!(
        step > Duration::from_millis(4) && step < Duration::from_millis(5),
        "{step:?}"
    );
    // Linux's default cap (212,992 asked, twice that granted).
    assert_eq!(longest_step(425_984), LINGER_STEP_MIN);
    assert_eq!(longest_step(0), LINGER_STEP_MIN);
    // However large the buffer, a step ends within the linger.
    assert_eq!(longest_step(1 << 40), LINGER);
}

#[test]
fn a_busy_stream_is_read_every_millisecond_a_slow_one_as_the_buffer_allows() {
    let (mut receive_loop, _rx, _budget) = test_loop(4, 64 << 20);
    receive_loop.longest_step = Duration::from_millis(4);
    // 400k/s sends a full read (64) in 0.16 ms: the floor.
    receive_loop.rate = 400_000.0;
    assert_eq!(receive_loop.step(), LINGER_STEP_MIN);
    // 32k/s takes 2 ms for a full read.
    receive_loop.rate = 32_000.0;
    assert_eq!(receive_loop.step(), Duration::from_millis(2));
    // 1k/s, or nothing seen yet: as long as the buffer allows.
    for rate in [1_000.0, 0.0] {
        receive_loop.rate = rate;
        assert_eq!(receive_loop.step(), Duration::from_millis(4));
    }
}

#[test]
fn the_linger_counts_from_the_first_datagram_not_from_the_wait_for_it() {
    let stop = Arc::new(AtomicBool::new(false));
    let (batches, rx) = std::sync::mpsc::channel();
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut receive_loop, rx, _budget, addr) = test_loop_at(4, 64 << 20);
            // A stream of about 1,000 a second seen before; sleeps of 4 ms.
            receive_loop.rate = 1_000.0;
            receive_loop.longest_step = Duration::from_millis(4);
            batches.send((addr, rx)).unwrap();
            receive_loop.run(&stop);
        })
    };
    let (addr, rx) = rx.recv().unwrap();
    // The receive thread waits 30 ms for the first datagram, longer than
    // the linger; the next two follow within a few milliseconds.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let sent = Timestamp::now();
    for _ in 0..3 {
        socket.send_to(b"datagram", addr).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let batch = rx.recv_timeout(Duration::from_secs(5)).expect("a batch");
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap();
    assert_eq!(batch.len(), 3, "one hand-off for the three");
    // Stamped when the first was read, not at the hand-off.
    let stamped = batch.received_at.duration_since(sent).as_secs_f64();
    assert!((0.0..0.010).contains(&stamped), "{stamped} s after sending");
}

#[test]
fn a_stream_that_fills_batches_anyway_gathers_for_a_millisecond() {
    let (mut receive_loop, _rx, _budget) = test_loop(4, 64 << 20);
    // 1,024 in 20 ms is 51,200 a second.
    receive_loop.rate = 400_000.0;
    assert_eq!(receive_loop.linger_for(), LINGER_STEP_MIN);
    receive_loop.rate = 60_000.0;
    assert_eq!(receive_loop.linger_for(), LINGER_STEP_MIN);
    receive_loop.rate = 40_000.0;
    assert_eq!(receive_loop.linger_for(), LINGER);
    receive_loop.rate = 0.0;
    assert_eq!(receive_loop.linger_for(), LINGER);
}
