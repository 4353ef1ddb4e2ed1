//! A trainer's working memory for one (T, N): one `work` buffer holding every input, output,
//! saved value, state and upstream gradient at the offsets of [`Regions`], its uniforms, and
//! the programs over it (`program.rs`: the training forward and the backward as lists of
//! dispatches fixed when the workspace is made). A forward or backward then only writes its
//! inputs, records the list and submits once.

use crate::config::{RnnConfig, RnnMode};
use crate::error::{Limit, Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::StepIndex;
use crate::gpu::kernels::training::{
    OP_UNIFORM_BYTES, SubgroupPipelines, TrainingBuffers, TrainingKernels, TrainingPipeline,
};
use crate::train::ParamLayout;

use std::sync::{Arc, OnceLock};

use crate::gpu::train_subgroup::SubgroupRecurrence;

use super::program::{
    BackwardPrograms, HeadSpec, IterationRuns, Op, ProgramBuilder, Programs, TrainRecurrence,
    programs,
};
use super::recurrent_weights::RecurrentWeights;

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
    /// Where a whole iteration's kernel leaves the loss's value.
    pub loss: usize,
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
        r.loss = take(1);
        r.len = at;
        r
    }
}

/// The work buffer, its uniforms, the bind group over them and the two programs.
pub(crate) struct TrainWorkspace {
    pub regions: Regions,
    pub work: wgpu::Buffer,
    pub bind_group: wgpu::BindGroup,
    pub forward: Vec<Op>,
    pub backward: BackwardPrograms,
    /// Features of each layer's output frames, D·H_out.
    pub output_width: usize,
    /// A head on the final state (see [`Programs`]).
    pub state_forward: Vec<Op>,
    pub state_backward: Vec<Op>,
    /// The register recurrence the programs run, where they run one.
    spec: Option<SubgroupRecurrence>,
    /// The model's W_hh as a texture, which that recurrence may load from.
    recurrent_weights: Arc<RecurrentWeights>,
    /// Its pipelines, for the programs' `Op::Subgroup` dispatches; and the kernels of their
    /// `Op::Program`s (small programs as one dispatch, `one_dispatch_runs` written out). Each
    /// is compiled the first time a recorded program needs it: a tutorial's `train_step`s
    /// run their whole iteration as one kernel and never need the others (each costs
    /// llvmpipe ~0.1–1 s to compile).
    subgroup: OnceLock<std::sync::Arc<SubgroupPipelines>>,
    one_dispatch_runs: Vec<String>,
    one_dispatch: Vec<OnceLock<wgpu::ComputePipeline>>,
    /// A loss's whole iteration as one kernel (MSE, cross-entropy), compiled on first use.
    iteration: Option<Iteration>,
    /// The programs' uniforms; a whole iteration's loss writes its own at `LOSS_UNIFORM`.
    pub ops: wgpu::Buffer,
    /// What was uploaded to `ops` (for `GpuTrainer::profile_programs`'s descriptions).
    pub uniforms: Vec<u8>,
    /// Keeps the step indices the bind group reads alive.
    _steps: wgpu::Buffer,
}

