// The input projection P = X·Wᵀ + bias (see input_projection.wgsl for the layout), weight-
// stationary, for adapters whose workgroup can be exactly one subgroup of {{LANES}} lanes and
// for one depth K (a multiple of four): each workgroup owns {{LANES}} × 4 columns of P, four a
// lane. A lane fetches its four rows of W (all of K) once, from a texture, into private values
// addressed by constant indices, then walks a block of BLOCK_ROWS rows of X: per row the lanes
// load X's vec4s between them (one each per load), share them with subgroupBroadcast, and each
// lane multiplies them into its four columns, every product written out.
//
// Why on llvmpipe (measured in benches/README.md): a storage load runs lane by lane there, and
// the tile kernel (projection_tile.wgsl) loads W again for every tile of rows; here W is loaded
// once per block. Texel fetches rather than storage loads keep the compile short (written-out
// storage loads of W took 4.3 s to compile at K = 256, texel fetches 0.2 s).
//
// A template: src/gpu/kernels/stationary.rs fills in the holes (names in double braces).

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
// X and P as vec4s: K, the columns and every stride are multiples of four.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<vec4<f32>>;
// W, (columns) rows of K / 4 texels: the weights in the model's precision, as f32.
@group(0) @binding(4) var w: texture_2d<f32>;

const BLOCK_ROWS: u32 = {{BLOCK_ROWS}}u;
// K / 4: X's vec4s per row.
const VEC4S: u32 = {{VEC4S}}u;

fn bias_at(c: u32) -> f32 {
    return select(0.0, bias[min(c, params.cols - 1u)], c < params.cols);
}

// X's vec4 `k` of the row starting at vec4 `row`, zero past K.
fn x_at(row: u32, k: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), x[row + min(k, VEC4S - 1u)], k < VEC4S);
}

@compute @workgroup_size({{LANES}}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // The first of this lane's four columns; lanes past the last column load the last
    // column's weights (in bounds) and store nothing.
    let c0 = (group.x * {{LANES}}u + lane) * 4u;
    let w0 = min(c0, params.cols - 1u);
    let w1 = min(c0 + 1u, params.cols - 1u);
    let w2 = min(c0 + 2u, params.cols - 1u);
    let w3 = min(c0 + 3u, params.cols - 1u);
    // The lane's four rows of W: wr[u·VEC4S + k] is vec4 k of column c0 + u. Each texel goes
    // through an identity subgroupShuffle, without which LLVM fetched them again in every row.
    var wr: array<vec4<f32>, {{WEIGHTS}}>;
{{LOAD_WEIGHTS}}
    let b = vec4<f32>(bias_at(c0), bias_at(c0 + 1u), bias_at(c0 + 2u), bias_at(c0 + 3u));
    let first = group.y * BLOCK_ROWS;
    let end = min(first + BLOCK_ROWS, params.rows);
    for (var r = first; r < end; r++) {
        let t = r / params.batch;
        let n = r % params.batch;
        let row = (t * params.x_stride_t + n * params.x_stride_n) / 4u;
{{LOAD_X}}
        // Four partial sums per column (one per component of the vec4s), added at the end.
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
{{PRODUCTS}}
        if c0 < params.cols {
            let one = vec4<f32>(1.0);
            let sums = vec4<f32>(dot(a0, one), dot(a1, one), dot(a2, one), dot(a3, one));
            p[(t * params.p_stride_t + n * params.p_stride_n + c0) / 4u] = sums + b;
        }
    }
}
