//! Parser throughput per kind of Sense message, and over the mixed set; and
//! the mixed set's events encoded as JSON and in the binary buffer encoding,
//! and decoded from the latter.
//!
//! Run with `cargo bench --bench parse`. Figures are datagrams per second on one
//! core (criterion's "thrpt" in elements/s). The `value` group times each
//! value reader alone: the figures quoted where a reader is hand-written.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::event::Event;
use herald::parse::{ParseConfig, Parser};
use herald::send::SAMPLES;

fn parse(c: &mut Criterion) {
    let mut parser = Parser::new(&ParseConfig::default()).expect("default config");
    let sender: SocketAddr = "10.0.0.5:61000".parse().expect("address");
    let now = jiff::Timestamp::now();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for sample in SAMPLES {
        group.bench_function(sample.kind, |b| {
            b.iter(|| parser.parse(black_box(sample.datagram), sender, now))
        });
    }
    group.throughput(Throughput::Elements(SAMPLES.len() as u64));
    group.bench_function("mixed", |b| {
        b.iter(|| {
            for sample in SAMPLES {
                let _ = black_box(parser.parse(black_box(sample.datagram), sender, now));
            }
        })
    });
    group.finish();

    // Each value reader on typical values.
    let mut group = c.benchmark_group("value");
    group.throughput(Throughput::Elements(1));
    let guid = b"e7af59a0-c243-480d-9571-08727551a66f";
    let compact = b"20240519T120312.114+0200";
    let separated = b"2024-05-19 12:03:12,114";
    let decimal = b"2190.5";
    group.bench_function("guid", |b| {
        b.iter(|| herald::parse::value::is_guid(black_box(guid)))
    });
    group.bench_function("timestamp_compact", |b| {
        b.iter(|| herald::parse::value::timestamp(black_box(compact)))
    });
    group.bench_function("timestamp_separated", |b| {
        b.iter(|| herald::parse::value::timestamp(black_box(separated)))
    });
    group.bench_function("number", |b| {
        b.iter(|| herald::parse::value::is_json_number(black_box(decimal), false))
    });
    group.finish();

    let mut group = c.benchmark_group("encode");
    let events: Vec<_> = SAMPLES
        .iter()
        .filter_map(|s| parser.parse(s.datagram, sender, now).ok())
        .collect();
    let mut out = Vec::with_capacity(64 * 1024);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("json_mixed", |b| {
        b.iter(|| {
            out.clear();
            for event in &events {
                event.write_json(&mut out);
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    group.bench_function("binary_mixed", |b| {
        b.iter(|| {
            out.clear();
            for event in &events {
                event.encode_binary(&mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(|event| {
            let mut bytes = Vec::new();
            event.encode_binary(&mut bytes);
            bytes
        })
        .collect();
    group.throughput(Throughput::Elements(encoded.len() as u64));
    group.bench_function("binary_mixed", |b| {
        b.iter(|| {
            for bytes in &encoded {
                let _ = black_box(Event::decode_binary(black_box(bytes)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
