//! Time chunks: how much of a sequence one submission runs, and running the rest chunk by
//! chunk with the hidden state carried on the GPU in between.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Limit, Result, RnnError};
use crate::gpu::engine::Engine;
use crate::gpu::kernels::PROJECTION_TILE;
use crate::gpu::scheduler::{self, InitialState, Run};
use crate::gpu::workspace::{TIMESTAMP_BYTES, Workspace};
use crate::layout::{ForwardShape, TimeSlice};

impl Engine {
    /// Elements of the state (h, and an LSTM's c) for a batch of `batch`.
    pub(crate) fn state_len(&self, batch: usize) -> usize {
        self.arch.state_len(batch)
    }

    /// See [`GpuRnn::time_chunk`](crate::GpuRnn::time_chunk).
    pub(crate) fn time_chunk(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let shape = ForwardShape {
            seq_len,
            batch,
            unbatched: false,
            batch_first: false,
        };
        self.chunk_len(&shape)
    }

    /// How many layers own their input projection in a forward over (T = `seq_len`,
    /// N = `batch`) in the model's layout, in its first time chunk: (projecting ahead, fusing
    /// the input); see [`GpuRnn::layers_projecting_ahead`] and [`GpuRnn::layers_fusing_input`].
    /// Makes that chunk's workspace as the forward would.
    ///
    /// [`GpuRnn::layers_projecting_ahead`]: crate::GpuRnn::layers_projecting_ahead
    /// [`GpuRnn::layers_fusing_input`]: crate::GpuRnn::layers_fusing_input
    pub(crate) fn layer_plans(
        &self,
        seq_len: usize,
        batch: usize,
        batch_first: bool,
    ) -> Result<(usize, usize)> {
        let shape = ForwardShape {
            seq_len,
            batch,
            unbatched: false,
            batch_first,
        };
        let part = ForwardShape {
            seq_len: self.chunk_len(&shape)?.min(seq_len),
            ..shape
        };
        let workspace = self.workspace(&part)?;
        let ws = lock(&workspace)?;
        Ok(ws.plan.own_input_counts())
    }

    pub(crate) fn set_profiling(&self, on: bool) {
        self.profiling.store(on, Ordering::Relaxed);
    }

