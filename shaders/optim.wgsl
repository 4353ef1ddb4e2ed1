// Optimizer steps and gradient clipping over a model's flat parameter vector, as torch.optim
// and torch.nn.utils.clip_grad_norm_ compute them (formulas and their order of operations:
// the CPU reference in src/optim.rs). One invocation per element for the updates; clipping
// sums each tensor's squares in one workgroup, in a fixed order (results are bit-identical
// run to run), then one invocation forms the total norm and the scale.

struct Optim {
    len: u32,
    kind: u32,        // 0 SGD, 1 Adam (the kernels run their module's `RULE`)
    flags: u32,       // NESTEROV | DECOUPLED | FIRST_STEP | MOMENTUM
    slots: u32,       // tensors in the slot table (clipping)
    lr: f32,
    momentum: f32,
    grad_share: f32,  // SGD: 1 − dampening
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,   // Adam: lr / (1 − β1^t)
    bc2_sqrt: f32,    // Adam: sqrt(1 − β2^t)
    max_norm: f32,
    one_minus_beta2: f32,
    decay: f32,       // AdamW: 1 − lr·weight_decay
}
// (Every scalar computed from the hyperparameters is computed on the host, in f64, as
// PyTorch computes it: `StepScalars` in src/optim.rs.)

const NESTEROV: u32 = 1u;
const DECOUPLED: u32 = 2u;
const FIRST_STEP: u32 = 4u;
const MOMENTUM: u32 = 8u;

@group(0) @binding(0) var<uniform> o: Optim;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
// SGD: the momentum buffer (len); Adam: m (len) then v (len).
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
// Clipping: the slot table (offset, length as u32 bit patterns, per tensor), then each
// tensor's norm, then the total norm and the scale.
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;

fn element(wg: vec3<u32>, lane: u32) -> u32 {
    return (wg.y * 65535u + wg.x) * 64u + lane;
}

// The update rule this module's pipelines run (`UpdateRule` in src/gpu/kernels/optim.rs): 0
// SGD, 1 SGD with momentum, 2 Adam or AdamW; a template's constant (one module per rule)
// rather than the uniform's `kind`: llvmpipe runs both sides of every branch (masked), so a
// rule's kernels should hold only its own loads and stores.
const RULE: u32 = {{RULE}}u;

// Each invocation steps every (groups · 64)th element from its own: on a software adapter
// each workgroup has a fixed cost, so `GpuOptimizerState::record_step` dispatches one
// workgroup per 4,096 elements, not per 64.
@compute @workgroup_size(64, 1, 1)
fn update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) lane: u32) {
    let stride = groups.x * groups.y * 64u;
    for (var i = element(wg, lane); i < o.len; i += stride) {
        update_element(i, grads[i]);
    }
}

// Element i's step from its gradient g.
fn update_element(i: u32, gradient: f32) {
    var p = params[i];
    var g = gradient;
    if RULE != 2u {
        if o.weight_decay != 0.0 {
            g += o.weight_decay * p;
        }
        if RULE == 1u {
            // The first step's buffer is the gradient (the state beside it unused: a select
            // rather than a branch, whose masked load would cost as much).
            let first = (o.flags & FIRST_STEP) != 0u;
            let b = select(o.momentum * state[i] + o.grad_share * g, g, first);
            state[i] = b;
            g = select(b, g + o.momentum * b, (o.flags & NESTEROV) != 0u);
        }
        p += -o.lr * g;
    } else {
        if (o.flags & DECOUPLED) != 0u {
            p *= o.decay;
        } else if o.weight_decay != 0.0 {
            g += o.weight_decay * p;
        }
        // exp_avg.lerp_(grad, 1 − β1) (from the nearer end, as ATen's lerp);
        // exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1 − β2);
        // param.addcdiv_(exp_avg, denom, value=−step_size).
        let m_old = state[i];
        var m = g - (g - m_old) * (1.0 - o.one_minus_beta1);
        if abs(o.one_minus_beta1) < 0.5 {
            m = m_old + o.one_minus_beta1 * (g - m_old);
        }
        let v = state[o.len + i] * o.beta2 + o.one_minus_beta2 * g * g;
        state[i] = m;
        state[o.len + i] = v;
        let denom = sqrt(v) / o.bc2_sqrt + o.eps;
        p += -o.step_size * m / denom;
    }
    params[i] = p;
}

var<workgroup> partial: array<f32, 64>;

// Workgroup s: the norm of tensor s.
@compute @workgroup_size(64, 1, 1)
fn tensor_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let norm = tensor_norm(wg.x, lane);
    if lane == 0u {
        scratch[2u * o.slots + wg.x] = norm;
    }
}

// The norm of tensor s, by a workgroup (every invocation gets it): 64 strided partial sums,
// then a fixed tree.
fn tensor_norm(s: u32, lane: u32) -> f32 {
    let at = bitcast<u32>(scratch[2u * s]);
    let len = bitcast<u32>(scratch[2u * s + 1u]);
    var sum = 0.0;
    for (var i = lane; i < len; i += 64u) {
        let g = grads[at + i];
        sum += g * g;
    }
    partial[lane] = sum;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    let norm = sqrt(partial[0]);
    // Before `partial` is used again.
    workgroupBarrier();
    return norm;
}

// The total norm (of the tensors' norms) and the scale min(max_norm / (total + 1e-6), 1).
@compute @workgroup_size(1, 1, 1)
fn total_norm() {
    write_total_norm();
}

fn write_total_norm() {
    var sum = 0.0;
    for (var s = 0u; s < o.slots; s++) {
        let n = scratch[2u * o.slots + s];
        sum += n * n;
    }
    let total = sqrt(sum);
    scratch[3u * o.slots] = total;
    scratch[3u * o.slots + 1u] = min(o.max_norm / (total + 1e-6), 1.0);
}

// All of clipping in one workgroup, for small models (a dispatch costs ~40 µs on a software
// adapter, more than their work): `tensor_norms`' workgroups in turn, `total_norm`, `scale`.
// The same values. (One workgroup: a second reading the gradients for the norms while the
// first scales them would see some scaled.)
@compute @workgroup_size(64, 1, 1)
fn clip_in_one(@builtin(local_invocation_index) lane: u32) {
    let scale = clip_norms(lane);
    for (var i = lane; i < o.len; i += 64u) {
        grads[i] *= scale;
    }
}

// Clipping, then the optimizer's step, in one workgroup (a small model's clipped iteration
// ends with this one dispatch instead of two): `clip_in_one`, each gradient then scaled (and
// kept so, as clipping leaves it) and stepped in one pass.
@compute @workgroup_size(64, 1, 1)
fn clip_and_update(@builtin(local_invocation_index) lane: u32) {
    let scale = clip_norms(lane);
    for (var i = lane; i < o.len; i += 64u) {
        let g = grads[i] * scale;
        grads[i] = g;
        update_element(i, g);
    }
}

// Every tensor's norm, the total norm and the scale, stored as `tensor_norms` and
// `total_norm` store them; the scale returned to every invocation.
fn clip_norms(lane: u32) -> f32 {
    for (var s = 0u; s < o.slots; s++) {
        let norm = tensor_norm(s, lane);
        if lane == 0u {
            scratch[2u * o.slots + s] = norm;
        }
    }
    if lane == 0u {
        write_total_norm();
    }
    storageBarrier();
    return scratch[3u * o.slots + 1u];
}

// Every gradient times the scale (always, even when it is 1, as PyTorch does).
@compute @workgroup_size(64, 1, 1)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i = element(wg, lane);
    if i < o.len {
        grads[i] *= scratch[3u * o.slots + 1u];
    }
}
