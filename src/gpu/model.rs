//! `GpuRnn`: an `nn.RNN` on the GPU engine.

use std::time::Duration;

use crate::config::RnnConfig;
use crate::error::Result;
use crate::gpu::architecture::{Architecture, UnitWeights};
use crate::gpu::context::GpuContext;
use crate::gpu::engine::{Engine, GpuOptions, Recurrence};
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::rnn::{Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// An `nn.RNN` on a GPU. Weights are uploaded once; the working buffers of each (T, N) are
/// made on its first forward and reused. `Send + Sync`: share it between threads freely.
pub struct GpuRnn {
    pub(crate) engine: Engine,
    pub(crate) config: RnnConfig,
}

impl std::fmt::Debug for GpuRnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRnn")
            .field("config", &self.config)
            .field("context", &self.engine.ctx)
            .finish_non_exhaustive()
    }
}

impl GpuRnn {
    /// Uploads `weights` for `config` to the context's device, with the default options.
    pub fn new(ctx: &GpuContext, config: RnnConfig, weights: &RnnWeights) -> Result<Self> {
        Self::with_options(ctx, config, weights, GpuOptions::default())
    }

    /// Like [`new`](Self::new), with `options`. Compiles the persistent kernel for this
    /// hidden size when it is chosen (once per context and size).
    pub fn with_options(
        ctx: &GpuContext,
        config: RnnConfig,
        weights: &RnnWeights,
        options: GpuOptions,
    ) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        let _gl = ctx.gl_guard();
        let units = UnitWeights::of_rnn(&config, weights);
        let engine = Engine::build(ctx, Architecture::from(&config), &units, options)?;
        Ok(GpuRnn { engine, config })
    }

    /// Adds a Linear head, uploaded once: every output frame becomes `h_t·Wᵀ + b`,
    /// computed on the GPU right after the last layer, (…, out_features).
    pub fn with_head(mut self, head: &Linear) -> Result<Self> {
        self.engine.set_head(head)?;
        Ok(self)
    }

    /// The recurrent kernel this model runs: [`Recurrence::PerStep`] or
    /// [`Recurrence::Persistent`].
    pub fn recurrence(&self) -> Recurrence {
        self.engine.recurrence()
    }

    /// Features of each output frame: the head's `out_features`, or D·H without a head.
    pub fn output_features(&self) -> usize {
        self.engine.output_features()
    }

    /// The context this model runs on.
    pub fn context(&self) -> &GpuContext {
        &self.engine.ctx
    }

    /// Caps the GPU memory one forward's working buffers may use, in bytes (`None`: only
    /// the adapter's limits). Longer sequences then run in time chunks, carrying the state on
    /// the GPU, with the same results; memory stays proportional to the chunk, not to T.
    /// Bidirectional models, whose reverse direction needs the whole sequence, then run one
    /// layer and direction at a time (each chunked), passing each layer's output through host
    /// memory; with a Linear head they report [`RnnError::ExceedsLimits`](crate::RnnError)
    /// instead.
    pub fn set_workspace_budget(&self, bytes: Option<u64>) {
        self.engine.set_workspace_budget(bytes);
    }

    /// How many timesteps one submission of a forward over (T = `seq_len`, N = `batch`) runs:
    /// T when the whole sequence fits the adapter's limits and the workspace budget, less
    /// when it runs in time chunks.
    pub fn time_chunk(&self, seq_len: usize, batch: usize) -> Result<usize> {
        self.engine.time_chunk(seq_len, batch)
    }

    /// How many of the model's layers, in a forward over (T = `seq_len`, N = `batch`), run
    /// the persistent kernel projecting ahead: one workgroup of the recurrence's dispatch
    /// computes the input projection of the timesteps its next dispatch runs, on a core the
    /// recurrence leaves idle. Used on CPU adapters with subgroups, for unidirectional layers
    /// whose recurrence is one workgroup (N = 1, or N = 4 with H ≤ 64) and whose projection
    /// is large enough (I·H ≥ 128²) but no wider than the recurrence (I ≤ H); the others
    /// project all timesteps first. Makes the workspace of that shape, as its first forward
    /// would.
    pub fn layers_projecting_ahead(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let (ahead, _) = self
            .engine
            .layer_plans(seq_len, batch, self.config.batch_first)?;
        Ok(ahead)
    }

    /// How many of the model's layers, in a forward over (T = `seq_len`, N = `batch`), run
    /// the persistent kernel computing their input projection themselves, x_t·W_ihᵀ + b in
    /// each step, instead of one projection GEMM over all timesteps before it. Used on CPU
    /// adapters with subgroups where the recurrence is one subgroup (H ≤ 64 on lavapipe), the
    /// input no wider than the padded state and a multiple of four, and (above the first
    /// layer) the layer unidirectional and writing its output where it reads its input.
    /// Makes the workspace of that shape, as its first forward would.
    pub fn layers_fusing_input(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let (_, fused) = self
            .engine
            .layer_plans(seq_len, batch, self.config.batch_first)?;
        Ok(fused)
    }

    /// Turns GPU timing on or off (off by default). While on, every forward measures the GPU
    /// execution time of its compute work with timestamp queries, on adapters that have them
    /// (`Features::TIMESTAMP_QUERY`); read it with [`last_gpu_time`](Self::last_gpu_time).
    pub fn set_profiling(&self, on: bool) {
        self.engine.set_profiling(on);
    }

    /// The GPU execution time of the last forward (summed over its time chunks), when
    /// profiling is on and the adapter has timestamp queries; `None` otherwise.
    pub fn last_gpu_time(&self) -> Option<Duration> {
        self.engine.last_gpu_time()
    }

    fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        let _gl = self.engine.ctx.gl_guard();
        let shape = ForwardShape::resolve(&self.config, input, h0)?;
        let (output, h_n) =
            self.engine
                .forward(&shape, input.data(), h0.map(Tensor::data), lengths)?;
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.frames_shape(self.output_features()))?,
            h_n: Tensor::new(h_n, &shape.state_shape(&self.config))?,
        })
    }
}

impl Rnn for GpuRnn {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<RnnOutput> {
        self.forward_masked(input, h0, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
    ) -> Result<RnnOutput> {
        self.forward_masked(input, h0, Some(lengths))
    }
}
