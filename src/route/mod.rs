//! Routing: which sinks receive each event ([`Matcher`], from each sink's
//! `match` table), and what every event gets before that: the static `[tags]`
//! and the categorisation rules ([`Enricher`]).
//!
//! Both are compiled once from config, are pure, and allocate nothing per event
//! unless a rule adds categories. This module knows nothing about sockets,
//! queues or sinks' delivery.

mod categorise;
mod matcher;
mod pattern;

pub use categorise::{
    BadRegex, CategoriseConfig, Categoriser, Enricher, FilterConfig, FilterKind, RuleAction,
    RuleConfig, Verdict,
};
pub use matcher::{MatchConfig, Matcher};
pub use pattern::{NamePattern, UserPattern};

#[cfg(test)]
mod test_events {
    use crate::event::Event;
    use crate::parse::{ParseConfig, Parser};

    pub(super) const PROXY_WARN: &[u8] = b"/qseow-proxy/;87;20240519T101502.331+0200;2024-05-19 10:15:02,331;WARN;pro2-win1;Audit.Proxy.Proxy.SessionEstablishment.Authentication;LAB\\qlikservice;Access was denied for User: 'LAB\\jdoe';;LAB;jdoe;Login;401;AppAccess;/hub/";
    pub(super) const TASK_FAILED: &[u8] = b"/scheduler-reload-failed/;pro2-win1;Reload of Sales;Sales;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;e7af59a0-c243-480d-9571-08727551a66f;2021-02-16 09:24:59,099;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;Max retries reached";

    pub(super) fn event(datagram: &[u8]) -> Event {
        let mut parser = Parser::new(&ParseConfig::default()).unwrap();
        parser
            .parse(
                datagram,
                "10.0.0.5:61000".parse().unwrap(),
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap()
    }
}
