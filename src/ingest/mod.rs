//! Ingest: owns the UDP sockets and the allowlist; never parses.
//!
//! One dedicated thread per listening socket reads batches of datagrams, refuses
//! oversized ones and senders outside the allowlist (before looking at a single
//! payload byte), copies the rest into one shared buffer per batch and hands the
//! batch to the parse workers with `try_send`; the workers give the buffer back
//! for a later batch (`batch`). UDP cannot push back on senders, so
//! a full hand-off queue drops the batch and counts it; blocking would only move
//! the loss into the kernel, where fewer people look.

pub mod allowlist;
mod batch;
pub mod limit;
pub mod socket;

pub use batch::{Batch, Datagram};
use batch::{Filling, Spares};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use tracing::{error, info, warn};

use crate::budget::ByteBudget;
use crate::flood::{FloodLog, Tally, Unused};
use crate::metrics::IngestMetrics;
use crate::throttle::Throttle;
use allowlist::{AllowlistReader, SharedAllowlist};
use limit::SourceLimiter;

/// Where and how log4net datagrams are received.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Addresses to listen on, e.g. `["0.0.0.0:9996", "0.0.0.0:9997", "0.0.0.0:9998"]`.
    /// Every port accepts every tag. `[::]:9996` listens on IPv6 and IPv4.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// Who may send: networks (`"10.1.0.0/24"`), addresses (`"10.1.0.5"`) and host
    /// names (`"sense-node1.corp.local"`). Must not be empty; `"0.0.0.0/0"` and
    /// `"::/0"` allow everyone.
    pub allow: Vec<String>,
    /// How often host names in `allow` are resolved again, in seconds.
    #[serde(default = "default_allow_refresh_seconds")]
    pub allow_refresh_seconds: u64,
    /// Socket receive buffer to ask the kernel for, in bytes.
    #[serde(default = "default_receive_buffer_bytes")]
    pub receive_buffer_bytes: usize,
    /// Longer datagrams are dropped and counted as `oversized`.
    #[serde(default = "default_max_datagram_bytes")]
    pub max_datagram_bytes: usize,
    /// Datagrams read per system call.
    #[serde(default = "default_recv_batch")]
    pub recv_batch: usize,
    /// Most datagrams accepted per sender address per second (per listening
    /// socket); more are dropped and counted as `rate_limited`. 0 (the
    /// default): no limit.
    #[serde(default)]
    pub max_datagrams_per_source_per_second: u32,
    /// Let several herald processes listen on the same port (`SO_REUSEPORT`,
    /// Linux): the kernel spreads senders across them by source address and
    /// port, so each Sense service's stream goes to one process. Every process
    /// must set it. See docs/SCALING.md for what each process keeps to itself.
    #[serde(default)]
    pub reuse_port: bool,
}

fn default_allow_refresh_seconds() -> u64 {
    300
}

fn default_receive_buffer_bytes() -> usize {
    8 * 1024 * 1024
}

fn default_max_datagram_bytes() -> usize {
    65_507
}

fn default_recv_batch() -> usize {
    64
}

