//! The work herald does for each datagram as shipped (parse into the shared
//! event the pipeline hands its sinks, categorise, route, encode as JSON for the service config's file sink) over every fixture
//! datagram, `ROUNDS` times, for counting instructions under callgrind:
//! `instructions FIXTURES_DIR CONFIG ROUNDS` prints the number of datagrams in
//! the mix, how many of them became events a sink took, and the bytes of
//! JSON one round wrote. Only [`workload`] is meant to be counted
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
    let [_, fixtures, config, rounds] = args.as_slice() else {
        eprintln!("usage: instructions FIXTURES_DIR CONFIG ROUNDS");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let mut mix: Vec<(String, Vec<u8>)> = std::fs::read_dir(Path::new(fixtures))
        .expect("read the fixtures")
        .map(|entry| {
            let path = entry.expect("fixture").path();
            (
                path.display().to_string(),
                std::fs::read(&path).expect("read a fixture"),
            )
        })
        .collect();
    mix.sort();
    let mix: Vec<Vec<u8>> = mix.into_iter().map(|(_, bytes)| bytes).collect();
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
