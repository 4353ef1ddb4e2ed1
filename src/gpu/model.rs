//! `GpuRnn`: an `nn.RNN`, `nn.LSTM` or `nn.GRU` on the GPU engine.

use std::time::Duration;

use crate::config::{RnnConfig, RnnMode};
use crate::error::Result;
use crate::gpu::architecture::{Architecture, UnitWeights};
use crate::gpu::context::GpuContext;
use crate::gpu::engine::{Engine, GpuOptions, Recurrence};
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::rnn::{Hx, Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// An `nn.RNN`, `nn.LSTM` or `nn.GRU` on a GPU: per layer, one projection GEMM of every
/// timestep's input (all gates), then the recurrence, the whole forward in one submission.
/// Weights are uploaded once; the working buffers of each (T, N) are made on its first
/// forward and reused. `Send + Sync`: share it between threads freely.
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
    /// cell and hidden size when it is chosen (once per context and size).
    pub fn with_options(
        ctx: &GpuContext,
        config: RnnConfig,
        weights: &RnnWeights,
        options: GpuOptions,
    ) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        let _gl = ctx.gl_guard();
        let units = UnitWeights::of(&config, weights);
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

    /// Features of each output frame: the head's `out_features`, or D·H_out without a head.
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

    /// Test hook: how many of the model's layers, in a forward over (T = `seq_len`,
    /// N = `batch`), run the persistent kernel projecting ahead (one workgroup of the
    /// recurrence's dispatch computes the input projection of the timesteps its next dispatch
    /// runs). An internal heuristic, not an API: it may change with any release. Makes the
    /// workspace of that shape, as its first forward would.
    #[doc(hidden)]
    pub fn layers_projecting_ahead(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let (ahead, _) = self
            .engine
            .layer_plans(seq_len, batch, self.config.batch_first)?;
        Ok(ahead)
    }

    /// Test hook: how many of the model's layers, in a forward over (T = `seq_len`,
    /// N = `batch`), run the persistent kernel computing their input projection themselves
    /// (x_t·W_ihᵀ + b in each step, no projection GEMM). An internal heuristic, not an API.
    /// Makes the workspace of that shape, as its first forward would.
    #[doc(hidden)]
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
        hx: Option<Hx<'_>>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        let _gl = self.engine.ctx.gl_guard();
        let config = &self.config;
        let shape = ForwardShape::resolve(config, input, hx, lengths)?;
        // The engine's state is the h block, then the c block: PyTorch's h0 then c0.
        let initial = hx.map(|hx| match hx.c0 {
            Some(c0) => [hx.h0.data(), c0.data()].concat(),
            None => hx.h0.data().to_vec(),
        });
        let (output, mut state) =
            self.engine
                .forward(&shape, input.data(), initial.as_deref(), lengths)?;
        let c_n = state.split_off(self.engine.arch.h_len(shape.batch));
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.frames_shape(self.output_features()))?,
            h_n: Tensor::new(state, &shape.state_shape(config))?,
            c_n: match config.mode {
                RnnMode::Lstm => Some(Tensor::new(c_n, &shape.cell_state_shape(config))?),
                _ => None,
            },
        })
    }
}

impl Rnn for GpuRnn {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward(&self, input: &Tensor, hx: Option<Hx<'_>>) -> Result<RnnOutput> {
        self.forward_masked(input, hx, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        hx: Option<Hx<'_>>,
    ) -> Result<RnnOutput> {
        self.forward_masked(input, hx, Some(lengths))
    }
}