/// Accepts `listen = "addr"` as well as `listen = ["addr", ...]`, and says
/// what it expects in words a config file uses.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    use serde::de::{self, SeqAccess, Visitor};

    const EXAMPLE: &str = "an address like \"0.0.0.0:9996\"";

    fn parse<E: de::Error>(text: &str) -> Result<SocketAddr, E> {
        text.parse()
            .map_err(|_| E::custom(format!("expected {EXAMPLE}, found the string {text:?}")))
    }

    /// One address of the list.
    struct Address(SocketAddr);

    impl<'de> Deserialize<'de> for Address {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct AddressVisitor;
            impl Visitor<'_> for AddressVisitor {
                type Value = Address;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(EXAMPLE)
                }
                fn visit_str<E: de::Error>(self, text: &str) -> Result<Address, E> {
                    parse(text).map(Address)
                }
            }
            deserializer.deserialize_str(AddressVisitor)
        }
    }

    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{EXAMPLE} or a list of them")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<SocketAddr>, E> {
            parse(text).map(|addr| vec![addr])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<SocketAddr>, A::Error> {
            let mut addrs = Vec::new();
            while let Some(Address(addr)) = seq.next_element()? {
                addrs.push(addr);
            }
            Ok(addrs)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// A socket bound and ready for its receive thread.
#[derive(Debug)]
pub struct Listener {
    /// The address as configured (the metric label).
    pub name: String,
    /// The bound socket.
    pub bound: socket::Bound,
}

/// Binds every configured address and logs what the kernel granted.
///
/// # Errors
///
/// Names the address that could not be bound.
pub fn bind_all(config: &IngestConfig) -> Result<Vec<Listener>, BindError> {
    config
        .listen
        .iter()
        .map(|&addr| bind_one(addr, config))
        .collect()
}

/// Binds `addr` with `config`'s settings and logs what the kernel granted.
///
/// # Errors
///
/// Names the address that could not be bound.
pub fn bind_one(addr: SocketAddr, config: &IngestConfig) -> Result<Listener, BindError> {
    let bound = socket::bind(addr, config.receive_buffer_bytes, config.reuse_port)
        .map_err(|source| BindError { addr, source })?;
    let granted = bound.receive_buffer_bytes;
    // Linux reports twice the size asked for (it counts its overhead).
    if granted < config.receive_buffer_bytes {
        warn!(
            listener = %addr,
            asked = config.receive_buffer_bytes,
            granted,
            "receive buffer smaller than configured; raise net.core.rmem_max \
             (sysctl -w net.core.rmem_max={}) or run with CAP_NET_ADMIN",
            config.receive_buffer_bytes
        );
    }
    info!(
        listener = %bound.local_addr,
        receive_buffer_bytes = granted,
        reuse_port = config.reuse_port,
        "listening for Sense log events"
    );
    Ok(Listener {
        name: addr.to_string(),
        bound,
    })
}

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (ingest.listen); is another program (Butler, Butler SOS) using the port?"
)]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Starts the receive thread for `listener`.
///
/// The thread stops when `stop` is set (within [`socket::POLL_INTERVAL`] and
/// a linger, [`LINGER`]) or when
/// the workers are gone, and drops its sender so the workers can drain.
pub fn spawn(
    listener: Listener,
    config: &IngestConfig,
    allowlist: Arc<SharedAllowlist>,
    tx: Sender<Batch>,
    budget: Arc<ByteBudget>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let config = config.clone();
    std::thread::Builder::new()
        .name(format!("ingest {}", listener.name))
        .spawn(move || ReceiveLoop::new(listener, &config, allowlist, tx, budget).run(&stop))
}

struct ReceiveLoop {
    name: String,
    receiver: socket::Receiver,
    allowlist: AllowlistReader,
    tx: Sender<Batch>,
    budget: Arc<ByteBudget>,
    metrics: IngestMetrics,
    kernel_drops_seen: u32,
    limiter: Option<SourceLimiter>,
    /// The refusals of the current read, for the flood log.
    unused: Tally,
    /// When the flood log's summary is next looked at.
    next_tick: Instant,
    queue_full_log: Throttle,
    kernel_drops_log: Throttle,
    /// The buffers of batches the workers are done with.
    spares: Arc<Spares>,
    /// Payload bytes of the last batch: sizes a buffer made afresh.
    last_bytes: usize,
    /// The longest sleep between reads while lingering, from the receive
    /// buffer's size.
    longest_step: Duration,
    /// Datagrams a second read over the last cycle (from the hand-off before
    /// to this one), and when that cycle ended.
    rate: f64,
    cycle_end: Instant,
}

/// After the first datagram arrives, keep collecting for up to this long (or
/// until [`HANDOFF_MAX`] datagrams or [`HANDOFF_MAX_BYTES`]) before handing
/// the batch to the workers: the most latency the receive thread adds. While
/// the socket has less than a full read queued, the thread sleeps (see
/// [`ReceiveLoop::step`]) and reads what queued up meanwhile, instead of
/// waking itself and a parse worker for every datagram or two. A stream that
/// fills a batch within this anyway gathers for 1 ms only
/// ([`ReceiveLoop::linger_for`]); one too slow for a sleep to gather anything
/// goes over at once.
const LINGER: Duration = Duration::from_millis(20);

