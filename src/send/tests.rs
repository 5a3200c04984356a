use super::*;

/// Options that send each datagram once, as fast as possible, to `to`.
fn once_to(to: SocketAddr) -> SendOptions {
    SendOptions {
        to,
        from: None,
        count: None,
        duration: None,
        rate: None,
        sockets: 1,
    }
}
use crate::parse::{ParseConfig, Parser};

#[test]
fn every_sample_parses() {
    let mut parser = Parser::new(&ParseConfig::default()).unwrap();
    for sample in SAMPLES {
        parser
            .parse(
                sample.datagram,
                "127.0.0.1:1".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap_or_else(|err| panic!("{}: {err}", sample.kind));
    }
}

#[test]
fn unknown_kind_lists_the_known_ones() {
    let err = samples("printer").unwrap_err();
    assert!(err.contains("task-failed"), "{err}");
    assert_eq!(samples("all").unwrap().len(), SAMPLES.len());
}

#[test]
fn a_high_rate_is_sent_in_slices_and_a_low_one_datagram_by_datagram() {
    let us = Duration::from_micros;
    // 200k/s: slices of 100 datagrams (0.5 ms); datagram 99 is due at 495 µs.
    let fast = Schedule::new(Some(200_000.0), u64::MAX, Some(Duration::from_secs(1)));
    assert_eq!(fast.step(us(0), 0), Step::WaitUntil(us(495)));
    assert_eq!(fast.step(us(200), 0), Step::WaitUntil(us(495)));
    assert_eq!(fast.step(us(495), 0), Step::Send(100));
    // Late: everything due goes at once, up to a batch.
    assert_eq!(fast.step(us(1_000), 100), Step::Send(101));
    assert_eq!(fast.step(us(10_000), 100), Step::Send(BATCH));
    // The run's end comes before the next slice is due in full: what is
    // due goes now, then nothing.
    let end = Duration::from_secs(1);
    assert_eq!(fast.step(end - us(100), 199_960), Step::Send(21));
    assert_eq!(fast.step(end - us(1), 199_981), Step::Send(19));
    assert_eq!(fast.step(end, 200_000), Step::Done);
    // A count: the last slice is what is left.
    let counted = Schedule::new(Some(200_000.0), 150, None);
    assert_eq!(counted.step(us(500), 100), Step::WaitUntil(us(745)));
    assert_eq!(counted.step(us(745), 100), Step::Send(50));
    assert_eq!(counted.step(us(800), 150), Step::Done);
    // 100/s: one datagram at a time, each when due.
    let slow = Schedule::new(Some(100.0), 10, None);
    assert_eq!(slow.step(us(0), 0), Step::Send(1));
    assert_eq!(
        slow.step(us(1), 1),
        Step::WaitUntil(Duration::from_millis(10))
    );
    assert_eq!(slow.slot_end(10), Some(Duration::from_millis(100)));
    // No rate: whole batches at once.
    let flat_out = Schedule::new(None, 1_000, None);
    assert_eq!(flat_out.step(us(0), 0), Step::Send(BATCH));
    assert_eq!(flat_out.step(us(0), 900), Step::Send(100));
    assert_eq!(flat_out.slot_end(1_000), None);
}

#[test]
fn paces_to_the_requested_rate_and_stops_after_the_duration() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = SendOptions {
        duration: Some(Duration::from_millis(300)),
        rate: Some(100.0),
        ..once_to(receiver.local_addr().unwrap())
    };
    let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
    // 100/s for 0.3 s: about 30, never a flood.
    assert!((20..=40).contains(&report.sent), "{}", report.sent);
}

#[test]
fn several_sockets_send_from_several_source_ports_in_turn() {
    let receiver = crate::ingest::socket::bind("127.0.0.1:0".parse().unwrap(), 4 << 20, false)
        .unwrap()
        .socket;
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let total = BATCH * 4;
    let options = SendOptions {
        count: Some(total as u64),
        rate: None,
        sockets: 4,
        ..once_to(receiver.local_addr().unwrap())
    };
    let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
    assert_eq!(report.sent, total as u64);
    // Each batch from the next socket: four source ports (even if a small
    // receive buffer drops some datagrams).
    let mut from = std::collections::BTreeSet::new();
    let mut buf = [0u8; 16];
    while let Ok((_, peer)) = receiver.recv_from(&mut buf) {
        from.insert(peer);
    }
    assert_eq!(from.len(), 4, "{from:?}");
}

