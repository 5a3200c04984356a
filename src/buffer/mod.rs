//! Where a sink's queued events wait: in memory (fast, lost on a crash) or in a
//! disk buffer (survives a stop, a restart, a crash or a power cut).
//!
//! * [`record`]: the checksummed, numbered record format of a segment file.
//! * [`disk`]: the segment log: appending in batches, streaming read-back,
//!   acknowledgement, recovery from damage, background sync.
//!
//! The sink's queue ([`crate::sinks::queue`]) decides what goes where and what a
//! full buffer or a failing disk means; this module only keeps bytes.

pub mod disk;
pub mod record;

use serde::{Deserialize, Serialize};

/// `buffer = { type = "memory" }` or `{ type = "disk", max_bytes = ... }`: where a
/// sink's queued events wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BufferConfig {
    /// In memory, up to the sink's `queue_events`: fastest; lost on a crash, and
    /// at a stop what the sink could not deliver within the grace period goes
    /// to the dead-letter file.
    Memory(MemoryBufferConfig),
    /// In segment files under `<data_dir>/buffer/<sink>/`: survives stops,
    /// restarts and crashes; costs disk writes.
    Disk(DiskBufferConfig),
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::Memory(MemoryBufferConfig {})
    }
}

/// Settings of a memory buffer (its size is the sink's `queue_events`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBufferConfig {}

/// Settings of a disk buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskBufferConfig {
    /// The most bytes of events waiting to be delivered; then the sink's
    /// `overflow` applies.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Longest time written events wait to be synced to disk, in milliseconds
    /// (a power cut can lose at most this much; a crash of herald alone, none).
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
}

fn default_max_bytes() -> u64 {
    1024 * 1024 * 1024
}

fn default_sync_interval_ms() -> u64 {
    500
}

/// The smallest disk buffer herald accepts.
pub const MIN_DISK_BYTES: u64 = 64 * 1024;

impl BufferConfig {
    /// The config spelling of the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            BufferConfig::Memory(_) => "memory",
            BufferConfig::Disk(_) => "disk",
        }
    }
}
