//! The optional per-source rate limit at ingest
//! (`ingest.max_datagrams_per_source_per_second`).
//!
//! Each receive thread counts datagrams per sender address in fixed one-second
//! windows and refuses those over the limit before they are copied or parsed.
//! The table is bounded: once it holds [`MAX_SOURCES`] addresses in a window,
//! further addresses share one allowance of the same size, so forged addresses
//! cannot grow memory and cannot get more than one extra allowance between
//! them. It limits a misbehaving (or spoofed) allowed sender; it does not
//! replace a firewall.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::time::Instant;

/// Sender addresses tracked per window and receive thread.
pub const MAX_SOURCES: usize = 16_384;

/// Datagrams per sender per second, counted for one receive thread.
#[derive(Debug)]
pub struct SourceLimiter {
    limit: u32,
    epoch: Instant,
    window: u64,
    counts: HashMap<IpAddr, u32>,
    /// What the senders beyond the table have sent in this window.
    others: u32,
}

impl SourceLimiter {
    /// A limiter letting `limit` datagrams a second through per sender.
    pub fn new(limit: u32) -> SourceLimiter {
        SourceLimiter {
            limit,
            epoch: Instant::now(),
            window: 0,
            counts: HashMap::new(),
            others: 0,
        }
    }

    /// Whether a datagram from `sender` at `now` is within the limit.
    pub fn admit(&mut self, sender: IpAddr, now: Instant) -> bool {
        let window = now.saturating_duration_since(self.epoch).as_secs();
        if window != self.window {
            self.window = window;
            self.counts.clear();
            self.others = 0;
        }
        let room = self.counts.len() < MAX_SOURCES;
        let count = match self.counts.entry(sender) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) if room => entry.insert(0),
            Entry::Vacant(_) => &mut self.others,
        };
        *count = count.saturating_add(1);
        *count <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000u32 + i))
    }

    #[test]
    fn each_sender_gets_its_limit_per_second() {
        let mut limiter = SourceLimiter::new(3);
        let now = limiter.epoch;
        let admitted = (0..10).filter(|_| limiter.admit(ip(1), now)).count();
        assert_eq!(admitted, 3);
        assert!(limiter.admit(ip(2), now));
        assert!(limiter.admit(ip(1), now + Duration::from_secs(1)));
    }

    #[test]
    fn forged_senders_beyond_the_table_share_one_allowance() {
        let mut limiter = SourceLimiter::new(5);
        let now = limiter.epoch;
        for i in 0..MAX_SOURCES as u32 {
            assert!(limiter.admit(ip(i), now));
        }
        let extra = (0..1000u32)
            .filter(|i| limiter.admit(ip(MAX_SOURCES as u32 + i), now))
            .count();
        assert_eq!(extra, 5);
        assert_eq!(limiter.counts.len(), MAX_SOURCES);
    }
}
