// What a loss pass is (`LossParams` in src/gpu/kernels/loss.rs, field for field) and what one
// invocation of it computes. Shared by the loss kernels (`loss.wgsl`, one invocation per
// invocation) and the one-dispatch training iterations (`train_program.wgsl`, which emulate the
// kernels' workgroups): both must compute the same values in the same order. The module that
// includes it declares `loss: LossParams` and the storage array `work` the offsets index.

struct LossParams {
    kind: u32,        // 0 MSE, 1 cross-entropy (each has its entry point)
    rows: u32,        // frames
    features: u32,    // features (classes) per frame
    groups: u32,      // workgroups of the first pass
    output: u32,      // offsets in `work`, in elements
    targets: u32,     // the target values or class indices
    grad: u32,
    partials: u32,    // `groups` partial sums
    scale: f32,       // 1/count for a mean, 1 for a sum
    per_lane: u32,    // items (MSE: elements, cross-entropy: rows) each invocation sums
    value: u32,       // where the loss goes
    target_stride: u32, // elements from one row's class index to the next's
}

// Invocation `invocation` of workgroup `group` of the MSE pass: its elements' squared errors
// summed, their gradients written.
fn mse_sum(group: u32, invocation: u32) -> f32 {
    var sum = 0.0;
    for (var k = 0u; k < loss.per_lane; k++) {
        let i = (group * loss.per_lane + k) * 64u + invocation;
        if i < loss.rows * loss.features {
            let d = work[loss.output + i] - work[loss.targets + i];
            work[loss.grad + i] = 2.0 * d * loss.scale;
            sum += d * d;
        }
    }
    return sum;
}

// The same for the cross-entropy pass, over rows of logits: log-softmax with the max
// subtracted, as PyTorch computes it. A row's class index is read before its gradient is
// written (a one-dispatch iteration keeps the two in one place).
fn cross_entropy_sum(group: u32, invocation: u32) -> f32 {
    var sum = 0.0;
    for (var k = 0u; k < loss.per_lane; k++) {
        let i = (group * loss.per_lane + k) * 64u + invocation;
        if i >= loss.rows {
            break;
        }
        let z = loss.output + i * loss.features;
        let label = bitcast<u32>(work[loss.targets + i * loss.target_stride]);
        var top = work[z];
        for (var c = 1u; c < loss.features; c++) {
            top = max(top, work[z + c]);
        }
        var exp_sum = 0.0;
        for (var c = 0u; c < loss.features; c++) {
            exp_sum += exp(work[z + c] - top);
        }
        for (var c = 0u; c < loss.features; c++) {
            let softmax = exp(work[z + c] - top) / exp_sum;
            work[loss.grad + i * loss.features + c] =
                (softmax - select(0.0, 1.0, c == label)) * loss.scale;
        }
        sum += top + log(exp_sum) - work[z + label];
    }
    return sum;
}
