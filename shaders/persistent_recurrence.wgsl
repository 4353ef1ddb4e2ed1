// Persistent recurrence: one dispatch runs up to `steps_per_dispatch` timesteps of one layer,
//
//     h_t = act(P_t + h_{t-1}·W_hhᵀ)
//
// One workgroup per (tile of BATCH_TILE sequences, direction d): sequences never interact, so
// the only synchronisation needed is inside the workgroup, never across it. A tile of several
// sequences uses each weight it holds once per step for all of them. Each lane owns ROWS
// consecutive hidden units: their rows of W_hh live in private values for the whole sequence,
// and their part of h_{t-1} in the lane's registers. The other lanes' parts come either from
// workgroup memory, written twice-buffered (step i reads half i % 2, writes the other) so that
// one barrier per step suffices, optionally loaded in slices of one vec4 per lane and shared
// within each subgroup with subgroupBroadcast; or, when the workgroup is exactly one subgroup,
// from the lanes' registers through subgroupBroadcast: no workgroup memory, no barrier (the
// generated code then leaves an empty statement where the barrier was). The reverse direction
// walks time backwards; sequences shorter than T (PackedSequence semantics) keep their state
// and output zeros past their length.
//
// A unidirectional layer whose recurrence fills one workgroup (one core of a CPU adapter) can
// also project ahead: a workgroup after the recurrence's computes the input projection of the
// timesteps the next dispatch runs, with the subgroup projection's tile (projection_tile.wgsl),
// while the recurrence runs (src/gpu/ahead.rs fills in those parts). The layer's dispatches
// then cover its timesteps in chunks, the first chunk projected by a projection dispatch
// before them.
//
// This file is a template: src/gpu/persistent.rs fills in its holes (names in double braces)
// for one hidden size, writing every loop over weights out in full so that the private array is addressed by
// constant indices only (that is what keeps it in registers, on llvmpipe too).

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w_hh: array<vec4<weight_t>>;  // (D, HIDDEN_PAD, VEC4S), zero padded
// P (T·N, D·H) and the output: f32s, or vec4s when H is a multiple of four (every lane's rows
// are then whole aligned vec4s of both).
// Read-write where this kernel also projects ahead (see main).
@group(0) @binding(3) var<storage, {{P_ACCESS}}> p: array<{{IO_ELEMENT}}>;
// [L][D][N][H], read and left in place in half 0; after both halves, the N sequence lengths
// as u32 bit patterns (packed there to stay within four storage buffers).
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<{{IO_ELEMENT}}>;
// W_hh again as texels, (D·HIDDEN_PAD) rows of VEC4S, where the kernel loads it so.
{{TEXTURE_BINDING}}
{{PROJECTION_BINDINGS}}
const HIDDEN: u32 = {{HIDDEN}}u;
const HIDDEN_PAD: u32 = {{HIDDEN_PAD}}u;
const VEC4S: u32 = {{VEC4S}}u;
const ROWS: u32 = {{ROWS}}u;
const BATCH_TILE: u32 = {{BATCH_TILE}}u;

// h_{t-1} of each sequence of the tile, VEC4S vec4s each, twice: step i reads half i % 2 and
// writes the other (unused when h is shared with subgroupBroadcast).
const SHARED_VEC4S: u32 = {{SHARED_VEC4S}}u;
var<workgroup> h: array<vec4<f32>, {{H_SIZE}}>;

fn activate(v: f32) -> f32 {
    if layer.activation == 1u {
        return select(v, 0.0, v < 0.0);
    }
    return tanh(v);
}

// h of unit row `j`, zero for padding rows.
fn state_at(unit_row: u32, j: u32) -> f32 {
    if j < HIDDEN {
        return state[unit_row + j];
    }
    return 0.0;
}

fn activate4(a: vec4<f32>, row: u32) -> vec4<f32> {
    let v = vec4<f32>(activate(a.x), activate(a.y), activate(a.z), activate(a.w));
    // Padding rows stay exactly zero.
    let real = vec4<u32>(row, row + 1u, row + 2u, row + 3u) < vec4<u32>(HIDDEN);
    return select(vec4<f32>(0.0), v, real);
}

{{IO_FUNCTIONS}}
{{PROJECTION_TILE}}
@compute @workgroup_size({{LANES}}, 1, 1)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) group: vec3<u32>{{SUBGROUP_LANE}}) {
{{PROJECT_AHEAD}}
    let d = group.y;
    let row0 = lane * ROWS;
    // The tile's sequences: n{b}, clamped into range for loads; real{b} is false for the
    // padding of the last tile, whose results are never stored.
{{SEQUENCES}}
    // This lane's ROWS rows of W_hh, VEC4S vec4s each.
    var w: array<vec4<f32>, {{WEIGHTS}}>;
    let w_base = (d * HIDDEN_PAD + row0) * VEC4S;
{{LOAD_WEIGHTS}}
    // The state (h0, or where the previous dispatch stopped).
{{LOAD_STATE}}
    {{BARRIER}};

    let first = step.index;
    let count = min(layer.steps_per_dispatch, layer.seq_len - first);
    for (var i = 0u; i < count; i++) {
        let s = first + i;
        let t = select(s, layer.seq_len - 1u - s, d == 1u);
        let cur = (i & 1u) * SHARED_VEC4S;
        let next = SHARED_VEC4S - cur;
{{ACCUMULATE}}
{{UPDATE}}
        {{BARRIER}};
    }
{{SAVE_STATE}}
}
