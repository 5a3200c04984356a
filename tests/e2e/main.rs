//! End-to-end tests: each one runs the real `herald` binary and talks to it over
//! UDP, HTTP, files and signals.

// Shared helpers: ports, the herald process, HTTP and metrics, fixtures.
mod harness;

// `herald send --kind all` samples arrive parsed, one per kind.
mod samples;

// Every parser fixture, sent over UDP, comes out exactly as expected.
mod fixtures;

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

// IPv6 listeners and senders.
mod ipv6;
