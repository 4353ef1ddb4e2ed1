//! `GpuTrainer`: a model that trains on the GPU. Parameters and their gradients live in two
//! GPU buffers in PyTorch's layout (see [`ParamLayout`]); each (T, N) gets a workspace
//! (`workspace.rs`) whose forward and backward programs run as one submission each.

#[cfg(test)]
mod gemm_tests;
mod one_dispatch;
mod profile;
mod program;
mod record;
mod recurrent_weights;
mod sequence;
mod uploads;
mod workspace;

pub(crate) use one_dispatch::EXAMPLE_PROGRAM;
pub use profile::OpTiming;
pub(crate) use uploads::Uploads;

use std::collections::HashMap;
use std::sync::Arc;

use crate::cell::CellConfig;
use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::engine::Recurrence;
use crate::gpu::optim::{GpuClip, GpuOptimizerState};
use crate::gpu::scheduler::map_and_read;
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::loss::{Loss, Target};
use crate::optim::OptimizerConfig;
use crate::rnn::{Hx, RnnOutput};
use crate::tensor::Tensor;
use crate::train::{
    Batch, InitialState, InputGrads, Optimizer, OptimizerState, OutputGrads, ParamLayout, Tape,
    Train, next_id,
};
use crate::weights::{DirectionWeights, RnnWeights};
use program::{HeadSpec, TrainRecurrence};
use recurrent_weights::RecurrentWeights;
use sequence::{SequencePlan, SequenceShape};
use workspace::TrainWorkspace;

/// An `nn.RNN`, `nn.LSTM` or `nn.GRU` (and optional Linear head) that trains on a GPU.
///
/// The training forward runs per layer one GEMM projecting every frame's input, then the
/// recurrence, which also keeps what the backward needs (the state each step started from; an
/// LSTM's gates and c; a GRU's gates and W_hn·h + b_hn). The backward runs the recurrence in
/// reverse (the gates' gradients and the carry to the step before), then the weight gradients
/// (with the bias gradients as their rows' sums, or column sums of their own) and the input's
/// gradient as GEMMs over every frame at once, each element summed in a fixed order
/// (bit-identical run to run). The recurrence is persistent (many steps per dispatch, one
/// workgroup per sequence and direction): where the adapter has fixed-size subgroups and the
/// state fits (H a multiple of 4; on lavapipe every cell up to H = 512) with W_hh in
/// registers (loaded from a texture copy of the parameters), else reading W_hh from storage;
/// [`with_recurrence(Recurrence::PerStep)`](GpuTrainer::with_recurrence) runs one dispatch per
/// step instead. A small model's whole forward, or backward, runs as one dispatch where the
/// recurrence fits one subgroup (`Recurrence::Auto`; on a software adapter a dispatch costs
/// ~40 µs, more than such a model's work), and [`train_step`](Train::train_step)'s forward,
/// loss and backward as one (an Elman RNN's or a GRU's), with the same results as their
/// separate dispatches. Kernels compile the first time a program needs them.
/// Forward and backward are one submission each; parameters and gradients stay on the GPU
/// until [`parameters`](Train::parameters) or [`gradients`](Train::gradients) reads them.
pub struct GpuTrainer {
    ctx: GpuContext,
    config: RnnConfig,
    layout: ParamLayout,
    head_out: Option<usize>,
    head: Option<HeadSpec>,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// W_hh as a texture, for the register recurrences.
    recurrent_weights: Arc<RecurrentWeights>,
    /// Reads parameters or gradients back.
    param_staging: wgpu::Buffer,
    workspaces: HashMap<(usize, usize), TrainWorkspace>,
    /// Per (T, N): its chunks and whole-sequence buffers.
    sequences: HashMap<(usize, usize), SequencePlan>,
    budget: Option<u64>,
    recurrence: Recurrence,
    /// Clipping's buffers, made by the first `clip_grad_norm`.
    clip: Option<GpuClip>,
    clipped: bool,
    /// The last forward's final state (h, then c), kept for `InitialState::Carried`, with its
    /// batch size; and the batch of the last forward.
    carry: Option<(usize, wgpu::Buffer)>,
    carry_batch: Option<usize>,
    /// Where the last loss lies: the sequence's (T, N) and the offset in its data.
    loss_at: Option<((usize, usize), usize)>,
    id: u64,
    last: Option<LastForward>,
    /// The host data of the submission being recorded.
    uploads: Uploads,
}

