//! `GpuRnn`: a model's weights uploaded once, and its cache of per-shape workspaces.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::scheduler;
use crate::gpu::workspace::{Workspace, check_limits};
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
    /// W_hh of every direction, (D, H, H).
    pub w_hh: wgpu::Buffer,
}

/// How many problem shapes keep their workspace; the least recently used one goes first.
const CACHED_SHAPES: usize = 4;

/// An `nn.RNN` on a GPU. Weights are uploaded once; the working buffers of each (T, N) are
/// made on its first forward and reused. `Send + Sync`: share it between threads freely.
pub struct GpuRnn {
    ctx: GpuContext,
    config: RnnConfig,
    layers: Vec<LayerBuffers>,
    /// Most recently used first.
    workspaces: Mutex<Vec<Arc<Mutex<Workspace>>>>,
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
    /// Uploads `weights` for `config` to the context's device.
    pub fn new(ctx: &GpuContext, config: RnnConfig, weights: &RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        ctx.check_alive()?;
        let device = ctx.device();
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
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let layers = (0..config.num_layers)
            .map(|layer| {
                let units: Vec<_> = (0..config.num_directions())
                    .map(|d| weights.get(layer, d, &config))
                    .collect();
                let stack = |part: &dyn Fn(usize) -> Vec<f32>| -> Vec<f32> {
                    (0..units.len()).flat_map(part).collect()
                };
                LayerBuffers {
                    w_ih: upload("weight_ih", &stack(&|d| units[d].weight_ih.clone())),
                    bias: upload("bias", &stack(&|d| units[d].combined_bias(h))),
                    w_hh: upload("weight_hh", &stack(&|d| units[d].weight_hh.clone())),
                }
            })
            .collect();
        scopes.finish(ctx, "uploading the weights")?;
        Ok(GpuRnn {
            ctx: ctx.clone(),
            config,
            layers,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The context this model runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The workspace for `shape`, made on first use; most recently used first.
    fn workspace(&self, shape: &ForwardShape) -> Result<Arc<Mutex<Workspace>>> {
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
                let scopes = self.ctx.error_scopes();
                let workspace = Workspace::new(&self.ctx, &self.config, &self.layers, shape);
                scopes.finish(&self.ctx, "allocating the workspace")?;
                Arc::new(Mutex::new(workspace))
            }
        };
        cache.insert(0, Arc::clone(&workspace));
        cache.truncate(CACHED_SHAPES);
        Ok(workspace)
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
        let workspace = self.workspace(&shape)?;
        let mut workspace = workspace
            .lock()
            .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))?;
        let (output, h_n) = scheduler::forward(
            &self.ctx,
            &self.config,
            &mut workspace,
            input.data(),
            h0.map(Tensor::data),
            lengths,
        )?;
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.output_shape(&self.config))?,
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
