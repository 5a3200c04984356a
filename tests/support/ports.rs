//! Ports for the servers the tests start (InfluxDB, mosquitto, SMTP).
//!
//! They come from 20000–29999, outside Linux's ephemeral range (32768 and up)
//! from which the harness takes herald's ports and the system takes outgoing
//! connections' ports. So when a test stops a server for an outage and starts
//! it again on the same port, nothing else can have taken the port meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};

/// A port in 20000–29999 that nothing listened on a moment ago.
pub fn server_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        // A splitmix step over the seed and a counter: spread, not secure.
        let mut x = seed.wrapping_add(NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let port = 20_000 + ((x ^ (x >> 31)) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-29999");
}
