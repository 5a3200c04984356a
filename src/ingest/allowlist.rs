//! The sender allowlist: CIDR networks, single addresses and host names.
//!
//! The allowlist fails closed: an empty list, or one in which nothing resolves, is
//! a configuration error. Host names are resolved at start and again every
//! `allow_refresh_seconds` by a background thread; a name that fails to resolve
//! later keeps its last known addresses, so a DNS hiccup never locks out a Sense
//! node. Receive threads read the current list through [`SharedAllowlist`] with one
//! atomic load per datagram checked and no lock on the hot path.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

use ipnet::IpNet;

use crate::swap::{Current, Swap};

/// One `ingest.allow` entry as written in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A network (`10.1.0.0/24`) or single address (`10.1.0.5`, read as `/32`).
    Net(IpNet),
    /// A host name, resolved to its addresses.
    Host(String),
}

impl AllowEntry {
    /// Reads an entry, or says what is wrong with it.
    ///
    /// # Errors
    ///
    /// When the text is neither a network, an address nor a valid host name.
    pub fn parse(text: &str) -> Result<AllowEntry, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(AllowEntry::Net(canonical_net(net.trunc())));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        }
        let looks_like_host = !text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
            && !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
        if looks_like_host {
            Ok(AllowEntry::Host(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is not a network (\"10.1.0.0/24\"), an address (\"10.1.0.5\") or a host name (\"sense-node1.corp.local\")"
            ))
        }
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/120`) as the IPv4 network it
/// stands for (`10.0.0.0/24`), since senders are compared in canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// A resolved allowlist: the networks a sender may be in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// An allowlist of exactly these networks.
    pub fn new(mut nets: Vec<IpNet>) -> Allowlist {
        nets.sort();
        nets.dedup();
        Allowlist { nets }
    }

    /// Whether `ip` may send. An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`, as a
    /// dual-stack socket reports IPv4 senders) is checked as the IPv4 address.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// How many networks and addresses the list holds.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether the list permits nothing.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// The outcome of resolving the configured entries.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// The resolved list.
    pub allowlist: Allowlist,
    /// Host names that did not resolve (and had no earlier addresses).
    pub unresolved: Vec<String>,
}

/// Resolves host names; `previous` supplies last known addresses for names that
/// fail now.
pub fn resolve(
    entries: &[AllowEntry],
    previous: &[(String, Vec<IpAddr>)],
) -> (Resolution, Vec<(String, Vec<IpAddr>)>) {
    let mut nets = Vec::new();
    let mut unresolved = Vec::new();
    let mut known = Vec::new();
    for entry in entries {
        match entry {
            AllowEntry::Net(net) => nets.push(*net),
            AllowEntry::Host(host) => {
                let mut addrs: Vec<IpAddr> = (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|addrs| addrs.map(|a| a.ip().to_canonical()).collect())
                    .unwrap_or_default();
                if addrs.is_empty()
                    && let Some((_, last)) = previous.iter().find(|(name, _)| name == host)
                {
                    addrs = last.clone();
                }
                if addrs.is_empty() {
                    unresolved.push(host.clone());
                }
                nets.extend(addrs.iter().map(|&ip| IpNet::from(ip)));
                known.push((host.clone(), addrs));
            }
        }
    }
    (
        Resolution {
            allowlist: Allowlist::new(nets),
            unresolved,
        },
        known,
    )
}

/// The current allowlist, swapped by the refresher and by a config reload,
/// and read by receive threads.
pub type SharedAllowlist = Swap<Allowlist>;

/// A receive thread's view of the allowlist.
#[derive(Debug)]
pub struct AllowlistReader {
    current: Current<Allowlist>,
    /// The last sender looked up and the answer: a Sense node sends runs of
    /// datagrams, so most checks repeat the previous one.
    last: Option<(IpAddr, bool)>,
}

impl AllowlistReader {
    /// Starts reading `shared`.
    pub fn new(shared: Arc<SharedAllowlist>) -> AllowlistReader {
        AllowlistReader {
            current: Current::new(shared),
            last: None,
        }
    }

    /// Picks up a replaced list.
    fn refresh(&mut self) {
        if self.current.refresh() {
            self.last = None;
        }
    }

