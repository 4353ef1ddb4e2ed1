//! `GpuGatedRnn`: an `nn.LSTM` or `nn.GRU` on the GPU engine the Elman RNN runs on.

use std::time::Duration;

use super::config::{GateKind, GatedConfig};
use super::weights::GatedWeights;
use super::{GatedOutput, GatedRnn};
use crate::error::Result;
use crate::gpu::architecture::{Architecture, UnitWeights};
use crate::gpu::context::GpuContext;
use crate::gpu::engine::{Engine, GpuOptions, Recurrence};
use crate::gpu::stream::{RnnStream, StreamOptions};
use crate::head::Linear;
use crate::tensor::Tensor;

/// An `nn.LSTM` or `nn.GRU` on a GPU: per layer, one projection GEMM of every timestep's
/// gates, then one fused kernel per timestep (two for an LSTM with `proj_size`), the whole
/// forward in one submission. Weights are uploaded once, working buffers made once per
/// (T, N). `Send + Sync`.
pub struct GpuGatedRnn {
    engine: Engine,
    config: GatedConfig,
}

impl std::fmt::Debug for GpuGatedRnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuGatedRnn")
            .field("config", &self.config)
            .field("context", &self.engine.ctx)
            .finish_non_exhaustive()
    }
}

impl GpuGatedRnn {
    /// Uploads `weights` for `config` to the context's device.
    pub fn new(ctx: &GpuContext, config: GatedConfig, weights: &GatedWeights) -> Result<Self> {
        Self::with_options(ctx, config, weights, GpuOptions::default())
    }

    /// Like [`new`](Self::new), with `options` ([`Recurrence::Persistent`] runs the gated
    /// persistent kernel; an LSTM with `proj_size` refuses it).
    pub fn with_options(
        ctx: &GpuContext,
        config: GatedConfig,
        weights: &GatedWeights,
        options: GpuOptions,
    ) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        let _gl = ctx.gl_guard();
        let units = UnitWeights::of_gated(&config, weights);
        let engine = Engine::build(ctx, Architecture::from(&config), &units, options)?;
        Ok(GpuGatedRnn { engine, config })
    }

    /// Adds a Linear head over each output frame, computed on the GPU after the last layer.
    pub fn with_head(mut self, head: &Linear) -> Result<Self> {
        self.engine.set_head(head)?;
        Ok(self)
    }

    /// The recurrent kernel this model runs: [`Recurrence::PerStep`] or [`Recurrence::Persistent`].
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

    /// As [`GpuRnn::set_workspace_budget`](crate::GpuRnn::set_workspace_budget).
    pub fn set_workspace_budget(&self, bytes: Option<u64>) {
        self.engine.set_workspace_budget(bytes);
    }

    /// As [`GpuRnn::time_chunk`](crate::GpuRnn::time_chunk).
    pub fn time_chunk(&self, seq_len: usize, batch: usize) -> Result<usize> {
        self.engine.time_chunk(seq_len, batch)
    }

    /// As [`GpuRnn::layers_projecting_ahead`](crate::GpuRnn::layers_projecting_ahead), where
    /// the projection's width counts every gate (I·G·H ≥ 128², I ≤ H).
    pub fn layers_projecting_ahead(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let (ahead, _) = self
            .engine
            .layer_plans(seq_len, batch, self.config.batch_first)?;
        Ok(ahead)
    }

    /// As [`GpuRnn::set_profiling`](crate::GpuRnn::set_profiling).
    pub fn set_profiling(&self, on: bool) {
        self.engine.set_profiling(on);
    }

    /// As [`GpuRnn::last_gpu_time`](crate::GpuRnn::last_gpu_time).
    pub fn last_gpu_time(&self) -> Option<Duration> {
        self.engine.last_gpu_time()
    }

    /// Starts a stream from a zero state (h and, for an LSTM, c). Fails for a bidirectional
    /// model.
    pub fn stream(&self, options: StreamOptions) -> Result<RnnStream<'_>> {
        self.engine.stream(self.config.batch_first, options)
    }

    fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<GatedOutput> {
        let _gl = self.engine.ctx.gl_guard();
        let config = &self.config;
        let shape = config.resolve(input, h0, c0, lengths)?;
        // The engine's state is the h block, then the c block: PyTorch's h0 then c0.
        let initial = h0.map(|h0| match c0 {
            Some(c0) => [h0.data(), c0.data()].concat(),
            None => h0.data().to_vec(),
        });
        let (output, state) =
            self.engine
                .forward(&shape, input.data(), initial.as_deref(), lengths)?;
        let rows = config.state_rows();
        let h_len = self.engine.arch.h_len(shape.batch);
        Ok(GatedOutput {
            output: Tensor::new(output, &shape.frames_shape(self.output_features()))?,
            h_n: Tensor::new(
                state[..h_len].to_vec(),
                &shape.stacked_state_shape(rows, config.state_size()),
            )?,
            c_n: match config.kind {
                GateKind::Lstm => Some(Tensor::new(
                    state[h_len..].to_vec(),
                    &shape.stacked_state_shape(rows, config.hidden_size),
                )?),
                GateKind::Gru => None,
            },
        })
    }
}

impl GatedRnn for GpuGatedRnn {
    fn config(&self) -> &GatedConfig {
        &self.config
    }

    fn forward(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput> {
        self.forward_masked(input, h0, c0, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput> {
        self.forward_masked(input, h0, c0, Some(lengths))
    }
}
