//! The GPU path: context, kernels, per-shape workspaces, the scheduler and the model.

pub(crate) mod bidirectional;
pub(crate) mod chunking;
pub(crate) mod context;
#[cfg(test)]
mod kernel_tests;
pub(crate) mod kernels;
pub(crate) mod model;
pub(crate) mod persistent;
pub(crate) mod projection;
pub(crate) mod scheduler;
pub(crate) mod stream;
pub(crate) mod workspace;
