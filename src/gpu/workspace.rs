//! The working buffers of one problem shape (T, N) and the bind groups over them. Made on the
//! first forward of a shape and reused by every later one, so a repeated forward only writes
//! its inputs, records and submits.

use std::sync::{Arc, mpsc};

use crate::config::Nonlinearity;
use crate::error::{Limit, Result, RnnError};
use crate::gpu::architecture::{Architecture, Cell};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{
    PROJECTION_TILE, ProjectionBindings, ProjectionKernel, ProjectionParams, StationaryBindings,
    StepBindings, StepIndex, StepLayerParams,
};
use crate::gpu::model_buffers::ModelBuffers;
use crate::gpu::plan::{LayerFrames, LayerKernel, Plan};
use crate::layout::ForwardShape;
use crate::precision::WeightPrecision;

/// Buffers and bind groups for forwards of one (T, N).
pub(crate) struct Workspace {
    pub seq_len: usize,
    pub batch: usize,
    /// Layer 0's input, in the caller's layout.
    pub input: wgpu::Buffer,
    /// Where a forward writes its input on the host (mapped), to be copied into `input`:
    /// kept from forward to forward, unlike `Queue::write_buffer`'s staging memory, which is
    /// allocated afresh per call (for inputs of megabytes its page faults cost as much as
    /// the copy, growing faster than the input on lavapipe). `None` with unified memory
    /// (see `GpuContext::unified_memory`): `input` itself is mapped and written.
    pub upload: Option<wgpu::Buffer>,
    /// Where the mapping of the buffer the input is written into stands.
    pub upload_map: UploadMap,
    /// Every layer's output, (T, N, D·H) or the caller's layout for the last layer; a layer's
    /// projection has consumed it before the layer's steps overwrite it.
    pub output: wgpu::Buffer,
    /// The state in two ping-pong halves for the per-step kernels (the final state is half
    /// T % 2; the persistent kernel keeps it in place in half 0). Each half is the h block
    /// [L][D][N][H_out], then for an LSTM the c block [L][D][N][H]. After both halves: the N
    /// lengths, then a projected LSTM's scratch [D][N][H] of unprojected h.
    pub state: wgpu::Buffer,
    /// Whether the lengths (after the state halves) currently hold T for every sequence.
    pub lengths_full: bool,
    /// The output, then the final state, then (when profiled) the pass's two timestamps,
    /// mapped once per forward; `None` with unified memory, where the result buffer has that
    /// layout itself (see [`Workspace::readback`]).
    pub readback: Option<wgpu::Buffer>,
    pub projection_groups: Vec<wgpu::BindGroup>,
    /// Per layer, the weight-stationary projection where the layer runs it (its model holds
    /// W_ih as texels); the tile kernel's `projection_groups` elsewhere.
    pub stationary: Vec<Option<StationaryPass>>,
    /// Each layer's projection parameters (they pick the projection's form).
    pub projections: Vec<ProjectionParams>,
    pub step_groups: Vec<wgpu::BindGroup>,
    /// Which kernel runs each layer: what this workspace was made for.
    pub plan: Plan,
    /// The plan's shared persistent kernel, compiled where some layer runs it.
    pub persistent: Option<Arc<wgpu::ComputePipeline>>,
    /// Per layer, the kernel and bind group of a layer that reads its input itself
    /// (projecting ahead or fusing it).
    pub own_input: Vec<Option<OwnInput>>,
    /// How the model's weights are stored: which kernels read them.
    pub weights: WeightPrecision,
    /// The wavefront's bind group, when every layer advances in one dispatch per wave (then
    /// `step_groups` are unused beyond layer 0's projection).
    pub wave_group: Option<wgpu::BindGroup>,
    /// The head's projection, when the model has a head.
    pub head: Option<HeadPass>,
    /// Byte distance between consecutive step uniforms (the device's dynamic offset alignment).
    pub step_stride: u32,
    /// Elements of the result: T·N·(head features, or D·H_out).
    pub output_len: usize,
    /// Elements of one state half.
    pub state_len: usize,
    /// Where the compute pass's start and end times go, on adapters with timestamp queries.
    pub timestamps: Option<Timestamps>,
}

/// Where the upload buffer's mapping stands between forwards.
pub(crate) enum UploadMap {
    /// Mapped: ready to be written.
    Mapped,
    /// Requested after the last submission; it resolves once that is done.
    Pending(mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>),
    /// Not mapped (a map failed, or a forward failed before requesting it).
    Unmapped,
}