/// The training forward whose values the workspace holds.
struct LastForward {
    id: u64,
    shape: ForwardShape,
}

impl std::fmt::Debug for GpuTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrainer")
            .field("config", &self.config)
            .field("head_out", &self.head_out)
            .field("context", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl GpuTrainer {
    /// Uploads `weights` for `config` to the context's device; gradients start at zero.
    pub fn new(ctx: &GpuContext, config: RnnConfig, weights: &RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        let layout = ParamLayout::new(&config, None);
        let flat = layout_flat(&config, weights, None);
        Self::from_flat(ctx, config, layout, None, &flat)
    }

    /// A cell (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`) trained unrolled over a sequence,
    /// as [`CpuTrainer::cell`](crate::CpuTrainer::cell) describes: input (T, N, I), h0 (1, N,
    /// H), parameters named as the cell's.
    pub fn cell(ctx: &GpuContext, config: CellConfig, weights: &DirectionWeights) -> Result<Self> {
        let (config, weights) = config.unrolled(weights)?;
        let layout = ParamLayout::cell(&config);
        let flat = layout.flatten(&weights, None);
        Self::from_flat(ctx, config, layout, None, &flat)
    }

    /// Adds a Linear head that trains with the model: every output frame becomes
    /// `h_t·Wᵀ + b`. Gradients start again from zero.
    pub fn with_head(self, head: &Linear) -> Result<Self> {
        self.add_head(head, false)
    }

    /// Adds a Linear head on the last layer's final state instead (sequence classification:
    /// `linear(torch.cat([h_n[-2], h_n[-1]], 1))` for a bidirectional model, `linear(h_n[-1])`
    /// otherwise; with lengths, each sequence's state at its own last frame). The output is then
    /// (N, out_features), a loss's targets one per sequence. Gradients start again from zero.
    pub fn with_state_head(self, head: &Linear) -> Result<Self> {
        self.add_head(head, true)
    }

    fn add_head(self, head: &Linear, on_state: bool) -> Result<Self> {
        head.check(self.config.output_size())?;
        let (weights, _) = self.layout.unflatten(&self.config, &self.read_params()?)?;
        let layout = self.layout.with_head(&self.config, head);
        let all = layout.flatten(&weights, Some(head));
        let spec = HeadSpec {
            out: head.out_features,
            on_state,
        };
        Self::from_flat(&self.ctx, self.config.clone(), layout, Some(spec), &all)
    }

    fn from_flat(
        ctx: &GpuContext,
        config: RnnConfig,
        layout: ParamLayout,
        head: Option<HeadSpec>,
        flat: &[f32],
    ) -> Result<Self> {
        let _gl = ctx.gl_guard();
        let scopes = ctx.error_scopes();
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let init = |label: &str, data: &[f32]| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: storage,
            })
        };
        let params = init("parameters", flat);
        let grads = init("gradients", &vec![0.0; flat.len()]);
        let param_staging = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("parameter readback"),
            size: (flat.len() as u64 * 4).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        scopes.finish(ctx, "uploading the parameters")?;
        // Compiled now, so that the first forward is not where compilation errors surface.
        ctx.training_kernels()?;
        let recurrent_weights = RecurrentWeights::new(ctx, &config, &layout, &params)?;
        Ok(GpuTrainer {
            ctx: ctx.clone(),
            config,
            layout,
            head_out: head.map(|h| h.out),
            head,
            params,
            grads,
            recurrent_weights,
            param_staging,
            workspaces: HashMap::new(),
            sequences: HashMap::new(),
            budget: None,
            recurrence: Recurrence::Auto,
            clip: None,
            clipped: false,
            carry: None,
            carry_batch: None,
            loss_at: None,
            id: next_id(),
            last: None,
            uploads: Uploads::default(),
        })
    }

    /// Which recurrent kernels the training forward and backward run: persistent (`Auto`, the
    /// default, and `Persistent`: one workgroup per sequence and direction runs hundreds of
    /// steps per dispatch, W_hh in registers where it fits) or one dispatch per step
    /// (`PerStep`). `Auto` also runs a small model's whole forward or backward as one
    /// dispatch (the same results as `Persistent`'s), and keeps to kernels that compile within
    /// seconds; `Persistent` takes the fastest whatever they cost to compile. On lavapipe both
    /// run a GRU or LSTM with H ≤ 64 in one subgroup (eight units a lane, no workgroup
    /// memory, W_hh loaded from a texture: ~5 s to compile cold); where the device's texture
    /// limits do not hold the model's W_hh, `Auto` runs two subgroups of four units a lane and
    /// `Persistent` the one subgroup loading W_hh from storage (23–45 s cold). They compute the
    /// same gradients, up to float rounding (`PerStep` sums in another order).
    pub fn with_recurrence(mut self, recurrence: Recurrence) -> Self {
        self.recurrence = recurrence;
        self.workspaces.clear();
        self.sequences.clear();
        self.last = None;
        self
    }

    /// The context this model runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bytes of GPU memory the workspace of (T = `seq_len`, N = `batch`) takes: the inputs,
    /// outputs and every value a training forward saves for the backward, with their
    /// gradients. Makes the workspace, as the first forward of that shape would.
    pub fn workspace_bytes(&mut self, seq_len: usize, batch: usize) -> Result<u64> {
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        self.make_workspace(seq_len, batch)?;
        Ok(self.workspaces[&(seq_len, batch)].regions.len as u64 * 4)
    }

    /// Makes the plan of a sequence of (T, N), and the workspaces of its chunks, unless they
    /// exist.
    fn make_sequence(&mut self, seq_len: usize, batch: usize) -> Result<()> {
        if !self.sequences.contains_key(&(seq_len, batch)) {
            let shape = SequenceShape {
                config: &self.config,
                head_out: self.head_out,
                seq_len,
                batch,
                budget: self.budget,
                state_head: self.state_head(),
            };
            let plan = SequencePlan::new(&self.ctx, &shape, self.config.input_size)?;
            for len in plan.chunk_lengths() {
                self.make_workspace(len, batch)?;
            }
            self.sequences.insert((seq_len, batch), plan);
        }
        Ok(())
    }

    /// Caps the GPU memory one training workspace may use, in bytes (`None`: only the
    /// adapter's limits). Longer sequences then train in time chunks (checkpointing: the
    /// forward keeps each chunk's start state, the backward recomputes a chunk's saved values
    /// from it), with the same gradients up to float rounding; memory stays proportional to
    /// the chunk. Bidirectional models train on whole sequences: beyond the budget they report
    /// [`RnnError::ExceedsLimits`].
    pub fn set_workspace_budget(&mut self, bytes: Option<u64>) {
        self.budget = bytes;
        self.sequences.clear();
        self.workspaces.clear();
        self.last = None;
    }

    /// How many timesteps one chunk of a training forward over (T = `seq_len`, N = `batch`)
    /// runs: T when the whole sequence's workspace fits, less when it trains in chunks.
    pub fn time_chunk(&self, seq_len: usize, batch: usize) -> Result<usize> {
        SequenceShape {
            config: &self.config,
            head_out: self.head_out,
            seq_len,
            batch,
            budget: self.budget,
            state_head: self.state_head(),
        }
        .chunk(&self.ctx)
    }

    /// The shape of the forward `tape` was made by, once the tape is checked to be this
    /// model's latest.
    fn taped_shape(&self, tape: &Tape) -> Result<ForwardShape> {
        tape.check(self.id, self.last.as_ref().map(|l| l.id))?;
        self.last
            .as_ref()
            .map(|l| l.shape)
            .ok_or_else(|| RnnError::Tape("the model holds no training forward".into()))
    }

    /// Makes the workspace of (T, N) unless it exists.
    fn make_workspace(&mut self, seq_len: usize, batch: usize) -> Result<()> {
        if !self.workspaces.contains_key(&(seq_len, batch)) {
            let ws = TrainWorkspace::new(
                &self.ctx,
                &self.config,
                &self.layout,
                self.head,
                &self.params,
                &self.grads,
                &self.recurrent_weights,
                seq_len,
                batch,
                TrainRecurrence::choose(
                    &self.ctx,
                    &self.config,
                    self.head,
                    self.recurrence,
                    batch,
                    self.recurrent_weights.holds_weights(),
                ),
                self.recurrence == Recurrence::Auto,
            )?;
            self.workspaces.insert((seq_len, batch), ws);
        }
        Ok(())
    }

    fn read_params(&self) -> Result<Vec<f32>> {
        self.read_whole(&self.params)
    }

    /// Reads `buffer` (the parameters or the gradients) back.
    fn read_whole(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        let _gl = self.ctx.gl_guard();
        let scopes = self.ctx.error_scopes();
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        let bytes = self.layout.len as u64 * 4;
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(buffer, 0, &self.param_staging, 0, bytes);
        }
        let submission = self.ctx.queue().submit([encoder.finish()]);
        scopes.finish(&self.ctx, "reading the parameters back")?;
        map_and_read(&self.ctx, &self.param_staging, submission, |all| {
            all[..self.layout.len].to_vec()
        })
    }

    /// Whether the head reads the final state.
    fn state_head(&self) -> bool {
        self.head.is_some_and(|h| h.on_state)
    }

    /// The shape of the output: frames in the input's layout, or (N, O) for a head on the
    /// final state ((O) unbatched).
    fn output_shape(&self, shape: &ForwardShape) -> Vec<usize> {
        let features = self.output_features();
        match (self.state_head(), shape.unbatched) {
            (false, _) => shape.frames_shape(features),
            (true, true) => vec![features],
            (true, false) => vec![shape.batch, features],
        }
    }

    /// Rows of the output: every frame, or one per sequence for a head on the final state.
    fn output_rows(&self, shape: &ForwardShape) -> usize {
        match self.state_head() {
            true => shape.batch,
            false => shape.seq_len * shape.batch,
        }
    }

    /// Output features: the head's, or D·H_out.
    fn output_features(&self) -> usize {
        self.head_out.unwrap_or(self.config.output_size())
    }
}

