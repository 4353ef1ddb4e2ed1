// The input projection (P = X·Wᵀ + bias, see input_projection.wgsl for the layout) for
// adapters whose workgroup can be exactly one subgroup of LANES lanes.
//
// A workgroup computes a ROWS × (4·LANES) tile of P: each lane owns four columns and every row
// of the tile, accumulating in registers. For each k the lanes load the X values of the tile's
// rows between them (ROWS_PER_LANE each) and share them with subgroupBroadcast, so each loaded
// value feeds 4·LANES multiply-adds and no workgroup memory or barrier is involved. On
// llvmpipe this runs ~10× faster than the 4×4-per-invocation kernel.
//
// When K and every row start are multiples of four, X and W are read as vec4s along K, four
// k at a time: loads are what costs most on llvmpipe (each is executed lane by lane).
//
// A template: src/gpu/projection.rs fills in the {{...}} parts, writing the per-row work out
// in full so that the accumulators are addressed by constant indices only.

// The element type weights are stored in: f32, or f16 where the model asked for it and the
// adapter has `SHADER_F16` (src/shaders.rs rewrites this line). Sums are always f32.
alias weight_t = f32;

struct Params {
    rows: u32,
    cols: u32,
    depth: u32,
    batch: u32,
    x_stride_t: u32,
    x_stride_n: u32,
    p_stride_t: u32,
    p_stride_n: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<{{ELEMENT}}>;
@group(0) @binding(2) var<storage, read> w: array<{{W_ELEMENT}}>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// P: f32s, or vec4s where its columns and strides are multiples of four.
@group(0) @binding(4) var<storage, read_write> p: array<{{P_ELEMENT}}>;

const LANES: u32 = {{LANES}}u;
const ROWS: u32 = {{ROWS}}u;
const ROWS_PER_LANE: u32 = {{ROWS_PER_LANE}}u;

fn x_row_start(r: u32) -> u32 {
    // Rows past the end are clamped to the last one: their loads stay in bounds, their
    // results are never stored.
    let row = min(r, params.rows - 1u);
    let start = (row / params.batch) * params.x_stride_t + (row % params.batch) * params.x_stride_n;
    return start / {{WIDTH}}u;
}

fn w_row_start(c: u32) -> u32 {
    return min(c, params.cols - 1u) * params.depth / {{WIDTH}}u;
}

// The bias of columns c0..c0+3 (zero past the last column), loaded once per lane rather than
// once per row: loads are what costs on llvmpipe, and at small K the stores dominate.
fn bias4(c0: u32) -> vec4<f32> {
    var b = vec4<f32>(0.0);
    if c0 < params.cols {
        b.x = bias[c0];
    }
    if c0 + 1u < params.cols {
        b.y = bias[c0 + 1u];
    }
    if c0 + 2u < params.cols {
        b.z = bias[c0 + 2u];
    }
    if c0 + 3u < params.cols {
        b.w = bias[c0 + 3u];
    }
    return b;
}

{{STORE_ROW}}

@compute @workgroup_size({{LANES}}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let c0 = (group.x * LANES + lane) * 4u;
    let r0 = group.y * ROWS;
    let mine = r0 + lane * ROWS_PER_LANE;
{{X_STARTS}}
    let w0 = w_row_start(c0);
    let w1 = w_row_start(c0 + 1u);
    let w2 = w_row_start(c0 + 2u);
    let w3 = w_row_start(c0 + 3u);
{{ACCUMULATORS}}
    for (var k = 0u; k < params.depth / {{WIDTH}}u; k++) {
        let wa = {{ELEMENT}}(w[w0 + k]);
        let wb = {{ELEMENT}}(w[w1 + k]);
        let wc = {{ELEMENT}}(w[w2 + k]);
        let wd = {{ELEMENT}}(w[w3 + k]);
{{LOADS}}
{{FMAS}}
    }
    let b = bias4(c0);
{{STORES}}
}
