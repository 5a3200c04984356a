//! The work herald does for each datagram as shipped (parse into the shared
//! event the pipeline hands its sinks, categorise, route, encode as JSON for the service config's file sink) over every fixture
//! datagram, `ROUNDS` times, for counting instructions under callgrind:
//! `instructions MIX CONFIG ROUNDS` prints the number of datagrams in the
//! mix, how many of them became events a sink took, and the bytes of JSON one
//! round wrote. `MIX` is a directory with one datagram a file (the fixtures)
//! or a file with one datagram a line (as `herald send --file` reads, such as
//! the benchmark's mix that `HERALD_BENCH_WRITE_MIX=<file> cargo bench --bench
//! e2e` writes). Only [`workload`] is meant to be counted
//! (`--toggle-collect=*instructions::workload*`); `tests/instructions.rs`
//! runs it and holds the figure to a ceiling.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;

use herald::config::Config;
use herald::parse::Parser;
use herald::route::{Enricher, Matcher, Verdict};
use herald::sinks::config::SinkKind;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mix, config, rounds] = args.as_slice() else {
        eprintln!("usage: instructions MIX CONFIG ROUNDS");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let mix = read_mix(Path::new(mix));
    let config = Config::load(Path::new(config)).expect("the config loads");
    let mut parser = Parser::new(&config.parse).expect("the parser");
    let enricher = Enricher::new(&config.tags, &config.categorise).expect("the rules");
    // The JSON-writing sinks and their matches.
    let routes: Vec<Matcher> = config
        .sinks
        .values()
        .filter(|sink| matches!(sink.kind, SinkKind::File(_)))
        .map(|sink| Matcher::new(&sink.delivery.match_))
        .collect();
    let mut out = Vec::with_capacity(1 << 20);
    let (events, written) = workload(&mut parser, &enricher, &routes, &mix, rounds, &mut out);
    let rounds = rounds.max(1);
    println!("{} {} {}", mix.len(), events / rounds, written / rounds);
}

/// The datagrams of `path`: a directory's files in name order, one datagram
/// each, or a file's lines as `herald send --file` reads them.
fn read_mix(path: &Path) -> Vec<Vec<u8>> {
    if path.is_dir() {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(path)
            .expect("read the mix's directory")
            .map(|entry| {
                let path = entry.expect("a file of the mix").path();
                (
                    path.display().to_string(),
                    std::fs::read(&path).expect("read a datagram"),
                )
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, bytes)| bytes).collect()
    } else {
        herald::send::lines(path).expect("read the mix")
    }
}

/// Parses, categorises, routes and encodes every datagram of `mix`, `rounds`
/// times; returns the events a sink took and the bytes encoded.
#[inline(never)]
fn workload(
    parser: &mut Parser,
    enricher: &Enricher,
    routes: &[Matcher],
    mix: &[Vec<u8>],
    rounds: usize,
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let sender: SocketAddr = "10.0.0.5:61000".parse().expect("address");
    let now = jiff::Timestamp::from_second(1_716_112_992).expect("time");
    let (mut events, mut written) = (0, 0);
    for _ in 0..rounds {
        for datagram in mix {
            let Ok(mut event) = parser.parse_shared(black_box(datagram), sender, now) else {
                continue;
            };
            if enricher.apply(std::sync::Arc::make_mut(&mut event)) == Verdict::Drop {
                continue;
            }
            let mut taken = false;
            for route in routes {
                if route.matches(&event) {
                    out.clear();
                    event.write_json(out);
                    out.push(b'\n');
                    written += black_box(out.len());
                    taken = true;
                }
            }
            events += usize::from(taken);
        }
    }
    (events, written)
}
