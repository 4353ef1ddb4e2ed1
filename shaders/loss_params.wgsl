// What a loss pass is (`LossParams` in src/gpu/kernels/loss.rs, field for field). Shared by
// the loss kernels (`loss.wgsl`) and the one-dispatch training iterations
// (`train_program.wgsl`), which must compute the same values in the same order.

struct LossParams {
    kind: u32,        // 0 MSE, 1 cross-entropy (each has its entry point)
    rows: u32,        // frames
    features: u32,    // features (classes) per frame
    groups: u32,      // workgroups of the first pass
    output: u32,      // offsets in `data`, in elements
    targets: u32,     // the target values or class indices
    grad: u32,
    partials: u32,    // `groups` partial sums
    scale: f32,       // 1/count for a mean, 1 for a sum
    per_lane: u32,    // items (MSE: elements, cross-entropy: rows) each invocation sums
    value: u32,       // where the loss goes
    _pad2: u32,
}
