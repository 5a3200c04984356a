//! Parses the mix of sample datagrams over and over with today's parser
//! (`new`) or the one before nom (`baseline`), for whole-process A/B timing:
//! `cargo build --release --example parse_ab --features bench-baseline`, then
//! time `parse_ab new 200000` against `parse_ab baseline 200000`.
//!
//! `parse_ab interleave PAIRS` times both parsers in the same process, in
//! alternating slices of about a millisecond each (the order flipped every
//! pair), and prints the median and quartiles of new/baseline datagrams per
//! second over the pairs: drift in the machine's speed hits both halves of a
//! pair alike, so the ratio holds still where separate runs do not.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald::send::SAMPLES;

type Run<'a> = Box<dyn FnMut(usize) -> usize + 'a>;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "new".into());
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let sender: SocketAddr = "10.0.0.5:61000".parse().expect("address");
    let now = jiff::Timestamp::now();
    let mut new =
        herald::parse::Parser::new(&herald::parse::ParseConfig::default()).expect("default config");
    let mut old =
        herald::parse_baseline::Parser::new(&herald::parse_baseline::ParseConfig::default())
            .expect("default config");
    let mut run_new: Run = Box::new(|rounds| {
        let mut parsed = 0;
        for _ in 0..rounds {
            for sample in SAMPLES {
                parsed += usize::from(new.parse(black_box(sample.datagram), sender, now).is_ok());
            }
        }
        parsed
    });
    let mut run_old: Run = Box::new(|rounds| {
        let mut parsed = 0;
        for _ in 0..rounds {
            for sample in SAMPLES {
                parsed += usize::from(old.parse(black_box(sample.datagram), sender, now).is_ok());
            }
        }
        parsed
    });
    match which.as_str() {
        "new" => println!("{}", run_new(rounds)),
        "baseline" => println!("{}", run_old(rounds)),
        "interleave" => interleave(&mut run_new, &mut run_old, rounds),
        other => eprintln!("unknown mode {other}: new, baseline or interleave"),
    }
}

fn interleave(new: &mut Run, old: &mut Run, pairs: usize) {
    // Warm up, then size a slice to about a millisecond of the old parser.
    let _ = (new(200), old(200));
    let slice = {
        let start = Instant::now();
        old(100);
        let per_round = start.elapsed() / 100;
        (Duration::from_millis(1).as_nanos() / per_round.as_nanos().max(1)).max(1) as usize
    };
    let time = |run: &mut Run| {
        let start = Instant::now();
        black_box(run(slice));
        start.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..pairs)
        .map(|pair| {
            let (t_new, t_old) = if pair % 2 == 0 {
                let t_new = time(new);
                (t_new, time(old))
            } else {
                let t_old = time(old);
                (time(new), t_old)
            };
            // Speed of new relative to old: time of old over time of new.
            t_old / t_new
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    println!(
        "{pairs} pairs of {slice} rounds ({} datagrams each): new/baseline speed median {:.3}, quartiles {:.3}–{:.3}, 5–95 % {:.3}–{:.3}",
        slice * SAMPLES.len(),
        at(0.5),
        at(0.25),
        at(0.75),
        at(0.05),
        at(0.95)
    );
}
