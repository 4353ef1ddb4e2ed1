//! The training programs: which kernel runs where, decided in one place. For a workspace's
//! (T, N) and the model, `programs` lists every dispatch of the training forward, the backward
//! and a head on the final state, in order, and writes the uniforms each reads (offsets into the
//! workspace's regions and the parameters). Recording is then a walk over the lists
//! (`workspace::record_ops`).

use crate::config::{Nonlinearity, RnnConfig, RnnMode};
use crate::error::{Limit, Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::engine::Recurrence;
use crate::gpu::kernels::loss::LossParams;
use crate::gpu::kernels::sequence_tiles::SequenceTile;
use crate::gpu::kernels::training::{
    BlockLoad, GEMM_MAX_DEPTH, GemmBatch, GemmBuffers, GemmForm, GemmKernel, GemmParams,
    GemmVectors, StepEntry, TRAIN_STEP_WORKGROUP, TrainUnit,
};
use crate::gpu::train_subgroup::{SUBGROUP_STEPS_PER_DISPATCH, SubgroupRecurrence};
use crate::train::ParamLayout;

use super::one_dispatch::{LOSS_UNIFORM, OneDispatch, Uniforms, iteration_loss, one_dispatch};
use super::workspace::Regions;

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
    /// `gemms` independent GEMMs (a `GemmBatch` at byte `params`) in one dispatch.
    Gemm {
        kernel: GemmKernel,
        params: u32,
        groups: [u32; 2],
        gemms: u32,
    },
    /// A dispatch of the workspace's `SubgroupRecurrence`, forward or backward.
    Subgroup {
        forward: bool,
        unit: u32,
        step: u32,
        groups: [u32; 3],
    },
    /// A whole small program as one workgroup's dispatch (`one_dispatch.rs`): the
    /// workspace's kernel `index` of `Programs::one_dispatch`.
    Program { index: usize },
}

/// Which kernels run a training recurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrainRecurrence {
    /// One dispatch per step (`train_step.wgsl`'s `*_step`).
    PerStep,
    /// The generic persistent kernels: many steps per dispatch, W_hh read from storage.
    Looped,
    /// W_hh in one subgroup's registers (`train_subgroup.wgsl`), where the state fits.
    Subgroup(SubgroupRecurrence),
}

impl TrainRecurrence {
    /// What runs `config`'s recurrence (with `head`) over batches of `batch` on `ctx` when
    /// the caller asked for `recurrence`: the register-resident kernel wherever it fits
    /// (projecting the input, and the head's gradient, itself where that pays), unless one
    /// dispatch per step was asked for. `texture`: the model's W_hh is in a texture that the
    /// kernel may load it from (`recurrent_weights`).
    pub fn choose(
        ctx: &GpuContext,
        config: &RnnConfig,
        head: Option<HeadSpec>,
        recurrence: Recurrence,
        batch: usize,
        texture: bool,
    ) -> Self {
        if recurrence == Recurrence::PerStep {
            return TrainRecurrence::PerStep;
        }
        let on_frames = head.filter(|h| !h.on_state).map(|h| h.out);
        let fastest = recurrence == Recurrence::Persistent;
        match SubgroupRecurrence::for_config(
            config,
            ctx.persistent_subgroup(),
            ctx.workgroup_limits(),
            fastest,
            texture,
        ) {
            Some(spec) => TrainRecurrence::Subgroup(
                spec.with_input(config, batch)
                    .with_head(config, on_frames, batch),
            ),
            None => TrainRecurrence::Looped,
        }
    }
}

/// Builds the uniforms of both programs while listing their dispatches.
pub(crate) struct ProgramBuilder {
    pub align: usize,
    pub ops: Vec<u8>,
}

impl ProgramBuilder {
    pub fn push(&mut self, bytes: &[u8]) -> u32 {
        let at = self.ops.len();
        self.ops.extend_from_slice(bytes);
        self.ops.resize(at + self.align, 0);
        at as u32
    }

