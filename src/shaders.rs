//! Where WGSL enters the crate: one constant per file in `shaders/`.

/// `shaders/input_projection.wgsl`: the batched input projection GEMM.
pub(crate) const INPUT_PROJECTION: &str = include_str!("../shaders/input_projection.wgsl");

/// `shaders/recurrent_step.wgsl`: one fused recurrent timestep.
pub(crate) const RECURRENT_STEP: &str = include_str!("../shaders/recurrent_step.wgsl");
