//! A whole sequence's training forward and backward over one or more time chunks.
//!
//! Where the workspace of the whole sequence would exceed the adapter's limits or the budget
//! set with `set_workspace_budget`, the sequence runs in chunks of T_c steps (checkpointing):
//! the forward keeps only the state at each chunk's start (h and c of every layer); the
//! backward walks the chunks from the last, recomputes each chunk's saved values from its
//! start state (all but the last chunk, whose values the forward left in place), and runs its
//! backward with the carries (d h, d c of every layer) the later chunk left. The weight
//! gradients add up over the chunks; GPU memory is proportional to T_c, not T. One chunk is
//! the common case: the same code, nothing recomputed.
//!
//! Everything a call uploads or reads back goes through one buffer per (T, N) (`data`,
//! sequence-first) and GPU copies into and out of the chunks' workspaces, so a forward is one
//! submission and a backward another, chunked or not.

use super::one_dispatch::LOSS_UNIFORM;
use super::uploads::Uploads;
use super::workspace::{Regions, TrainWorkspace};
use crate::config::RnnConfig;
use crate::error::{Limit, Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::loss::{LOSS_PER_LANE, LossParams};
use crate::loss::{Loss, Reduction};

/// A trainer's workspaces, by (chunk length, N).
pub(crate) type Workspaces = std::collections::HashMap<(usize, usize), TrainWorkspace>;

/// Where a sequence's data lies in `data`, in f32 elements, all sequence-first.
pub(crate) struct SequencePlan {
    pub seq_len: usize,
    pub batch: usize,
    /// (start, length) of each chunk.
    pub chunks: Vec<(usize, usize)>,
    pub data: wgpu::Buffer,
    pub staging: wgpu::Buffer,
    /// Chunk-local lengths, chunks × N (u32 bit patterns).
    pub lengths: usize,
    pub input: usize,
    pub output: usize,
    pub d_output: usize,
    pub d_input: usize,
    /// The states at every chunk boundary, (chunks + 1) × (h, then c): slot 0 is (h0, c0),
    /// the last (h_n, c_n).
    pub checkpoints: usize,
    /// The backward's upstream d_h_n and d_c_n, then where d_h0 and d_c0 end.
    pub carries: usize,
    /// The head reads the final state: the output is (N, O), not frames.
    pub state_head: bool,
    /// A loss's target (frames × features; class indices as u32 bit patterns) and its
    /// workgroups' partial sums, then the loss.
    pub target: usize,
    pub partials: usize,
    /// The loss passes' uniform and bind group (over `data`).
    loss_uniform: wgpu::Buffer,
    /// `None` where the loss's part of `data` exceeds a storage binding.
    loss_group: Option<wgpu::BindGroup>,
    loss_bytes: u64,
    /// Where a loss's value lands: after the most partial sums any loss has.
    loss_value: usize,
    pub h_len: usize,
    pub c_len: usize,
}

/// Workgroups of a loss's first pass over `frames` × `features` at most (`LOSS_PER_LANE`
/// items an invocation: elements for MSE, rows for cross-entropy).
fn loss_groups(frames: usize, features: usize) -> u32 {
    (frames * features.max(1))
        .div_ceil(64 * LOSS_PER_LANE as usize)
        .max(1) as u32
}

/// `loss` over `frames` × `features`: its kind, sizes, workgroups and scale (the offsets
/// left for the caller).
fn loss_params(loss: Loss, frames: usize, features: usize) -> LossParams {
    let (kind, reduction) = match loss {
        Loss::Mse(r) => (0, r),
        Loss::CrossEntropy(r) => (1, r),
    };
    let count = if kind == 0 { frames * features } else { frames };
    let per_lane = LOSS_PER_LANE;
    LossParams {
        kind,
        rows: frames as u32,
        features: features as u32,
        groups: (count as u32).div_ceil(64 * per_lane).max(1),
        scale: match reduction {
            Reduction::Mean => 1.0 / count as f32,
            Reduction::Sum => 1.0,
        },
        per_lane,
        ..LossParams::default()
    }
}

/// Sizes a sequence's plan depends on.
pub(crate) struct SequenceShape<'a> {
    pub config: &'a RnnConfig,
    pub head_out: Option<usize>,
    pub seq_len: usize,
    pub batch: usize,
    /// The budget set with `set_workspace_budget`, in bytes.
    pub budget: Option<u64>,
    /// The head reads the final state.
    pub state_head: bool,
}