/// The shortest sleep while lingering.
const LINGER_STEP_MIN: Duration = Duration::from_millis(1);

/// The burst a lingering thread leaves room for in the receive buffer: a
/// million datagrams a second (about what one receive thread reads, and what
/// one sender reaches over loopback) of 2 KiB each as the kernel counts them
/// (a 400-byte datagram takes 1,280 bytes of the buffer, a 680-byte one
/// 2,304). A longer sleep would let such a burst fill more than half the
/// buffer before the thread reads again, leaving too little room for the
/// rest of it while the thread catches up.
const BURST_BYTES_PER_SECOND: f64 = 1_000_000.0 * 2048.0;

/// The longest sleep between reads while lingering, for a socket granted
/// `receive_buffer_bytes`: short enough that a burst arriving meanwhile fills
/// at most half the buffer (16 MiB granted: about 4 ms), never longer than
/// [`LINGER`], never shorter than [`LINGER_STEP_MIN`] (Linux's default cap,
/// 416 KiB granted, gets the 1 ms floor, which such a burst overflows, as it
/// did before herald lingered longer).
fn longest_step(receive_buffer_bytes: usize) -> Duration {
    let half = receive_buffer_bytes as f64 / 2.0;
    Duration::from_secs_f64(half / BURST_BYTES_PER_SECOND).clamp(LINGER_STEP_MIN, LINGER)
}

/// Most datagrams handed to the workers at once.
const HANDOFF_MAX: usize = 1024;

/// Most bytes of datagrams handed to the workers at once (without it, 1,024
/// datagrams of 64 KB would make one 64 MiB batch).
const HANDOFF_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The smallest buffer a batch is filled in.
const MIN_BUFFER_BYTES: usize = 64 * 1024;

/// The room to start a new batch buffer with: a little more than the last
/// batch took, so that a steady stream fills each buffer without growing it.
fn next_capacity(last: usize) -> usize {
    (last + last / 4).clamp(MIN_BUFFER_BYTES, HANDOFF_MAX_BYTES)
}

impl ReceiveLoop {
    fn new(
        listener: Listener,
        config: &IngestConfig,
        allowlist: Arc<SharedAllowlist>,
        tx: Sender<Batch>,
        budget: Arc<ByteBudget>,
    ) -> ReceiveLoop {
        let metrics = IngestMetrics::register(&listener.name);
        metrics
            .receive_buffer
            .set(listener.bound.receive_buffer_bytes as f64);
        let per_source = config.max_datagrams_per_source_per_second;
        ReceiveLoop {
            receiver: socket::Receiver::new(
                listener.bound.socket,
                config.recv_batch,
                config.max_datagram_bytes,
            ),
            name: listener.name,
            allowlist: AllowlistReader::new(allowlist),
            tx,
            budget,
            metrics,
            kernel_drops_seen: 0,
            limiter: (per_source > 0).then(|| SourceLimiter::new(per_source)),
            unused: Tally::default(),
            next_tick: Instant::now(),
            queue_full_log: Throttle::new(Duration::from_secs(10)),
            kernel_drops_log: Throttle::new(Duration::from_secs(10)),
            spares: Spares::new(),
            last_bytes: 0,
            longest_step: longest_step(listener.bound.receive_buffer_bytes),
            rate: 0.0,
            cycle_end: Instant::now(),
        }
    }

