//! The GPU path: context, kernels, per-shape workspaces, the scheduler, the engine and the
//! typed models over it.

pub(crate) mod ahead;
pub(crate) mod architecture;
pub(crate) mod bidirectional;
pub(crate) mod block_loop;
pub(crate) mod chunking;
pub(crate) mod context;
pub(crate) mod counters;
pub(crate) mod engine;
pub(crate) mod gated_persistent;
#[cfg(test)]
mod kernel_tests;
pub(crate) mod kernels;
pub(crate) mod model;
pub(crate) mod model_buffers;
pub(crate) mod optim;
pub(crate) mod persistent;
pub(crate) mod persistent_io;
pub(crate) mod persistent_specs;
pub(crate) mod plan;
pub(crate) mod projection;
pub(crate) mod scheduler;
pub(crate) mod stream;
pub(crate) mod train_subgroup;
pub(crate) mod training;
pub(crate) mod workspace;
