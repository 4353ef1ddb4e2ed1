// Copies W_hh of every layer and direction from the training parameters into the texture
// array the register recurrences load it from (src/gpu/training/recurrent_weights.rs says
// why): layer z = l·D + d of the array holds W_hh_l{l}(_reverse) as G·H rows of
// H / 4 texels, texel (x, row) being row `row`'s columns 4x .. 4x + 3.
//
// `table` holds H, the texels a row, the rows a matrix (G·H), then each matrix's offset in
// the parameters (in f32s). One invocation per texel; z along the dispatch's y.

@group(0) @binding(0) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var weights: texture_storage_2d_array<rgba32float, write>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let hidden = table[0];
    let width = table[1];
    let rows = table[2];
    let x = id.x % width;
    let row = id.x / width;
    if row >= rows {
        return;
    }
    // H and every tensor's start are multiples of four (where the texture is used at all):
    // a texel is one vec4 of the parameters.
    let start = (table[3u + id.y] + row * hidden) / 4u;
    textureStore(weights, vec2<u32>(x, row), id.y, params[start + x]);
}
