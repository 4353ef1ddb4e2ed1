// Losses on a model's output, as PyTorch defines them: the value and, into the backward's
// upstream gradient, d loss / d output. MSE per element, cross-entropy per row of logits (max
// subtracted, as PyTorch computes log-softmax). Each workgroup sums its rows' or elements'
// losses in a fixed order and the last pass sums the workgroups' partials in order: the value
// is bit-identical run to run.

struct LossParams {
    kind: u32,        // 0 MSE, 1 cross-entropy
    rows: u32,        // frames
    features: u32,    // features (classes) per frame
    groups: u32,      // workgroups of the first pass
    output: u32,      // offsets in `data`, in elements
    targets: u32,     // the target values or class indices
    grad: u32,
    partials: u32,    // `groups` partial sums
    scale: f32,       // 1/count for a mean, 1 for a sum
    per_lane: u32,    // items each invocation sums (MSE 16 elements, cross-entropy 1 row)
    value: u32,       // where the loss goes
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> l: LossParams;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;

var<workgroup> partial: array<f32, 64>;

// Workgroup w: items w·64·per_lane .. (elements for MSE, rows for cross-entropy).
fn item_loss(i: u32) -> f32 {
    if l.kind == 0u {
        let d = data[l.output + i] - data[l.targets + i];
        data[l.grad + i] = 2.0 * d * l.scale;
        return d * d;
    }
    let z = l.output + i * l.features;
    let label = bitcast<u32>(data[l.targets + i]);
    var top = data[z];
    for (var c = 1u; c < l.features; c++) {
        top = max(top, data[z + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < l.features; c++) {
        sum += exp(data[z + c] - top);
    }
    for (var c = 0u; c < l.features; c++) {
        let softmax = exp(data[z + c] - top) / sum;
        data[l.grad + i * l.features + c] = (softmax - select(0.0, 1.0, c == label)) * l.scale;
    }
    return top + log(sum) - data[z + label];
}

@compute @workgroup_size(64, 1, 1)
fn losses(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let items = select(l.rows * l.features, l.rows, l.kind == 1u);
    var sum = 0.0;
    for (var k = 0u; k < l.per_lane; k++) {
        let i = (wg.x * l.per_lane + k) * 64u + lane;
        if i < items {
            sum += item_loss(i);
        }
    }
    partial[lane] = sum;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    if lane == 0u {
        data[l.partials + wg.x] = partial[0];
    }
}

@compute @workgroup_size(1, 1, 1)
fn total() {
    var sum = 0.0;
    for (var g = 0u; g < l.groups; g++) {
        sum += data[l.partials + g];
    }
    data[l.value] = sum * l.scale;
}
