// What every training recurrence kernel shares (`train_step.wgsl`, the generated
// `train_subgroup.wgsl`): the layer's `Unit` of sizes and offsets, the bindings of the
// training layout, and where a frame's values lie in `work` (layouts in train_step.wgsl).

struct Unit {
    seq_len: u32, batch: u32, hidden: u32, state_size: u32,
    directions: u32, gates: u32, cell: u32, activation: u32,
    has_bias: u32, proj: u32, y_stride: u32, lengths: u32,
    param_stride: u32, w_hh: u32, b_hh: u32, w_hr: u32,
    p: u32, saved: u32, hprev: u32, dghh: u32,
    m: u32, dr: u32, state: u32, state_half: u32,
    cstate: u32, cstate_half: u32, carry_h: u32, carry_c: u32,
    y: u32, dy: u32, unit0: u32, c0: u32,
    forward_steps: u32, backward_steps: u32,
    vec4: u32,               // persistent kernels read vec4s (see recurrent_dots4)
    // The register recurrence's forward with the input projection in its step: the input's
    // features (0: the projection GEMM's P instead), where frames lie (x, its frames' stride)
    // and W_ih, b_ih (direction 0's).
    inputs: u32,
    x: u32, x_stride: u32, w_ih: u32, b_ih: u32,
    // Its backward with the head's input gradient in its step: the head's outputs (0: dY
    // from the head's GEMM instead), its weight and features (W's row stride), and where dL
    // lies.
    head_outputs: u32, head_w: u32, head_features: u32, head_dout: u32,
}

struct Step {
    index: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const RNN: u32 = 0u;
const LSTM: u32 = 1u;
const GRU: u32 = 2u;

{{UNIT_BINDINGS}}
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
// The same two buffers read as vec4s, where sizes and offsets are multiples of four.
@group(0) @binding(5) var<storage, read> params4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> work4: array<vec4<f32>>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn sigmoid4(x: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-x));
}

fn position(s: u32, d: u32) -> u32 {
    return select(s, u.seq_len - 1u - s, d == 1u);
}

fn valid(p: u32, n: u32) -> bool {
    return p < bitcast<u32>(work[u.lengths + n]);
}

// Frame (p, n) of direction d in a [D][T][N][width] region.
fn frame_at(base: u32, d: u32, p: u32, n: u32, width: u32) -> u32 {
    return base + ((d * u.seq_len + p) * u.batch + n) * width;
}

fn gate_size() -> u32 {
    return u.gates * u.hidden;
}

// Width of a frame of saved gate values: LSTM i f g o c, GRU r z n hn.
fn saved_width() -> u32 {
    return select(4u, 5u, u.cell == LSTM) * u.hidden;
}

fn state_row(half: u32, d: u32, n: u32) -> u32 {
    return u.state + half * u.state_half + ((u.unit0 + d) * u.batch + n) * u.state_size;
}

fn cell_row(half: u32, d: u32, n: u32) -> u32 {
    return u.cstate + half * u.cstate_half + ((u.unit0 + d) * u.batch + n) * u.hidden;
}

fn output_at(p: u32, n: u32, d: u32) -> u32 {
    return u.y + (p * u.batch + n) * u.y_stride + d * u.state_size;
}

fn carry_h_at(d: u32, n: u32) -> u32 {
    return u.carry_h + ((u.unit0 + d) * u.batch + n) * u.state_size;
}

fn carry_c_at(d: u32, n: u32) -> u32 {
    return u.carry_c + ((u.unit0 + d) * u.batch + n) * u.hidden;
}