/// `weights` (and `head`) flattened in the order of [`ParamLayout`].
fn layout_flat(config: &RnnConfig, weights: &RnnWeights, head: Option<&Linear>) -> Vec<f32> {
    ParamLayout::new(config, head.map(|h| (h.out_features, h.bias.is_some())))
        .flatten(weights, head)
}

/// Copies `(offset, len)` element ranges of `from` into `staging` one after another, submits
/// `encoder` and reads them back, one vector per range.
pub(super) fn submit_and_read(
    ctx: &GpuContext,
    mut encoder: wgpu::CommandEncoder,
    from: &wgpu::Buffer,
    staging: &wgpu::Buffer,
    ranges: &[(usize, usize)],
    doing: &str,
    scopes: crate::gpu::context::ErrorScopes,
) -> Result<Vec<Vec<f32>>> {
    let mut at = 0u64;
    for &(offset, len) in ranges {
        let bytes = len as u64 * 4;
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(from, offset as u64 * 4, staging, at, bytes);
        }
        at += bytes;
    }
    let submission = ctx.queue().submit([encoder.finish()]);
    scopes.finish(ctx, doing)?;
    map_and_read(ctx, staging, submission, |all| {
        let mut start = 0;
        ranges
            .iter()
            .map(|&(_, len)| {
                let part = all[start..start + len].to_vec();
                start += len;
                part
            })
            .collect()
    })
}