/// The kernel of a layer that reads its input itself, projecting ahead or fusing it (see
/// [`LayerKernel`]), and its bind group: the step's buffers and the projection's inputs.
pub(crate) struct OwnInput {
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub group: wgpu::BindGroup,
}

/// A layer's weight-stationary projection: the pipeline for its K and the bind group over its
/// buffers and W_ih's texels.
pub(crate) struct StationaryPass {
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub group: wgpu::BindGroup,
}

/// The head's projection over the last layer's output, and its result.
pub(crate) struct HeadPass {
    pub group: wgpu::BindGroup,
    pub params: ProjectionParams,
    pub output: wgpu::Buffer,
}

/// Bytes after the final state in the readback for the pass's two timestamps.
pub(crate) const TIMESTAMP_BYTES: u64 = 16;

/// A two-entry timestamp query set and the buffer it resolves into (the values travel on to
/// the end of the workspace's readback buffer, so that a profiled forward still maps once).
pub(crate) struct Timestamps {
    pub queries: wgpu::QuerySet,
    pub resolved: wgpu::Buffer,
}

impl Timestamps {
    fn new(ctx: &GpuContext) -> Self {
        let device = ctx.device();
        Timestamps {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: TIMESTAMP_BYTES,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
        }
    }
}

impl Workspace {
    /// The buffer the host writes the input into: the upload buffer, or with unified memory
    /// the input buffer itself.
    pub fn input_target(&self) -> &wgpu::Buffer {
        self.upload.as_ref().unwrap_or(&self.input)
    }

    /// The buffer the kernels' result is written to: the head's output, or the last layer's.
    pub fn result(&self) -> &wgpu::Buffer {
        self.head.as_ref().map_or(&self.output, |head| &head.output)
    }

    /// The buffer read back after a forward, laid out as [output][final state][timestamps]:
    /// `readback`, or with unified memory the result buffer itself.
    pub fn readback(&self) -> &wgpu::Buffer {
        self.readback.as_ref().unwrap_or(self.result())
    }
}

/// Byte offset of the sequence lengths in the state buffer: after both halves.
pub(crate) fn lengths_offset(state_len: usize) -> u64 {
    (2 * state_len * 4) as u64
}

fn floats(len: usize) -> u64 {
    // Never a zero-sized buffer: every size here is at least one element anyway.
    (len.max(1) * 4) as u64
}

/// Checks a problem against the device's limits before anything is allocated. Each error
/// names the limit hit and what would fit under it.
pub(crate) fn check_limits(
    ctx: &GpuContext,
    arch: &Architecture,
    shape: &ForwardShape,
) -> Result<()> {
    let limits = ctx.limits();
    // Saturating: the sizes come from the caller, and absurd ones must come out as "too
    // large", not overflow.
    let batch = shape.batch as u64;
    let rows = (shape.seq_len as u64).saturating_mul(batch);
    let widest = arch.input_size.max(arch.projection_cols()) as u64;
    let state_per_sequence =
        2 * arch.state_len(1) as u64 + (arch.directions * arch.hidden_size + 1) as u64;
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let index_limit = u64::from(u32::MAX);
    let fewer_frames = |most: u64| {
        format!(
            "use fewer frames (T·N) per forward: at most {}",
            most / widest.max(1)
        )
    };
    let smaller_batch = |most: u64| {
        format!(
            "use a smaller batch: at most {} sequences",
            most / state_per_sequence.max(1)
        )
    };
    for (what, elements, hint) in [
        (
            "the sequence buffer (T·N·features)",
            rows.saturating_mul(widest),
            &fewer_frames as &dyn Fn(u64) -> String,
        ),
        (
            "the hidden-state buffer",
            batch.saturating_mul(state_per_sequence),
            &smaller_batch,
        ),
    ] {
        let bytes = elements.saturating_mul(4);
        if bytes > binding {
            return Err(RnnError::exceeds(
                format!("{what}, in bytes"),
                bytes,
                Limit::StorageBinding,
                binding,
                hint(binding / 4),
            ));
        }
        if elements > index_limit {
            return Err(RnnError::exceeds(
                format!("{what}, in elements"),
                elements,
                Limit::ElementIndex,
                index_limit,
                hint(index_limit),
            ));
        }
    }
    let max_groups = u64::from(limits.max_compute_workgroups_per_dimension);
    // Within u32: the sequence buffer's elements, at least `rows`, fit.
    let (_, row_tiles) = ProjectionKernel::workgroups(rows as u32, 1);
    let per_group = u64::from(PROJECTION_TILE);
    let hidden_groups = u64::from(arch.hidden_size.div_ceil(64) as u32);
    for (what, needed, hint) in [
        (
            "projection workgroups (T·N / 32)",
            u64::from(row_tiles),
            format!(
                "use fewer frames (T·N) per forward: at most {}",
                max_groups * per_group
            ),
        ),
        (
            "step workgroups (one per sequence)",
            batch,
            format!("use a smaller batch: at most {max_groups} sequences"),
        ),
        (
            "step workgroups (hidden units / 64)",
            hidden_groups,
            format!("use a smaller hidden size: at most {}", max_groups * 64),
        ),
    ] {
        if needed > max_groups {
            return Err(RnnError::exceeds(
                what,
                needed,
                Limit::WorkgroupsPerDimension,
                max_groups,
                hint,
            ));
        }
    }
    let slot = u64::from(limits.min_uniform_buffer_offset_alignment);
    let steps_bytes = (shape.seq_len as u64).saturating_mul(slot);
    if steps_bytes > limits.max_buffer_size {
        return Err(RnnError::exceeds(
            "the step-index buffer (one uniform slot per timestep), in bytes",
            steps_bytes,
            Limit::BufferSize,
            limits.max_buffer_size,
            format!(
                "use a shorter sequence: at most {} timesteps",
                limits.max_buffer_size / slot.max(1)
            ),
        ));
    }
    Ok(())
}