    /// Checks that a state for `batch` sequences fits one buffer of the device
    /// (so that `state_len` cannot overflow either).
    fn check_state_fits(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(RnnError::shape("batch", "at least one sequence", &[batch]));
        }
        let limits = self.ctx.limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        // Two halves of it live in one storage buffer.
        let per_sequence = (self.state_len(1) as u64).saturating_mul(4 * 2);
        let needed = (batch as u64).saturating_mul(per_sequence);
        if needed > binding {
            return Err(RnnError::exceeds(
                format!("the hidden state of {batch} sequences (both halves), in bytes"),
                needed,
                Limit::StorageBinding,
                binding,
                format!(
                    "use a smaller batch: at most {} sequences",
                    binding / per_sequence.max(1)
                ),
            ));
        }
        Ok(())
    }

    /// The longest time chunk of `shape` that fits the adapter's limits and the budget.
    pub(crate) fn chunk_len(&self, shape: &ForwardShape) -> Result<usize> {
        if shape.seq_len == 0 || shape.batch == 0 {
            return Err(RnnError::shape(
                "input",
                "at least one timestep and one sequence",
                &[shape.seq_len, shape.batch],
            ));
        }
        self.check_state_fits(shape.batch)?;
        let limits = self.ctx.limits();
        let arch = &self.arch;
        let batch = shape.batch as u64;
        // Saturating: absurd shapes must come out as "too large", not as an overflow.
        let floats = |n: usize| (n as u64).saturating_mul(4);
        let widest = arch
            .input_size
            .max(arch.projection_cols())
            .max(self.output_features());
        let frame = floats(widest).saturating_mul(batch);
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let align = u64::from(limits.min_uniform_buffer_offset_alignment.max(16));
        let state_bytes = floats(self.state_len(shape.batch));
        // The readback holds a chunk's result, the final state and the timestamps; with
        // unified memory it is the result's storage buffer itself, so it must fit a binding.
        let result_frame = floats(self.output_features()).saturating_mul(batch);
        let readback_fixed = state_bytes + TIMESTAMP_BYTES;
        let max_groups = u64::from(limits.max_compute_workgroups_per_dimension);
        // The projection runs one workgroup per 32 rows (T·N) of its frames.
        let rows_per_group = u64::from(PROJECTION_TILE);
        let by_limit = [
            (binding / frame, Limit::StorageBinding),
            (
                binding.saturating_sub(readback_fixed) / result_frame,
                Limit::StorageBinding,
            ),
            (limits.max_buffer_size / align, Limit::BufferSize),
            (
                max_groups * rows_per_group / batch,
                Limit::WorkgroupsPerDimension,
            ),
        ];
        if let Some(&(_, limit)) = by_limit.iter().find(|(chunk, _)| *chunk == 0) {
            // Not even one timestep fits: name the limit and what would fit.
            let smaller_batch = |per_sequence: u64, room: u64| {
                format!(
                    "use a smaller batch: at most {} sequences per forward",
                    room / per_sequence.max(1)
                )
            };
            return Err(match limit {
                Limit::StorageBinding if frame > binding => RnnError::exceeds(
                    format!("one timestep of {batch} sequences ({widest} features each), in bytes"),
                    frame,
                    limit,
                    binding,
                    smaller_batch(floats(widest), binding),
                ),
                Limit::StorageBinding => RnnError::exceeds(
                    format!(
                        "one timestep's result of {batch} sequences and their final state, \
                         read back together, in bytes"
                    ),
                    readback_fixed.saturating_add(result_frame),
                    limit,
                    binding,
                    smaller_batch(
                        floats(self.output_features() + self.state_len(1)),
                        binding - TIMESTAMP_BYTES.min(binding),
                    ),
                ),
                Limit::BufferSize => RnnError::exceeds(
                    "a timestep's uniform slot, in bytes",
                    align,
                    limit,
                    limits.max_buffer_size,
                    "the device's buffers are too small for any forward",
                ),
                _ => RnnError::exceeds(
                    format!("projection workgroups for one timestep of {batch} sequences (N / 32)"),
                    batch.div_ceil(rows_per_group),
                    limit,
                    max_groups,
                    smaller_batch(1, max_groups * rows_per_group),
                ),
            });
        }
        let mut chunk = by_limit.iter().map(|&(chunk, _)| chunk).min().unwrap_or(0);
        let budget = self.budget.load(Ordering::Relaxed);
        if budget != u64::MAX {
            // Which layers fuse their input does not depend on T: ask of a chunk within the
            // limits (a frame of the widest features fits a binding), whose sizes cannot
            // overflow.
            let within_limits = ForwardShape {
                seq_len: chunk.min(shape.seq_len as u64) as usize,
                ..*shape
            };
            // Per timestep: input and its upload, projections (none where every layer
            // computes its own), layer output, the result (head output) and its readback, a
            // step uniform.
            let projections = if self.fuses_every_layer(&within_limits) {
                0
            } else {
                floats(arch.projection_cols())
            };
            let per_step =
                (2 * floats(arch.input_size) + projections + 2 * floats(arch.output_size()))
                    .saturating_mul(batch)
                    .saturating_add(2 * result_frame)
                    .saturating_add(align);
            // Per call: two state halves, their readback, the lengths, a projected LSTM's
            // scratch.
            let scratch = floats(arch.directions * arch.hidden_size).saturating_mul(batch);
            let fixed = (3 * state_bytes)
                .saturating_add(floats(shape.batch))
                .saturating_add(scratch);
            chunk = chunk.min(budget.saturating_sub(fixed) / per_step);
            if chunk == 0 {
                let needed = fixed.saturating_add(per_step);
                return Err(RnnError::exceeds(
                    format!("a workspace for one timestep of {batch} sequences, in bytes"),
                    needed,
                    Limit::WorkspaceBudget,
                    budget,
                    format!("raise the budget to at least {needed} bytes, or use a smaller batch"),
                ));
            }
        }
        let chunk = chunk.min(shape.seq_len as u64) as usize;
        Ok(chunk)
    }

    /// Runs `input` (in `shape`'s layout) in time chunks of `chunk` frames. The state starts
    /// from `initial`; between chunks it is carried in `carry` on the GPU, where the final
    /// state is also left. Returns (output in `shape`'s layout, final state).
    pub(crate) fn run_chunks(
        &self,
        shape: &ForwardShape,
        input: &[f32],
        lengths: Option<&[usize]>,
        initial: InitialState<'_>,
        carry: Option<&wgpu::Buffer>,
        chunk: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let profile = self.profiling.load(Ordering::Relaxed);
        // The GPU time of every chunk's submission, summed; `None` if any could not be timed.
        let mut gpu_time = profile.then_some(Duration::ZERO);
        let mut add_time = |time: Option<Duration>| {
            gpu_time = gpu_time.zip(time).map(|(sum, t)| sum + t);
        };
        let (steps, batch) = (shape.seq_len, shape.batch);
        let (in_features, out_features) = (self.arch.input_size, self.output_features());
        if chunk >= steps {
            let workspace = self.workspace(shape)?;
            let mut ws = lock(&workspace)?;
            let run = Run {
                write_input: &|put| put(0, input),
                lengths,
                initial,
                final_state: carry,
                profile,
            };
            let result = scheduler::run(&self.ctx, &self.arch, &mut ws, run, <[f32]>::to_vec)?;
            add_time(result.gpu_time);
            self.set_last_gpu_time(gpu_time);
            return Ok((result.output, result.state));
        }
        let carry =
            carry.ok_or_else(|| RnnError::Gpu("chunked run without a carry buffer".into()))?;
        // The input exists, but a head may make the output wider than it: check its size.
        let output_len = steps
            .checked_mul(batch)
            .and_then(|frames| frames.checked_mul(out_features))
            .ok_or_else(|| {
                RnnError::shape(
                    "output",
                    "a size that fits in memory",
                    &[steps, batch, out_features],
                )
            })?;
        let mut output = vec![0.0f32; output_len];
        let mut state = Vec::new();
        for t0 in (0..steps).step_by(chunk) {
            let len = chunk.min(steps - t0);
            let part = ForwardShape {
                seq_len: len,
                ..*shape
            };
            let frames = |features: usize| TimeSlice {
                shape: *shape,
                t0,
                len,
                features,
            };
            let chunk_lengths: Option<Vec<usize>> =
                lengths.map(|l| l.iter().map(|&l| l.saturating_sub(t0).min(len)).collect());
            let workspace = self.workspace(&part)?;
            let mut ws = lock(&workspace)?;
            // Each chunk's frames go straight from the caller's input into the mapped upload
            // buffer, and from the mapped readback into the output: no copies in between.
            let run = Run {
                write_input: &|put| frames(in_features).gather_with(input, put),
                lengths: chunk_lengths.as_deref(),
                initial: if t0 == 0 {
                    initial
                } else {
                    InitialState::Device(carry)
                },
                final_state: Some(carry),
                profile,
            };
            let scatter = |part: &[f32]| frames(out_features).scatter(part, &mut output);
            let result = scheduler::run(&self.ctx, &self.arch, &mut ws, run, scatter)?;
            add_time(result.gpu_time);
            state = result.state;
        }
        self.set_last_gpu_time(gpu_time);
        Ok((output, state))
    }

    /// A GPU buffer holding a state (h, and an LSTM's c), zeroed.
    pub(crate) fn state_buffer(&self, batch: usize) -> Result<wgpu::Buffer> {
        self.check_state_fits(batch)?;
        let scopes = self.ctx.error_scopes();
        let buffer = self.ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("carried state"),
            size: (self.state_len(batch).max(1) * 4) as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        scopes.finish(&self.ctx, "allocating the carried state")?;
        Ok(buffer)
    }
}

fn lock(workspace: &Mutex<Workspace>) -> Result<std::sync::MutexGuard<'_, Workspace>> {
    workspace
        .lock()
        .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))
}
