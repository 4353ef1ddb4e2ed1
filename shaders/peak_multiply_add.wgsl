// The adapter's multiply-add ceiling: each invocation runs eight independent chains
// a ← fma(a, m, c) of vec4s, all in registers, with no memory traffic, and stores their sum
// (so none of it is dead code). What the ALUs sustain is the bound every other kernel's
// multiply-add rate is read against (the scaling report's `--peak`). The chains are
// independent so that their latency hides behind each other; m < 1 keeps them bounded.
//
// A template: src/gpu/kernels/peak.rs writes the rounds out in the loop (a loop of them
// would count towards llvmpipe's loop limit, and might keep the chains out of registers).

struct PeakParams {
    iterations: u32,
    multiplier: f32,
    addend: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: PeakParams;
@group(0) @binding(1) var<storage, read_write> sums: array<vec4<f32>>;

// The starting value of chain `chain` (its four components) of invocation `id`: spread in
// [0, 1), as `cpu::steps::multiply_add_chains` starts them.
fn start(id: u32, chain: u32) -> vec4<f32> {
    let base = f32((id * 8u + chain) % 97u) / 97.0;
    return vec4<f32>(base, base + 0.25, base + 0.5, base + 0.75);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var a0 = start(id.x, 0u);
    var a1 = start(id.x, 1u);
    var a2 = start(id.x, 2u);
    var a3 = start(id.x, 3u);
    var a4 = start(id.x, 4u);
    var a5 = start(id.x, 5u);
    var a6 = start(id.x, 6u);
    var a7 = start(id.x, 7u);
    let m = vec4<f32>(params.multiplier);
    let c = vec4<f32>(params.addend);
    for (var i = 0u; i < params.iterations; i++) {
{{ROUNDS}}    }
    sums[id.x] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}