impl Workspace {
    /// The buffers and bind groups of forwards over `shape` of a model with `arch` and
    /// `buffers` (its weights stored as `weights`), as `plan` runs them.
    pub fn new(
        ctx: &GpuContext,
        arch: &Architecture,
        buffers: &ModelBuffers,
        weights: WeightPrecision,
        plan: Plan,
        shape: &ForwardShape,
    ) -> Result<Self> {
        let (layers, head) = (&buffers.layers, buffers.head.as_ref());
        let wavefront = buffers.wavefront.as_ref().filter(|_| plan.wavefront());
        let device = ctx.device();
        let kernels = &ctx.inner().kernels;
        let (t, n) = (shape.seq_len, shape.batch);
        let (h, s, d, l) = (
            arch.hidden_size,
            arch.state_size,
            arch.directions,
            arch.num_layers,
        );
        let layer_output_len = t * n * arch.output_size();
        let output_features = head.map_or(arch.output_size(), |head| head.out_features);
        let output_len = t * n * output_features;
        let state_len = arch.state_len(n);
        let h_block = arch.h_len(n);
        let scratch_len = if arch.projected() { d * n * h } else { 0 };
        let storage = wgpu::BufferUsages::STORAGE;
        let buffer = |label: &str, len: usize, usage: wgpu::BufferUsages| {
            ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: floats(len),
                usage,
                mapped_at_creation: false,
            })
        };
        let unified = ctx.unified_memory();
        // The buffer the host writes the input into is created mapped (and mapped again
        // after every forward that used it).
        let mapped_input = |label: &str, usage: wgpu::BufferUsages| {
            ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: floats(t * n * arch.input_size),
                usage: usage | wgpu::BufferUsages::MAP_WRITE,
                mapped_at_creation: true,
            })
        };
        let (input, upload) = if unified {
            (mapped_input("input", storage), None)
        } else {
            let input = buffer(
                "input",
                t * n * arch.input_size,
                storage | wgpu::BufferUsages::COPY_DST,
            );
            let upload = mapped_input("input upload", wgpu::BufferUsages::COPY_SRC);
            (input, Some(upload))
        };
        // What follows the output in the readback: the final state, the timestamps.
        let tail = state_len + TIMESTAMP_BYTES as usize / 4;
        // The buffer the result is written to (length, usage): with unified memory it is the
        // readback, else it is copied to one.
        let result_buffer = |len: usize| {
            if unified {
                let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
                (len + tail, storage | usage)
            } else {
                (len, storage | wgpu::BufferUsages::COPY_SRC)
            }
        };
        // Where every layer computes its input projection itself, nothing reads P (it keeps
        // four floats, one vec4: the kernels still bind it, and wgpu checks a binding holds
        // one element).
        let projections_len = if plan.reads_projections() {
            t * n * arch.projection_cols()
        } else {
            4
        };
        let projections = buffer("projections", projections_len, storage);
        let (output_size, output_usage) = match head {
            None => result_buffer(layer_output_len),
            Some(_) => (layer_output_len, storage),
        };
        let output = buffer("layer output", output_size, output_usage);
        // Two state halves, the lengths, the scratch (see the field's comment).
        let state = buffer(
            "hidden state",
            2 * state_len + n + scratch_len,
            storage | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        );
        let readback = (!unified).then(|| {
            buffer(
                "readback",
                output_len + tail,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )
        });
        let full: Vec<u32> = vec![t as u32; n];
        ctx.queue().write_buffer(
            &state,
            lengths_offset(state_len),
            bytemuck::cast_slice(&full),
        );

        let step_stride = ctx.limits().min_uniform_buffer_offset_alignment.max(16);
        // One uniform per step, or per wave: T + L − 1 of them.
        let steps_count = t + if wavefront.is_some() { l - 1 } else { 0 };
        let mut step_bytes = vec![0u8; steps_count * step_stride as usize];
        for s in 0..steps_count {
            let index = StepIndex {
                index: s as u32,
                _pad: [0; 3],
            };
            let at = s * step_stride as usize;
            step_bytes[at..at + 16].copy_from_slice(bytemuck::bytes_of(&index));
        }
        let steps = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("step indices"),
            contents: &step_bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });

        let uniform = |label: &str, bytes: &[u8]| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let seq_first = ForwardShape {
            batch_first: false,
            ..*shape
        };
        let mut projection_groups = Vec::with_capacity(l);
        let mut stationary = Vec::with_capacity(l);
        let mut projection_params = Vec::with_capacity(l);
        let mut step_groups = Vec::with_capacity(l);
        let mut own_input = Vec::with_capacity(l);
        for (k, weights) in layers.iter().enumerate() {
            let LayerFrames {
                projection,
                out_strides,
                ..
            } = plan.frames[k];
            let step = StepLayerParams {
                seq_len: t as u32,
                batch: n as u32,
                hidden: h as u32,
                directions: d as u32,
                out_stride_t: out_strides.t as u32,
                out_stride_n: out_strides.n as u32,
                state_half: state_len as u32,
                state_offset: (k * d * n * s) as u32,
                activation: match arch.cell {
                    Cell::Rnn(Nonlinearity::Relu) => 1,
                    _ => 0,
                },
                // Projecting ahead, the layer's dispatches run its chunks (the kernel finds
                // the next chunk's first timestep from it).
                steps_per_dispatch: match (plan.layers[k], &plan.persistent) {
                    (LayerKernel::ProjectingAhead { chunk, .. }, _) => chunk as u32,
                    (_, Some(persistent)) => persistent.steps_per_dispatch,
                    (_, None) => 0,
                },
                lengths_offset: (2 * state_len) as u32,
                p_stride_t: projection.p_stride_t,
                state_size: s as u32,
                cell_offset: (h_block + k * d * n * arch.cell_size()) as u32,
                step_bias_offset: weights.step_bias_offset as u32,
                hr_offset: weights.hr_offset as u32,
                scratch_offset: (2 * state_len + n) as u32,
                cell: match arch.cell {
                    Cell::Gru => 1,
                    _ => 0,
                },
                layers: 0,
                p_stride_n: projection.p_stride_n,
            };
            projection_params.push(projection);
            let projection_uniform = uniform("projection params", bytemuck::bytes_of(&projection));
            let step_params = uniform("step params", bytemuck::bytes_of(&step));
            let projection_bindings = ProjectionBindings {
                params: &projection_uniform,
                x: if k == 0 { &input } else { &output },
                weight: &weights.w_ih,
                bias: &weights.bias,
                p: &projections,
            };
            projection_groups.push(kernels.projection.bind_group(
                ctx.device(),
                ctx.counters(),
                projection_bindings,
            ));
            let stationary_kernel = ctx.stationary_kernel();
            stationary.push(match (stationary_kernel, &weights.w_ih_texture) {
                (Some(kernel), Some(texture))
                    if projection.vec4_aligned() && projection.p_vec4_aligned() =>
                {
                    let pipeline = ctx.stationary_pipeline(projection.depth)?;
                    let group = kernel.bind_group(
                        device,
                        ctx.counters(),
                        StationaryBindings {
                            params: &projection_uniform,
                            x: projection_bindings.x,
                            bias: &weights.bias,
                            p: &projections,
                            weight: texture,
                        },
                    );
                    Some(StationaryPass { pipeline, group })
                }
                _ => None,
            });
            let step_bindings = StepBindings {
                layer: &step_params,
                steps: &steps,
                recurrent: &weights.recurrent,
                p: &projections,
                state: &state,
                output: &output,
                recurrent_texture: weights.recurrent_texture.as_ref(),
            };
            step_groups.push(
                kernels
                    .step
                    .bind_group(ctx.device(), ctx.counters(), step_bindings),
            );
            own_input.push(match plan.layers[k] {
                LayerKernel::FusedInput(spec) | LayerKernel::ProjectingAhead { spec, .. } => {
                    // The plan and the model decide W_ih's texels by the same rule
                    // (`GpuContext::projects_stationary`); a placeholder in their place
                    // would give wrong numbers, so a mismatch is an error.
                    if spec.projects_ahead_stationary() && weights.w_ih_texture.is_none() {
                        return Err(RnnError::Gpu(format!(
                            "layer {k} projects ahead from W_ih's texels, which its model lacks"
                        )));
                    }
                    Some(OwnInput {
                        pipeline: ctx.persistent_pipeline(&spec)?,
                        group: kernels.step.own_input_bind_group(
                            ctx.device(),
                            ctx.counters(),
                            step_bindings,
                            projection_bindings,
                            weights.w_ih_texture.as_ref(),
                        ),
                    })
                }
                _ => None,
            });
        }
        let persistent = match &plan.persistent {
            Some(persistent) if plan.runs_shared_persistent() => {
                Some(ctx.persistent_pipeline(&persistent.spec)?)
            }
            _ => None,
        };
        // The wavefront: one bind group for every layer, reading layer 0's projection and
        // writing the last layer's output in the layout the result needs.
        let wave_group = wavefront.map(|weights| {
            let out_strides = if head.is_none() { *shape } else { seq_first }.frame_strides(h);
            let params = StepLayerParams {
                seq_len: t as u32,
                batch: n as u32,
                hidden: h as u32,
                directions: 1,
                out_stride_t: out_strides.t as u32,
                out_stride_n: out_strides.n as u32,
                state_half: state_len as u32,
                activation: match arch.cell {
                    Cell::Rnn(Nonlinearity::Relu) => 1,
                    _ => 0,
                },
                lengths_offset: (2 * state_len) as u32,
                state_size: h as u32,
                layers: l as u32,
                ..bytemuck::Zeroable::zeroed()
            };
            kernels.step.bind_group(
                ctx.device(),
                ctx.counters(),
                StepBindings {
                    layer: &uniform("wave params", bytemuck::bytes_of(&params)),
                    steps: &steps,
                    recurrent: weights,
                    p: &projections,
                    state: &state,
                    output: &output,
                    recurrent_texture: None,
                },
            )
        });
        // The head: one more projection, from the last layer's output to the caller's layout.
        let head = head.map(|head| {
            let strides = shape.frame_strides(head.out_features);
            let params = ProjectionParams {
                rows: (t * n) as u32,
                cols: head.out_features as u32,
                depth: arch.output_size() as u32,
                batch: n as u32,
                x_stride_t: (n * arch.output_size()) as u32,
                x_stride_n: arch.output_size() as u32,
                p_stride_t: strides.t as u32,
                p_stride_n: strides.n as u32,
            };
            let (size, usage) = result_buffer(output_len);
            let head_output = buffer("head output", size, usage);
            let group = kernels.projection.bind_group(
                ctx.device(),
                ctx.counters(),
                ProjectionBindings {
                    params: &uniform("head params", bytemuck::bytes_of(&params)),
                    x: &output,
                    weight: &head.weight,
                    bias: &head.bias,
                    p: &head_output,
                },
            );
            HeadPass {
                group,
                params,
                output: head_output,
            }
        });
        Ok(Workspace {
            seq_len: t,
            batch: n,
            input,
            upload,
            upload_map: UploadMap::Mapped,
            output,
            state,
            lengths_full: true,
            readback,
            projection_groups,
            stationary,
            projections: projection_params,
            step_groups,
            plan,
            persistent,
            own_input,
            weights,
            wave_group,
            head,
            step_stride,
            output_len,
            state_len,
            timestamps: device
                .features()
                .contains(wgpu::Features::TIMESTAMP_QUERY)
                .then(|| Timestamps::new(ctx)),
        })
    }
}
