//! A trainer's working memory for one (T, N): one `work` buffer holding every input, output,
//! saved value, state and upstream gradient at the offsets of [`Regions`], and the two
//! programs over it — the training forward and the backward — as lists of dispatches fixed
//! when the workspace is made. A forward or backward then only writes its inputs, records
//! the list and submits once.

use crate::config::{Nonlinearity, RnnConfig, RnnMode};
use crate::error::{Limit, Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::StepIndex;
use crate::gpu::kernels::training::{
    BlockLoad, GEMM_MAX_DEPTH, GEMM_TILE, GemmBuffers, GemmKernel, GemmParams, OP_UNIFORM_BYTES,
    StepEntry, TRAIN_STEP_WORKGROUP, TrainUnit, TrainingKernels,
};
use crate::train::ParamLayout;

/// Where everything lies in `work`, in f32 elements.
#[derive(Clone, Debug, Default)]
pub(crate) struct Regions {
    /// A single 1.0: the B operand of bias gradients (dGᵀ·1).
    pub one: usize,
    pub lengths: usize,
    /// Layer 0's input and its gradient, sequence-first (T, N, I).
    pub x: usize,
    pub dx: usize,
    /// Per layer: its output and the gradient of it, (T, N, D·H_out).
    pub y: Vec<usize>,
    pub dy: Vec<usize>,
    /// Per layer, [D][T][N][·]: the projection P (then the gates' gradients dG), the saved
    /// gate values, the state each step started from, a GRU's dG_hh, a projected LSTM's
    /// unprojected h and the gradient of its projected h.
    pub p: Vec<usize>,
    pub saved: Vec<usize>,
    pub hprev: Vec<usize>,
    pub dghh: Vec<usize>,
    pub m: Vec<usize>,
    pub dr: Vec<usize>,
    /// [2][L·D][N][H_out] and [2][L·D][N][H]: the ping-pong states (half 0 starts as h0, c0).
    pub state: usize,
    pub cstate: usize,
    /// [L·D][N][H_out] and [L·D][N][H]: the backward's carries (seeded with d_h_n, d_c_n;
    /// they end as d_h0, d_c0).
    pub carry_h: usize,
    pub carry_c: usize,
    /// [L·D][N][H]: c0, kept for the backward (the state's half 0 is overwritten).
    pub c0: usize,
    /// The head's output and its gradient, (T, N, out_features).
    pub head_out: usize,
    pub head_dout: usize,
    /// Elements of `work`.
    pub len: usize,
}

impl Regions {
    pub fn new(config: &RnnConfig, head: Option<usize>, seq_len: usize, batch: usize) -> Self {
        let (l, d) = (config.num_layers, config.num_directions());
        let (h, s) = (config.hidden_size, config.state_size());
        let frames = seq_len * batch;
        let per_dir = d * frames;
        let mut r = Regions::default();
        let mut at = 0usize;
        let mut take = |n: usize| {
            let start = at;
            // Four-element alignment: a vec4 view of any region stays possible.
            at += n.div_ceil(4) * 4;
            start
        };
        r.one = take(1);
        r.lengths = take(batch);
        r.x = take(frames * config.input_size);
        r.dx = take(frames * config.input_size);
        let saved_width = match config.mode {
            RnnMode::Rnn(_) => 0,
            RnnMode::Lstm => 5 * h,
            RnnMode::Gru => 4 * h,
        };
        let gru = config.mode == RnnMode::Gru;
        let proj = config.proj_size > 0;
        for _ in 0..l {
            r.y.push(take(frames * d * s));
            r.dy.push(take(frames * d * s));
            r.p.push(take(per_dir * config.gate_size()));
            r.saved.push(take(per_dir * saved_width));
            r.hprev.push(take(per_dir * s));
            r.dghh
                .push(take(if gru { per_dir * config.gate_size() } else { 0 }));
            r.m.push(take(if proj { per_dir * h } else { 0 }));
            r.dr.push(take(if proj { per_dir * s } else { 0 }));
        }
        let lstm = config.mode.has_cell_state();
        r.state = take(2 * l * d * batch * s);
        r.cstate = take(if lstm { 2 * l * d * batch * h } else { 0 });
        r.carry_h = take(l * d * batch * s);
        r.carry_c = take(if lstm { l * d * batch * h } else { 0 });
        r.c0 = take(if lstm { l * d * batch * h } else { 0 });
        let out = head.unwrap_or(0);
        r.head_out = take(frames * out);
        r.head_dout = take(frames * out);
        r.len = at;
        r
    }
}

/// One dispatch of a program.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Step {
        entry: StepEntry,
        /// Byte offsets of its `TrainUnit` and `StepIndex` uniforms.
        unit: u32,
        step: u32,
        groups: [u32; 3],
    },
    Gemm {
        kernel: GemmKernel,
        params: u32,
        groups: [u32; 2],
    },
}