    /// Reads one `recvmmsg` batch (waiting as `wait` says), refusing oversized
    /// datagrams, senders outside the allowlist and senders over their rate
    /// limit, and appends the rest to `filling`. Each datagram meets the
    /// allowlist as it is when the datagram is checked, after the read (a
    /// read may wait, and a reload may replace the list meanwhile). Refusals
    /// are counted, and logged within the flood log's budget once per read.
    /// Returns how many datagrams were read.
    fn receive(&mut self, wait: socket::Wait, filling: &mut Filling, now: Instant) -> usize {
        let mut received = 0usize;
        let ReceiveLoop {
            receiver,
            allowlist,
            metrics,
            limiter,
            unused,
            ..
        } = self;
        let result = receiver.recv_batch(wait, |datagram| {
            received += 1;
            // A dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d.
            let peer = SocketAddr::new(datagram.peer.ip().to_canonical(), datagram.peer.port());
            if datagram.oversized {
                metrics.oversized.increment(1);
                unused.note(Unused::Oversized, peer, String::new);
                return;
            }
            if !allowlist.permits(peer.ip()) {
                metrics.not_allowed.increment(1);
                unused.note(Unused::NotAllowed, peer, String::new);
                return;
            }
            if let Some(limiter) = limiter
                && !limiter.admit(peer.ip(), now)
            {
                metrics.rate_limited.increment(1);
                unused.note(Unused::RateLimited, peer, String::new);
                return;
            }
            filling.push(datagram.payload, peer);
        });
        self.metrics.datagrams.increment(received as u64);
        if !self.unused.is_empty() {
            FloodLog::global().report(&self.name, &mut self.unused, now);
        }
        if let Err(err) = result {
            error!(listener = %self.name, %err, "receive failed; retrying");
            std::thread::sleep(socket::POLL_INTERVAL);
        }
        received
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut filling = Filling::default();
        while !stop.load(Ordering::Relaxed) {
            if filling.memory_bytes() == 0 {
                filling = self
                    .spares
                    .take()
                    .unwrap_or_else(|| Filling::with_capacity(next_capacity(self.last_bytes)));
            }
            filling.clear();
            let now = Instant::now();
            let first = self.receive(socket::Wait::Block, &mut filling, now);
            // The kernel's drop count is asked once per hand-off, and when idle
            // (drops at the end of a burst show up then).
            if let Some(drops) = self.receiver.kernel_drops() {
                self.count_kernel_drops(drops);
            }
            // The flood log's summary is due even when nothing is refused
            // any more.
            if now >= self.next_tick {
                FloodLog::global().tick(now);
                self.next_tick = now + Duration::from_secs(1);
            }
            if first == 0 {
                self.quiet(&mut filling);
                continue;
            }
            // The linger and the batch's time count from the first datagram,
            // not from the wait for it.
            let (first_at, received_at) = (Instant::now(), Timestamp::now());
            let read = self.linger(first, first_at + self.linger_for(), &mut filling, first_at);
            if filling.len() > 0 && !self.hand_off(&mut filling, received_at, first_at) {
                return;
            }
            self.end_cycle(read, Instant::now());
        }
    }

    /// Notes the stream's rate over the cycle that read `read` datagrams and
    /// ended at `end` (from the end of the cycle before, waits included).
    fn end_cycle(&mut self, read: usize, end: Instant) {
        let cycle = end.duration_since(self.cycle_end).as_secs_f64();
        self.rate = read as f64 / cycle.max(1e-3);
        self.cycle_end = end;
    }

    /// Nothing arrived for a poll interval: frees what a burst left behind.
    fn quiet(&mut self, filling: &mut Filling) {
        self.end_cycle(0, Instant::now());
        self.spares.release();
        *filling = Filling::default();
        self.last_bytes = 0;
    }

