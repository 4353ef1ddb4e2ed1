//! Optimizer steps and gradient clipping on the GPU (`shaders/optim.wgsl`) over a model's
//! parameter and gradient buffers: the state an optimizer keeps there, and the dispatches.
//! The formulas and their CPU reference are in `crate::optim`.

use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::optim::{OptimParams, UpdateRule};
use crate::gpu::training::Uploads;
use crate::optim::{OptimizerConfig, step_scalars};

/// Elements of one tensor's share of the clipping norm a workgroup sums: 64 invocations stay
/// within llvmpipe's 65,535 loop iterations. Larger tensors count as several (the sum of
/// their squares is the same).
const NORM_SLICE: usize = 64 * 32_768;

/// An optimizer's state on the GPU: its uniform, SGD's momentum or Adam's moments, and the
/// bind group over them and the model's buffers.
pub(crate) struct GpuOptimizerState {
    uniform: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    len: usize,
    state: wgpu::Buffer,
    /// The model's parameters and gradients, for `with_clip`.
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// Over the model's clipping scratch instead of this state's own: `clip_and_update`
    /// (made the first time; a model's clipping buffers are made once).
    with_clip: std::sync::OnceLock<wgpu::BindGroup>,
    _scratch: wgpu::Buffer,
}

impl std::fmt::Debug for GpuOptimizerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOptimizerState")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Clipping's resources for one model: its uniform, the scratch holding the tensors' table,
/// their norms, the total and the scale.
pub(crate) struct GpuClip {
    uniform: wgpu::Buffer,
    scratch: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    slots: usize,
    len: usize,
    /// Clip in one workgroup (`clip_in_one`) rather than three dispatches.
    in_one: bool,
    _state: wgpu::Buffer,
}

fn storage(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    let data = if data.is_empty() { &[0.0][..] } else { data };
    ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
    })
}

fn bind(ctx: &GpuContext, label: &str, buffers: [&wgpu::Buffer; 5]) -> Result<wgpu::BindGroup> {
    let kernels = ctx.optim_kernels()?;
    ctx.counters()
        .bind_groups
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entries: Vec<_> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    Ok(ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &kernels.layout,
        entries: &entries,
    }))
}