/// The work buffer, its uniforms, the bind group over them and the two programs.
pub(crate) struct TrainWorkspace {
    pub regions: Regions,
    pub work: wgpu::Buffer,
    pub bind_group: wgpu::BindGroup,
    pub forward: Vec<Op>,
    pub backward: Vec<Op>,
    /// Features of each layer's output frames, D·H_out.
    pub output_width: usize,
    /// A head on the final state (see [`Programs`]).
    pub state_forward: Vec<Op>,
    pub state_backward: Vec<Op>,
    /// Keep the uniforms the bind group reads alive.
    _ops: wgpu::Buffer,
    _steps: wgpu::Buffer,
}

/// Builds the uniforms of both programs while listing their dispatches.
struct ProgramBuilder {
    align: usize,
    ops: Vec<u8>,
}

impl ProgramBuilder {
    fn push(&mut self, bytes: &[u8]) -> u32 {
        let at = self.ops.len();
        self.ops.extend_from_slice(bytes);
        self.ops.resize(at + self.align, 0);
        at as u32
    }
}

/// Checks that `elements` f32 fit one storage binding of the device and 32-bit indexing.
fn check_binding(ctx: &GpuContext, what: &str, elements: usize) -> Result<()> {
    let limits = ctx.limits();
    let bytes = (elements as u64).saturating_mul(4);
    let (limit, allowed) = {
        let binding = limits.max_storage_buffer_binding_size;
        if binding <= limits.max_buffer_size {
            (Limit::StorageBinding, binding)
        } else {
            (Limit::BufferSize, limits.max_buffer_size)
        }
    };
    if bytes > allowed {
        return Err(RnnError::ExceedsLimits {
            what: format!("{what} (bytes)"),
            needed: bytes,
            limit,
            allowed,
            hint: "train on shorter sequences (split them: truncated BPTT) or smaller batches"
                .into(),
        });
    }
    if elements > u32::MAX as usize {
        return Err(RnnError::ExceedsLimits {
            what: format!("{what} (elements)"),
            needed: elements as u64,
            limit: Limit::ElementIndex,
            allowed: u64::from(u32::MAX),
            hint: "train on shorter sequences or smaller batches".into(),
        });
    }
    Ok(())
}

fn check_groups(ctx: &GpuContext, groups: u32, what: &str) -> Result<()> {
    let allowed = ctx.limits().max_compute_workgroups_per_dimension;
    if groups > allowed {
        return Err(RnnError::ExceedsLimits {
            what: format!("workgroups along one dimension of the {what}"),
            needed: u64::from(groups),
            limit: Limit::WorkgroupsPerDimension,
            allowed: u64::from(allowed),
            hint: "train on shorter sequences or smaller batches".into(),
        });
    }
    Ok(())
}

