//! `GpuRnn`: a model's weights uploaded once, and its cache of per-shape workspaces.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::bidirectional::direction_models;
use crate::gpu::context::GpuContext;
use crate::gpu::persistent::{PERSISTENT_MAX_HIDDEN, PersistentSpec};
use crate::gpu::scheduler::InitialState;
use crate::gpu::workspace::{Workspace, check_limits};
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::rnn::{Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// One layer's weights on the GPU, both directions stacked.
pub(crate) struct LayerBuffers {
    /// W_ih of every direction, (D·H, I_k) row-major.
    pub w_ih: wgpu::Buffer,
    /// b_ih + b_hh of every direction, (D·H); zeros without bias.
    pub bias: wgpu::Buffer,
    /// W_hh of every direction, (D, H, H); padded to (D, H_pad, H_pad) for the persistent
    /// kernel.
    pub w_hh: wgpu::Buffer,
}

/// A Linear head on the GPU.
pub(crate) struct HeadBuffers {
    /// (out_features, D·H) row-major.
    pub weight: wgpu::Buffer,
    /// (out_features); zeros without bias.
    pub bias: wgpu::Buffer,
    pub out_features: usize,
}

/// Which recurrent kernel a [`GpuRnn`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Recurrence {
    /// The persistent kernel for hidden sizes up to 256, the per-step kernel above. Measured
    /// on lavapipe, the persistent kernel is ~100× faster at H = 64 (one dispatch runs the
    /// whole sequence instead of one per step); on many-core GPUs a wide H spreads better
    /// over the per-step kernel's many workgroups.
    #[default]
    Auto,
    /// One dispatch per timestep, one invocation per (hidden unit, sequence, direction).
    PerStep,
    /// One dispatch runs up to 8192 timesteps; one workgroup per (sequence, direction) keeps
    /// its rows of W_hh in registers. Any hidden size works; wide ones compile slowly.
    Persistent,
}

/// Options of a [`GpuRnn`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuOptions {
    /// The recurrent kernel (default: [`Recurrence::Auto`]).
    pub recurrence: Recurrence,
}

impl GpuOptions {
    /// The default options with `recurrence`.
    pub fn recurrence(recurrence: Recurrence) -> Self {
        GpuOptions { recurrence }
    }
}

/// How many problem shapes keep their workspace; the least recently used one goes first.
const CACHED_SHAPES: usize = 4;

/// An `nn.RNN` on a GPU. Weights are uploaded once; the working buffers of each (T, N) are
/// made on its first forward and reused. `Send + Sync`: share it between threads freely.
pub struct GpuRnn {
    pub(crate) ctx: GpuContext,
    pub(crate) config: RnnConfig,
    pub(crate) layers: Vec<LayerBuffers>,
    /// The persistent kernel's layout, when this model runs it (its pipelines are cached by
    /// the context, one per batch tile).
    pub(crate) persistent: Option<PersistentSpec>,
    pub(crate) head: Option<HeadBuffers>,
    /// Most recently used first.
    pub(crate) workspaces: Mutex<Vec<Arc<Mutex<Workspace>>>>,
    /// Bytes a forward's workspace may use; `u64::MAX`: no budget beyond the adapter's limits.
    pub(crate) budget: AtomicU64,
    pub(crate) profiling: AtomicBool,
    pub(crate) last_gpu_time: Mutex<Option<Duration>>,
    pub(crate) options: GpuOptions,
    /// Bidirectional models keep their weights on the host to build, when a sequence is too
    /// long for one submission, a unidirectional model per (layer, direction).
    pub(crate) host_weights: Option<RnnWeights>,
    pub(crate) direction_models: Mutex<Option<Arc<Vec<GpuRnn>>>>,
}