pub(super) fn write(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: usize, data: &[f32]) {
    if !data.is_empty() {
        ctx.queue()
            .write_buffer(buffer, offset as u64 * 4, bytemuck::cast_slice(data));
    }
}

/// `tensor`'s shape checked against `want`.
fn expect_shape(what: &'static str, tensor: &Tensor, want: &[usize]) -> Result<()> {
    if tensor.shape() == want {
        Ok(())
    } else {
        Err(RnnError::shape(what, format!("{want:?}"), tensor.shape()))
    }
}

/// Checks the upstream gradients against the shapes of the forward's outputs.
pub(crate) fn check_output_grads(
    config: &RnnConfig,
    shape: &ForwardShape,
    output_shape: &[usize],
    grads: OutputGrads<'_>,
) -> Result<()> {
    expect_shape("d_output", grads.d_output, output_shape)?;
    if let Some(d_h_n) = grads.d_h_n {
        expect_shape("d_h_n", d_h_n, &shape.state_shape(config))?;
    }
    match (config.mode.has_cell_state(), grads.d_c_n) {
        (true, Some(d_c_n)) => expect_shape("d_c_n", d_c_n, &shape.cell_state_shape(config)),
        (false, Some(d_c_n)) => {
            let none = format!("none: {} has no cell state", config.mode.torch_name());
            Err(RnnError::shape("d_c_n", none, d_c_n.shape()))
        }
        (_, None) => Ok(()),
    }
}