fn uniform(ctx: &GpuContext) -> wgpu::Buffer {
    ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("optimizer step"),
        size: std::mem::size_of::<OptimParams>() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Parameters up to which one workgroup clips (`clip_in_one`): a small model's three clipping
/// dispatches cost more than their work on a software adapter.
const CLIP_IN_ONE_WORKGROUP: usize = 1 << 16;

/// The uniforms of step `step` (1 for the first) of `config` over `len` parameters.
fn step_params(len: usize, config: &OptimizerConfig, step: u64) -> OptimParams {
    let k = step_scalars(config, step);
    let mut o = OptimParams {
        len: len as u32,
        grad_share: k.grad_share,
        one_minus_beta1: k.one_minus_beta1,
        one_minus_beta2: k.one_minus_beta2,
        decay: k.decay,
        step_size: k.step_size,
        bc2_sqrt: k.bc2_sqrt,
        ..OptimParams::default()
    };
    if step == 1 {
        o.flags |= OptimParams::FIRST_STEP;
    }
    match *config {
        OptimizerConfig::Sgd(s) => {
            o.kind = 0;
            o.lr = s.lr;
            o.momentum = s.momentum;
            o.weight_decay = s.weight_decay;
            if s.momentum != 0.0 {
                o.flags |= OptimParams::MOMENTUM;
            }
            if s.nesterov {
                o.flags |= OptimParams::NESTEROV;
            }
        }
        OptimizerConfig::Adam(a) => {
            o.kind = 1;
            o.lr = a.lr;
            o.beta2 = a.betas.1;
            o.eps = a.eps;
            o.weight_decay = a.weight_decay;
            if a.decoupled_weight_decay {
                o.flags |= OptimParams::DECOUPLED;
            }
        }
    }
    o
}

/// Workgroups of 64 elements for `len` elements, as (x, y) within the per-dimension limit.
fn element_groups(len: usize) -> (u32, u32) {
    let groups = len.div_ceil(64).max(1) as u32;
    (groups.min(65_535), groups.div_ceil(65_535))
}

impl GpuOptimizerState {
    /// State for `len` parameters under `config`: `initial` (per element of state, flat), or
    /// zeros.
    pub fn new(
        ctx: &GpuContext,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        len: usize,
        config: &OptimizerConfig,
        initial: Option<&[f32]>,
    ) -> Result<Self> {
        let scopes = ctx.error_scopes();
        let per = crate::optim::state_per_element(config);
        let zeros = vec![0.0; per * len];
        let state = storage(ctx, "optimizer state", initial.unwrap_or(&zeros));
        let scratch = storage(ctx, "optimizer scratch", &[0.0; 4]);
        let uniform = uniform(ctx);
        let bind_group = bind(
            ctx,
            "optimizer",
            [&uniform, params, grads, &state, &scratch],
        )?;
        scopes.finish(ctx, "making an optimizer's state")?;
        Ok(GpuOptimizerState {
            uniform,
            bind_group,
            len,
            state,
            params: params.clone(),
            grads: grads.clone(),
            with_clip: std::sync::OnceLock::new(),
            _scratch: scratch,
        })
    }

    /// Records `clip.record(max_norm)` then `record_step(config, step)`: as one workgroup's
    /// dispatch (`clip_and_update`) where the model clips in one workgroup, with the same
    /// values. `clip` must be the model's (its buffers are bound the first time).
    #[allow(clippy::too_many_arguments)]
    pub fn record_clip_and_step(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        uploads: &mut Uploads,
        clip: &GpuClip,
        max_norm: f32,
        config: &OptimizerConfig,
        step: u64,
    ) -> Result<()> {
        if !clip.in_one {
            clip.record(ctx, encoder, uploads, max_norm)?;
            return self.record_step(ctx, encoder, uploads, config, step);
        }
        let group = match self.with_clip.get() {
            Some(group) => group,
            None => {
                let made = bind(
                    ctx,
                    "optimizer with clipping",
                    [
                        &self.uniform,
                        &self.params,
                        &self.grads,
                        &self.state,
                        &clip.scratch,
                    ],
                )?;
                self.with_clip.get_or_init(|| made)
            }
        };
        let o = OptimParams {
            slots: clip.slots as u32,
            max_norm,
            ..step_params(self.len, config, step)
        };
        uploads.copy(ctx, encoder, bytemuck::bytes_of(&o), &self.uniform, 0);
        let kernels = ctx.optim_kernels()?;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(kernels.clip_and_update(UpdateRule::of(config)));
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        Ok(())
    }

    /// The state buffer: SGD's momentum, or Adam's m then v.
    pub fn state(&self) -> &wgpu::Buffer {
        &self.state
    }

    /// Records step `step` (1 for the first) of `config`, its uniforms through `uploads`.
    pub fn record_step(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        uploads: &mut Uploads,
        config: &OptimizerConfig,
        step: u64,
    ) -> Result<()> {
        let o = step_params(self.len, config, step);
        uploads.copy(ctx, encoder, bytemuck::bytes_of(&o), &self.uniform, 0);
        let kernels = ctx.optim_kernels()?;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(kernels.update(UpdateRule::of(config)));
        pass.set_bind_group(0, &self.bind_group, &[]);
        // A workgroup per 4,096 elements (each invocation steps 64, `update` in optim.wgsl).
        let (x, y) = element_groups(self.len.div_ceil(64));
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }
}

impl GpuClip {
    /// Clipping over the tensors `slots` ((offset, length) in the flat vectors) of `len`
    /// parameters.
    pub fn new(
        ctx: &GpuContext,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        len: usize,
        slots: &[(usize, usize)],
    ) -> Result<Self> {
        let scopes = ctx.error_scopes();
        let mut table = Vec::new();
        for &(at, n) in slots {
            for start in (0..n).step_by(NORM_SLICE) {
                table.push((at + start) as u32);
                table.push(n.min(start + NORM_SLICE).saturating_sub(start) as u32);
            }
        }
        let slots = table.len() / 2;
        let mut scratch: Vec<f32> = table.iter().map(|&v| f32::from_bits(v)).collect();
        scratch.resize(3 * slots + 2, 0.0);
        let scratch = storage(ctx, "clipping scratch", &scratch);
        let state = storage(ctx, "clipping (no state)", &[0.0; 4]);
        let uniform = uniform(ctx);
        let bind_group = bind(ctx, "clipping", [&uniform, params, grads, &state, &scratch])?;
        scopes.finish(ctx, "making the clipping's buffers")?;
        Ok(GpuClip {
            uniform,
            scratch,
            bind_group,
            slots,
            len,
            in_one: len <= CLIP_IN_ONE_WORKGROUP,
            _state: state,
        })
    }

    /// Clips in three dispatches whatever the size (the twin test of `clip_in_one`).
    #[cfg(test)]
    pub fn in_three_dispatches(self) -> Self {
        GpuClip {
            in_one: false,
            ..self
        }
    }

    /// Records `clip_grad_norm_(max_norm)`, its uniforms through `uploads`.
    pub fn record(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        uploads: &mut Uploads,
        max_norm: f32,
    ) -> Result<()> {
        let o = OptimParams {
            len: self.len as u32,
            slots: self.slots as u32,
            max_norm,
            ..OptimParams::default()
        };
        uploads.copy(ctx, encoder, bytemuck::bytes_of(&o), &self.uniform, 0);
        let kernels = ctx.optim_kernels()?;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_bind_group(0, &self.bind_group, &[]);
        if self.in_one {
            pass.set_pipeline(&kernels.clip_in_one);
            pass.dispatch_workgroups(1, 1, 1);
            return Ok(());
        }
        pass.set_pipeline(&kernels.tensor_norms);
        pass.dispatch_workgroups(self.slots as u32, 1, 1);
        pass.set_pipeline(&kernels.total_norm);
        pass.dispatch_workgroups(1, 1, 1);
        pass.set_pipeline(&kernels.scale);
        let (x, y) = element_groups(self.len);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    /// Where the last total norm lies in `scratch()`, in elements.
    pub fn total_at(&self) -> usize {
        3 * self.slots
    }

    pub fn scratch(&self) -> &wgpu::Buffer {
        &self.scratch
    }
}
