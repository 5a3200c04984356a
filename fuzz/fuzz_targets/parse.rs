//! Feeds arbitrary bytes to the parser and the JSON encoder: neither may panic,
//! and every event must encode to valid UTF-8 JSON text.
#![no_main]

use herald::parse::{ParseConfig, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::new(&ParseConfig::default()).expect("default config");
    let sender = "10.0.0.5:61000".parse().expect("address");
    if let Ok(event) = parser.parse(data, sender, jiff::Timestamp::UNIX_EPOCH) {
        let json = event.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'));
    }
});
