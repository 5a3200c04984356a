//! Parses the mix of sample datagrams over and over with today's parser
//! (`new`) or the one before nom (`baseline`), for whole-process A/B timing:
//! `cargo build --release --example parse_ab --features bench-baseline`, then
//! time `parse_ab new 200000` against `parse_ab baseline 200000`.

use std::hint::black_box;
use std::net::SocketAddr;

use herald::send::SAMPLES;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "new".into());
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let sender: SocketAddr = "10.0.0.5:61000".parse().expect("address");
    let now = jiff::Timestamp::now();
    let mut parsed = 0usize;
    match which.as_str() {
        "new" => {
            let mut parser = herald::parse::Parser::new(&herald::parse::ParseConfig::default())
                .expect("default config");
            for _ in 0..rounds {
                for sample in SAMPLES {
                    parsed += usize::from(
                        parser
                            .parse(black_box(sample.datagram), sender, now)
                            .is_ok(),
                    );
                }
            }
        }
        _ => {
            let mut parser = herald::parse_baseline::Parser::new(
                &herald::parse_baseline::ParseConfig::default(),
            )
            .expect("default config");
            for _ in 0..rounds {
                for sample in SAMPLES {
                    parsed += usize::from(
                        parser
                            .parse(black_box(sample.datagram), sender, now)
                            .is_ok(),
                    );
                }
            }
        }
    }
    println!("{parsed}");
}