    /// A dispatch of `gemms` (independent of each other) by `kernel`, its batch pushed.
    fn gemm_op(
        &mut self,
        ctx: &GpuContext,
        kernel: GemmKernel,
        gemms: &[GemmParams],
    ) -> Result<Op> {
        let limit = ctx.limits().max_compute_workgroups_per_dimension;
        let (batch, groups) = GemmBatch::new(kernel, gemms, limit);
        check_groups(ctx, groups[1], "training GEMM")?;
        Ok(Op::Gemm {
            kernel,
            params: self.push(bytemuck::bytes_of(&batch)),
            groups,
            gemms: gemms.len() as u32,
        })
    }

    /// The GEMMs of the batch pushed at `params`.
    fn gemms(&self, params: u32, gemms: u32) -> Vec<GemmParams> {
        let at = params as usize;
        let batch: GemmBatch =
            bytemuck::pod_read_unaligned(&self.ops[at..at + size_of::<GemmBatch>()]);
        batch.gemms[..gemms as usize].to_vec()
    }
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

/// Whether the persistent kernels may read vec4s: every row of W_hh and h a whole number of
/// vec4s (parameters and working regions start at multiples of four elements).
pub(crate) fn vec4_fits(config: &RnnConfig) -> bool {
    config.proj_size == 0 && config.hidden_size % 4 == 0
}

/// Steps one persistent dispatch runs, (forward, backward): as many as keep every invocation
/// below llvmpipe's 65,535 loop iterations per dispatch (with a margin), counting each loop
/// trip the kernels make per step: per unit an invocation owns (64 invocations stride over
/// them), the dot products over W_hh (and W_hr), and a few more per unit and step.
pub(crate) fn persistent_steps(config: &RnnConfig, tile: Option<SequenceTile>) -> (usize, usize) {
    const BUDGET: usize = 50_000;
    // A tile's loops, per quad of units: over its sequences and their four units (about six
    // trips a sequence); in the backward each unit's `backward_unit` besides (a loop over the
    // gates where its frame is past the sequence's length, one over W_hr entered masked:
    // up to six trips a unit, 24 a sequence).
    let sequences = tile.map_or(0, SequenceTile::sequences);
    let tile_trips = (8 * sequences, 32 * sequences);
    let (h, s, g) = (config.hidden_size, config.state_size(), config.mode.gates());
    let lanes = TRAIN_STEP_WORKGROUP as usize;
    let owned = |units: usize| units.div_ceil(lanes);
    let proj = config.proj_size > 0;
    let (forward, backward) = if vec4_fits(config) {
        // Four units per invocation, k four at a time, with the gate loop's G trips each and
        // its exit (llvmpipe counts the test that leaves a loop too: counted as G + 1 here,
        // an Elman RNN with H = 516 over 420 steps came out wrong).
        let quads = owned(h.div_ceil(4));
        (
            quads * (s / 4 * (g + 2) + 40 + tile_trips.0) + 8,
            quads * (g * h / 4 + 40 + tile_trips.1) + 8,
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
pub(crate) struct Operand {
    pub off: usize,
    /// Stride along its first index (m for A and C, k for B) and its second (k, or n).
    pub s0: usize,
    pub s1: usize,
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

/// How a subgroup GEMM may move its operands (see `GemmVectors`): A and B as the block GEMM
/// would load them (`block_load`); C's four columns as a vec4 where they are side by side,
/// start at a multiple of four, and the row stride and N are multiples of four too (a vec4
/// then lies all inside or all outside the matrix), and so is the bias it adds.
pub(crate) fn gemm_vectors(
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: Operand,
    bias: Option<usize>,
) -> GemmVectors {
    let four = |v: usize| v % 4 == 0;
    GemmVectors {
        a: block_load(a, (m, k), true),
        b: block_load(b, (n, k), false),
        c: c.s1 == 1 && four(c.off) && four(c.s0) && four(n) && bias.is_none_or(four),
    }
}

/// Lists both programs, writing their uniforms into `builder`; with `whole_programs`, small
/// ones as one dispatch each (`one_dispatch.rs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn programs(
    ctx: &GpuContext,
    config: &RnnConfig,
    params: &ParamLayout,
    head: Option<HeadSpec>,
    r: &Regions,
    seq_len: usize,
    batch: usize,
    recurrence: TrainRecurrence,
    whole_programs: bool,
    builder: &mut ProgramBuilder,
) -> Result<Programs> {
    // The loss of a whole iteration's kernel reads its values first in the uniforms.
    let loss_uniform = builder.push(bytemuck::bytes_of(&LossParams::default()));
    debug_assert_eq!(loss_uniform, LOSS_UNIFORM);
    let (layers, dirs) = (config.num_layers, config.num_directions());
    let (h, s) = (config.hidden_size, config.state_size());
    let gates = config.gate_size();
    let frames = seq_len * batch;
    let proj = config.proj_size > 0;
    let step_align = (ctx.limits().min_uniform_buffer_offset_alignment as usize).max(16) as u32;
    // The looped kernels run several sequences a workgroup where their layout is vec4s and
    // the batch is large enough: W_hh loaded once per tile and step, not per sequence.
    let tile = SequenceTile::for_batch(batch)
        .filter(|_| recurrence == TrainRecurrence::Looped && vec4_fits(config));
    let steps_per_dispatch = match recurrence {
        TrainRecurrence::Subgroup(_) => (SUBGROUP_STEPS_PER_DISPATCH, SUBGROUP_STEPS_PER_DISPATCH),
        _ => persistent_steps(config, tile),
    };
    let step_groups = [
        (h.max(s) as u32).div_ceil(TRAIN_STEP_WORKGROUP),
        batch as u32,
        dirs as u32,
    ];
    check_groups(ctx, step_groups[1], "training step")?;

    // The subgroup GEMM wherever the adapter has fixed-size subgroups (it shares A between
    // lanes instead of each lane loading its own: ~10× on lavapipe); it can also sum A's rows
    // on the side, which makes a weight gradient's GEMM give its bias gradient too.
    let subgroup = ctx.persistent_subgroup();
    let gemm_summing = |builder: &mut ProgramBuilder,
                        buffers: GemmBuffers,
                        (m, n, k): (usize, usize, usize),
                        a: Operand,
                        b: Operand,
                        c: Operand,
                        flags: u32,
                        bias: usize,
                        row_sums: Option<usize>|
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
            sums_off: row_sums.unwrap_or(0) as u32,
        };
        let flags = flags
            | if row_sums.is_some() {
                GemmParams::ROW_SUMS
            } else {
                0
            };
        let g = GemmParams { flags, ..g };
        let form = match subgroup {
            Some(lanes) => GemmForm::Subgroup {
                lanes: lanes as u32,
                row_sums: row_sums.is_some(),
                vectors: gemm_vectors(
                    (m, n, k),
                    a,
                    b,
                    c,
                    (flags & GemmParams::BIAS != 0).then_some(bias),
                ),
            },
            None => GemmForm::Blocks {
                a: block_load(a, (m, k), true),
                b: block_load(b, (n, k), false),
            },
        };
        let kernel = GemmKernel { buffers, form };
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
            ops.push(builder.gemm_op(ctx, kernel, &[part])?);
            k0 += GEMM_MAX_DEPTH;
        }
        Ok(ops)
    };
    let gemm = |builder: &mut ProgramBuilder,
                buffers: GemmBuffers,
                shape: (usize, usize, usize),
                a: Operand,
                b: Operand,
                c: Operand,
                flags: u32,
                bias: usize|
     -> Result<Vec<Op>> {
        gemm_summing(builder, buffers, shape, a, b, c, flags, bias, None)
    };
    // A bias gradient, bias += Σ_k A[·, k] (dGᵀ·1: B a single 1 with zero strides), as a GEMM
    // of its own where the weight gradient's GEMM cannot sum A's rows on the side.
    let column_sums =
        |builder: &mut ProgramBuilder, (m, k): (usize, usize), a: Operand, bias: usize| {
            gemm(
                builder,
                GemmBuffers::WorkWorkToGrads,
                (m, 1, k),
                a,
                operand(r.one, 0, 0),
                operand(bias, 1, 0),
                GemmParams::ACCUMULATE,
                0,
            )
        };
    // Bias gradients come with the weight gradients' GEMMs where those can sum rows.
    let fused_bias = config.bias && subgroup.is_some();
    let bias_sums = |at: usize| fused_bias.then_some(at);

    // Where each unit's parameters lie (the same offsets in `grads`).
    let unit_params = |unit: usize, _layer: usize| params.units[unit];
    let flag = |on: bool, f: u32| if on { f } else { 0 };

    // Where the register recurrence projects the input in its steps, no GEMM writes P;
    // where it computes the head's input gradient, none writes dY.
    let (inputs_in_steps, head_in_steps) = match recurrence {
        TrainRecurrence::Subgroup(spec) => (spec.input_quads > 0, spec.head_outputs > 0),
        _ => (false, false),
    };
    let mut forward = Vec::new();
    // Each layer's backward, and where its weight gradients' GEMMs start.
    let mut backward_layers: Vec<(Vec<(Op, Yields)>, usize)> = Vec::new();
    let params_only = |ops: Vec<Op>| ops.into_iter().map(|op| (op, Yields::Parameters));
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
            inputs: if inputs_in_steps { inputs as u32 } else { 0 },
            x: x as u32,
            x_stride: x_row as u32,
            w_ih: first.weight_ih as u32,
            b_ih: first.bias_ih as u32,
            head_outputs: match (head_in_steps, head) {
                (true, Some(head)) => head.out as u32,
                _ => 0,
            },
            head_w: params.head.map_or(0, |(at, _)| at as u32),
            head_features: (dirs * s) as u32,
            head_dout: r.head_dout as u32,
        };
        let unit_at = builder.push(bytemuck::bytes_of(&unit));
        let step_op = |entry: StepEntry, step: usize| Op::Step {
            entry,
            unit: unit_at,
            step: step as u32 * step_align,
            groups: step_groups,
        };
        // A persistent dispatch: one workgroup per (sequence, direction), or per (tile of
        // sequences, direction), running up to `steps_per_dispatch` steps from `step`.
        let persistent_op = |forward: bool, step: usize| {
            let workgroups = batch.div_ceil(tile.map_or(1, SequenceTile::sequences)) as u32;
            let (step, groups) = (step as u32 * step_align, [1, workgroups, dirs as u32]);
            let entry = match (forward, tile) {
                (true, Some(tile)) => StepEntry::ForwardPersistentTiled(tile, config.mode.gates()),
                (false, Some(tile)) => StepEntry::BackwardPersistentTiled(tile),
                (true, None) => StepEntry::ForwardPersistent,
                (false, None) => StepEntry::BackwardPersistent,
            };
            match recurrence {
                TrainRecurrence::Subgroup(_) => Op::Subgroup {
                    forward,
                    unit: unit_at,
                    step,
                    groups,
                },
                _ => Op::Step {
                    entry,
                    unit: unit_at,
                    step,
                    groups,
                },
            }
        };
        let persistent = recurrence != TrainRecurrence::PerStep;

