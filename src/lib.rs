//! herald receives Qlik Sense log4net UDP events and routes them to sinks.
//!
//! Sense services send each log event as one UDP datagram of `;`-separated
//! fields behind a tag (`/qseow-engine/`, `/scheduler-reload-failed/`, ...).
//! herald checks the sender against an allowlist, parses the datagram into one
//! typed [`event::Event`] and hands it to every sink whose `match` it meets.
//!
//! # Layout
//!
//! * [`ingest`]: owns the UDP sockets and the allowlist; never parses.
//! * [`parse`]: datagram bytes to an [`event::Event`]; pure, no I/O.
//! * [`event`]: the event every sink sees, and its JSON encoding.
//! * [`route`]: which sinks get an event, and categorisation rules; pure.
//! * [`sinks`]: one file per destination behind [`sinks::Sink`], plus the generic
//!   driver (batching, retries, metrics, drain).
//! * [`pipeline`]: wires the stages with bounded queues and owns shutdown.
//! * [`deadletter`]: keeps what could not be parsed or delivered.
//! * [`http`]: `/metrics` and `/health`.
//! * [`config`]: the TOML file, assembled from each stage's own config.
//! * [`metrics`]: every metric name and handle.
//! * [`send`]: sample datagrams and the `herald send` test sender.
//! * [`replay`]: `herald replay`, re-sending what the dead-letter file kept.
//! * [`appenders`]: the `LocalLogConfig.xml` files that point Sense at herald.
//! * [`service`]: readiness, stop and watchdog notifications to a service manager.
//! * [`secret`]: passwords and tokens from the environment or files, redacted.
//! * [`redact`]: removes every known secret value from all that herald writes out.
//! * [`throttle`]: keeps repeating conditions from flooding the log.
//! * [`flood`]: logs datagrams herald could not use within one global budget.
//! * [`budget`]: byte budgets for the queues that hold what the network sent.
//! * [`swap`]: values a reload replaces while threads keep reading them.
#![warn(missing_docs)]

pub mod appenders;
pub mod budget;
pub mod buffer;
pub mod config;
pub mod deadletter;
pub mod event;
pub mod flood;
pub mod gaps;
pub mod http;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod pagecache;
pub mod parse;
pub mod pipeline;
pub mod redact;
pub mod replay;
pub mod route;
pub mod secret;
pub mod send;
pub mod service;
pub mod sinks;
pub mod status;
pub mod swap;
pub mod tap;
pub mod throttle;
