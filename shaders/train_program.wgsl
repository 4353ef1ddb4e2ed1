// A whole training program (the forward, or a backward) of a small model as one dispatch of
// one workgroup: on a software adapter a dispatch costs ~40 µs however little it does, and a
// small model's iteration is a dozen dispatches of a few µs of work each. The operations run
// in the program's order, separated by barriers; each sets the private `u` (`Unit`), `step`
// or `gemm` (`Gemm`) its code reads, with the values the multi-dispatch program gives its
// dispatches as uniforms, read from the same buffer (`uniforms`, bound as storage too). The recurrences are the step kernels' own functions (`forward_sequence`,
// `backward_sequence`, `initial_state_gradient_unit`), run sequence by sequence; the GEMMs
// below sum each element of C in the order the GEMM kernels do (k ascending within slices of
// SLICE, slices added in turn), so the results are theirs.
//
// A template: `gpu::training::one_dispatch` writes `run`'s body: the operations, each with
// where its values are.

{{RECURRENCE}}

{{GEMM_PARAMS}}

{{LOSS_COMMON}}

var<private> gemm: Gemm;
var<private> loss: LossParams;
// The loss kernel's workgroup partial sums (`loss.wgsl`'s `partial`).
var<workgroup> loss_partial: array<f32, 64>;

@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(8) var<storage, read> uniforms: array<u32>;

fn unit_at(w: u32) -> Unit {
    return Unit(
        uniforms[w], uniforms[w + 1u], uniforms[w + 2u], uniforms[w + 3u],
        uniforms[w + 4u], uniforms[w + 5u], uniforms[w + 6u], uniforms[w + 7u],
        uniforms[w + 8u], uniforms[w + 9u], uniforms[w + 10u], uniforms[w + 11u],
        uniforms[w + 12u], uniforms[w + 13u], uniforms[w + 14u], uniforms[w + 15u],
        uniforms[w + 16u], uniforms[w + 17u], uniforms[w + 18u], uniforms[w + 19u],
        uniforms[w + 20u], uniforms[w + 21u], uniforms[w + 22u], uniforms[w + 23u],
        uniforms[w + 24u], uniforms[w + 25u], uniforms[w + 26u], uniforms[w + 27u],
        uniforms[w + 28u], uniforms[w + 29u], uniforms[w + 30u], uniforms[w + 31u],
        uniforms[w + 32u], uniforms[w + 33u], uniforms[w + 34u], uniforms[w + 35u],
        uniforms[w + 36u], uniforms[w + 37u], uniforms[w + 38u], uniforms[w + 39u],
        uniforms[w + 40u], uniforms[w + 41u], uniforms[w + 42u], uniforms[w + 43u]);
}

fn gemm_at(w: u32) -> Gemm {
    return Gemm(
        uniforms[w], uniforms[w + 1u], uniforms[w + 2u], uniforms[w + 3u],
        uniforms[w + 4u], uniforms[w + 5u], uniforms[w + 6u], uniforms[w + 7u],
        uniforms[w + 8u], uniforms[w + 9u], uniforms[w + 10u], uniforms[w + 11u],
        uniforms[w + 12u], uniforms[w + 13u], uniforms[w + 14u], uniforms[w + 15u]);
}

// Σ_k A[m, k]·B[k, n] and Σ_k A[m, k] over this dispatch's k, in the GEMM kernels' order,
// B in `params` (`from_params`) or `work`.
fn gemm_sums(m: u32, n: u32, from_params: bool) -> vec2<f32> {
    let k_end = gemm.k0 + gemm.k;
    var acc = 0.0;
    var row = 0.0;
    for (var k_block = gemm.k0; k_block < k_end; k_block += SLICE) {
        var blk = 0.0;
        var row_blk = 0.0;
        let k_stop = min(k_block + SLICE, k_end);
        for (var k = k_block; k < k_stop; k++) {
            let a = work[gemm.a_off + m * gemm.a_sm + k * gemm.a_sk];
            let at = gemm.b_off + k * gemm.b_sk + n * gemm.b_sn;
            var b: f32;
            if from_params {
                b = params[at];
            } else {
                b = work[at];
            }
            blk += a * b;
            row_blk += a;
        }
        acc += blk;
        row += row_blk;
    }
    return vec2<f32>(acc, row);
}

