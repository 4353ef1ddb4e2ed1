//! What one training iteration records, piece by piece, into a command encoder: the forward
//! (its uploads, every chunk, the carried state), the loss and the backward, clipping and the
//! optimizer's step. `train_step` records them all into one encoder (one submission); the
//! separate `Train` methods each submit their own.

use super::workspace::Regions;
use super::{GpuTrainer, LastForward, submit_and_read};
use crate::error::{Result, RnnError};
use crate::gpu::optim::{GpuClip, GpuOptimizerState};
use crate::layout::ForwardShape;
use crate::loss::{Loss, Target, check_target};
use crate::rnn::RnnOutput;
use crate::tensor::Tensor;
use crate::train::{Batch, InitialState, Optimizer, OptimizerState, Tape, next_id};

impl GpuTrainer {
    /// Records with `record` into a fresh encoder and submits it, once; wgpu's errors are
    /// captured and reported as `doing`. Nothing is submitted where recording failed.
    pub(super) fn submit(
        &mut self,
        doing: &str,
        record: impl FnOnce(&mut Self, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let scopes = ctx.error_scopes();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let recorded = record(self, &mut encoder);
        if recorded.is_ok() {
            self.uploads.flush(&ctx);
            ctx.queue().submit([encoder.finish()]);
        } else {
            self.uploads.discard();
        }
        let finished = scopes.finish(&ctx, doing);
        recorded.and(finished)
    }

    /// Where a workspace's output lies (a frame head's, else the last layer's), or with
    /// `gradient` where its upstream gradient goes. A head on the final state has its own
    /// regions (see `SequencePlan`): the frames are then the last layer's.
    pub(super) fn top_region(&self, r: &Regions, gradient: bool) -> usize {
        let frame_head = self.head_out.is_some() && !self.state_head();
        let last = self.config.num_layers - 1;
        match (frame_head, gradient) {
            (true, false) => r.head_out,
            (true, true) => r.head_dout,
            (false, false) => r.y[last],
            (false, true) => r.dy[last],
        }
    }

    /// The training forward: uploads, records every chunk, submits; reads the output and the
    /// final state back when `read` (else they stay on the device).
    pub(super) fn run_forward(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
        read: bool,
    ) -> Result<(Option<RnnOutput>, Tape)> {
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let scopes = ctx.error_scopes();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let recorded = self.record_forward(&mut encoder, input, lengths, state);
        let (shape, last) = match recorded {
            Ok(done) => done,
            Err(e) => {
                self.uploads.discard();
                let _ = scopes.finish(&ctx, "the training forward");
                return Err(e);
            }
        };
        self.uploads.flush(&ctx);
        let config = &self.config;
        let features = self.output_features();
        let plan = &self.sequences[&(shape.seq_len, shape.batch)];
        let output = if read {
            let parts = submit_and_read(
                &ctx,
                encoder,
                &plan.data,
                &plan.staging,
                &[
                    (plan.output, self.output_rows(&shape) * features),
                    (last, plan.h_len),
                    (last + plan.h_len, plan.c_len),
                ],
                "the training forward",
                scopes,
            )?;
            let output = match self.state_head() {
                true => parts[0].clone(),
                false => shape.scatter_sequence_first(&parts[0], features),
            };
            let output = Tensor::new(output, &self.output_shape(&shape))?;
            let h_n = Tensor::new(parts[1].clone(), &shape.state_shape(config))?;
            let c_n = match config.mode.has_cell_state() {
                true => Some(Tensor::new(
                    parts[2].clone(),
                    &shape.cell_state_shape(config),
                )?),
                false => None,
            };
            Some(RnnOutput { output, h_n, c_n })
        } else {
            ctx.queue().submit([encoder.finish()]);
            scopes.finish(&ctx, "the training forward")?;
            None
        };
        let tape = Tape {
            model: self.id,
            forward: self.last.as_ref().expect("set by the forward").id,
        };
        Ok((output, tape))
    }

    /// Uploads a training forward's inputs and records it into `encoder`; returns its shape
    /// and where the final state lies in the sequence's data. The caller holds the GL guard.
    pub(super) fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
    ) -> Result<(ForwardShape, usize)> {
        let shape = self.stage_forward(encoder, input, lengths, state)?;
        let plan = &self.sequences[&(shape.seq_len, shape.batch)];
        let top = |r: &Regions| self.top_region(r, false);
        plan.record_forward(
            &self.ctx,
            encoder,
            &self.workspaces,
            self.config.input_size,
            self.output_features(),
            &top,
        )?;
        Ok((shape, self.finish_forward(encoder, shape)))
    }