    /// Hands what `filling` holds to the workers, or counts it dropped when
    /// they are behind. A few datagrams go over in a copy of their size and
    /// the buffer stays for the next read; otherwise the buffer goes over
    /// whole and comes back once the workers are done with it. The budget
    /// counts the memory a batch holds, capacity included. `received_at` is
    /// when its first datagram was read. False once the workers are gone.
    fn hand_off(&mut self, filling: &mut Filling, received_at: Timestamp, now: Instant) -> bool {
        self.last_bytes = filling.payload_bytes();
        let handed = if filling.mostly_empty() {
            // A slow stream: spares are not needed, and a buffer a burst
            // left is swapped for one this stream's size.
            self.spares.release();
            let copy = filling.exact_copy();
            if filling.capacity() > 4 * next_capacity(self.last_bytes) {
                *filling = Filling::default();
            }
            copy
        } else {
            std::mem::take(filling)
        };
        let bytes = handed.memory_bytes();
        if !self.budget.try_take(bytes) {
            self.behind(handed.len(), now);
            self.spares.give_back(handed);
            return true;
        }
        let batch = Batch::new(received_at, handed, bytes, self.spares.clone());
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(batch)) => {
                self.budget.release(batch.bytes);
                self.behind(batch.len(), now);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Counts (and logs, throttled) a batch dropped because the hand-off to
    /// the parse workers is full, in batches or in bytes.
    fn behind(&mut self, dropped: usize, now: Instant) {
        self.metrics.queue_full.increment(dropped as u64);
        if let Some(held_back) = self.queue_full_log.allow(now) {
            warn!(listener = %self.name, dropped, held_back,
                "parse workers are behind; dropped datagrams (raise pipeline.workers, pipeline.queue_batches or pipeline.queue_bytes)");
        }
    }

    /// Collects more datagrams until `deadline`, [`HANDOFF_MAX`] or
    /// [`HANDOFF_MAX_BYTES`]: reads again at once while reads come back full,
    /// otherwise sleeps a step (or what is left of the linger) and takes what
    /// has queued up meanwhile. Returns how many datagrams were read in all.
    fn linger(
        &mut self,
        first_read: usize,
        deadline: Instant,
        filling: &mut Filling,
        now: Instant,
    ) -> usize {
        let full = self.receiver.batch_size();
        let mut step = self.step();
        let (mut last_read, mut read) = (first_read, first_read);
        while filling.len() < HANDOFF_MAX && filling.payload_bytes() < HANDOFF_MAX_BYTES {
            // Checked on every pass: full reads of datagrams that are all
            // refused (a flood from outside the allowlist) add nothing to
            // `filling` and must not keep the thread here.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if last_read == full {
                // A busy stream: it fills the next read in no time, and a
                // long sleep would let it fill the receive buffer instead.
                step = LINGER_STEP_MIN;
            } else {
                let sleep = left.min(step);
                if self.rate * sleep.as_secs_f64() < 0.5 {
                    // Too slow a stream for a sleep to gather anything: a
                    // timer's wake-up costs more than handing over now.
                    break;
                }
                std::thread::sleep(sleep);
            }
            last_read = self.receive(socket::Wait::Never, filling, now);
            read += last_read;
        }
        read
    }

    /// How long to gather after the first datagram: [`LINGER`], unless the
    /// last cycle's stream fills a batch ([`HANDOFF_MAX`]) within that
    /// anyway. Such a stream goes over 1 ms after its first datagram: at
    /// those rates a batch costs little per datagram, and gathering longer
    /// would only add latency.
    fn linger_for(&self) -> Duration {
        if self.rate * LINGER.as_secs_f64() >= HANDOFF_MAX as f64 {
            LINGER_STEP_MIN
        } else {
            LINGER
        }
    }

    /// The sleep between reads while lingering: about as long as the stream
    /// of the last cycle took to send a full read (so that a busy socket
    /// holds little and each read takes what queued), at least
    /// [`LINGER_STEP_MIN`], at most what the receive buffer allows
    /// ([`longest_step`]). Each sleep is a timer's wake-up: at slow rates,
    /// the fewer the better.
    fn step(&self) -> Duration {
        let full_read = self.receiver.batch_size() as f64 / self.rate.max(1.0);
        Duration::from_secs_f64(full_read.min(LINGER.as_secs_f64()))
            .clamp(LINGER_STEP_MIN, self.longest_step)
    }

    fn count_kernel_drops(&mut self, cumulative: u32) {
        let new = cumulative.wrapping_sub(self.kernel_drops_seen);
        if new > 0 && cumulative >= self.kernel_drops_seen {
            self.metrics.kernel_drops.increment(u64::from(new));
            if let Some(held_back) = self.kernel_drops_log.allow(Instant::now()) {
                warn!(listener = %self.name, dropped = new, held_back,
                    "the kernel dropped datagrams: receive buffer full (raise ingest.receive_buffer_bytes)");
            }
        }
        self.kernel_drops_seen = cumulative;
    }
}

#[cfg(test)]
mod tests;