impl TrainWorkspace {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        config: &RnnConfig,
        params: &ParamLayout,
        head: Option<HeadSpec>,
        params_buffer: &wgpu::Buffer,
        grads_buffer: &wgpu::Buffer,
        seq_len: usize,
        batch: usize,
        persistent: bool,
    ) -> Result<Self> {
        let regions = Regions::new(config, head.map(|h| h.out), seq_len, batch);
        check_binding(ctx, "the training workspace", regions.len)?;
        let kernels = ctx.training_kernels()?;
        let align = (OP_UNIFORM_BYTES as usize)
            .next_multiple_of(ctx.limits().min_uniform_buffer_offset_alignment as usize);
        let step_align = (ctx.limits().min_uniform_buffer_offset_alignment as usize).max(16);
        let mut builder = ProgramBuilder {
            align,
            ops: Vec::new(),
        };
        let programs = programs(
            ctx,
            config,
            params,
            head,
            &regions,
            seq_len,
            batch,
            persistent,
            &mut builder,
        )?;

        let scopes = ctx.error_scopes();
        let u32s = |n: usize| bytemuck::cast_slice::<u32, u8>(&vec![0u32; n]).to_vec();
        let mut steps = u32s(seq_len * step_align / 4);
        for s in 0..seq_len {
            let index = StepIndex {
                index: s as u32,
                _pad: [0; 3],
            };
            steps[s * step_align..s * step_align + 16].copy_from_slice(bytemuck::bytes_of(&index));
        }
        let init = |label: &str, contents: &[u8], usage: wgpu::BufferUsages| {
            use wgpu::util::BufferInitDescriptor;
            ctx.create_buffer_init(&BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let ops = init("training ops", &builder.ops, wgpu::BufferUsages::UNIFORM);
        let steps = init("training steps", &steps, wgpu::BufferUsages::UNIFORM);
        let mut initial = vec![0.0f32; regions.len];
        initial[regions.one] = 1.0;
        let work = init(
            "training work",
            bytemuck::cast_slice(&initial),
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        );
        fn binding(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: wgpu::BufferSize::new(size),
            })
        }
        ctx.counters()
            .bind_groups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("training"),
            layout: &kernels.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: binding(&ops, OP_UNIFORM_BYTES),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: binding(&steps, std::mem::size_of::<StepIndex>() as u64),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: params_buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: grads_buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: work.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: params_buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: work.as_entire_binding(),
                },
            ],
        });
        scopes.finish(ctx, "making the training workspace")?;
        let Programs {
            forward,
            backward,
            state_forward,
            state_backward,
        } = programs;
        Ok(TrainWorkspace {
            output_width: config.output_size(),
            state_forward,
            state_backward,
            regions,
            work,
            bind_group,
            forward,
            backward,
            _ops: ops,
            _steps: steps,
        })
    }

    /// Records `program` into one compute pass.
    pub fn record(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        program: &[Op],
    ) -> Result<()> {
        record_ops(ctx.training_kernels()?, &self.bind_group, encoder, program);
        Ok(())
    }
}

