//! Each shader against its CPU twin in `cpu.rs`, on sizes that are not multiples of the
//! workgroup or tile sizes (1, 3, 17, 257) as well as friendly ones.

use wgpu::util::DeviceExt;

use crate::config::Nonlinearity;
use crate::cpu::steps as cpu;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{
    GatedStepKernel, ProjectionBindings, ProjectionParams, StationaryBindings, StepBindings,
    StepGrid, StepIndex, StepLayerParams,
};
use crate::testing;
use crate::weights::SplitMix64;

const ODD_AND_FRIENDLY: [usize; 6] = [1, 3, 17, 257, 32, 64];

fn upload(ctx: &GpuContext, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("kernel test"),
            contents: bytes,
            usage: usage | wgpu::BufferUsages::COPY_SRC,
        })
}

fn storage(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    upload(ctx, bytemuck::cast_slice(data), wgpu::BufferUsages::STORAGE)
}

fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    upload(ctx, bytemuck::bytes_of(value), wgpu::BufferUsages::UNIFORM)
}

fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    ctx.queue().submit([encoder.finish()]);
}

pub(crate) fn read(ctx: &GpuContext, buffer: &wgpu::Buffer) -> Vec<f32> {
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("kernel test readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let c = crate::compare::compare(got, want, 1e-5);
    assert!(c.passed(), "{what}: {c}");
}

#[test]
fn input_projection_matches_cpu_twin() {
    let Some(ctx) = testing::gpu("input_projection_matches_cpu_twin") else {
        return;
    };
    let mut rng = SplitMix64(11);
    for rows in ODD_AND_FRIENDLY {
        for cols in ODD_AND_FRIENDLY {
            // Depths that are multiples of 4 take the subgroup form's vec4 path.
            for depth in [1, 3, 17, 20, 64] {
                let x = rng.uniform(-1.0, 1.0, rows * depth);
                let w = rng.uniform(-1.0, 1.0, cols * depth);
                let bias = rng.uniform(-1.0, 1.0, cols);
                let want = cpu::input_projection(&x, &w, &bias, depth);
                let params = ProjectionParams::contiguous(rows, cols, depth);
                let kernel = &ctx.inner().kernels.projection;
                for use_subgroup in [false, kernel.has_subgroup_form()] {
                    let p = storage(&ctx, &vec![f32::NAN; rows * cols]);
                    let group = kernel.bind_group(
                        ctx.device(),
                        ctx.counters(),
                        ProjectionBindings {
                            params: &uniform(&ctx, &params),
                            x: &storage(&ctx, &x),
                            weight: &storage(&ctx, &w),
                            bias: &storage(&ctx, &bias),
                            p: &p,
                        },
                    );
                    run(&ctx, |pass| {
                        kernel.encode_with(pass, &group, &params, use_subgroup)
                    });
                    assert_close(
                        &format!("projection {rows}x{cols}x{depth} subgroup={use_subgroup}"),
                        &read(&ctx, &p),
                        &want,
                    );
                }
            }
        }
    }
}

/// The weight-stationary projection against the CPU twin: rows of every awkward count, columns
/// (multiples of four) that fill a workgroup or not, K whose vec4s fill the lanes' loads or
/// not, with eight (K ≤ 128) and four columns a lane; then strided X and P (batch-first X,
/// sequence-major P, three sequences) and a projection of the first rows only.
#[test]
fn stationary_projection_matches_cpu_twin() {
    let Some(ctx) = testing::gpu("stationary_projection_matches_cpu_twin") else {
        return;
    };
    let Some(kernel) = ctx.stationary_kernel() else {
        // Adapters without a fixed subgroup size have no such form.
        return;
    };
    let mut rng = SplitMix64(12);
    let project = |params: &ProjectionParams, x: &[f32], w: &[f32], bias: &[f32], rows| {
        let (depth, cols) = (params.depth, params.cols);
        let (width, height) = crate::gpu::kernels::stationary::texture_size(depth, cols);
        let texture = crate::gpu::model_buffers::upload_texture(&ctx, width, height, w);
        let pipeline = ctx.stationary_pipeline(depth).unwrap();
        let p_len = (params.rows * cols) as usize;
        let p = storage(&ctx, &vec![f32::NAN; p_len]);
        let group = kernel.bind_group(
            ctx.device(),
            ctx.counters(),
            StationaryBindings {
                params: &uniform(&ctx, params),
                x: &storage(&ctx, x),
                bias: &storage(&ctx, bias),
                p: &p,
                weight: &texture,
            },
        );
        run(&ctx, |pass| {
            kernel.encode(pass, &pipeline, &group, params, rows)
        });
        read(&ctx, &p)
    };
    for rows in ODD_AND_FRIENDLY {
        for cols in [4, 12, 68, 256, 260] {
            for depth in [4, 20, 64, 100, 132, 256, 512] {
                let x = rng.uniform(-1.0, 1.0, rows * depth);
                let w = rng.uniform(-1.0, 1.0, cols * depth);
                let bias = rng.uniform(-1.0, 1.0, cols);
                let want = cpu::input_projection(&x, &w, &bias, depth);
                let params = ProjectionParams::contiguous(rows, cols, depth);
                let got = project(&params, &x, &w, &bias, params.rows);
                // f32 sums of K products round more the longer they are (the twin sums in
                // f64): the tolerance grows with K beyond the tile kernel's K ≤ 64.
                let tolerance = 1e-5 * (depth as f64 / 64.0).max(1.0);
                let c = crate::compare::compare(&got, &want, tolerance);
                assert!(
                    c.passed(),
                    "stationary projection {rows}x{cols}x{depth}: {c}"
                );
            }
        }
    }
    // Three sequences of 17 steps: X batch-first (n, t, k), P sequence-major (n, t, c).
    let (steps, batch, depth, cols) = (17, 3, 36, 44);
    let x = rng.uniform(-1.0, 1.0, steps * batch * depth);
    let w = rng.uniform(-1.0, 1.0, cols * depth);
    let bias = rng.uniform(-1.0, 1.0, cols);
    let params = ProjectionParams {
        rows: (steps * batch) as u32,
        cols: cols as u32,
        depth: depth as u32,
        batch: batch as u32,
        x_stride_t: depth as u32,
        x_stride_n: (steps * depth) as u32,
        p_stride_t: cols as u32,
        p_stride_n: (steps * cols) as u32,
    };
    // Rows (t, n) in order, their P rows at their strides.
    let mut want = vec![0.0; steps * batch * cols];
    for t in 0..steps {
        for n in 0..batch {
            let row = &x[(n * steps + t) * depth..][..depth];
            let p = cpu::input_projection(row, &w, &bias, depth);
            want[(n * steps + t) * cols..][..cols].copy_from_slice(&p);
        }
    }
    assert_close(
        "strided stationary projection",
        &project(&params, &x, &w, &bias, params.rows),
        &want,
    );
    // The first 5 steps only (15 rows): those are right; no row is written past the block.
    let got = project(&params, &x, &w, &bias, 15);
    for t in 0..5 {
        for n in 0..batch {
            let at = (n * steps + t) * cols;
            assert_close("first rows", &got[at..at + cols], &want[at..at + cols]);
        }
    }
}

/// The step kernels' bind group over `layer`'s buffers for step 0.
fn step_zero_group(
    ctx: &GpuContext,
    layer: &StepLayerParams,
    recurrent: &[f32],
    p: &[f32],
    state: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> wgpu::BindGroup {
    let step = StepIndex {
        index: 0,
        _pad: [0; 3],
    };
    ctx.inner().kernels.step.bind_group(
        ctx.device(),
        ctx.counters(),
        StepBindings {
            layer: &uniform(ctx, layer),
            steps: &uniform(ctx, &step),
            recurrent: &storage(ctx, recurrent),
            p: &storage(ctx, p),
            state,
            output,
            recurrent_texture: None,
        },
    )
}

/// The extent of `layer`'s step (one sequence a persistent workgroup: unused by the step
/// kernels).
fn layer_grid(layer: &StepLayerParams) -> StepGrid {
    StepGrid {
        hidden: layer.hidden,
        batch: layer.batch,
        directions: layer.directions,
        batch_tile: 1,
    }
}

/// Direction `d`'s `cols` columns of P at timestep `t`, for each of `batch` sequences: P is
/// (T·N, D·cols).
fn p_of_step(
    p: &[f32],
    t: usize,
    batch: usize,
    directions: usize,
    cols: usize,
    d: usize,
) -> Vec<f32> {
    (0..batch)
        .flat_map(|n| {
            let row = (t * batch + n) * directions * cols + d * cols;
            p[row..row + cols].to_vec()
        })
        .collect()
}

/// The sequence lengths (T = 3) of the step twins' batches: one, three and seventeen
/// sequences, so that the subgroup block kernels run each of their forms (one, four and
/// sixteen sequences an invocation) and padding lanes past the batch. Sequences of one frame
/// are masked at t = 1 and 2 in both directions, of two at t = 2.
fn batches_of_lengths() -> [Vec<u32>; 3] {
    [
        vec![1],
        vec![3, 1, 3],
        (0..17).map(|n| [3, 1, 2][n % 3]).collect(),
    ]
}

#[test]
fn recurrent_step_matches_cpu_twin() {
    let Some(ctx) = testing::gpu("recurrent_step_matches_cpu_twin") else {
        return;
    };
    let mut rng = SplitMix64(12);
    let (seq_len, directions) = (3usize, 2usize);
    for lengths in batches_of_lengths() {
        let batch = lengths.len();
        for hidden in ODD_AND_FRIENDLY {
            for nonlinearity in [Nonlinearity::Tanh, Nonlinearity::Relu] {
                let rows = seq_len * batch;
                let p = rng.uniform(-1.0, 1.0, rows * directions * hidden);
                let w_hh = rng.uniform(-0.5, 0.5, directions * hidden * hidden);
                let unit = batch * hidden;
                let h = rng.uniform(-1.0, 1.0, directions * unit);
                // Two halves (the second is poison that step 0 must overwrite), then the lengths.
                let mut state_init = h.clone();
                state_init.extend(vec![f32::NAN; directions * unit]);
                state_init.extend(lengths.iter().map(|&l| f32::from_bits(l)));
                let layer = StepLayerParams {
                    seq_len: seq_len as u32,
                    batch: batch as u32,
                    hidden: hidden as u32,
                    directions: directions as u32,
                    out_stride_t: (batch * directions * hidden) as u32,
                    out_stride_n: (directions * hidden) as u32,
                    state_half: (directions * unit) as u32,
                    state_offset: 0,
                    activation: (nonlinearity == Nonlinearity::Relu) as u32,
                    steps_per_dispatch: 0,
                    lengths_offset: (2 * directions * unit) as u32,
                    state_size: hidden as u32,
                    ..bytemuck::Zeroable::zeroed()
                };
                let kernel = &ctx.inner().kernels.step;
                // Both forms: one unit an invocation, and 4 × 4 blocks where H allows.
                for blocks in [false, hidden % 4 == 0] {
                    let state = storage(&ctx, &state_init);
                    let output = storage(&ctx, &vec![f32::NAN; rows * directions * hidden]);
                    let group = step_zero_group(&ctx, &layer, &w_hh, &p, &state, &output);
                    let grid = layer_grid(&layer);
                    run(&ctx, |pass| {
                        kernel.encode_steps(pass, &group, 0..1, 0, grid, blocks)
                    });
                    let got_state = read(&ctx, &state);
                    let got_output = read(&ctx, &output);
                    for d in 0..directions {
                        // Step 0: forward direction at t = 0, reverse at t = T − 1.
                        let t = if d == 0 { 0 } else { seq_len - 1 };
                        let p_t = p_of_step(&p, t, batch, directions, hidden, d);
                        let w = &w_hh[d * hidden * hidden..(d + 1) * hidden * hidden];
                        let h_d = &h[d * unit..(d + 1) * unit];
                        let want = cpu::recurrent_step(&p_t, h_d, w, nonlinearity, |n| {
                            t < lengths[n] as usize
                        });
                        let what = format!(
                            "step H={hidden} N={batch} {nonlinearity:?} blocks={blocks} direction {d}"
                        );
                        let next = directions * unit + d * unit;
                        assert_close(&what, &got_state[next..next + unit], &want);
                        for n in 0..batch {
                            let at = t * layer.out_stride_t as usize
                                + n * layer.out_stride_n as usize
                                + d * hidden;
                            let want_out = if t < lengths[n] as usize {
                                want[n * hidden..(n + 1) * hidden].to_vec()
                            } else {
                                vec![0.0; hidden]
                            };
                            assert_close(
                                &format!("{what} output n={n}"),
                                &got_output[at..at + hidden],
                                &want_out,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Which gated step a twin test runs: LSTM (with `proj` features of h, or none), or GRU.
#[derive(Clone, Copy, Debug)]
enum GatedCase {
    Lstm { proj: Option<usize> },
    Gru,
}

#[test]
fn gated_step_matches_cpu_twins() {
    use crate::cpu::steps::{gru_step, lstm_step};
    use crate::weights::DirectionWeights;
    let Some(ctx) = testing::gpu("gated_step_matches_cpu_twins") else {
        return;
    };
    let mut rng = SplitMix64(13);
    let (seq_len, directions) = (3usize, 2usize);
    for lengths in batches_of_lengths() {
        let batch = lengths.len();
        for hidden in ODD_AND_FRIENDLY {
            let mut cases = vec![GatedCase::Lstm { proj: None }, GatedCase::Gru];
            if hidden > 1 {
                // proj_size < hidden: a small one and the largest.
                cases.push(GatedCase::Lstm { proj: Some(1) });
                cases.push(GatedCase::Lstm {
                    proj: Some(hidden - 1),
                });
            }
            for case in cases {
                let (gates, size, cell) = match case {
                    GatedCase::Lstm { proj } => (4, proj.unwrap_or(hidden), hidden),
                    GatedCase::Gru => (3, hidden, 0),
                };
                let g_h = gates * hidden;
                // The kernel expects b_hh folded into P except the GRU's b_hn: the twins' weights
                // carry exactly that b_hh (none, or zeros but b_hn).
                let units: Vec<DirectionWeights> = (0..directions)
                    .map(|_| DirectionWeights {
                        weight_ih: Vec::new(),
                        weight_hh: rng.uniform(-0.5, 0.5, g_h * size),
                        bias_ih: None,
                        bias_hh: match case {
                            GatedCase::Gru => {
                                let mut b = vec![0.0; 2 * hidden];
                                b.extend(rng.uniform(-0.5, 0.5, hidden));
                                Some(b)
                            }
                            GatedCase::Lstm { .. } => None,
                        },
                        weight_hr: (size != hidden).then(|| rng.uniform(-0.5, 0.5, size * hidden)),
                    })
                    .collect();
                let mut recurrent: Vec<f32> =
                    units.iter().flat_map(|u| u.weight_hh.clone()).collect();
                let step_bias_offset = recurrent.len();
                if let GatedCase::Gru = case {
                    recurrent.extend(
                        units
                            .iter()
                            .flat_map(|u| u.bias_hh.clone().unwrap()[2 * hidden..].to_vec()),
                    );
                }
                let hr_offset = recurrent.len();
                recurrent.extend(
                    units
                        .iter()
                        .flat_map(|u| u.weight_hr.clone().unwrap_or_default()),
                );

                let rows = seq_len * batch;
                let p = rng.uniform(-1.0, 1.0, rows * directions * g_h);
                let (h_unit, c_unit) = (batch * size, batch * cell);
                let h = rng.uniform(-1.0, 1.0, directions * h_unit);
                let c = rng.uniform(-1.0, 1.0, directions * c_unit);
                let half = directions * (h_unit + c_unit);
                // Half 0 = h ‖ c; half 1 is poison that step 0 must overwrite; the lengths; the
                // scratch, poisoned too.
                let mut state_init = [h.clone(), c.clone()].concat();
                state_init.extend(vec![f32::NAN; half]);
                state_init.extend(lengths.iter().map(|&l| f32::from_bits(l)));
                state_init.extend(vec![f32::NAN; directions * batch * hidden]);
                let layer = StepLayerParams {
                    seq_len: seq_len as u32,
                    batch: batch as u32,
                    hidden: hidden as u32,
                    directions: directions as u32,
                    out_stride_t: (batch * directions * size) as u32,
                    out_stride_n: (directions * size) as u32,
                    state_half: half as u32,
                    lengths_offset: (2 * half) as u32,
                    state_size: size as u32,
                    cell_offset: (directions * h_unit) as u32,
                    step_bias_offset: step_bias_offset as u32,
                    hr_offset: hr_offset as u32,
                    scratch_offset: (2 * half + batch) as u32,
                    cell: matches!(case, GatedCase::Gru) as u32,
                    ..bytemuck::Zeroable::zeroed()
                };
                let kernels = &ctx.inner().kernels;
                // Both forms: one unit an invocation, and four sequences an invocation where the
                // sizes allow.
                let fits = GatedStepKernel::blocks_fit(hidden as u32, size as u32);
                for blocks in [false, fits] {
                    let state = storage(&ctx, &state_init);
                    let output = storage(&ctx, &vec![f32::NAN; rows * directions * size]);
                    let group = step_zero_group(&ctx, &layer, &recurrent, &p, &state, &output);
                    let grid = layer_grid(&layer);
                    let projected = (size != hidden).then_some(size as u32);
                    run(&ctx, |pass| {
                        kernels
                            .gated
                            .encode_steps(pass, &group, 0..1, 0, grid, projected, blocks)
                    });
                    let got_state = read(&ctx, &state);
                    let got_output = read(&ctx, &output);
                    for d in 0..directions {
                        let t = if d == 0 { 0 } else { seq_len - 1 };
                        let p_t = p_of_step(&p, t, batch, directions, g_h, d);
                        let h_d = &h[d * h_unit..(d + 1) * h_unit];
                        let valid = |n: usize| t < lengths[n] as usize;
                        let (want_h, want_c) = match case {
                            GatedCase::Lstm { .. } => {
                                let c_d = &c[d * c_unit..(d + 1) * c_unit];
                                lstm_step(&p_t, h_d, c_d, &units[d], hidden, valid)
                            }
                            GatedCase::Gru => {
                                (gru_step(&p_t, h_d, &units[d], hidden, valid), vec![])
                            }
                        };
                        let what =
                            format!("{case:?} H={hidden} N={batch} blocks={blocks} direction {d}");
                        let next_h = half + d * h_unit;
                        assert_close(&what, &got_state[next_h..next_h + h_unit], &want_h);
                        let next_c = half + directions * h_unit + d * c_unit;
                        assert_close(
                            &format!("{what} c"),
                            &got_state[next_c..next_c + c_unit],
                            &want_c,
                        );
                        for n in 0..batch {
                            let at = t * layer.out_stride_t as usize
                                + n * layer.out_stride_n as usize
                                + d * size;
                            let want_out = if valid(n) {
                                want_h[n * size..(n + 1) * size].to_vec()
                            } else {
                                vec![0.0; size]
                            };
                            assert_close(
                                &format!("{what} output n={n}"),
                                &got_output[at..at + size],
                                &want_out,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Tensor lengths the clipping tests run over: awkward ones, and more than a workgroup's
/// 4,096 elements.
const CLIP_TENSORS: [&[usize]; 5] = [
    &[1],
    &[3, 17],
    &[257, 1, 64, 32],
    &[4099, 3],
    &[5000, 4000, 300],
];

/// Tensors of `lengths` side by side: their (offset, length) slots, and the total length.
fn slot_table(lengths: &[usize]) -> (Vec<(usize, usize)>, usize) {
    let mut slots = Vec::new();
    let mut len = 0;
    for &n in lengths {
        slots.push((len, n));
        len += n;
    }
    (slots, len)
}

/// Clipping in one workgroup (`clip_in_one`, small models) against the three dispatches
/// (`tensor_norms`, `total_norm`, `scale`): bit for bit, the total norm and every gradient,
/// clipped or not; and both against the CPU's `cpu_clip`. Tensors of awkward lengths.
#[test]
fn clip_in_one_workgroup_is_the_three_dispatches() {
    use crate::gpu::optim::GpuClip;
    let Some(ctx) = testing::gpu("clip_in_one_workgroup_is_the_three_dispatches") else {
        return;
    };
    let mut rng = SplitMix64(11);
    for lengths in CLIP_TENSORS {
        let (slots, len) = slot_table(lengths);
        let grads = rng.uniform(-1.0, 1.0, len);
        for max_norm in [0.25, 1e9] {
            let mut results = Vec::new();
            for in_one in [true, false] {
                let params = storage(&ctx, &vec![0.0; len]);
                let grads_buffer = upload(
                    &ctx,
                    bytemuck::cast_slice(&grads),
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                );
                let clip = GpuClip::new(&ctx, &params, &grads_buffer, len, &slots).unwrap();
                let clip = if in_one {
                    clip
                } else {
                    clip.in_three_dispatches()
                };
                let mut uploads = crate::gpu::training::Uploads::default();
                let mut encoder = ctx.device().create_command_encoder(&Default::default());
                clip.record(&ctx, &mut encoder, &mut uploads, max_norm)
                    .unwrap();
                uploads.flush(&ctx);
                ctx.queue().submit([encoder.finish()]);
                let total = read(&ctx, clip.scratch())[clip.total_at()];
                results.push((total, read(&ctx, &grads_buffer)[..len].to_vec()));
            }
            let what = format!("tensors {lengths:?}, max_norm {max_norm}");
            assert!(results[0] == results[1], "{what}: one workgroup differs");
            let mut want = grads.clone();
            let total = crate::optim::cpu_clip(&mut want, &slots, max_norm);
            assert!(
                (results[0].0 - total).abs() <= 1e-5 * total,
                "{what}: total {} vs CPU {total}",
                results[0].0
            );
            assert_close(&what, &results[0].1, &want);
        }
    }
}

/// Clipping and the optimizer's step in one workgroup (`clip_and_update`) against clipping
/// then the step as their own dispatches: bit for bit, the parameters, the optimizer's state
/// and the total norm over three steps, for SGD (momentum, dampening, Nesterov, weight decay),
/// Adam and AdamW, on tensors of awkward lengths.
#[test]
fn clip_and_update_in_one_is_clip_then_update() {
    use crate::gpu::optim::{GpuClip, GpuOptimizerState};
    use crate::optim::{Adam, OptimizerConfig, Sgd};
    let Some(ctx) = testing::gpu("clip_and_update_in_one_is_clip_then_update") else {
        return;
    };
    let configs: [OptimizerConfig; 4] = [
        Sgd {
            momentum: 0.9,
            nesterov: true,
            ..Sgd::new(0.1)
        }
        .into(),
        Sgd {
            momentum: 0.5,
            dampening: 0.3,
            weight_decay: 0.01,
            ..Sgd::new(0.2)
        }
        .into(),
        Adam::new(0.01).into(),
        Adam {
            weight_decay: 0.1,
            ..Adam::adamw(0.005)
        }
        .into(),
    ];
    let mut rng = SplitMix64(5);
    for lengths in CLIP_TENSORS {
        let (slots, len) = slot_table(lengths);
        let start = rng.uniform(-1.0, 1.0, len);
        for config in &configs {
            let sets: Vec<_> = (0..2)
                .map(|_| {
                    let rw = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
                    let params = upload(&ctx, bytemuck::cast_slice(&start), rw);
                    let grads = upload(&ctx, bytemuck::cast_slice(&vec![0.0f32; len]), rw);
                    let state =
                        GpuOptimizerState::new(&ctx, &params, &grads, len, config, None).unwrap();
                    let clip = GpuClip::new(&ctx, &params, &grads, len, &slots).unwrap();
                    (params, grads, state, clip)
                })
                .collect();
            for step in 1..=3u64 {
                let grads = rng.uniform(-2.0, 2.0, len);
                let mut seen = Vec::new();
                for (i, (params, grads_buffer, state, clip)) in sets.iter().enumerate() {
                    ctx.queue()
                        .write_buffer(grads_buffer, 0, bytemuck::cast_slice(&grads));
                    let mut uploads = crate::gpu::training::Uploads::default();
                    let mut encoder = ctx.device().create_command_encoder(&Default::default());
                    if i == 0 {
                        clip.record(&ctx, &mut encoder, &mut uploads, 0.5).unwrap();
                        state
                            .record_step(&ctx, &mut encoder, &mut uploads, config, step)
                            .unwrap();
                    } else {
                        state
                            .record_clip_and_step(
                                &ctx,
                                &mut encoder,
                                &mut uploads,
                                clip,
                                0.5,
                                config,
                                step,
                            )
                            .unwrap();
                    }
                    uploads.flush(&ctx);
                    ctx.queue().submit([encoder.finish()]);
                    seen.push((
                        read(&ctx, params)[..len].to_vec(),
                        read(&ctx, state.state()),
                        read(&ctx, clip.scratch())[clip.total_at()],
                    ));
                }
                assert!(
                    seen[0] == seen[1],
                    "{config:?}, tensors {lengths:?}, step {step}: one workgroup differs"
                );
            }
        }
    }
}

#[test]
fn peak_multiply_add_matches_cpu() {
    let Some(ctx) = testing::gpu("peak_multiply_add_matches_cpu") else {
        return;
    };
    let (m, c) = testing::PEAK_CHAIN;
    for workgroups in [1u32, 3] {
        for iterations in [1u32, 3, 17, 257, 4096] {
            let run = testing::time_peak_multiply_adds(&ctx, workgroups, iterations, 2).unwrap();
            assert_eq!(run.sums.len(), workgroups as usize * 64 * 4);
            assert_eq!(
                run.multiply_adds,
                u64::from(workgroups) * 64 * u64::from(iterations) * 256
            );
            for (id, got) in run.sums.chunks(4).enumerate() {
                let want = cpu::multiply_add_chains(id as u32, iterations, m, c);
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{workgroups} workgroups, {iterations} iterations, invocation {id}: \
                         {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
    // Past llvmpipe's loop limit, and nothing at all: refused.
    for (workgroups, iterations) in [(1, 60_001), (0, 1), (1, 0)] {
        assert!(matches!(
            testing::time_peak_multiply_adds(&ctx, workgroups, iterations, 1),
            Err(crate::RnnError::InvalidConfig(_))
        ));
    }
}