// C (in `work`) = A·B (B in `params`) (+ bias) (+ C): the projections, the head, dX.
fn gemm_to_work(lane: u32) {
    for (var e = lane; e < gemm.m * gemm.n; e += {{LANES}}u) {
        let m = e / gemm.n;
        let n = e % gemm.n;
        var value = gemm_sums(m, n, true).x;
        if (gemm.flags & BIAS) != 0u {
            value += params[gemm.bias_off + n];
        }
        let at = gemm.c_off + m * gemm.c_sm + n * gemm.c_sn;
        if (gemm.flags & ACCUMULATE) != 0u {
            value = work[at] + value;
        }
        work[at] = value;
    }
}

// C (in `grads`) (+)= A·B (B in `work`), and with ROW_SUMS A's rows' sums: the weight and
// bias gradients.
fn gemm_to_grads(lane: u32) {
    for (var e = lane; e < gemm.m * gemm.n; e += {{LANES}}u) {
        let m = e / gemm.n;
        let n = e % gemm.n;
        let sums = gemm_sums(m, n, false);
        let at = gemm.c_off + m * gemm.c_sm + n * gemm.c_sn;
        var value = sums.x;
        if (gemm.flags & ACCUMULATE) != 0u {
            value = grads[at] + value;
        }
        grads[at] = value;
        if (gemm.flags & ROW_SUMS) != 0u && n == 0u {
            grads[gemm.sums_off + m] = grads[gemm.sums_off + m] + sums.y;
        }
    }
}

fn loss_at(w: u32) -> LossParams {
    return LossParams(
        uniforms[w], uniforms[w + 1u], uniforms[w + 2u], uniforms[w + 3u],
        uniforms[w + 4u], uniforms[w + 5u], uniforms[w + 6u], uniforms[w + 7u],
        bitcast<f32>(uniforms[w + 8u]), uniforms[w + 9u], uniforms[w + 10u], uniforms[w + 11u]);
}

// A whole training iteration's loss (between its forward and its backward): `loss.wgsl`'s
// passes, its workgroups run in turn, each workgroup's 64 invocations by this subgroup's
// lanes, the partial sums added in the kernels' order: the same gradient and value. The
// target lies where the gradient goes (`loss.targets` = `loss.grad`; a class index in its
// row's first element), read before it is overwritten.

// The 64 partial sums of one emulated workgroup (in `loss_partial`) added in
// `store_partial`'s tree; their total.
fn loss_group_total(lane: u32) -> f32 {
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        for (var i = lane; i < half; i += {{LANES}}u) {
            loss_partial[i] += loss_partial[i + half];
        }
        workgroupBarrier();
    }
    let sum = loss_partial[0];
    workgroupBarrier();
    return sum;
}

// The cross-entropy pass, or the MSE pass, as described above.
fn loss_pass(lane: u32, cross_entropy: bool) {
    var total = 0.0;
    for (var group = 0u; group < loss.groups; group++) {
        for (var invocation = lane; invocation < 64u; invocation += {{LANES}}u) {
            if cross_entropy {
                loss_partial[invocation] = cross_entropy_sum(group, invocation);
            } else {
                loss_partial[invocation] = mse_sum(group, invocation);
            }
        }
        total += loss_group_total(lane);
    }
    if lane == 0u {
        work[loss.value] = total * loss.scale;
    }
}

fn barrier() {
    storageBarrier();
    workgroupBarrier();
}

@compute @workgroup_size({{LANES}}, 1, 1)
fn run(@builtin(local_invocation_index) lane: u32) {
{{RUN}}
}