impl GpuTrainer {
    /// What both backwards start with: checks `grads` against the forward `tape` recorded and
    /// uploads them (d output in the workspace's frame order, d h_n and d c_n, zeros where
    /// absent, as the carries' start). Returns the taped shape.
    fn stage_output_grads(&mut self, tape: &Tape, grads: OutputGrads<'_>) -> Result<ForwardShape> {
        let shape = self.taped_shape(tape)?;
        let features = self.output_features();
        check_output_grads(&self.config, &shape, &self.output_shape(&shape), grads)?;
        self.ctx.check_alive()?;
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let plan = &self.sequences[&(shape.seq_len, shape.batch)];
        let d_out = match self.state_head() {
            true => grads.d_output.data().to_vec(),
            false => shape.gather_sequence_first(grads.d_output.data(), features),
        };
        write(&ctx, &plan.data, plan.d_output, &d_out);
        let or_zeros = |t: Option<&Tensor>, len: usize| {
            t.map_or_else(|| vec![0.0f32; len], |t| t.data().to_vec())
        };
        write(
            &ctx,
            &plan.data,
            plan.carries,
            &or_zeros(grads.d_h_n, plan.h_len),
        );
        let d_c_n = or_zeros(grads.d_c_n, plan.c_len);
        write(&ctx, &plan.data, plan.carries + plan.h_len, &d_c_n);
        Ok(shape)
    }
}

impl Train for GpuTrainer {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward_train(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        hx: Option<Hx<'_>>,
    ) -> Result<(RnnOutput, Tape)> {
        let state = hx.map_or(InitialState::Zeros, InitialState::Given);
        let (out, tape) = self.run_forward(input, lengths, state, true)?;
        Ok((out.expect("read back when asked"), tape))
    }

    fn forward_on_device(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
    ) -> Result<Tape> {
        Ok(self.run_forward(input, lengths, state, false)?.1)
    }

    fn backward_loss(&mut self, tape: Tape, loss: Loss, target: Target<'_>) -> Result<()> {
        self.submit("the loss and backward", |model, encoder| {
            model.record_loss_backward(encoder, tape, loss, target)
        })
    }

    fn last_loss(&self) -> Result<f32> {
        let Some((key, at)) = self.loss_at else {
            return Err(RnnError::InvalidConfig(
                "no backward_loss has computed a loss yet".into(),
            ));
        };
        let plan = &self.sequences[&key];
        let _gl = self.ctx.gl_guard();
        let scopes = self.ctx.error_scopes();
        let encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        let parts = submit_and_read(
            &self.ctx,
            encoder,
            &plan.data,
            &plan.staging,
            &[(at, 1)],
            "reading the loss",
            scopes,
        )?;
        Ok(parts[0][0])
    }

    fn backward(&mut self, tape: Tape, grads: OutputGrads<'_>) -> Result<InputGrads> {
        let shape = self.stage_output_grads(&tape, grads)?;
        let config = self.config.clone();
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let (steps, batch) = (shape.seq_len, shape.batch);
        let scopes = ctx.error_scopes();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        self.record_backward_of(&mut encoder, (steps, batch), true)?;
        let plan = &self.sequences[&(steps, batch)];
        let parts = submit_and_read(
            &ctx,
            encoder,
            &plan.data,
            &plan.staging,
            &[
                (plan.d_input, steps * batch * config.input_size),
                (plan.carries, plan.h_len),
                (plan.carries + plan.h_len, plan.c_len),
            ],
            "the backward",
            scopes,
        )?;
        Ok(InputGrads {
            d_input: Tensor::new(
                shape.scatter_sequence_first(&parts[0], config.input_size),
                &shape.frames_shape(config.input_size),
            )?,
            d_h0: Tensor::new(parts[1].clone(), &shape.state_shape(&config))?,
            d_c0: match config.mode.has_cell_state() {
                true => Some(Tensor::new(
                    parts[2].clone(),
                    &shape.cell_state_shape(&config),
                )?),
                false => None,
            },
        })
    }

    fn backward_params(&mut self, tape: Tape, grads: OutputGrads<'_>) -> Result<()> {
        let shape = self.stage_output_grads(&tape, grads)?;
        let key = (shape.seq_len, shape.batch);
        self.submit("the backward", |model, encoder| {
            model.record_backward_of(encoder, key, false)
        })
    }