/// A small model's forward, loss and backward as one kernel per loss.
struct Iteration {
    runs: IterationRuns,
    mse: OnceLock<wgpu::ComputePipeline>,
    cross_entropy: OnceLock<wgpu::ComputePipeline>,
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

impl TrainWorkspace {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        config: &RnnConfig,
        params: &ParamLayout,
        head: Option<HeadSpec>,
        params_buffer: &wgpu::Buffer,
        grads_buffer: &wgpu::Buffer,
        recurrent_weights: &Arc<RecurrentWeights>,
        seq_len: usize,
        batch: usize,
        recurrence: TrainRecurrence,
        whole_programs: bool,
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
            recurrence,
            whole_programs,
            &mut builder,
        )?;
        let spec = match recurrence {
            TrainRecurrence::Subgroup(spec) => Some(spec),
            _ => None,
        };
        for op in programs.all_ops() {
            match *op {
                Op::Gemm { kernel, .. } => ctx.prepare_training(TrainingPipeline::Gemm(kernel))?,
                Op::Step { entry, .. } => ctx.prepare_training(TrainingPipeline::Step(entry))?,
                Op::Subgroup { .. } | Op::Program { .. } => {}
            }
        }

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
        let ops = init(
            "training ops",
            &builder.ops,
            wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST,
        );
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
        ctx.counters()
            .bind_groups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bind_group = kernels.bind_group(
            ctx.device(),
            &TrainingBuffers {
                ops: &ops,
                steps: &steps,
                params: params_buffer,
                grads: grads_buffer,
                work: &work,
                recurrent_weights: recurrent_weights.view(),
            },
        );
        scopes.finish(ctx, "making the training workspace")?;
        let Programs {
            forward,
            backward,
            state_forward,
            state_backward,
            iteration,
            one_dispatch: one_dispatch_runs,
        } = programs;
        let iteration = match (recurrence, iteration) {
            (TrainRecurrence::Subgroup(_), Some(runs)) => Some(Iteration {
                runs,
                mse: OnceLock::new(),
                cross_entropy: OnceLock::new(),
            }),
            _ => None,
        };
        Ok(TrainWorkspace {
            output_width: config.output_size(),
            state_forward,
            state_backward,
            regions,
            work,
            bind_group,
            forward,
            backward,
            spec,
            recurrent_weights: Arc::clone(recurrent_weights),
            subgroup: OnceLock::new(),
            one_dispatch: one_dispatch_runs.iter().map(|_| OnceLock::new()).collect(),
            one_dispatch_runs,
            iteration,
            ops,
            uniforms: builder.ops,
            _steps: steps,
        })
    }

    /// Whether a loss's whole iteration runs as one kernel here.
    pub fn has_iteration(&self) -> bool {
        self.iteration.is_some()
    }

    /// Records a loss's whole iteration (forward, the loss, the parameters' backward) as
    /// one dispatch; its kernel is compiled the first time. See `SequencePlan::record_iteration`.
    pub fn record_iteration(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        cross_entropy: bool,
    ) -> Result<()> {
        let iteration = self
            .iteration
            .as_ref()
            .expect("asked for where has_iteration says so");
        let (cell, run) = match cross_entropy {
            true => (&iteration.cross_entropy, &iteration.runs.cross_entropy),
            false => (&iteration.mse, &iteration.runs.mse),
        };
        let pipeline = match cell.get() {
            Some(pipeline) => pipeline,
            None => {
                let spec = self
                    .spec
                    .expect("an iteration kernel runs a register recurrence");
                let compiled = ctx.training_program(spec, run)?;
                cell.get_or_init(|| compiled)
            }
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("training iteration"),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &self.bind_group, &[0, 0]);
        pass.dispatch_workgroups(1, 1, 1);
        Ok(())
    }

    /// Records `program` into one compute pass.
    pub fn record(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        program: &[Op],
    ) -> Result<()> {
        let kernels = ctx.training_kernels()?;
        self.compile_for(ctx, program)?;
        // The register recurrences load W_hh from its texture: a copy of the parameters as
        // they are now.
        if self.spec.is_some_and(|spec| spec.texture_weights)
            && program.iter().any(|op| matches!(op, Op::Subgroup { .. }))
        {
            self.recurrent_weights.record_refresh(ctx, encoder)?;
        }
        record_ops(
            kernels,
            self.subgroup.get().map(|pipelines| pipelines.as_ref()),
            &self.one_dispatch,
            &self.bind_group,
            encoder,
            program,
        );
        Ok(())
    }

    /// Compiles what `program`'s recurrence and one-dispatch kernels need, unless compiled.
    fn compile_for(&self, ctx: &GpuContext, program: &[Op]) -> Result<()> {
        for op in program {
            let spec = || {
                self.spec
                    .expect("programs with these ops run a register recurrence")
            };
            match *op {
                Op::Subgroup { .. } if self.subgroup.get().is_none() => {
                    let compiled = ctx.training_subgroup(spec())?;
                    let _ = self.subgroup.set(compiled);
                }
                Op::Program { index } if self.one_dispatch[index].get().is_none() => {
                    let compiled = ctx.training_program(spec(), &self.one_dispatch_runs[index])?;
                    let _ = self.one_dispatch[index].set(compiled);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Records `program` over `bind_group` into one compute pass.
pub(crate) fn record_ops(
    kernels: &TrainingKernels,
    subgroup: Option<&SubgroupPipelines>,
    one_dispatch: &[OnceLock<wgpu::ComputePipeline>],
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
                pass.set_pipeline(&kernels.pipeline(TrainingPipeline::Step(entry)));
                pass.set_bind_group(0, bind_group, &[unit, step]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            Op::Gemm {
                kernel,
                params,
                groups,
                ..
            } => {
                pass.set_pipeline(&kernels.pipeline(TrainingPipeline::Gemm(kernel)));
                pass.set_bind_group(0, bind_group, &[params, 0]);
                pass.dispatch_workgroups(groups[0], groups[1], 1);
            }
            Op::Subgroup {
                forward,
                unit,
                step,
                groups,
            } => {
                let pipelines =
                    subgroup.expect("a program with subgroup dispatches has their pipelines");
                pass.set_pipeline(if forward {
                    &pipelines.forward
                } else {
                    &pipelines.backward
                });
                pass.set_bind_group(0, bind_group, &[unit, step]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            Op::Program { index } => {
                // Its values are constants in the kernel: the uniforms' offsets do not matter.
                pass.set_pipeline(
                    one_dispatch[index]
                        .get()
                        .expect("a program's kernels are compiled before it is recorded"),
                );
                pass.set_bind_group(0, bind_group, &[0, 0]);
                pass.dispatch_workgroups(1, 1, 1);
            }
        }
    }
}
