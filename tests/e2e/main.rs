//! End-to-end tests: each one runs the real `herald` binary and talks to it over
//! UDP, HTTP, files and signals.

// Shared helpers: ports, the herald process, HTTP and metrics, fixtures.
mod harness;

// Ports for the servers the tests start, outside the range herald's ports come from.
#[path = "../support/ports.rs"]
mod ports;

// `herald send --kind all` samples arrive parsed, one per kind.
mod samples;

// Every parser fixture, sent over UDP, comes out exactly as expected.
mod fixtures;

// Rows a Sense appender numbered that never arrived are counted per sender.
mod senders;

// `herald tap` shows a filtered live stream of a running herald.
mod tap;

// The status page at `/`, checked in headless Chromium.
mod status_page;

// `herald import` turns Butler SOS and Butler configs into checked herald configs.
mod import;

// The sender allowlist refuses, counts and logs outsiders.
mod allowlist;

// Junk and rejected datagrams are counted and kept in the dead-letter file.
mod bad_input;

// Process lifecycle: signals drain every accepted event; start-up failures.
mod shutdown;

// `/metrics` and `/health`.
mod http;

// Sink `match` tables route only the matching events.
mod routing;

// `herald check` and the shipped config files.
mod config;

// Where the config is looked for, and where the relative paths in it point.
mod paths;

// The systemd unit, and the readiness, stop and watchdog notifications.
mod service;

// The README, the changelog and every link in the documents.
mod docs;

// The command line: `herald send`, `herald appenders` and each command's options.
mod cli;

// IPv6 listeners and senders.
mod ipv6;

// A real InfluxDB 1.x: both schemas, event time, outages, refused points, --connect.
mod influxdb;

// The shipped Grafana dashboards query only herald's metrics and InfluxDB schema.
mod dashboards;

// An in-process HTTP/1.1 server that records requests and answers from a script.
mod http_stub;

// The Loki sink against the stub: request shape, retries, Retry-After, refused entries.
mod loki;

// The InfluxDB v2 write API against the stub: URL, token, line protocol, partial refusals.
mod influxdb_v2;

// Slack, Teams and webhook alerts: once, never lost, paced, rate-limited.
mod slack;

// Webhooks that forward batches of events (JSON arrays, NDJSON), signed and retried.
mod webhook;

// Email alerts against a real SMTP server (aiosmtpd): content, TLS, AUTH, per-recipient limits.
mod email;

// MQTT against a real mosquitto: Butler and Butler SOS topics, TLS, passwords, client certificates, outages.
mod mqtt;

// The NATS sink against a real nats-server with JetStream.
mod nats;

// Every query of the Prometheus dashboard returns data from a real Prometheus.
mod prometheus;

// Two instances on one port (ingest.reuse_port) handle every datagram once.
mod reuse_port;

// A 100k-datagram burst: handled, and every datagram accounted for.
mod throughput;

// The file sink rotating about 120 times under a steady stream: nothing lost or repeated.
mod rotation;

// SIGHUP reloads the config: allowlist, routing and tags at once, nothing lost.
mod reload;

// Faults: outages, stops, restarts, kill -9, damaged buffers, a full disk, replay.
mod faults;

// Secrets never leave: no secret in the log, /health, the dead-letter file or `herald check`.
mod secrets;