    fn save_optimizer(
        &self,
        optimizer: &Optimizer,
        path: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        optimizer.check_model(self.id)?;
        let OptimizerState::Gpu(state) = &optimizer.state else {
            return Err(RnnError::InvalidConfig(
                "this optimizer's state is on the CPU".into(),
            ));
        };
        let per = crate::optim::state_per_element(&optimizer.config);
        let values = if per == 0 {
            Vec::new()
        } else {
            let _gl = self.ctx.gl_guard();
            crate::gpu::scheduler::read_buffer(&self.ctx, state.state(), per * self.layout.len)?
        };
        self.layout
            .save_optimizer(path.as_ref(), &optimizer.config, optimizer.step, &values)
    }

    fn load_optimizer(
        &self,
        config: OptimizerConfig,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Optimizer> {
        config.validate()?;
        let (step, values) = self.layout.load_optimizer(path.as_ref(), &config)?;
        let _gl = self.ctx.gl_guard();
        let state = GpuOptimizerState::new(
            &self.ctx,
            &self.params,
            &self.grads,
            self.layout.len,
            &config,
            Some(&values),
        )?;
        let mut optimizer = Optimizer::new(config, self.id, OptimizerState::Gpu(state))?;
        optimizer.step = step;
        Ok(optimizer)
    }

    fn zero_grad(&mut self) -> Result<()> {
        self.submit("zeroing the gradients", |model, encoder| {
            encoder.clear_buffer(&model.grads, 0, None);
            Ok(())
        })
    }

    fn gradients(&self) -> Result<Vec<(String, Tensor)>> {
        self.layout.named(&self.read_whole(&self.grads)?)
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.layout.named(&self.read_params()?)
    }

    fn optimizer(&self, config: OptimizerConfig) -> Result<Optimizer> {
        config.validate()?;
        let _gl = self.ctx.gl_guard();
        let state = GpuOptimizerState::new(
            &self.ctx,
            &self.params,
            &self.grads,
            self.layout.len,
            &config,
            None,
        )?;
        Optimizer::new(config, self.id, OptimizerState::Gpu(state))
    }

    fn step(&mut self, optimizer: &mut Optimizer) -> Result<()> {
        self.submit("the optimizer step", |model, encoder| {
            model.record_step(encoder, optimizer)
        })
    }

    fn clip_grad_norm(&mut self, max_norm: f32) -> Result<()> {
        self.submit("clipping the gradients", |model, encoder| {
            model.record_clip(encoder, max_norm)
        })
    }

    fn train_step(
        &mut self,
        batch: Batch<'_>,
        loss: Loss,
        optimizer: &mut Optimizer,
        clip: Option<f32>,
    ) -> Result<()> {
        // Everything an iteration does, recorded into one encoder and submitted once.
        optimizer.check_model(self.id)?;
        self.submit("the training step", |model, encoder| {
            model.record_train_step(encoder, batch, loss, optimizer, clip)
        })
    }

    fn train_steps(
        &mut self,
        batches: &[Batch<'_>],
        loss: Loss,
        optimizer: &mut Optimizer,
        clip: Option<f32>,
    ) -> Result<()> {
        optimizer.check_model(self.id)?;
        // One command buffer per iteration, all in one submission: where an iteration is
        // refused, the ones before it still run, as a loop of `train_step`s would.
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let scopes = ctx.error_scopes();
        let mut recorded = Vec::with_capacity(batches.len());
        let mut refused = None;
        for &batch in batches {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            match self.record_train_step(&mut encoder, batch, loss, optimizer, clip) {
                Ok(()) => recorded.push(encoder.finish()),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        self.uploads.flush(&ctx);
        ctx.queue().submit(recorded);
        let finished = scopes.finish(&ctx, "the training steps");
        match refused {
            Some(e) => Err(e),
            None => finished,
        }
    }

    fn last_grad_norm(&self) -> Result<f32> {
        let clip = match (&self.clip, self.clipped) {
            (Some(clip), true) => clip,
            _ => {
                return Err(RnnError::InvalidConfig(
                    "no clip_grad_norm has measured a norm yet".into(),
                ));
            }
        };
        let _gl = self.ctx.gl_guard();
        let scopes = self.ctx.error_scopes();
        let encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        let parts = submit_and_read(
            &self.ctx,
            encoder,
            clip.scratch(),
            &self.param_staging,
            &[(clip.total_at(), 1)],
            "reading the gradient norm",
            scopes,
        )?;
        Ok(parts[0][0])
    }
}
