// Losses on a model's output, as PyTorch defines them: the value and, into the backward's
// upstream gradient, d loss / d output. MSE per element, cross-entropy per row of logits (max
// subtracted, as PyTorch computes log-softmax). Each workgroup sums its rows' or elements'
// losses in a fixed order and the last pass sums the workgroups' partials in order (a single
// workgroup does it itself): the value is bit-identical run to run.

{{LOSS_COMMON}}

@group(0) @binding(0) var<uniform> loss: LossParams;
@group(0) @binding(1) var<storage, read_write> work: array<f32>;

var<workgroup> partial: array<f32, 64>;

// Workgroup w sums items w·64·per_lane .. (elements for MSE, rows for cross-entropy), one
// entry point per loss. (One entry point for both, branching per item, made lavapipe (Mesa
// 22.3) keep ~160 KB per dispatch of the MSE pass: measured, tests/train_runs' loop.)

// The workgroup's 64 partial sums, added in a fixed tree, stored as the workgroup's partial.
fn store_partial(lane: u32, group: u32, sum: f32) {
    partial[lane] = sum;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    if lane == 0u {
        work[loss.partials + group] = partial[0];
        if loss.groups == 1u {
            // The only partial: what `total` would make of it, without its dispatch.
            var total = 0.0;
            total += partial[0];
            work[loss.value] = total * loss.scale;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn mse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    store_partial(lane, wg.x, mse_sum(wg.x, lane));
}

@compute @workgroup_size(64, 1, 1)
fn cross_entropy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    store_partial(lane, wg.x, cross_entropy_sum(wg.x, lane));
}

@compute @workgroup_size(1, 1, 1)
fn total() {
    var sum = 0.0;
    for (var g = 0u; g < loss.groups; g++) {
        sum += work[loss.partials + g];
    }
    work[loss.value] = sum * loss.scale;
}