    /// Checks a training forward's input and uploads it, its lengths and its initial state
    /// into the sequence's data (making the sequence's plan and workspaces the first time);
    /// its shape.
    fn stage_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
    ) -> Result<ForwardShape> {
        let config = self.config.clone();
        let hx = match state {
            InitialState::Given(hx) => Some(hx),
            _ => None,
        };
        let shape = ForwardShape::resolve(&config, input, hx, lengths)?;
        self.ctx.check_alive()?;
        let ctx = self.ctx.clone();
        let (steps, batch) = (shape.seq_len, shape.batch);
        self.last = None;
        self.make_sequence(steps, batch)?;
        let carried = match state {
            InitialState::Carried => self.carried_state(batch)?,
            _ => None,
        };
        if self.carry.as_ref().is_none_or(|(n, _)| *n != batch) {
            let plan = &self.sequences[&(steps, batch)];
            let bytes = ((plan.h_len + plan.c_len) as u64 * 4).max(4);
            let keep = ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("carried state"),
                size: bytes,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.carry = Some((batch, keep));
        }
        let plan = &self.sequences[&(steps, batch)];
        let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);

        // Sequence-first input, frames past a sequence's length zeroed (PyTorch's packed
        // sequences never read them; a NaN there must not reach the weight gradients).
        let mut x = shape.gather_sequence_first(input.data(), config.input_size);
        for t in 0..steps {
            for n in (0..batch).filter(|&n| !valid(t, n)) {
                let at = (t * batch + n) * config.input_size;
                x[at..at + config.input_size].fill(0.0);
            }
        }
        let uploads = &mut self.uploads;
        uploads.copy(
            &ctx,
            encoder,
            bytemuck::cast_slice(&x),
            &plan.data,
            plan.input as u64 * 4,
        );
        let local_lengths = plan.chunk_local_lengths(lengths);
        let lengths_bytes = bytemuck::cast_slice(&local_lengths);
        uploads.copy(
            &ctx,
            encoder,
            lengths_bytes,
            &plan.data,
            plan.lengths as u64 * 4,
        );
        let states = (plan.h_len + plan.c_len) as u64 * 4;
        match (&carried, hx) {
            // The last forward's final state, detached: copied on the device.
            (Some(from), _) => {
                if states > 0 {
                    encoder.copy_buffer_to_buffer(
                        from,
                        0,
                        &plan.data,
                        plan.checkpoints as u64 * 4,
                        states,
                    );
                }
            }
            (None, Some(hx)) => {
                let at = plan.checkpoints as u64 * 4;
                let h0 = bytemuck::cast_slice(hx.h0.data());
                uploads.copy(&ctx, encoder, h0, &plan.data, at);
                if let Some(c0) = hx.c0 {
                    let c0 = bytemuck::cast_slice(c0.data());
                    uploads.copy(&ctx, encoder, c0, &plan.data, at + plan.h_len as u64 * 4);
                }
            }
            (None, None) => {
                if states > 0 {
                    encoder.clear_buffer(&plan.data, plan.checkpoints as u64 * 4, Some(states));
                }
            }
        }
        Ok(shape)
    }

    /// After a recorded forward of `shape`: keeps its final state for a later forward that
    /// carries it, and makes it the model's latest forward. Where the final state lies in the
    /// sequence's data.
    fn finish_forward(&mut self, encoder: &mut wgpu::CommandEncoder, shape: ForwardShape) -> usize {
        let plan = &self.sequences[&(shape.seq_len, shape.batch)];
        let last = plan.checkpoints + plan.chunks.len() * (plan.h_len + plan.c_len);
        let states = (plan.h_len + plan.c_len) as u64 * 4;
        if let Some((_, keep)) = &self.carry {
            if states > 0 {
                encoder.copy_buffer_to_buffer(&plan.data, last as u64 * 4, keep, 0, states);
            }
        }
        self.carry_batch = Some(shape.batch);
        self.last = Some(LastForward {
            id: next_id(),
            shape,
        });
        last
    }

    /// `target` checked against the output of a forward of `shape` and laid out as the loss
    /// kernels read it: sequence-first, values (MSE) or class indices (cross-entropy) per row.
    fn staged_target(
        &self,
        shape: &ForwardShape,
        loss: Loss,
        target: Target<'_>,
    ) -> Result<Vec<f32>> {
        let features = self.output_features();
        let rows = self.output_rows(shape);
        let target = check_target(loss, target, &self.output_shape(shape), rows, features)?;
        let width = if matches!(loss, Loss::Mse(_)) {
            features
        } else {
            1
        };
        Ok(match self.state_head() {
            true => target,
            false => shape.gather_sequence_first(&target, width),
        })
    }

    /// Records the loss of the forward `tape` recorded and its backward into `encoder`.
    pub(super) fn record_loss_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        tape: Tape,
        loss: Loss,
        target: Target<'_>,
    ) -> Result<()> {
        let shape = self.taped_shape(&tape)?;
        let features = self.output_features();
        let (steps, batch) = (shape.seq_len, shape.batch);
        let target = self.staged_target(&shape, loss, target)?;
        self.ctx.check_alive()?;
        let ctx = self.ctx.clone();
        let plan = &self.sequences[&(steps, batch)];
        let target_at = plan.target as u64 * 4;
        let uploads = &mut self.uploads;
        uploads.copy(
            &ctx,
            encoder,
            bytemuck::cast_slice(&target),
            &plan.data,
            target_at,
        );
        plan.record_loss(&ctx, encoder, uploads, loss, features)?;
        let loss_at = plan.loss_at();
        self.record_backward_of(encoder, (steps, batch), false)?;
        self.loss_at = Some(((steps, batch), loss_at));
        Ok(())
    }

    /// Records the backward of the forward of `(steps, batch)` recorded, its upstream
    /// gradients in place, into `encoder`: the parameters' gradients and, with `input_grads`,
    /// d input, d h0 and d c0. The forward's saved values are gone after it, whether it
    /// recorded or not.
    pub(super) fn record_backward_of(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        key: (usize, usize),
        input_grads: bool,
    ) -> Result<()> {
        let (input_size, features) = (self.config.input_size, self.output_features());
        let top = |r: &Regions| self.top_region(r, true);
        let recorded = self.sequences[&key].record_backward(
            &self.ctx,
            encoder,
            &self.workspaces,
            input_size,
            features,
            &top,
            input_grads,
        );
        // The gates' gradients overwrite what the forward saved.
        self.last = None;
        recorded
    }

    /// Records a whole iteration (`Train::train_step`) into `encoder`.
    pub(super) fn record_train_step(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        batch: Batch<'_>,
        loss: Loss,
        optimizer: &mut Optimizer,
        clip: Option<f32>,
    ) -> Result<()> {
        encoder.clear_buffer(&self.grads, 0, None);
        let shape = self.stage_forward(encoder, batch.input, batch.lengths, batch.state)?;
        let key = (shape.seq_len, shape.batch);
        let plan = &self.sequences[&key];
        let ws = &self.workspaces[&(plan.chunks[0].1, shape.batch)];
        if plan.chunks.len() == 1 && ws.has_iteration() {
            // A small model's forward, loss and backward: one kernel (the same values as the
            // separate programs and loss pass below).
            let target = self.iteration_target(&shape, loss, batch.target)?;
            let top = (
                self.top_region(&ws.regions, false),
                self.top_region(&ws.regions, true),
            );
            let sizes = (self.config.input_size, self.output_features());
            plan.record_iteration(
                &self.ctx,
                encoder,
                ws,
                &mut self.uploads,
                loss,
                &target,
                sizes,
                top,
            )?;
            let loss_at = plan.loss_at();
            self.finish_forward(encoder, shape);
            self.last = None;
            self.loss_at = Some((key, loss_at));
        } else {
            let top = |r: &Regions| self.top_region(r, false);
            let sizes = (self.config.input_size, self.output_features());
            plan.record_forward(&self.ctx, encoder, &self.workspaces, sizes.0, sizes.1, &top)?;
            self.finish_forward(encoder, shape);
            let tape = Tape {
                model: self.id,
                forward: self.last.as_ref().expect("set by the forward").id,
            };
            self.record_loss_backward(encoder, tape, loss, batch.target)?;
        }
        match clip {
            Some(max_norm) => self.record_clip_and_step(encoder, max_norm, optimizer),
            None => self.record_step(encoder, optimizer),
        }
    }

    /// A whole iteration's target (`staged_target`) laid out where the loss's gradient goes
    /// (`SequencePlan::record_iteration`): MSE's values as they are, a cross-entropy's class
    /// index in the first element of its row of `features`.
    fn iteration_target(
        &self,
        shape: &ForwardShape,
        loss: Loss,
        target: Target<'_>,
    ) -> Result<Vec<f32>> {
        let staged = self.staged_target(shape, loss, target)?;
        Ok(match loss {
            Loss::Mse(_) => staged,
            Loss::CrossEntropy(_) => {
                let features = self.output_features();
                let mut rows = vec![0.0; staged.len() * features];
                for (row, &class) in rows.chunks_exact_mut(features).zip(&staged) {
                    row[0] = class;
                }
                rows
            }
        })
    }

    /// Records `optimizer`'s next step into `encoder`.
    pub(super) fn record_step(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        optimizer: &mut Optimizer,
    ) -> Result<()> {
        let state = self.gpu_state(optimizer)?;
        let step = optimizer.step + 1;
        state.record_step(
            &self.ctx,
            encoder,
            &mut self.uploads,
            &optimizer.config,
            step,
        )?;
        optimizer.step += 1;
        Ok(())
    }

    /// `optimizer`'s state on this model's device.
    fn gpu_state<'o>(&self, optimizer: &'o Optimizer) -> Result<&'o GpuOptimizerState> {
        optimizer.check_model(self.id)?;
        match &optimizer.state {
            OptimizerState::Gpu(state) => Ok(state),
            _ => Err(RnnError::InvalidConfig(
                "this optimizer's state is on the CPU, not this GPU".into(),
            )),
        }
    }

    /// Records `clip_grad_norm_(max_norm)` and `optimizer`'s next step into `encoder` (one
    /// dispatch for a small model: `GpuOptimizerState::record_clip_and_step`).
    fn record_clip_and_step(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        max_norm: f32,
        optimizer: &mut Optimizer,
    ) -> Result<()> {
        let state = self.gpu_state(optimizer)?;
        let step = optimizer.step + 1;
        self.make_clip()?;
        let clip = self.clip.as_ref().expect("made above");
        state.record_clip_and_step(
            &self.ctx,
            encoder,
            &mut self.uploads,
            clip,
            max_norm,
            &optimizer.config,
            step,
        )?;
        self.clipped = true;
        optimizer.step += 1;
        Ok(())
    }

    /// Records `clip_grad_norm_(max_norm)` into `encoder`.
    pub(super) fn record_clip(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        max_norm: f32,
    ) -> Result<()> {
        self.make_clip()?;
        let clip = self.clip.as_ref().expect("made above");
        clip.record(&self.ctx, encoder, &mut self.uploads, max_norm)?;
        self.clipped = true;
        Ok(())
    }

    /// Makes clipping's buffers, the first time.
    fn make_clip(&mut self) -> Result<()> {
        if self.clip.is_none() {
            let ranges = self.layout.ranges();
            let clip = GpuClip::new(
                &self.ctx,
                &self.params,
                &self.grads,
                self.layout.len,
                &ranges,
            )?;
            self.clip = Some(clip);
        }
        Ok(())
    }

    /// The buffer that keeps the final state for `InitialState::Carried`: `None` (zeros) before
    /// any forward; an error when the last forward had another batch size.
    fn carried_state(&mut self, batch: usize) -> Result<Option<wgpu::Buffer>> {
        match self.carry_batch {
            None => Ok(None),
            Some(n) if n != batch => Err(RnnError::ShapeMismatch {
                what: "the carried state",
                expected: format!("a batch of {n}, the last forward's"),
                got: format!("a batch of {batch}"),
            }),
            Some(_) => Ok(self.carry.as_ref().map(|(_, b)| b.clone())),
        }
    }
}
