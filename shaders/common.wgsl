// Declarations every recurrent kernel shares, put where a template has its COMMON hole (by
// src/shaders.rs). `Layer` and `Step` mirror `StepLayerParams` and `StepIndex` in
// src/gpu/kernels.rs, field for field.

// The element type weights are stored in: f32, or f16 where the model asked for it and the
// adapter has `SHADER_F16` (src/shaders.rs rewrites this line and enables f16 before it).
// Sums are always f32.
alias weight_t = f32;

// One layer's sizes and offsets, written once per workspace.
struct Layer {
    seq_len: u32,            // T
    batch: u32,              // N
    hidden: u32,             // H: units of each gate, and of an LSTM's c
    directions: u32,         // D
    out_stride_t: u32,       // elements between timesteps in the output
    out_stride_n: u32,       // elements between sequences in the output
    state_half: u32,         // elements in one half of the state buffer
    state_offset: u32,       // where this layer's h block starts inside a half
    activation: u32,         // Elman RNN: 0 tanh, 1 relu
    steps_per_dispatch: u32, // persistent kernels: bounds the loop (llvmpipe stops long ones)
    lengths_offset: u32,     // where the sequence lengths start in `state`
    p_stride_t: u32,         // persistent LSTM/GRU kernel: elements between timesteps in P
    state_size: u32,         // H_out: features of h
    cell_offset: u32,        // LSTM: this layer's c block inside a half
    step_bias_offset: u32,   // GRU: b_hn in the recurrent weights
    hr_offset: u32,          // projected LSTM: W_hr in the recurrent weights
    scratch_offset: u32,     // projected LSTM: unprojected h, [D][N][H], in `state`
    cell: u32,               // gated kernels: 0 LSTM, 1 GRU
    layers: u32,             // wavefront: the layers advancing together
    p_stride_n: u32,         // persistent LSTM/GRU kernel: elements between sequences in P
}

// The (first) timestep of this dispatch, read through a dynamically offset uniform, so that a
// whole sequence is recorded with one bind group per layer.
struct Step {
    index: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The logistic function. exp(−x) overflows to +inf for x < −88, giving exactly 0; NaN
// propagates.
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn sigmoid4(v: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-v));
}