#[test]
fn a_low_rate_is_met_by_the_schedule() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = SendOptions {
        count: Some(80),
        rate: Some(80.0),
        ..once_to(receiver.local_addr().unwrap())
    };
    let started = Instant::now();
    let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
    let wall = started.elapsed();
    assert_eq!(report.sent, 80);
    assert!(report.is_clean(), "{report:?}");
    // 80 at 80/s take a second by the schedule; only a last send late by
    // more than 20 ms (a very busy machine) would miss by 2 %.
    assert!(
        (report.rate() - 80.0).abs() <= 80.0 * 0.02,
        "{} /s in {:?}",
        report.rate(),
        report.elapsed
    );
    assert!(wall >= Duration::from_millis(990), "{wall:?}");
    assert!(wall < Duration::from_secs(10), "{wall:?}");
}

#[test]
fn sending_to_a_closed_port_says_it_was_refused_instead_of_stopping() {
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = SendOptions {
        count: Some(500),
        ..once_to(closed)
    };
    let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
    assert_eq!(report.sent + report.failed, 500);
    assert!(!report.is_clean());
    let text = report.problems_text();
    assert!(text.starts_with("connection refused"), "{text}");
    assert!(
        text.contains(&format!("nothing listens on {closed}?")),
        "{text}"
    );
    assert!(
        report
            .problems
            .keys()
            .all(|p| p.kind == "connection_refused")
    );
}

#[test]
fn a_single_datagram_to_a_closed_port_is_reported_too() {
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = once_to(closed);
    let report = send(&[b"x".to_vec()], &options, |_| {}).unwrap();
    assert_eq!(report.sent, 1);
    assert_eq!(
        report.problems_text(),
        format!("connection refused once (nothing listens on {closed}?)")
    );
}

#[test]
fn to_takes_host_names_and_bracketed_ipv6() {
    let addr = resolve("localhost:9996", None).unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(addr.port(), 9996);
    let v4 = resolve("localhost:9996", Some(IpAddr::from([127, 0, 0, 1]))).unwrap();
    assert!(v4.is_ipv4(), "{v4}");
    assert_eq!(
        resolve("127.0.0.1:9996", None).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 9996))
    );
    if UdpSocket::bind("[::1]:0").is_ok() {
        assert_eq!(
            resolve("[::1]:9996", None).unwrap(),
            "[::1]:9996".parse::<SocketAddr>().unwrap()
        );
    }
}

#[test]
fn a_bad_to_names_the_host_or_the_missing_port() {
    let err = resolve("no-such-host.invalid:9996", None).unwrap_err();
    assert!(err.contains("\"no-such-host.invalid\""), "{err}");
    let err = resolve("localhost", None).unwrap_err();
    assert!(err.contains("no port"), "{err}");
    assert!(err.contains("localhost:9996"), "{err}");
    let err = resolve("localhost:99999", None).unwrap_err();
    assert!(err.contains("HOST:PORT"), "{err}");
    let err = resolve("127.0.0.1:9996", Some("::1".parse().unwrap())).unwrap_err();
    assert!(err.contains("no IPv6 address"), "{err}");
}

#[test]
fn sends_the_requested_count_cycling_the_set() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = SendOptions {
        count: Some(5),
        ..once_to(receiver.local_addr().unwrap())
    };
    let report = send(&[b"a".to_vec(), b"b".to_vec()], &options, |_| {}).unwrap();
    assert_eq!(report.sent, 5);
    let mut buf = [0u8; 8];
    let got: Vec<u8> = (0..5)
        .map(|_| {
            receiver.recv(&mut buf).unwrap();
            buf[0]
        })
        .collect();
    assert_eq!(got, b"ababa");
}

#[test]
fn runs_of_equal_length_arrive_as_the_same_datagrams_in_the_same_order() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Runs of equal length (sent segmented), single ones between, and a
    // run longer than one segmented send takes.
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    datagrams.extend((0..5).map(|i| format!("run-a-{i:03}").into_bytes()));
    datagrams.push(b"single".to_vec());
    datagrams.extend((0..150).map(|i| format!("run-b-{i:05}").into_bytes()));
    datagrams.push(b"x".to_vec());
    let options = once_to(receiver.local_addr().unwrap());
    let report = send(&datagrams, &options, |_| {}).unwrap();
    assert_eq!(report.sent, datagrams.len() as u64);
    let mut buf = [0u8; 64];
    for expected in &datagrams {
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], expected.as_slice());
    }
}