    /// Whether `ip` may send, by the list as it is now: a replaced list is
    /// picked up first (one atomic load when there is none), so a datagram
    /// checked after a reload meets the new list.
    pub fn permits(&mut self, ip: IpAddr) -> bool {
        self.refresh();
        match self.last {
            Some((last, verdict)) if last == ip => verdict,
            _ => {
                let verdict = self.current.get().permits(ip);
                self.last = Some((ip, verdict));
                verdict
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        let entries: Vec<_> = entries
            .iter()
            .map(|e| AllowEntry::parse(e).unwrap())
            .collect();
        resolve(&entries, &[]).0.allowlist
    }

    #[test]
    fn cidr_entries_match_addresses_inside_them_only() {
        let allow = list(&["10.1.0.0/24", "2001:db8::/32"]);
        assert!(allow.permits("10.1.0.200".parse().unwrap()));
        assert!(!allow.permits("10.1.1.1".parse().unwrap()));
        assert!(allow.permits("2001:db8::5".parse().unwrap()));
        assert!(!allow.permits("2001:db9::5".parse().unwrap()));
    }

    #[test]
    fn single_address_is_a_host_route() {
        let allow = list(&["127.0.0.1"]);
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_ipv6_senders_match_ipv4_rules() {
        let allow = list(&["10.1.0.0/24"]);
        assert!(allow.permits("::ffff:10.1.0.7".parse().unwrap()));
        assert!(!allow.permits("::ffff:10.2.0.7".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_entries_are_read_as_ipv4() {
        let allow = list(&["::ffff:127.0.0.1", "::ffff:10.1.0.0/120"]);
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(allow.permits("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!allow.permits("10.1.1.9".parse().unwrap()));
    }

    #[test]
    fn empty_list_permits_nothing() {
        assert!(!Allowlist::default().permits("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn host_names_resolve_and_unknown_ones_are_reported() {
        let entries = [
            AllowEntry::parse("localhost").unwrap(),
            AllowEntry::parse("no-such-host.invalid").unwrap(),
        ];
        let (resolution, known) = resolve(&entries, &[]);
        assert!(resolution.allowlist.permits("127.0.0.1".parse().unwrap()));
        assert_eq!(resolution.unresolved, ["no-such-host.invalid"]);
        assert_eq!(known.len(), 2);
    }

    #[test]
    fn a_host_that_stops_resolving_keeps_its_last_addresses() {
        let entries = [AllowEntry::parse("no-such-host.invalid").unwrap()];
        let previous = [(
            "no-such-host.invalid".to_string(),
            vec!["10.9.9.9".parse().unwrap()],
        )];
        let (resolution, _) = resolve(&entries, &previous);
        assert!(resolution.unresolved.is_empty());
        assert!(resolution.allowlist.permits("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn malformed_entries_are_explained() {
        assert!(
            AllowEntry::parse("10.0.0.0/33")
                .unwrap_err()
                .contains("not a network")
        );
        assert!(AllowEntry::parse("300.1.1.1").is_err());
        assert!(AllowEntry::parse("bad host").is_err());
        assert_eq!(
            AllowEntry::parse("Sense-Node1.corp.local").unwrap(),
            AllowEntry::Host("sense-node1.corp.local".into())
        );
    }

    #[test]
    fn a_reader_checks_by_the_list_as_it_is_now() {
        let shared = Arc::new(SharedAllowlist::new(list(&["10.0.0.0/8"])));
        let mut reader = AllowlistReader::new(shared.clone());
        let ip = "192.168.1.1".parse().unwrap();
        assert!(!reader.permits(ip));
        // The remembered verdict for this sender does not outlive the list.
        shared.replace(list(&["192.168.0.0/16"]));
        assert!(reader.permits(ip));
    }

    #[test]
    fn a_remembered_verdict_only_answers_for_the_same_sender() {
        let shared = Arc::new(SharedAllowlist::new(list(&["10.0.0.0/8"])));
        let mut reader = AllowlistReader::new(shared);
        let (inside, outside) = ("10.1.2.3".parse().unwrap(), "11.1.2.3".parse().unwrap());
        for _ in 0..2 {
            assert!(reader.permits(inside));
            assert!(!reader.permits(outside));
        }
    }
}