impl SequenceShape<'_> {
    fn workspace_elements(&self, chunk: usize) -> usize {
        Regions::new(self.config, self.head_out, chunk, self.batch).len
    }

    /// The longest chunk whose workspace fits: T itself where it does; otherwise an even
    /// length (a chunk then ends with the state in the ping-pong half the next one starts
    /// from). Bidirectional models cannot be chunked (the reverse direction starts at the end).
    pub fn chunk(&self, ctx: &GpuContext) -> Result<usize> {
        let limits = ctx.limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let (limit, allowed) = match self.budget {
            Some(budget) if budget < binding => (Limit::WorkspaceBudget, budget),
            _ => (Limit::StorageBinding, binding),
        };
        let allowed_elements = (allowed / 4).min(u64::from(u32::MAX)) as usize;
        let fits = |t: usize| self.workspace_elements(t) <= allowed_elements;
        if fits(self.seq_len) {
            return Ok(self.seq_len);
        }
        let needed = self.workspace_elements(self.seq_len) as u64 * 4;
        let exceeds = |hint: String| RnnError::ExceedsLimits {
            what: "the training workspace (bytes)".into(),
            needed,
            limit,
            allowed,
            hint,
        };
        if self.config.bidirectional {
            return Err(exceeds(
                "a bidirectional model trains on whole sequences (its reverse direction starts \
                 at the end): shorten them or raise the budget"
                    .into(),
            ));
        }
        // The workspace grows with the chunk: the longest even chunk that fits.
        let (mut lo, mut hi) = (0usize, self.seq_len / 2);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(2 * mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        match 2 * lo {
            0 => Err(exceeds(format!(
                "not even two timesteps of a batch of {} fit: a smaller batch or a larger budget",
                self.batch
            ))),
            chunk => Ok(chunk),
        }
    }
}

