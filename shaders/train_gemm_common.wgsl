// What both training GEMM kernels share (`train_gemm.wgsl`, `train_gemm_subgroup.wgsl`): the
// operation (`train_gemm_params.wgsl`), the bindings of the training layout, and how an
// element of C is written. The template's {{A}}, {{B}}, {{C}} name the buffers.

{{GEMM_PARAMS}}

// Up to four independent GEMMs of one kernel run as one dispatch (`GemmBatch` in
// src/gpu/kernels/training.rs): a workgroup computes one tile of one of them. Counted row by
// row over the dispatch (`width` workgroups a row), GEMM i's tiles are the workgroups from
// `first[i]`, along m first (`tiles_m[i]` of them).
struct GemmBatch {
    gemms: array<Gemm, 4>,
    first: vec4<u32>,
    tiles_m: vec4<u32>,
    total: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> batch: GemmBatch;
// The GEMM of this workgroup's tile (`gemm_tile`).
var<private> g: Gemm;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
@group(0) @binding(5) var<storage, read> params4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> work4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> grads4: array<vec4<f32>>;

// bias[n] where the operation adds a bias and n is inside the matrix (else 0): a kernel loads
// it once per column it stores, not once per element.
fn bias_element(n: u32) -> f32 {
    if (g.flags & BIAS) != 0u && n < g.n {
        return params[g.bias_off + n];
    }
    return 0.0;
}

// What `gemm_tile` returns past the batch's last tile (the dispatch is a rectangle).
const NO_TILE: u32 = 0xffffffffu;

// Sets `g` to the GEMM workgroup `wg` works on and returns its tile there (along m, along n),
// or NO_TILE (x) where the workgroup has none.
fn gemm_tile(wg: vec3<u32>) -> vec2<u32> {
    let flat = wg.x + wg.y * batch.width;
    if flat >= batch.total {
        return vec2<u32>(NO_TILE);
    }
    let i = u32(flat >= batch.first.y) + u32(flat >= batch.first.z) + u32(flat >= batch.first.w);
    g = batch.gemms[i];
    let tile = flat - batch.first[i];
    return vec2<u32>(tile % batch.tiles_m[i], tile / batch.tiles_m[i]);
}

// C[m, n] = value (+ `bias`, bias_element(n)) (+ C[m, n] where accumulating); nothing outside
// the matrix.
fn store_element(m: u32, n: u32, sum: f32, bias: f32) {
    if m >= g.m || n >= g.n {
        return;
    }
    let at = g.c_off + m * g.c_sm + n * g.c_sn;
    var value = sum;
    if (g.flags & BIAS) != 0u {
        value += bias;
    }
    if (g.flags & ACCUMULATE) != 0u {
        value = {{C}}[at] + value;
    }
    {{C}}[at] = value;
}

// C's buffer[sums_off + m] += the sum of A's row m (see `ROW_SUMS`), inside the matrix.
fn add_row_sum(m: u32, sum: f32) {
    if m < g.m {
        {{C}}[g.sums_off + m] = {{C}}[g.sums_off + m] + sum;
    }
}