/// Records `program` over `bind_group` into one compute pass.
pub(crate) fn record_ops(
    kernels: &TrainingKernels,
    bind_group: &wgpu::BindGroup,
    encoder: &mut wgpu::CommandEncoder,
    program: &[Op],
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("training"),
        timestamp_writes: None,
    });
    for op in program {
        match *op {
            Op::Step {
                entry,
                unit,
                step,
                groups,
            } => {
                pass.set_pipeline(kernels.step(entry));
                pass.set_bind_group(0, bind_group, &[unit, step]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            Op::Gemm {
                kernel,
                params,
                groups,
            } => {
                pass.set_pipeline(kernels.gemm(kernel));
                pass.set_bind_group(0, bind_group, &[params, 0]);
                pass.dispatch_workgroups(groups[0], groups[1], 1);
            }
        }
    }
}

/// Whether the persistent kernels may read vec4s: every row of W_hh and h a whole number of
/// vec4s (parameters and working regions start at multiples of four elements).
pub(crate) fn vec4_fits(config: &RnnConfig) -> bool {
    config.proj_size == 0 && config.hidden_size % 4 == 0
}

/// Steps one persistent dispatch runs, (forward, backward): as many as keep every invocation
/// below llvmpipe's 65,535 loop iterations per dispatch (with a margin), counting each loop
/// trip the kernels make per step: per unit an invocation owns (64 invocations stride over
/// them), the dot products over W_hh (and W_hr), and a few more per unit and step.
pub(crate) fn persistent_steps(config: &RnnConfig) -> (usize, usize) {
    const BUDGET: usize = 50_000;
    let (h, s, g) = (config.hidden_size, config.state_size(), config.mode.gates());
    let lanes = TRAIN_STEP_WORKGROUP as usize;
    let owned = |units: usize| units.div_ceil(lanes);
    let proj = config.proj_size > 0;
    let (forward, backward) = if vec4_fits(config) {
        // Four units per invocation, k four at a time (with G trips of the gate loop each).
        let quads = owned(h.div_ceil(4));
        (
            quads * (s / 4 * (g + 1) + 40) + 8,
            quads * (g * h / 4 + 40) + 8,
        )
    } else {
        let forward = owned(h.max(s)) * (g * s + 8) + if proj { owned(s) * (h + 8) } else { 0 };
        let backward = owned(s) * (g * h + 8) + owned(h) * (if proj { s } else { 0 } + 8);
        (forward + 8, backward + 8)
    };
    ((BUDGET / forward).max(1), (BUDGET / backward).max(1))
}

/// An operand of a GEMM: where it starts and its strides along its two indices.
#[derive(Clone, Copy)]
struct Operand {
    off: usize,
    /// Stride along its first index (m for A and C, k for B) and its second (k, or n).
    s0: usize,
    s1: usize,
}

fn operand(off: usize, s0: usize, s1: usize) -> Operand {
    Operand { off, s0, s1 }
}

/// How `operand` (A when `is_a`, else B) may be loaded: in vec4s along k or along its other
/// index (of size `outer_len`) where that index's stride is 1 and the start, the other stride
/// and the length along the vec4s are multiples of four; element by element otherwise.
fn block_load(operand: Operand, (outer_len, k): (usize, usize), is_a: bool) -> BlockLoad {
    // A is indexed (m, k): s0 along m, s1 along k. B is indexed (k, n): s0 along k, s1 along n.
    let (outer_stride, k_stride) = if is_a {
        (operand.s0, operand.s1)
    } else {
        (operand.s1, operand.s0)
    };
    let aligned = |v: usize| v % 4 == 0;
    if !aligned(operand.off) {
        BlockLoad::Elements
    } else if k_stride == 1 && aligned(outer_stride) && aligned(k) {
        BlockLoad::AlongK
    } else if outer_stride == 1 && aligned(k_stride) && aligned(outer_len) {
        BlockLoad::AlongOuter
    } else {
        BlockLoad::Elements
    }
}

/// Lists both programs, writing their uniforms into `builder`.
#[allow(clippy::too_many_arguments)]
fn programs(
    ctx: &GpuContext,
    config: &RnnConfig,
    params: &ParamLayout,
    head: Option<HeadSpec>,
    r: &Regions,
    seq_len: usize,
    batch: usize,
    persistent: bool,
    builder: &mut ProgramBuilder,
) -> Result<Programs> {
    let (layers, dirs) = (config.num_layers, config.num_directions());
    let (h, s) = (config.hidden_size, config.state_size());
    let gates = config.gate_size();
    let frames = seq_len * batch;
    let proj = config.proj_size > 0;
    let step_align = (ctx.limits().min_uniform_buffer_offset_alignment as usize).max(16) as u32;
    let steps_per_dispatch = persistent_steps(config);
    let step_groups = [
        (h.max(s) as u32).div_ceil(TRAIN_STEP_WORKGROUP),
        batch as u32,
        dirs as u32,
    ];
    check_groups(ctx, step_groups[1], "training step")?;

    let gemm = |builder: &mut ProgramBuilder,
                buffers: GemmBuffers,
                (m, n, k): (usize, usize, usize),
                a: Operand,
                b: Operand,
                c: Operand,
                flags: u32,
                bias: usize|
     -> Result<Vec<Op>> {
        let g = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            flags,
            a_off: a.off as u32,
            a_sm: a.s0 as u32,
            a_sk: a.s1 as u32,
            b_off: b.off as u32,
            b_sk: b.s0 as u32,
            b_sn: b.s1 as u32,
            c_off: c.off as u32,
            c_sm: c.s0 as u32,
            c_sn: c.s1 as u32,
            bias_off: bias as u32,
            k0: 0,
            _pad: 0,
        };
        let groups = [
            (m as u32).div_ceil(GEMM_TILE),
            (n as u32).div_ceil(GEMM_TILE),
        ];
        check_groups(ctx, groups[0].max(groups[1]), "training GEMM")?;
        let kernel = GemmKernel {
            buffers,
            a: block_load(a, (m, k), true),
            b: block_load(b, (n, k), false),
        };
        // Long sums run as several dispatches along k, each adding to C (the first as asked).
        let mut ops = Vec::new();
        let mut k0 = 0;
        while k0 < g.k || k0 == 0 {
            let part = GemmParams {
                k0,
                k: (g.k - k0).min(GEMM_MAX_DEPTH),
                flags: if k0 == 0 {
                    g.flags
                } else {
                    (g.flags & !GemmParams::BIAS) | GemmParams::ACCUMULATE
                },
                ..g
            };
            ops.push(Op::Gemm {
                kernel,
                params: builder.push(bytemuck::bytes_of(&part)),
                groups,
            });
            k0 += GEMM_MAX_DEPTH;
        }
        Ok(ops)
    };

    // Where each unit's parameters lie (the same offsets in `grads`).
    let unit_params = |unit: usize, _layer: usize| params.units[unit];
    let flag = |on: bool, f: u32| if on { f } else { 0 };

    let mut forward = Vec::new();
    let mut backward_layers: Vec<Vec<Op>> = Vec::new();
    for layer in 0..layers {
        let inputs = config.layer_input_size(layer);
        // The layer's input: x, or the output of the layer below.
        let (x, x_row) = if layer == 0 {
            (r.x, config.input_size)
        } else {
            (r.y[layer - 1], dirs * s)
        };
        let (dx, dx_row) = if layer == 0 {
            (r.dx, config.input_size)
        } else {
            (r.dy[layer - 1], dirs * s)
        };
        let first = unit_params(layer * dirs, layer);
        let unit = TrainUnit {
            seq_len: seq_len as u32,
            batch: batch as u32,
            hidden: h as u32,
            state_size: s as u32,
            directions: dirs as u32,
            gates: config.mode.gates() as u32,
            cell: match config.mode {
                RnnMode::Rnn(_) => 0,
                RnnMode::Lstm => 1,
                RnnMode::Gru => 2,
            },
            activation: u32::from(config.mode == RnnMode::Rnn(Nonlinearity::Relu)),
            has_bias: u32::from(config.bias),
            proj: u32::from(proj),
            y_stride: (dirs * s) as u32,
            lengths: r.lengths as u32,
            param_stride: if dirs == 2 {
                (first.end - first.weight_ih) as u32
            } else {
                0
            },
            w_hh: first.weight_hh as u32,
            b_hh: first.bias_hh as u32,
            w_hr: first.weight_hr as u32,
            p: r.p[layer] as u32,
            saved: r.saved[layer] as u32,
            hprev: r.hprev[layer] as u32,
            dghh: r.dghh[layer] as u32,
            m: r.m[layer] as u32,
            dr: r.dr[layer] as u32,
            state: r.state as u32,
            state_half: (layers * dirs * batch * s) as u32,
            cstate: r.cstate as u32,
            cstate_half: (layers * dirs * batch * h) as u32,
            carry_h: r.carry_h as u32,
            carry_c: r.carry_c as u32,
            y: r.y[layer] as u32,
            dy: r.dy[layer] as u32,
            unit0: (layer * dirs) as u32,
            c0: r.c0 as u32,
            forward_steps: steps_per_dispatch.0 as u32,
            backward_steps: steps_per_dispatch.1 as u32,
            vec4: u32::from(vec4_fits(config)),
            _pad: 0,
        };
        let unit_at = builder.push(bytemuck::bytes_of(&unit));
        let step_op = |entry: StepEntry, step: usize| Op::Step {
            entry,
            unit: unit_at,
            step: step as u32 * step_align,
            groups: step_groups,
        };
        // A persistent dispatch: one workgroup per (sequence, direction).
        let persistent_op = |entry: StepEntry, step: usize| Op::Step {
            entry,
            unit: unit_at,
            step: step as u32 * step_align,
            groups: [1, batch as u32, dirs as u32],
        };

        // Forward: P = X·W_ihᵀ + b_ih per direction, then the steps.
        for d in 0..dirs {
            let w = unit_params(layer * dirs + d, layer);
            forward.extend(gemm(
                builder,
                GemmBuffers::WorkParamsToWork,
                (frames, gates, inputs),
                operand(x, x_row, 1),
                operand(w.weight_ih, 1, inputs),
                operand(r.p[layer] + d * frames * gates, gates, 1),
                flag(config.bias, GemmParams::BIAS),
                w.bias_ih,
            )?);
        }
        if persistent {
            let steps = steps_per_dispatch.0;
            for start in (0..seq_len).step_by(steps) {
                forward.push(persistent_op(StepEntry::ForwardPersistent, start));
            }
        } else {
            for step in 0..seq_len {
                forward.push(step_op(StepEntry::ForwardStep, step));
                if proj {
                    forward.push(step_op(StepEntry::ForwardProject, step));
                }
            }
        }

        // Backward: the steps in reverse, d h0, then the weight and input gradients.
        let mut back = Vec::new();
        if persistent {
            let steps = steps_per_dispatch.1;
            for start in (0..seq_len).rev().step_by(steps) {
                back.push(persistent_op(StepEntry::BackwardPersistent, start));
            }
        } else {
            for step in (0..seq_len).rev() {
                if proj {
                    back.push(step_op(StepEntry::BackwardProject, step));
                }
                back.push(step_op(StepEntry::BackwardStep, step));
            }
        }
        back.push(step_op(StepEntry::InitialStateGradient, 0));
        for d in 0..dirs {
            let w = unit_params(layer * dirs + d, layer);
            let dg = r.p[layer] + d * frames * gates;
            let dghh = if config.mode == RnnMode::Gru {
                r.dghh[layer] + d * frames * gates
            } else {
                dg
            };
            let to_grads = GemmBuffers::WorkWorkToGrads;
            let acc = GemmParams::ACCUMULATE;
            // dW_ih += dGᵀ·X, dW_hh += dG_hhᵀ·H_prev over every frame.
            back.extend(gemm(
                builder,
                to_grads,
                (gates, inputs, frames),
                operand(dg, 1, gates),
                operand(x, x_row, 1),
                operand(w.weight_ih, inputs, 1),
                acc,
                0,
            )?);
            let hprev = r.hprev[layer] + d * frames * s;
            back.extend(gemm(
                builder,
                to_grads,
                (gates, s, frames),
                operand(dghh, 1, gates),
                operand(hprev, s, 1),
                operand(w.weight_hh, s, 1),
                acc,
                0,
            )?);
            if config.bias {
                for (grad, bias) in [(dg, w.bias_ih), (dghh, w.bias_hh)] {
                    back.extend(gemm(
                        builder,
                        to_grads,
                        (gates, 1, frames),
                        operand(grad, 1, gates),
                        operand(r.one, 0, 0),
                        operand(bias, 1, 0),
                        acc,
                        0,
                    )?);
                }
            }
            if proj {
                back.extend(gemm(
                    builder,
                    to_grads,
                    (s, h, frames),
                    operand(r.dr[layer] + d * frames * s, 1, s),
                    operand(r.m[layer] + d * frames * h, h, 1),
                    operand(w.weight_hr, h, 1),
                    acc,
                    0,
                )?);
            }
            // The input's gradient, dG·W_ih, summed over the directions.
            back.extend(gemm(
                builder,
                GemmBuffers::WorkParamsToWork,
                (frames, inputs, gates),
                operand(dg, gates, 1),
                operand(w.weight_ih, inputs, 1),
                operand(dx, dx_row, 1),
                flag(d > 0, acc),
                0,
            )?);
        }
        backward_layers.push(back);
    }

    let top = layers - 1;
    let mut backward = Vec::new();
    let (mut state_forward, mut state_backward) = (Vec::new(), Vec::new());
    let on_state = head.is_some_and(|h| h.on_state);
    let head_out = head.map(|h| h.out);
    if let (true, Some(out), Some((head_at, head_bias))) = (on_state, head_out, params.head) {
        // A head on the last layer's final state, directions side by side: logits (N, O) =
        // Σ_d h_n[d]·W[:, d·S..(d+1)·S]ᵀ + b, from where this workspace's steps leave the state.
        let bias_at = head_bias.unwrap_or(0);
        let features = dirs * s;
        let half = seq_len % 2;
        let acc = GemmParams::ACCUMULATE;
        for d in 0..dirs {
            let h_n = r.state + half * layers * dirs * batch * s + (top * dirs + d) * batch * s;
            let w = head_at + d * s;
            state_forward.extend(gemm(
                builder,
                GemmBuffers::WorkParamsToWork,
                (batch, out, s),
                operand(h_n, s, 1),
                operand(w, 1, features),
                operand(r.head_out, out, 1),
                if d == 0 {
                    flag(head_bias.is_some(), GemmParams::BIAS)
                } else {
                    acc
                },
                bias_at,
            )?);
            // dW[:, d·S..] += dlogitsᵀ·h_n[d]; d h_n[d] += dlogits·W[:, d·S..] (onto the carry).
            state_backward.extend(gemm(
                builder,
                GemmBuffers::WorkWorkToGrads,
                (out, s, batch),
                operand(r.head_dout, 1, out),
                operand(h_n, s, 1),
                operand(w, features, 1),
                acc,
                0,
            )?);
            let carry = r.carry_h + (top * dirs + d) * batch * s;
            state_backward.extend(gemm(
                builder,
                GemmBuffers::WorkParamsToWork,
                (batch, s, out),
                operand(r.head_dout, out, 1),
                operand(w, features, 1),
                operand(carry, s, 1),
                acc,
                0,
            )?);
        }
        if head_bias.is_some() {
            state_backward.extend(gemm(
                builder,
                GemmBuffers::WorkWorkToGrads,
                (out, 1, batch),
                operand(r.head_dout, 1, out),
                operand(r.one, 0, 0),
                operand(bias_at, 1, 0),
                acc,
                0,
            )?);
        }
    } else if let (Some(out), Some((head_at, head_bias))) = (head_out, params.head) {
        let bias_at = head_bias.unwrap_or(0);
        let features = dirs * s;
        forward.extend(gemm(
            builder,
            GemmBuffers::WorkParamsToWork,
            (frames, out, features),
            operand(r.y[top], features, 1),
            operand(head_at, 1, features),
            operand(r.head_out, out, 1),
            flag(head_bias.is_some(), GemmParams::BIAS),
            bias_at,
        )?);
        let acc = GemmParams::ACCUMULATE;
        backward.extend(gemm(
            builder,
            GemmBuffers::WorkWorkToGrads,
            (out, features, frames),
            operand(r.head_dout, 1, out),
            operand(r.y[top], features, 1),
            operand(head_at, features, 1),
            acc,
            0,
        )?);
        if head_bias.is_some() {
            backward.extend(gemm(
                builder,
                GemmBuffers::WorkWorkToGrads,
                (out, 1, frames),
                operand(r.head_dout, 1, out),
                operand(r.one, 0, 0),
                operand(bias_at, 1, 0),
                acc,
                0,
            )?);
        }
        backward.extend(gemm(
            builder,
            GemmBuffers::WorkParamsToWork,
            (frames, features, out),
            operand(r.head_dout, out, 1),
            operand(head_at, features, 1),
            operand(r.dy[top], features, 1),
            0,
            0,
        )?);
    }
    for back in backward_layers.into_iter().rev() {
        backward.extend(back);
    }
    Ok(Programs {
        forward,
        backward,
        state_forward,
        state_backward,
    })
}

/// What a workspace records: its forward and backward, and a head on the final state's
/// forward and backward (run by the sequence's last chunk only).
pub(crate) struct Programs {
    pub forward: Vec<Op>,
    pub backward: Vec<Op>,
    pub state_forward: Vec<Op>,
    pub state_backward: Vec<Op>,
}

/// A Linear head: its outputs, and whether it reads the final state (else every frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadSpec {
    pub out: usize,
    pub on_state: bool,
}