impl SequencePlan {
    pub fn new(ctx: &GpuContext, shape: &SequenceShape<'_>, input_size: usize) -> Result<Self> {
        let chunk = shape.chunk(ctx)?;
        let (steps, batch, config) = (shape.seq_len, shape.batch, shape.config);
        let chunks: Vec<(usize, usize)> = (0..steps)
            .step_by(chunk)
            .map(|start| (start, chunk.min(steps - start)))
            .collect();
        let features = shape.head_out.unwrap_or(config.output_size());
        let frames = steps * batch;
        let h_len = config.state_rows() * batch * config.state_size();
        let c_len = if config.mode.has_cell_state() {
            config.state_rows() * batch * config.hidden_size
        } else {
            0
        };
        let mut at = 0usize;
        let mut take = |n: usize| {
            let start = at;
            at += n.next_multiple_of(4);
            start
        };
        // What a loss reads and writes comes first: the loss pass binds only that range (the
        // whole buffer may be longer than a storage binding may be, for long sequences).
        let output = take(frames * features);
        let d_output = take(frames * features);
        let target = take(frames * features);
        let partials = take(loss_groups(frames, features) as usize + 1);
        let loss_len = partials + (loss_groups(frames, features) as usize + 1).next_multiple_of(4);
        let lengths = take(chunks.len() * batch);
        let input = take(frames * input_size);
        let d_input = take(frames * input_size);
        let checkpoints = take((chunks.len() + 1) * (h_len + c_len));
        let carries = take(h_len + c_len);
        let bytes = (at as u64 * 4).max(4);
        if bytes > ctx.limits().max_buffer_size {
            return Err(RnnError::ExceedsLimits {
                what: "a sequence's inputs, outputs and gradients (bytes)".into(),
                needed: bytes,
                limit: Limit::BufferSize,
                allowed: ctx.limits().max_buffer_size,
                hint: "train on shorter sequences (truncated BPTT) or smaller batches".into(),
            });
        }
        let data = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("training sequence"),
            size: bytes,
            usage: wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let loss_uniform = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("loss"),
            size: std::mem::size_of::<LossParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let loss_bytes = (loss_len as u64 * 4).max(4);
        let binding_limit = ctx
            .limits()
            .max_storage_buffer_binding_size
            .min(ctx.limits().max_buffer_size);
        // Beyond a storage binding, a loss on the device cannot run: `record_loss` says so.
        let loss_group = (loss_bytes <= binding_limit).then(|| {
            ctx.counters()
                .bind_groups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.loss_kernels().map(|kernels| {
                ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("loss"),
                    layout: &kernels.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: loss_uniform.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &data,
                                offset: 0,
                                size: wgpu::BufferSize::new(loss_bytes),
                            }),
                        },
                    ],
                })
            })
        });
        let loss_group = loss_group.transpose()?;
        let readback = (frames * features.max(input_size) + 2 * (h_len + c_len)) as u64 * 4;
        let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("training readback"),
            size: readback.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(SequencePlan {
            seq_len: steps,
            batch,
            chunks,
            data,
            staging,
            lengths,
            input,
            output,
            d_output,
            d_input,
            checkpoints,
            carries,
            state_head: shape.state_head,
            target,
            partials,
            loss_uniform,
            loss_group,
            loss_bytes,
            loss_value: partials + loss_groups(frames, features) as usize,
            h_len,
            c_len,
        })
    }

    /// Records `loss` of the output (frames × `features`) against the target written at
    /// `target`: its gradient into `d_output`, its value after the partials (see
    /// [`loss_at`](Self::loss_at)); the backward's d_h_n and d_c_n cleared (the loss reads
    /// only the output).
    pub fn record_loss(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        uploads: &mut Uploads,
        loss: Loss,
        features: usize,
    ) -> Result<()> {
        // The output's rows: every frame, or one per sequence for a head on the final state.
        let frames = if self.state_head {
            self.batch
        } else {
            self.seq_len * self.batch
        };
        let params = LossParams {
            output: self.output as u32,
            target: self.target as u32,
            grad: self.d_output as u32,
            partials: self.partials as u32,
            value: self.loss_value as u32,
            target_stride: 1,
            ..loss_params(loss, frames, features)
        };
        let (kind, groups) = (params.kind, params.groups);
        uploads.copy(
            ctx,
            encoder,
            bytemuck::bytes_of(&params),
            &self.loss_uniform,
            0,
        );
        let carries = (self.h_len + self.c_len) as u64 * 4;
        if carries > 0 {
            encoder.clear_buffer(&self.data, self.carries as u64 * 4, Some(carries));
        }
        let Some(group) = &self.loss_group else {
            let limits = ctx.limits();
            return Err(RnnError::ExceedsLimits {
                what: "a loss's outputs, targets and gradients on the device (bytes)".into(),
                needed: self.loss_bytes,
                limit: Limit::StorageBinding,
                allowed: limits
                    .max_storage_buffer_binding_size
                    .min(limits.max_buffer_size),
                hint: "compute the loss on the host (forward_train, then backward with its \
                       gradient), or train on shorter sequences or smaller batches"
                    .into(),
            });
        };
        let kernels = ctx.loss_kernels()?;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_bind_group(0, group, &[]);
        pass.set_pipeline(match kind {
            0 => &kernels.mse,
            _ => &kernels.cross_entropy,
        });
        pass.dispatch_workgroups(groups, 1, 1);
        if groups > 1 {
            pass.set_pipeline(&kernels.total);
            pass.dispatch_workgroups(1, 1, 1);
        }
        Ok(())
    }

    /// Records a whole training iteration of a sequence of one chunk as `ws`'s one kernel
    /// (`TrainWorkspace::record_iteration`): the chunk's input and start state copied in,
    /// `loss`'s target (laid out where its gradient goes: `iteration_target`) and uniforms
    /// uploaded into the workspace, the backward's carries cleared, the kernel; then the
    /// final state kept as `record_forward` keeps it and the loss's value copied to
    /// [`loss_at`](Self::loss_at). `top`: where the workspace's output and its gradient lie.
    #[allow(clippy::too_many_arguments)]
    pub fn record_iteration(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        ws: &TrainWorkspace,
        uploads: &mut Uploads,
        loss: Loss,
        target: &[f32],
        (input_size, features): (usize, usize),
        (output, gradient): (usize, usize),
    ) -> Result<()> {
        debug_assert_eq!(self.chunks.len(), 1, "a whole iteration runs one chunk");
        let r = &ws.regions;
        self.load_chunk(encoder, ws, 0, input_size);
        let target = bytemuck::cast_slice(target);
        uploads.copy(ctx, encoder, target, &ws.work, gradient as u64 * 4);
        let params = LossParams {
            output: output as u32,
            target: gradient as u32,
            grad: gradient as u32,
            value: r.loss as u32,
            // The class indices lie in their rows' first elements.
            target_stride: features as u32,
            ..loss_params(loss, self.seq_len * self.batch, features)
        };
        let at = u64::from(LOSS_UNIFORM);
        uploads.copy(ctx, encoder, bytemuck::bytes_of(&params), &ws.ops, at);
        for (carry, len) in [(r.carry_h, self.h_len), (r.carry_c, self.c_len)] {
            if len > 0 {
                encoder.clear_buffer(&ws.work, carry as u64 * 4, Some(len as u64 * 4));
            }
        }
        ws.record_iteration(ctx, encoder, params.kind == 1)?;
        self.keep_final_state(encoder, ws, 0);
        Self::copy(
            encoder,
            (&ws.work, r.loss),
            (&self.data, self.loss_value),
            1,
        );
        Ok(())
    }

    /// Where the last recorded loss's value lies in `data`.
    pub fn loss_at(&self) -> usize {
        self.loss_value
    }

    /// The chunk lengths this plan runs (their workspaces must exist).
    pub fn chunk_lengths(&self) -> Vec<usize> {
        let mut lens: Vec<usize> = self.chunks.iter().map(|&(_, len)| len).collect();
        lens.dedup();
        lens
    }

    /// Chunk-local lengths of every chunk, from the sequences' `lengths` (all T when `None`).
    pub fn chunk_local_lengths(&self, lengths: Option<&[usize]>) -> Vec<u32> {
        let mut all = Vec::with_capacity(self.chunks.len() * self.batch);
        for &(start, len) in &self.chunks {
            for n in 0..self.batch {
                let total = lengths.map_or(self.seq_len, |l| l[n]);
                all.push(total.saturating_sub(start).min(len) as u32);
            }
        }
        all
    }

    fn checkpoint(&self, k: usize) -> usize {
        self.checkpoints + k * (self.h_len + self.c_len)
    }

    /// Copies `len` elements between two buffers (`len` may be zero).
    fn copy(
        encoder: &mut wgpu::CommandEncoder,
        (from, from_at): (&wgpu::Buffer, usize),
        (to, to_at): (&wgpu::Buffer, usize),
        len: usize,
    ) {
        if len > 0 {
            encoder.copy_buffer_to_buffer(
                from,
                from_at as u64 * 4,
                to,
                to_at as u64 * 4,
                len as u64 * 4,
            );
        }
    }

    /// Puts chunk `k`'s start state, lengths and input into `ws`.
    fn load_chunk(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        ws: &TrainWorkspace,
        k: usize,
        input_size: usize,
    ) {
        let r = &ws.regions;
        let (start, len) = self.chunks[k];
        let at = self.checkpoint(k);
        Self::copy(encoder, (&self.data, at), (&ws.work, r.state), self.h_len);
        Self::copy(
            encoder,
            (&self.data, at + self.h_len),
            (&ws.work, r.cstate),
            self.c_len,
        );
        Self::copy(
            encoder,
            (&self.data, at + self.h_len),
            (&ws.work, r.c0),
            self.c_len,
        );
        Self::copy(
            encoder,
            (&self.data, self.lengths + k * self.batch),
            (&ws.work, r.lengths),
            self.batch,
        );
        let frames = self.batch * input_size;
        Self::copy(
            encoder,
            (&self.data, self.input + start * frames),
            (&ws.work, r.x),
            len * frames,
        );
    }

    /// Records the forward of every chunk: each from the state the one before left (its start
    /// state kept as a checkpoint), its output copied out. `top`: where a workspace's output
    /// lies (the last layer's, or the head's).
    pub fn record_forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        workspaces: &Workspaces,
        input_size: usize,
        features: usize,
        top: &dyn Fn(&Regions) -> usize,
    ) -> Result<()> {
        for (k, &(start, len)) in self.chunks.iter().enumerate() {
            let ws = &workspaces[&(len, self.batch)];
            self.load_chunk(encoder, ws, k, input_size);
            ws.record(ctx, encoder, &ws.forward)?;
            let r = &ws.regions;
            let frames = self.batch * features;
            if !self.state_head {
                Self::copy(
                    encoder,
                    (&ws.work, top(r)),
                    (&self.data, self.output + start * frames),
                    len * frames,
                );
            } else if k + 1 == self.chunks.len() {
                // A head on the final state: its logits, (N, O), are the output.
                ws.record(ctx, encoder, &ws.state_forward)?;
                Self::copy(
                    encoder,
                    (&ws.work, r.head_out),
                    (&self.data, self.output),
                    frames,
                );
            }
            self.keep_final_state(encoder, ws, k);
        }
        Ok(())
    }

    /// Copies the state chunk `k` ended with (in the half its parity left it) to the
    /// checkpoint the next chunk starts from.
    fn keep_final_state(&self, encoder: &mut wgpu::CommandEncoder, ws: &TrainWorkspace, k: usize) {
        let r = &ws.regions;
        let half = self.chunks[k].1 % 2;
        let next = self.checkpoint(k + 1);
        Self::copy(
            encoder,
            (&ws.work, r.state + half * self.h_len),
            (&self.data, next),
            self.h_len,
        );
        Self::copy(
            encoder,
            (&ws.work, r.cstate + half * self.c_len),
            (&self.data, next + self.h_len),
            self.c_len,
        );
    }

    /// Records the backward of every chunk, the last first: the carries move from chunk to
    /// chunk, each chunk but the last is recomputed from its checkpoint first, and (with
    /// `input_grads`) each chunk's input gradient is copied out, and d h0, d c0 at the end.
    /// `top`: where a workspace's upstream gradient goes.
    #[allow(clippy::too_many_arguments)]
    pub fn record_backward(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        workspaces: &Workspaces,
        input_size: usize,
        features: usize,
        top: &dyn Fn(&Regions) -> usize,
        input_grads: bool,
    ) -> Result<()> {
        // Where the carries are: the uploaded d_h_n, d_c_n, then the last chunk's workspace.
        let mut carry_from: Option<&TrainWorkspace> = None;
        for (k, &(start, len)) in self.chunks.iter().enumerate().rev() {
            let ws = &workspaces[&(len, self.batch)];
            let r = &ws.regions;
            if k + 1 < self.chunks.len() {
                self.load_chunk(encoder, ws, k, input_size);
                ws.record(ctx, encoder, &ws.forward)?;
            }
            match carry_from {
                // Chunks of one length share a workspace: the carries are in place.
                Some(previous) if std::ptr::eq(previous, ws) => {}
                Some(previous) => {
                    let p = &previous.regions;
                    Self::copy(
                        encoder,
                        (&previous.work, p.carry_h),
                        (&ws.work, r.carry_h),
                        self.h_len,
                    );
                    Self::copy(
                        encoder,
                        (&previous.work, p.carry_c),
                        (&ws.work, r.carry_c),
                        self.c_len,
                    );
                }
                None => {
                    Self::copy(
                        encoder,
                        (&self.data, self.carries),
                        (&ws.work, r.carry_h),
                        self.h_len,
                    );
                    let c = self.carries + self.h_len;
                    Self::copy(encoder, (&self.data, c), (&ws.work, r.carry_c), self.c_len);
                }
            }
            let frames = self.batch * features;
            if !self.state_head {
                Self::copy(
                    encoder,
                    (&self.data, self.d_output + start * frames),
                    (&ws.work, top(r)),
                    len * frames,
                );
            } else {
                // Nothing reaches the frames; the head's gradient enters at the final state.
                let bytes = (len * self.batch * ws.output_width) as u64 * 4;
                encoder.clear_buffer(&ws.work, top(r) as u64 * 4, Some(bytes));
                if k + 1 == self.chunks.len() {
                    Self::copy(
                        encoder,
                        (&self.data, self.d_output),
                        (&ws.work, r.head_dout),
                        frames,
                    );
                    ws.record(ctx, encoder, &ws.state_backward)?;
                }
            }
            ws.record(ctx, encoder, ws.backward.select(input_grads, k == 0))?;
            if input_grads {
                let frames = self.batch * input_size;
                Self::copy(
                    encoder,
                    (&ws.work, r.dx),
                    (&self.data, self.d_input + start * frames),
                    len * frames,
                );
            }
            carry_from = Some(ws);
        }
        // d h0 and d c0 are the carries the first chunk left.
        if let Some(first) = carry_from.filter(|_| input_grads) {
            let r = &first.regions;
            Self::copy(
                encoder,
                (&first.work, r.carry_h),
                (&self.data, self.carries),
                self.h_len,
            );
            let c = self.carries + self.h_len;
            Self::copy(
                encoder,
                (&first.work, r.carry_c),
                (&self.data, c),
                self.c_len,
            );
        }
        Ok(())
    }
}