impl std::fmt::Debug for GpuRnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRnn")
            .field("config", &self.config)
            .field("context", &self.ctx)
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
        let _gl = ctx.gl_guard();
        Self::build(ctx, config, weights, options)
    }

    /// [`with_options`](Self::with_options) for callers that already hold the GL guard.
    pub(crate) fn build(
        ctx: &GpuContext,
        config: RnnConfig,
        weights: &RnnWeights,
        options: GpuOptions,
    ) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        ctx.check_alive()?;
        let limits = ctx.limits();
        let h = config.hidden_size;
        let widest = (config.num_directions() * h * config.input_size.max(h)) as u64 * 4;
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if widest > binding {
            return Err(RnnError::ExceedsLimits {
                what: "a layer's stacked weights in bytes".into(),
                needed: widest,
                limit: binding,
            });
        }
        let scopes = ctx.error_scopes();
        let upload = |label: &str, data: &[f32]| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let persistent = match options.recurrence {
            Recurrence::PerStep => None,
            Recurrence::Persistent => Some(h),
            Recurrence::Auto => (h <= PERSISTENT_MAX_HIDDEN).then_some(h),
        }
        .map(|h| PersistentSpec::for_hidden(h, ctx.persistent_subgroup()));
        // Compiled now, so that making the model pays for it rather than its first forward.
        persistent
            .map(|spec| ctx.persistent_pipeline(&spec))
            .transpose()?;
        let layers = (0..config.num_layers)
            .map(|layer| {
                let units: Vec<_> = (0..config.num_directions())
                    .map(|d| weights.unit(layer, d, &config))
                    .collect();
                let stack = |part: &dyn Fn(usize) -> Vec<f32>| -> Vec<f32> {
                    (0..units.len()).flat_map(part).collect()
                };
                LayerBuffers {
                    w_ih: upload("weight_ih", &stack(&|d| units[d].weight_ih.clone())),
                    bias: upload("bias", &stack(&|d| units[d].combined_bias(h))),
                    w_hh: {
                        let w_hh = stack(&|d| units[d].weight_hh.clone());
                        match &persistent {
                            Some(spec) => {
                                upload("weight_hh padded", &spec.pad_weights(&w_hh, units.len()))
                            }
                            None => upload("weight_hh", &w_hh),
                        }
                    },
                }
            })
            .collect();
        scopes.finish(ctx, "uploading the weights")?;
        Ok(GpuRnn {
            ctx: ctx.clone(),
            layers,
            persistent,
            head: None,
            workspaces: Mutex::new(Vec::new()),
            budget: AtomicU64::new(u64::MAX),
            profiling: AtomicBool::new(false),
            last_gpu_time: Mutex::new(None),
            options,
            host_weights: config.bidirectional.then(|| weights.clone()),
            direction_models: Mutex::new(None),
            config,
        })
    }

    /// Adds a Linear head, uploaded once: every output frame becomes `h_t·Wᵀ + b`,
    /// computed on the GPU right after the last layer, (…, out_features).
    pub fn with_head(mut self, head: &Linear) -> Result<Self> {
        head.check(self.config.output_size())?;
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let scopes = self.ctx.error_scopes();
        let upload = |label: &str, data: &[f32]| {
            self.ctx
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let buffers = HeadBuffers {
            weight: upload("head weight", &head.weight),
            bias: upload("head bias", &head.bias_or_zeros()),
            out_features: head.out_features,
        };
        scopes.finish(&self.ctx, "uploading the head")?;
        self.head = Some(buffers);
        // Workspaces made so far have no head.
        self.workspaces = Mutex::new(Vec::new());
        Ok(self)
    }

    /// The recurrent kernel this model runs: [`Recurrence::PerStep`] or
    /// [`Recurrence::Persistent`].
    pub fn recurrence(&self) -> Recurrence {
        if self.persistent.is_some() {
            Recurrence::Persistent
        } else {
            Recurrence::PerStep
        }
    }

    /// Features of each output frame: the head's `out_features`, or D·H without a head.
    pub fn output_features(&self) -> usize {
        self.head
            .as_ref()
            .map_or(self.config.output_size(), |head| head.out_features)
    }

    /// The context this model runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The workspace for `shape`, made on first use; most recently used first.
    pub(crate) fn workspace(&self, shape: &ForwardShape) -> Result<Arc<Mutex<Workspace>>> {
        let mut cache = self
            .workspaces
            .lock()
            .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))?;
        let found = cache.iter().position(|w| {
            w.lock()
                .is_ok_and(|w| w.seq_len == shape.seq_len && w.batch == shape.batch)
        });
        let workspace = match found {
            Some(i) => cache.remove(i),
            None => {
                check_limits(&self.ctx, &self.config, shape)?;
                let persistent = match self.persistent {
                    Some(spec) => {
                        let tile = spec.batch_tile_for(shape.batch);
                        let pipeline = self.ctx.persistent_pipeline(&spec.with_batch_tile(tile))?;
                        Some((pipeline, tile as u32))
                    }
                    None => None,
                };
                let scopes = self.ctx.error_scopes();
                let workspace = Workspace::new(
                    &self.ctx,
                    &self.config,
                    &self.layers,
                    self.head.as_ref(),
                    persistent,
                    shape,
                );
                scopes.finish(&self.ctx, "allocating the workspace")?;
                Arc::new(Mutex::new(workspace))
            }
        };
        cache.insert(0, Arc::clone(&workspace));
        cache.truncate(CACHED_SHAPES);
        Ok(workspace)
    }

    /// Caps the GPU memory one forward's working buffers may use, in bytes (`None`: only
    /// the adapter's limits). Longer sequences then run in time chunks, carrying the state on
    /// the GPU, with the same results; memory stays proportional to the chunk, not to T.
    /// Bidirectional models, whose reverse direction needs the whole sequence, then run one
    /// layer and direction at a time (each chunked), passing each layer's output through host
    /// memory; with a Linear head they report [`RnnError::ExceedsLimits`] instead.
    pub fn set_workspace_budget(&self, bytes: Option<u64>) {
        self.budget
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How many timesteps one submission of a forward over (T = `seq_len`, N = `batch`) runs:
    /// T when the whole sequence fits the adapter's limits and the workspace budget, less
    /// when it runs in time chunks.
    pub fn time_chunk(&self, seq_len: usize, batch: usize) -> Result<usize> {
        let shape = ForwardShape {
            seq_len,
            batch,
            unbatched: false,
            batch_first: false,
        };
        self.chunk_len(&shape)
    }

    /// Turns GPU timing on or off (off by default). While on, every forward measures the GPU
    /// execution time of its compute work with timestamp queries, on adapters that have them
    /// (`Features::TIMESTAMP_QUERY`); read it with [`last_gpu_time`](Self::last_gpu_time).
    pub fn set_profiling(&self, on: bool) {
        self.profiling.store(on, Ordering::Relaxed);
    }

    /// The GPU execution time of the last forward (summed over its time chunks), when
    /// profiling is on and the adapter has timestamp queries; `None` otherwise.
    pub fn last_gpu_time(&self) -> Option<Duration> {
        self.last_gpu_time.lock().ok().and_then(|t| *t)
    }

    pub(crate) fn set_last_gpu_time(&self, time: Option<Duration>) {
        if let Ok(mut last) = self.last_gpu_time.lock() {
            *last = time;
        }
    }

    pub(crate) fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        self.ctx.check_alive()?;
        let shape = ForwardShape::resolve(&self.config, input, h0)?;
        if let Some(lengths) = lengths {
            shape.check_lengths(lengths)?;
        }
        let chunk = self.chunk_len(&shape)?;
        if chunk < shape.seq_len && self.config.bidirectional {
            let parts = self.direction_models()?;
            return self.forward_bidirectional_by_layers(parts, input, h0, lengths, &shape);
        }
        let initial = h0.map_or(InitialState::Zeros, |h0| InitialState::Host(h0.data()));
        // Chunks carry the state between them in a small buffer of this call's.
        let carry = (chunk < shape.seq_len)
            .then(|| self.state_buffer(shape.batch))
            .transpose()?;
        let (output, h_n) = self.run_chunks(
            &shape,
            input.data(),
            lengths,
            initial,
            carry.as_ref(),
            chunk,
        )?;
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.frames_shape(self.output_features()))?,
            h_n: Tensor::new(h_n, &shape.state_shape(&self.config))?,
        })
    }

    /// The options the model was made with.
    pub(crate) fn options(&self) -> GpuOptions {
        self.options
    }

    /// The workspace budget (`None`: none).
    pub(crate) fn workspace_budget(&self) -> Option<u64> {
        Some(self.budget.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    /// The unidirectional models of a bidirectional one, made on first need.
    fn direction_models(&self) -> Result<Arc<Vec<GpuRnn>>> {
        let mut made = self
            .direction_models
            .lock()
            .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))?;
        if let Some(parts) = made.as_ref() {
            return Ok(Arc::clone(parts));
        }
        let weights = self
            .host_weights
            .as_ref()
            .ok_or_else(|| RnnError::InvalidConfig("not a bidirectional model".into()))?;
        let parts = Arc::new(direction_models(self, &self.config, weights)?);
        *made = Some(Arc::clone(&parts));
        Ok(parts)
    }
}

impl Rnn for GpuRnn {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<RnnOutput> {
        let _gl = self.ctx.gl_guard();
        self.forward_masked(input, h0, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
    ) -> Result<RnnOutput> {
        let _gl = self.ctx.gl_guard();
        self.forward_masked(input, h0, Some(lengths))
    }
}
