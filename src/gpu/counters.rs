//! What the crate has created on a device: every buffer, bind group and pipeline creation goes
//! through these counters, so that a test can assert that repeated forwards allocate nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// The GPU resources this crate has created on a device (see
/// [`GpuContext::resource_counts`](crate::GpuContext::resource_counts)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCounts {
    /// Buffers (weights, workspaces, staging).
    pub buffers: u64,
    /// The bytes of those buffers (created so far, like the counts: a dropped workspace's
    /// buffers still count).
    pub buffer_bytes: u64,
    /// Bind groups.
    pub bind_groups: u64,
    /// Compute pipelines.
    pub pipelines: u64,
}

/// Live counters behind [`ResourceCounts`]. Every creation site in the crate goes through
/// them, so a test can assert that repeated forwards allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub buffers: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub bind_groups: AtomicU64,
    pub pipelines: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> ResourceCounts {
        ResourceCounts {
            buffers: self.buffers.load(Ordering::Relaxed),
            buffer_bytes: self.buffer_bytes.load(Ordering::Relaxed),
            bind_groups: self.bind_groups.load(Ordering::Relaxed),
            pipelines: self.pipelines.load(Ordering::Relaxed),
        }
    }
}
