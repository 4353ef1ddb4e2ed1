//! Where WGSL enters the crate: one constant per file in `shaders/`.

/// `shaders/input_projection.wgsl`: the batched input projection GEMM.
pub(crate) const INPUT_PROJECTION: &str = include_str!("../shaders/input_projection.wgsl");

/// `shaders/recurrent_step.wgsl`: one fused recurrent timestep.
pub(crate) const RECURRENT_STEP: &str = include_str!("../shaders/recurrent_step.wgsl");

/// Every shader source, by name (see `testing::shader_sources`).
pub(crate) fn all_sources() -> Vec<(String, String)> {
    vec![
        ("input_projection".into(), INPUT_PROJECTION.into()),
        ("recurrent_step".into(), RECURRENT_STEP.into()),
    ]
}