        // Forward: P = X·W_ihᵀ + b_ih per direction (unless the steps project), then the steps.
        for d in (0..dirs).filter(|_| !inputs_in_steps) {
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
                forward.push(persistent_op(true, start));
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
        let mut push = |op: Op| back.push((op, Yields::Parameters));
        if persistent {
            let steps = steps_per_dispatch.1;
            for start in (0..seq_len).rev().step_by(steps) {
                push(persistent_op(false, start));
            }
        } else {
            for step in (0..seq_len).rev() {
                if proj {
                    push(step_op(StepEntry::BackwardProject, step));
                }
                push(step_op(StepEntry::BackwardStep, step));
            }
        }
        back.push((
            step_op(StepEntry::InitialStateGradient, 0),
            Yields::InitialStateGradient,
        ));
        // The weight gradients' GEMMs side by side (independent: `batch_gemms` runs them as
        // one dispatch), the input gradients' after them.
        let weights_at = back.len();
        let mut input_grads = Vec::new();
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
            // dW_ih += dGᵀ·X, dW_hh += dG_hhᵀ·H_prev over every frame (with db_ih += dGᵀ·1,
            // db_hh += dG_hhᵀ·1 as their rows' sums, or as GEMMs of their own below).
            back.extend(params_only(gemm_summing(
                builder,
                to_grads,
                (gates, inputs, frames),
                operand(dg, 1, gates),
                operand(x, x_row, 1),
                operand(w.weight_ih, inputs, 1),
                acc,
                0,
                bias_sums(w.bias_ih),
            )?));
            let hprev = r.hprev[layer] + d * frames * s;
            back.extend(params_only(gemm_summing(
                builder,
                to_grads,
                (gates, s, frames),
                operand(dghh, 1, gates),
                operand(hprev, s, 1),
                operand(w.weight_hh, s, 1),
                acc,
                0,
                bias_sums(w.bias_hh),
            )?));
            if config.bias && !fused_bias {
                for (grad, bias) in [(dg, w.bias_ih), (dghh, w.bias_hh)] {
                    back.extend(params_only(column_sums(
                        builder,
                        (gates, frames),
                        operand(grad, 1, gates),
                        bias,
                    )?));
                }
            }
            if proj {
                back.extend(params_only(gemm(
                    builder,
                    to_grads,
                    (s, h, frames),
                    operand(r.dr[layer] + d * frames * s, 1, s),
                    operand(r.m[layer] + d * frames * h, h, 1),
                    operand(w.weight_hr, h, 1),
                    acc,
                    0,
                )?));
            }
            // The input's gradient, dG·W_ih, summed over the directions: the upstream gradient
            // of the layer below, or (layer 0) d input, which only `backward` returns.
            let yields = match layer {
                0 => Yields::InputGradient,
                _ => Yields::Parameters,
            };
            let dx_ops = gemm(
                builder,
                GemmBuffers::WorkParamsToWork,
                (frames, inputs, gates),
                operand(dg, gates, 1),
                operand(w.weight_ih, inputs, 1),
                operand(dx, dx_row, 1),
                flag(d > 0, acc),
                0,
            )?;
            input_grads.extend(dx_ops.into_iter().map(|op| (op, yields)));
        }
        back.extend(input_grads);
        backward_layers.push((back, weights_at));
    }

    let top = layers - 1;
    let (mut backward, mut head_weights) = (Vec::new(), Vec::new());
    let (mut state_forward, mut state_backward) = (Vec::new(), Vec::new());
    let on_state = head.is_some_and(|h| h.on_state);
    // The head's bias gradient as its weight gradient's rows' sums, where GEMMs can sum rows.
    let head_sums = params
        .head
        .and_then(|(_, bias)| bias)
        .filter(|_| subgroup.is_some());
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
            // (With db += dlogitsᵀ·1 as the first direction's rows' sums, where it can.)
            state_backward.extend(gemm_summing(
                builder,
                GemmBuffers::WorkWorkToGrads,
                (out, s, batch),
                operand(r.head_dout, 1, out),
                operand(h_n, s, 1),
                operand(w, features, 1),
                acc,
                0,
                head_sums.filter(|_| d == 0),
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
        if head_bias.is_some() && head_sums.is_none() {
            state_backward.extend(column_sums(
                builder,
                (out, batch),
                operand(r.head_dout, 1, out),
                bias_at,
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
        // dW += dYᵀ·Y (with db += dYᵀ·1 as its rows' sums, where it can): with the top
        // layer's weight gradients, whose GEMMs it can share a dispatch with.
        head_weights.extend(gemm_summing(
            builder,
            GemmBuffers::WorkWorkToGrads,
            (out, features, frames),
            operand(r.head_dout, 1, out),
            operand(r.y[top], features, 1),
            operand(head_at, features, 1),
            acc,
            0,
            head_sums,
        )?);
        if head_bias.is_some() && head_sums.is_none() {
            head_weights.extend(column_sums(
                builder,
                (out, frames),
                operand(r.head_dout, 1, out),
                bias_at,
            )?);
        }
        // dY = dL·W, unless the recurrence's steps compute it.
        if !head_in_steps {
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
    }
    if let Some((top_back, weights_at)) = backward_layers.last_mut() {
        top_back.splice(*weights_at..*weights_at, params_only(head_weights));
    }
    let mut backward: Vec<(Op, Yields)> = params_only(backward).collect();
    for (back, _) in backward_layers.into_iter().rev() {
        backward.extend(back);
    }
    let mut backward = BackwardPrograms::new(&backward);

    // Small programs as one dispatch each, where the recurrence runs in one subgroup (and the
    // caller left the kernels to us).
    let mut one_dispatch_runs: Vec<String> = Vec::new();
    let mut iteration = None;
    if let (TrainRecurrence::Subgroup(spec), true) = (recurrence, whole_programs)
        && spec.fits_one_dispatch()
    {
        let uniforms = Uniforms {
            bytes: &builder.ops,
            step_align,
        };
        // A loss's whole iteration on a sequence of one chunk: the forward, the loss and the
        // parameters' backward in one kernel, where together they still fit. Not for an
        // LSTM: its kernel took llvmpipe 5.7–6.7 s to compile against 4.1 s for the separate
        // programs (first step of the sine tutorial, shader cache off), and ran no faster
        // (0.67–0.74 ms an iteration against 0.69–0.87); an Elman RNN's compiles as fast as
        // the separate programs and a GRU's 1.2 s slower, each then ~25 % faster an iteration.
        let rows = frames;
        let features = head.map_or(config.output_size(), |h| h.out);
        let head_on_frames = head.is_none_or(|h| !h.on_state);
        let pays = config.mode != RnnMode::Lstm;
        if let (Some(forward), Some(backward), true) = (
            one_dispatch(config, spec, &forward, &uniforms),
            one_dispatch(config, spec, &backward.parameters, &uniforms),
            head_on_frames && pays,
        ) {
            let with_loss = |cross_entropy| {
                let loss = iteration_loss(spec, cross_entropy, rows, features);
                let whole = forward.clone().then(loss).then(backward.clone());
                whole.fits().then_some(whole.run)
            };
            if let (Some(mse), Some(cross_entropy)) = (with_loss(false), with_loss(true)) {
                iteration = Some(IterationRuns { mse, cross_entropy });
            }
        }
        let mut single = |ops: &mut Vec<Op>| {
            if let Some(run) = one_dispatch(config, spec, ops, &uniforms)
                .filter(OneDispatch::fits)
                .map(|program| program.run)
            {
                let index = match one_dispatch_runs.iter().position(|r| *r == run) {
                    Some(index) => index,
                    None => {
                        one_dispatch_runs.push(run);
                        one_dispatch_runs.len() - 1
                    }
                };
                *ops = vec![Op::Program { index }];
            }
        };
        single(&mut forward);
        single(&mut backward.full);
        single(&mut backward.carrying);
        single(&mut backward.parameters);
    }
    let mut batched = |ops: &mut Vec<Op>| -> Result<()> {
        *ops = batch_gemms(ctx, builder, ops)?;
        Ok(())
    };
    batched(&mut forward)?;
    batched(&mut backward.full)?;
    batched(&mut backward.carrying)?;
    batched(&mut backward.parameters)?;
    batched(&mut state_forward)?;
    batched(&mut state_backward)?;
    Ok(Programs {
        forward,
        backward,
        state_forward,
        state_backward,
        one_dispatch: one_dispatch_runs,
        iteration,
    })
}

/// `ops` with each run of adjacent GEMMs of one kernel that are independent of each other
/// (none writes what another reads or writes) as one dispatch, up to `GemmBatch::CAPACITY` at
/// a time. Each GEMM computes exactly what it did alone.
fn batch_gemms(ctx: &GpuContext, builder: &mut ProgramBuilder, ops: &[Op]) -> Result<Vec<Op>> {
    // A run of GEMMs: the first's op (kept as it is where the run is one GEMM) and all of
    // theirs.
    struct Run {
        first: Op,
        kernel: GemmKernel,
        gemms: Vec<GemmParams>,
    }
    let mut batched = Vec::new();
    let mut run: Option<Run> = None;
    let flush =
        |run: Option<Run>, builder: &mut ProgramBuilder, batched: &mut Vec<Op>| -> Result<()> {
            if let Some(run) = run {
                batched.push(match run.first {
                    Op::Gemm { gemms, .. } if gemms as usize == run.gemms.len() => run.first,
                    _ => builder.gemm_op(ctx, run.kernel, &run.gemms)?,
                });
            }
            Ok(())
        };
    for &op in ops {
        let Op::Gemm {
            kernel,
            params,
            gemms,
            ..
        } = op
        else {
            flush(run.take(), builder, &mut batched)?;
            batched.push(op);
            continue;
        };
        let mine = builder.gemms(params, gemms);
        if let Some(current) = run.as_mut().filter(|current| {
            current.kernel == kernel
                && current.gemms.len() + mine.len() <= GemmBatch::CAPACITY
                && mine.iter().all(|g| {
                    current
                        .gemms
                        .iter()
                        .all(|other| independent(kernel, g, other))
                })
        }) {
            current.gemms.extend(mine);
            continue;
        }
        flush(run.take(), builder, &mut batched)?;
        run = Some(Run {
            first: op,
            kernel,
            gemms: mine,
        });
    }
    flush(run, builder, &mut batched)?;
    Ok(batched)
}

/// A buffer a GEMM reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buffer {
    Params,
    Grads,
    Work,
}

/// Elements `start..end` of a buffer.
#[derive(Clone, Copy, Debug)]
struct Span {
    buffer: Buffer,
    start: u64,
    end: u64,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.buffer == other.buffer && self.start < other.end && other.start < self.end
    }
}

/// What `g` (run by `kernel`) reads and what it writes, as the spans its elements lie in.
fn footprint(kernel: GemmKernel, g: &GemmParams) -> (Vec<Span>, Vec<Span>) {
    let (a, b, c) = match kernel.buffers {
        GemmBuffers::WorkParamsToWork => (Buffer::Work, Buffer::Params, Buffer::Work),
        GemmBuffers::WorkWorkToGrads => (Buffer::Work, Buffer::Work, Buffer::Grads),
    };
    let (m, n, k0, k) = (
        u64::from(g.m),
        u64::from(g.n),
        u64::from(g.k0),
        u64::from(g.k),
    );
    if m == 0 || n == 0 {
        return (Vec::new(), Vec::new());
    }
    // The elements from `off` + the first index·`s0` + the second·`s1`, over the ranges.
    let span = |buffer, off: u32, (first, s0): (u64, u32), (second, s1): (u64, u32), (n0, n1)| {
        let (off, s0, s1) = (u64::from(off), u64::from(s0), u64::from(s1));
        Span {
            buffer,
            start: off + first * s0 + second * s1,
            end: off + (first + n0 - 1) * s0 + (second + n1 - 1) * s1 + 1,
        }
    };
    let mut reads = Vec::new();
    if k > 0 {
        reads.push(span(a, g.a_off, (0, g.a_sm), (k0, g.a_sk), (m, k)));
        reads.push(span(b, g.b_off, (k0, g.b_sk), (0, g.b_sn), (k, n)));
    }
    if g.flags & GemmParams::BIAS != 0 {
        reads.push(span(Buffer::Params, g.bias_off, (0, 1), (0, 0), (n, 1)));
    }
    let mut writes = vec![span(c, g.c_off, (0, g.c_sm), (0, g.c_sn), (m, n))];
    if g.flags & GemmParams::ROW_SUMS != 0 {
        writes.push(span(c, g.sums_off, (0, 1), (0, 0), (m, 1)));
    }
    (reads, writes)
}

/// Whether GEMMs `g` and `other` (both `kernel`'s) may run at once: neither writes what the
/// other reads or writes.
fn independent(kernel: GemmKernel, g: &GemmParams, other: &GemmParams) -> bool {
    let (g_reads, g_writes) = footprint(kernel, g);
    let (other_reads, other_writes) = footprint(kernel, other);
    let touches = |writes: &[Span], reads: &[Span], other_writes: &[Span]| {
        writes
            .iter()
            .any(|w| reads.iter().chain(other_writes).any(|s| w.overlaps(s)))
    };
    !touches(&g_writes, &other_reads, &other_writes) && !touches(&other_writes, &g_reads, &[])
}

/// The kernels of a whole training iteration (forward, loss, backward: one dispatch), one per
/// loss, written out (`one_dispatch.rs`); compiled where an iteration first runs.
pub(crate) struct IterationRuns {
    pub mse: String,
    pub cross_entropy: String,
}

/// What a backward dispatch computes: the parameters' gradients (and what they need), or a
/// gradient only the caller of `backward` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Yields {
    Parameters,
    /// d input (layer 0's dX GEMMs).
    InputGradient,
    /// The carries into each layer's initial state: d h0, or the gradient an earlier chunk
    /// of the sequence continues from.
    InitialStateGradient,
}

/// A backward program in the three forms a chunk of a sequence may need: a loss's backward
/// returns no input gradients, and skips what only they need (on lavapipe a dispatch costs
/// ~40 µs, a noticeable part of a small model's iteration).
pub(crate) struct BackwardPrograms {
    /// Everything, d input and d h0 included.
    pub full: Vec<Op>,
    /// Without d input: a chunk whose initial state's gradient an earlier chunk continues.
    pub carrying: Vec<Op>,
    /// Only the parameters' gradients: a sequence's first chunk, no input gradients asked.
    pub parameters: Vec<Op>,
}

impl BackwardPrograms {
    fn new(tagged: &[(Op, Yields)]) -> Self {
        let without = |skip: &[Yields]| {
            tagged
                .iter()
                .filter(|(_, y)| !skip.contains(y))
                .map(|&(op, _)| op)
                .collect()
        };
        BackwardPrograms {
            full: without(&[]),
            carrying: without(&[Yields::InputGradient]),
            parameters: without(&[Yields::InputGradient, Yields::InitialStateGradient]),
        }
    }

    /// The program of a chunk: `input_grads` when the caller reads d input and d h0,
    /// `first_chunk` for the chunk the sequence starts with.
    pub fn select(&self, input_grads: bool, first_chunk: bool) -> &[Op] {
        match (input_grads, first_chunk) {
            (true, _) => &self.full,
            (false, false) => &self.carrying,
            (false, true) => &self.parameters,
        }
    }
}

/// What a workspace records: its forward and backward, and a head on the final state's
/// forward and backward (run by the sequence's last chunk only).
pub(crate) struct Programs {
    pub forward: Vec<Op>,
    pub backward: BackwardPrograms,
    pub state_forward: Vec<Op>,
    pub state_backward: Vec<Op>,
    /// The bodies of the one-dispatch kernels the programs' `Op::Program`s run.
    pub one_dispatch: Vec<String>,
    /// A loss's whole iteration as one kernel, where the model is small.
    pub iteration: Option<IterationRuns>,
}

impl Programs {
    /// Every dispatch of every program.
    pub fn all_ops(&self) -> impl Iterator<Item = &Op> {
        self.forward
            .iter()
            .chain(&self.backward.full)
            .chain(&self.backward.carrying)
            .chain(&self.backward.parameters)
            .chain(&self.state_forward)
            .chain(&self.state_backward)
    }
}

/// A Linear head: its outputs, and whether it reads the final state (else every frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadSpec {
    pub out: usize,
    pub on_state: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C (4 × 4) = A (4 × 8, at 0) · B (8 × 4, at 32), C at `c_off`.
    fn gemm(c_off: u32) -> GemmParams {
        GemmParams {
            m: 4,
            n: 4,
            k: 8,
            a_sm: 8,
            a_sk: 1,
            b_off: 32,
            b_sk: 4,
            b_sn: 1,
            c_off,
            c_sm: 4,
            c_sn: 1,
            ..Default::default()
        }
    }

    fn kernel(buffers: GemmBuffers) -> GemmKernel {
        GemmKernel {
            buffers,
            form: GemmForm::Blocks {
                a: BlockLoad::Elements,
                b: BlockLoad::Elements,
            },
        }
    }

    #[test]
    fn gemms_batch_only_where_neither_touches_what_the_other_writes() {
        let to_grads = kernel(GemmBuffers::WorkWorkToGrads);
        let (first, next) = (gemm(0), gemm(16));
        // Same inputs, C side by side in `grads`.
        assert!(independent(to_grads, &first, &next));
        // C overlapping by one element; the rows' sums into the other's C.
        assert!(!independent(to_grads, &first, &gemm(15)));
        let summing = GemmParams {
            flags: GemmParams::ROW_SUMS,
            sums_off: 3,
            ..next
        };
        assert!(!independent(to_grads, &first, &summing));
        assert!(!independent(to_grads, &summing, &first));
        // Into `work`: one's C inside the other's A (elements 0..32) or B (32..64), either way
        // round; past them, independent.
        let to_work = kernel(GemmBuffers::WorkParamsToWork);
        let (reader, past) = (gemm(100), gemm(200));
        assert!(independent(to_work, &reader, &past));
        for c_off in [0, 31, 20] {
            assert!(!independent(to_work, &reader, &gemm(c_off)), "C at {c_off}");
            assert!(!independent(to_work, &gemm(c_off), &reader), "C at {c_off}");
        }
        // B is in `params` there: a C in `work` at B's offsets does not touch it.
        assert!(independent(to_work, &reader, &gemm(40)));
    }
}
