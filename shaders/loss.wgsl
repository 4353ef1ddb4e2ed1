// Losses on a model's output, as PyTorch defines them: the value and, into the backward's
// upstream gradient, d loss / d output. MSE per element, cross-entropy per row of logits (max
// subtracted, as PyTorch computes log-softmax). Each workgroup sums its rows' or elements'
// losses in a fixed order and the last pass sums the workgroups' partials in order (a single
// workgroup does it itself): the value is bit-identical run to run.

{{LOSS_PARAMS}}

@group(0) @binding(0) var<uniform> l: LossParams;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;

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
        data[l.partials + group] = partial[0];
        if l.groups == 1u {
            // The only partial: what `total` would make of it, without its dispatch.
            var total = 0.0;
            total += partial[0];
            data[l.value] = total * l.scale;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn mse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var sum = 0.0;
    for (var k = 0u; k < l.per_lane; k++) {
        let i = (wg.x * l.per_lane + k) * 64u + lane;
        if i < l.rows * l.features {
            let d = data[l.output + i] - data[l.targets + i];
            data[l.grad + i] = 2.0 * d * l.scale;
            sum += d * d;
        }
    }
    store_partial(lane, wg.x, sum);
}

// Rows of logits: log-softmax with the max subtracted, as PyTorch computes it.
@compute @workgroup_size(64, 1, 1)
fn cross_entropy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var sum = 0.0;
    for (var k = 0u; k < l.per_lane; k++) {
        let i = (wg.x * l.per_lane + k) * 64u + lane;
        if i >= l.rows {
            break;
        }
        let z = l.output + i * l.features;
        let label = bitcast<u32>(data[l.targets + i]);
        var top = data[z];
        for (var c = 1u; c < l.features; c++) {
            top = max(top, data[z + c]);
        }
        var exp_sum = 0.0;
        for (var c = 0u; c < l.features; c++) {
            exp_sum += exp(data[z + c] - top);
        }
        for (var c = 0u; c < l.features; c++) {
            let softmax = exp(data[z + c] - top) / exp_sum;
            data[l.grad + i * l.features + c] = (softmax - select(0.0, 1.0, c == label)) * l.scale;
        }
        sum += top + log(exp_sum) - data[z + label];
    }
    store_partial(lane, wg.x, sum);
}

@compute @workgroup_size(1, 1, 1)
fn total() {
    var sum = 0.0;
    for (var g = 0u; g < l.groups; g++) {
        sum += data[l.partials + g];
    }
    data[l.value] = sum * l.scale;
}
