//! Test support shared by the unit tests, the integration tests and the examples: one GPU
//! context per process, and the `RNN_REQUIRE_GPU` rule. Not part of the stable API.

use std::sync::OnceLock;

use crate::GpuContext;
use crate::shaders::{GATED_STEP, INPUT_PROJECTION, RECURRENT_STEP, fixed};

/// The process-wide test context, or `None` when there is no adapter and `RNN_REQUIRE_GPU`
/// is not set. With `RNN_REQUIRE_GPU=1` a missing adapter panics: in CI a GPU test that cannot
/// run is a failure, not a skip. Prints which adapter the test runs on (or that it skipped).
pub fn gpu(test: &str) -> Option<GpuContext> {
    static CONTEXT: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let context = CONTEXT.get_or_init(|| GpuContext::new().map_err(|e| e.to_string()));
    match context {
        Ok(ctx) => {
            println!("[{test}] GPU adapter: {}", ctx.describe());
            Some(ctx.clone())
        }
        Err(error) if gpu_required() => {
            panic!("[{test}] RNN_REQUIRE_GPU is set but no GPU context could be made: {error}")
        }
        Err(error) => {
            println!("[{test}] SKIPPED: no GPU adapter ({error})");
            None
        }
    }
}

/// Whether `RNN_REQUIRE_GPU` asks for a GPU (any value but empty or `0`).
pub fn gpu_required() -> bool {
    std::env::var("RNN_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Every WGSL source the library can hand to wgpu, by name: the fixed shaders and each
/// specialisation the scheduler generates for a representative set of shapes and features.
/// The portability test translates each one for every backend.
pub fn shader_sources() -> Vec<(String, String)> {
    let mut sources = all_sources();
    sources.extend(beyond_downlevel_sources());
    sources
}

/// The names of the sources of [`shader_sources`] that need more than wgpu's downlevel limits
/// (`wgpu::Limits::downlevel_defaults()`): the library compiles them only on devices whose
/// limits allow them, and runs other kernels elsewhere.
pub fn beyond_downlevel_names() -> Vec<String> {
    beyond_downlevel_sources()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// The sources of [`shader_sources`] that read weights, as compiled for models that store
/// their weights as f16 (`WeightPrecision::F16`).
pub fn shader_sources_f16() -> Vec<(String, String)> {
    shader_sources()
        .into_iter()
        .filter(|(_, source)| source.contains("alias weight_t = f32;"))
        .map(|(name, source)| {
            let f16 = crate::shaders::with_weights(&source, crate::WeightPrecision::F16);
            (format!("{name} (f16 weights)"), f16.into_owned())
        })
        .collect()
}

/// Which form of the input projection [`time_input_projection`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionForm {
    /// The tile kernel (`input_projection.wgsl`, or its subgroup form where the adapter has
    /// one): every layer's projection where the stationary form does not apply.
    Tile,
    /// The weight-stationary kernel (`projection_stationary.wgsl`): on adapters with a fixed
    /// subgroup size, for K and columns multiples of four and K ≤ 512.
    Stationary,
}

/// Times the input projection kernel alone on a (rows × depth) · (cols × depth)ᵀ problem, in
/// `form`: `repeats` dispatches recorded in one pass, one submission, after one warm-up
/// submission. Returns the wall-clock time per dispatch (submit and wait included, spread over
/// the repeats). Used by the scaling report's `--gemm` measurement.
pub fn time_input_projection(
    ctx: &GpuContext,
    (rows, depth, cols): (usize, usize, usize),
    form: ProjectionForm,
    repeats: u32,
) -> crate::Result<std::time::Duration> {
    use crate::gpu::kernels::{ProjectionBindings, ProjectionParams, StationaryBindings};

    let _gl = ctx.gl_guard();
    let device = ctx.device();
    let data =
        |len: usize| -> Vec<f32> { (0..len).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect() };
    let storage = |label: &str, len: usize| {
        ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&data(len)),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let params = ProjectionParams::contiguous(rows, cols, depth);
    let uniform = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("projection params"),
        contents: bytemuck::bytes_of(&params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let (x, bias, p) = (
        storage("x", rows * depth),
        storage("bias", cols),
        storage("p", rows * cols),
    );
    let kernels = &ctx.inner().kernels;
    let encode: Box<dyn Fn(&mut wgpu::ComputePass<'_>)> = match form {
        ProjectionForm::Tile => {
            let group = kernels.projection.bind_group(
                ctx.device(),
                ctx.counters(),
                ProjectionBindings {
                    params: &uniform,
                    x: &x,
                    weight: &storage("w", cols * depth),
                    bias: &bias,
                    p: &p,
                },
            );
            Box::new(move |pass| kernels.projection.encode(pass, &group, &params))
        }
        ProjectionForm::Stationary => {
            let kernel = ctx
                .stationary_kernel()
                .filter(|_| ctx.projects_stationary(depth, cols))
                .ok_or_else(|| {
                    crate::RnnError::InvalidConfig(format!(
                        "the stationary projection does not run {depth} × {cols} on this adapter"
                    ))
                })?;
            let (width, rows) =
                crate::gpu::kernels::stationary::texture_size(depth as u32, cols as u32);
            let texture =
                crate::gpu::model_buffers::upload_texture(ctx, width, rows, &data(cols * depth));
            let pipeline = ctx.stationary_pipeline(depth as u32)?;
            let group = kernel.bind_group(
                device,
                ctx.counters(),
                StationaryBindings {
                    params: &uniform,
                    x: &x,
                    bias: &bias,
                    p: &p,
                    weight: &texture,
                },
            );
            Box::new(move |pass| kernel.encode(pass, &pipeline, &group, &params, params.rows))
        }
    };
    time_dispatches(ctx, "timing the projection", &encode, repeats)
}

/// Wall-clock time per dispatch of `repeats` dispatches that `encode` records in one pass, one
/// submission (submit and wait included), after one warm-up submission of one.
fn time_dispatches(
    ctx: &GpuContext,
    what: &str,
    encode: &dyn Fn(&mut wgpu::ComputePass<'_>),
    repeats: u32,
) -> crate::Result<std::time::Duration> {
    let submit = |count: u32| -> crate::Result<std::time::Duration> {
        let start = std::time::Instant::now();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..count {
                encode(&mut pass);
            }
        }
        ctx.queue().submit([encoder.finish()]);
        ctx.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| ctx.classify(what, e))?;
        Ok(start.elapsed())
    };
    submit(1)?;
    Ok(submit(repeats.max(1))? / repeats.max(1))
}

/// One measurement of the adapter's multiply-add ceiling ([`time_peak_multiply_adds`]).
#[derive(Clone, Debug)]
pub struct PeakRun {
    /// Wall-clock time per dispatch (submit and wait included, spread over the repeats).
    pub per_dispatch: std::time::Duration,
    /// Scalar multiply-adds one dispatch runs.
    pub multiply_adds: u64,
    /// Each invocation's sum of its chains, four floats each, read back after the timing.
    pub sums: Vec<f32>,
}

impl PeakRun {
    /// Multiply-adds per second.
    pub fn rate(&self) -> f64 {
        self.multiply_adds as f64 / self.per_dispatch.as_secs_f64()
    }
}

/// The multiplier and addend of the peak kernel's chains: they converge to 1.
pub const PEAK_CHAIN: (f32, f32) = (0.9, 0.1);

/// Times `peak_multiply_add.wgsl`: `workgroups` of 64 invocations, each running eight vec4
/// chains of eight fused multiply-adds an iteration in registers; `repeats` dispatches
/// recorded in one pass, one submission, after one warm-up submission. `iterations` stays
/// within llvmpipe's loop limit (`MAX_ITERATIONS`, 60,000), else an
/// [`InvalidConfig`](crate::RnnError::InvalidConfig). The scaling report's `--peak`.
pub fn time_peak_multiply_adds(
    ctx: &GpuContext,
    workgroups: u32,
    iterations: u32,
    repeats: u32,
) -> crate::Result<PeakRun> {
    use crate::gpu::kernels::peak::{PEAK_LANES, PEAK_MULTIPLY_ADDS, PeakKernel, PeakParams};

    let most = crate::gpu::ahead::MAX_ITERATIONS as u32;
    if workgroups == 0 || iterations == 0 || iterations > most {
        return Err(crate::RnnError::InvalidConfig(format!(
            "the peak kernel runs 1 to {most} iterations on at least one workgroup, \
             not {iterations} on {workgroups}"
        )));
    }
    let _gl = ctx.gl_guard();
    let device = ctx.device();
    let kernel = PeakKernel::new(device, ctx.counters());
    let (multiplier, addend) = PEAK_CHAIN;
    let params = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("peak params"),
        contents: bytemuck::bytes_of(&PeakParams {
            iterations,
            multiplier,
            addend,
            _pad: 0,
        }),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let invocations = u64::from(workgroups) * u64::from(PEAK_LANES);
    let sums = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("peak sums"),
        size: invocations * 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let group = kernel.bind_group(device, ctx.counters(), &params, &sums);
    let per_dispatch = time_dispatches(
        ctx,
        "timing the peak kernel",
        &|pass| kernel.encode(pass, &group, workgroups),
        repeats,
    )?;
    Ok(PeakRun {
        per_dispatch,
        multiply_adds: invocations * u64::from(iterations) * PEAK_MULTIPLY_ADDS,
        sums: crate::gpu::scheduler::read_buffer(ctx, &sums, invocations as usize * 4)?,
    })
}

/// The persistent kernels projecting ahead, for representative sizes: they need 7 storage
/// buffers per stage, beyond wgpu's downlevel limits, and are compiled only where the device
/// allows them (see `gpu::kernels::OWN_INPUT_STORAGE_BUFFERS`); and the training kernels
/// (7 storage buffers: a device with fewer refuses to train, with a typed error).
fn beyond_downlevel_sources() -> Vec<(String, String)> {
    use crate::gpu::ahead::AheadProjection;
    use crate::gpu::architecture::{Architecture, Cell};
    use crate::gpu::gated_persistent::GatedPersistentSpec;
    use crate::gpu::persistent::PersistentSpec;
    use crate::gpu::projection::SubgroupProjection;
    let mut sources = vec![(
        "train_step".to_string(),
        crate::shaders::train_step(&crate::gpu::kernels::sequence_tiles::wgsl()),
    )];
    // The training kernels bind 7 storage buffers (`TRAINING_STORAGE_BUFFERS`).
    for kernel in crate::gpu::kernels::training::all_gemm_kernels(Some(8)) {
        sources.push((
            format!("train_gemm {kernel:?}"),
            crate::gpu::kernels::training::gemm_wgsl(kernel),
        ));
    }
    // The training recurrence with W_hh in registers, each specialisation these sizes make.
    for mode in [
        crate::RnnMode::Rnn(crate::Nonlinearity::Tanh),
        crate::RnnMode::Lstm,
        crate::RnnMode::Gru,
    ] {
        // (100 and 256: a gated cell's groups split over lanes, within WebGPU's default
        // limits of 256 lanes a workgroup.)
        // Each size as `Auto` and `Persistent` choose with W_hh in storage, and as they choose
        // with W_hh in a texture (then the same).
        let sizes = [16, 32, 64, 100, 256]
            .into_iter()
            .flat_map(|h| [(h, false, false), (h, true, false), (h, false, true)]);
        for (hidden, fastest, texture) in sizes {
            let config = crate::RnnConfig::new(mode, 3, hidden);
            let limits = crate::gpu::train_subgroup::WorkgroupLimits {
                lanes: 256,
                ..crate::gpu::train_subgroup::WorkgroupLimits::LAVAPIPE
            };
            if let Some(spec) = crate::gpu::train_subgroup::SubgroupRecurrence::for_config(
                &config,
                Some(8),
                limits,
                fastest,
                texture,
            ) {
                let name = format!("train_subgroup {spec:?}");
                if sources.iter().all(|(known, _)| *known != name) {
                    sources.push((name, spec.wgsl()));
                    // And a whole program around it, as `one_dispatch` writes one.
                    if spec.fits_one_dispatch() {
                        sources.push((
                            format!("train_program {spec:?}"),
                            spec.program_wgsl(crate::gpu::training::EXAMPLE_PROGRAM),
                        ));
                    }
                }
            }
        }
    }
    let gated = [
        (Cell::Lstm, 64),
        (Cell::Gru, 17),
        (Cell::Gru, 84),
        (Cell::Lstm, 256),
    ];
    for ((cell, hidden), texture) in gated.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let arch = Architecture {
            cell,
            input_size: hidden,
            hidden_size: hidden,
            state_size: hidden,
            num_layers: 1,
            directions: 1,
        };
        let (Some(spec), Some(projection)) = (
            GatedPersistentSpec::for_arch(&arch, Some(8), 256, texture),
            SubgroupProjection::for_subgroup(8, hidden % 4 == 0, hidden % 4 == 0),
        ) else {
            continue;
        };
        // Projecting ahead with tiles and, where X and P are vec4s, weight-stationary.
        let stationary = AheadProjection::Stationary {
            lanes: 8,
            depth: hidden,
        };
        let forms = [
            Some(AheadProjection::Tile(projection)),
            (hidden % 4 == 0).then_some(stationary),
        ];
        for form in forms.into_iter().flatten() {
            let spec = spec.projecting_ahead(form);
            sources.push((format!("gated_persistent {spec:?}"), spec.wgsl()));
        }
    }
    for hidden in [17, 64, 256] {
        for vec4_k in [false, true] {
            let base = PersistentSpec::for_hidden(hidden, Some(8));
            let Some(projection) = SubgroupProjection::for_subgroup(8, vec4_k, hidden % 4 == 0)
            else {
                continue;
            };
            let spec = base
                .with_batch_tile(base.batch_tile_for(4))
                .with_texture(vec4_k)
                .projecting_ahead(match vec4_k && hidden % 4 == 0 {
                    true => AheadProjection::Stationary {
                        lanes: 8,
                        depth: hidden,
                    },
                    false => AheadProjection::Tile(projection),
                });
            sources.push((format!("persistent_recurrence {spec:?}"), spec.wgsl()));
        }
    }
    sources
}

/// Every shader source the crate can generate, by name, for representative sizes.
fn all_sources() -> Vec<(String, String)> {
    use crate::gpu::architecture::{Architecture, Cell};
    use crate::gpu::gated_persistent::GatedPersistentSpec;
    use crate::gpu::persistent::PersistentSpec;
    let mut sources = vec![
        ("input_projection".into(), fixed(INPUT_PROJECTION)),
        (
            "peak_multiply_add".into(),
            crate::gpu::kernels::peak::wgsl(),
        ),
        ("recurrent_step".into(), fixed(RECURRENT_STEP)),
        (
            "wavefront_block".into(),
            crate::gpu::block_loop::wavefront_wgsl(),
        ),
        ("gated_step".into(), fixed(GATED_STEP)),
        ("optim SGD".into(), crate::shaders::optim(0)),
        ("optim SGD with momentum".into(), crate::shaders::optim(1)),
        ("optim Adam".into(), crate::shaders::optim(2)),
        ("loss".into(), crate::shaders::loss()),
        (
            "weight_texture".into(),
            fixed(crate::shaders::WEIGHT_TEXTURE),
        ),
        (
            "gated_block".into(),
            crate::gpu::block_loop::gated_wgsl(None, 4),
        ),
        (
            "gated_block subgroup 8, 1 sequence".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 1),
        ),
        (
            "gated_block subgroup 8, 4 sequences".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 4),
        ),
        (
            "gated_block subgroup 8, 16 sequences".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 16),
        ),
        (
            "recurrent_block".into(),
            crate::gpu::block_loop::elman_wgsl(None, 4),
        ),
        (
            "recurrent_block subgroup 8, 1 sequence".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 1),
        ),
        (
            "recurrent_block subgroup 8, 4 sequences".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 4),
        ),
        (
            "recurrent_block subgroup 8, 16 sequences".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 16),
        ),
    ];
    for size in [8, 16, 32, 64] {
        for (vec4_k, vec4_p) in [(false, false), (false, true), (true, false), (true, true)] {
            if let Some(spec) =
                crate::gpu::projection::SubgroupProjection::for_subgroup(size, vec4_k, vec4_p)
            {
                sources.push((format!("projection_subgroup {spec:?}"), spec.wgsl()));
            }
        }
    }
    // The weight-stationary projection: eight and four columns a lane, K a multiple of the
    // lanes' vec4s or not, the deepest K.
    for size in [8, 16, 32] {
        for depth in [4, 20, 64, 100, 256, 300, 512] {
            let source = crate::gpu::kernels::stationary::wgsl(size, depth);
            sources.push((
                format!("projection_stationary subgroup {size}, K = {depth}"),
                source,
            ));
        }
    }
    // The persistent kernel for representative hidden sizes, with and without subgroups.
    for hidden in [1, 3, 17, 64, 100, 256] {
        for subgroup in [None, Some(8), Some(32)] {
            let base = PersistentSpec::for_hidden(hidden, subgroup);
            // One sequence per workgroup, and the batch tile a batched forward uses; W_hh
            // from storage and, with subgroups, from a texture.
            let tiles = [1, base.batch_tile_for(16)];
            for (tile, texture) in tiles.into_iter().flat_map(|t| [(t, false), (t, true)]) {
                let spec = base.with_batch_tile(tile).with_texture(texture);
                let name = format!("persistent_recurrence {spec:?}");
                // Wide states make the same kernel whatever the subgroup size.
                if !sources.iter().any(|(n, _)| *n == name) {
                    sources.push((name, spec.wgsl()));
                }
            }
        }
    }
    // The persistent gated kernel: LSTM and GRU, one subgroup or workgroup memory.
    for hidden in [1usize, 17, 64, 100, 256, 257] {
        for subgroup in [None, Some(8), Some(32)] {
            for cell in [Cell::Lstm, Cell::Gru] {
                let arch = Architecture {
                    cell,
                    input_size: 1,
                    hidden_size: hidden,
                    state_size: hidden,
                    num_layers: 1,
                    directions: 1,
                };
                for texture in [false, true] {
                    let Some(spec) = GatedPersistentSpec::for_arch(&arch, subgroup, 256, texture)
                    else {
                        continue;
                    };
                    let name = format!("gated_persistent {spec:?}");
                    if !sources.iter().any(|(n, _)| *n == name) {
                        sources.push((name, spec.wgsl()));
                    }
                }
            }
        }
    }
    sources
}

/// Test hook: `config`'s optimizer (after `clip_grad_norm_(max_norm)` where `clip` is given)
/// over the tensors `params`, stepped once per entry of `grads` (the gradients given before
/// each step), on `ctx`'s GPU or, with `None`, on the CPU reference. Returns the parameters
/// after every step and the total norms clipping measured. What the `optim` fixtures replay.
pub fn replay_optimizer(
    ctx: Option<&GpuContext>,
    params: &[crate::Tensor],
    grads: &[Vec<crate::Tensor>],
    config: crate::OptimizerConfig,
    clip: Option<f32>,
) -> crate::Result<(Vec<Vec<crate::Tensor>>, Vec<f32>)> {
    config.validate()?;
    // The tensors at multiples of four elements, as a model's parameters lie.
    let mut ranges = Vec::new();
    let mut len = 0;
    for p in params {
        ranges.push((len, p.data().len()));
        len = (len + p.data().len()).next_multiple_of(4);
    }
    let flatten = |tensors: &[crate::Tensor]| {
        let mut flat = vec![0.0f32; len];
        for (t, &(at, n)) in tensors.iter().zip(&ranges) {
            flat[at..at + n].copy_from_slice(t.data());
        }
        flat
    };
    let unflatten = |flat: &[f32]| -> crate::Result<Vec<crate::Tensor>> {
        params
            .iter()
            .zip(&ranges)
            .map(|(p, &(at, n))| crate::Tensor::new(flat[at..at + n].to_vec(), p.shape()))
            .collect()
    };
    let mut after = Vec::new();
    let mut norms = Vec::new();
    let mut flat = flatten(params);
    match ctx {
        None => {
            let mut state = vec![0.0; crate::optim::state_per_element(&config) * len];
            for (s, g) in grads.iter().enumerate() {
                let mut g = flatten(g);
                if let Some(max_norm) = clip {
                    norms.push(crate::optim::cpu_clip(&mut g, &ranges, max_norm));
                }
                crate::optim::cpu_step(&config, s as u64 + 1, &mut flat, &g, &mut state);
                after.push(unflatten(&flat)?);
            }
        }
        Some(ctx) => {
            use crate::gpu::optim::{GpuClip, GpuOptimizerState};
            use crate::gpu::scheduler::read_buffer;
            let buffer = |data: &[f32]| {
                ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("replayed parameters"),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                })
            };
            let (p_buf, g_buf) = (buffer(&flat), buffer(&vec![0.0; len]));
            let state = GpuOptimizerState::new(ctx, &p_buf, &g_buf, len, &config, None)?;
            let clipper = GpuClip::new(ctx, &p_buf, &g_buf, len, &ranges)?;
            let mut uploads = crate::gpu::training::Uploads::default();
            for (s, g) in grads.iter().enumerate() {
                ctx.queue()
                    .write_buffer(&g_buf, 0, bytemuck::cast_slice(&flatten(g)));
                let mut encoder = ctx.device().create_command_encoder(&Default::default());
                if let Some(max_norm) = clip {
                    clipper.record(ctx, &mut encoder, &mut uploads, max_norm)?;
                }
                state.record_step(ctx, &mut encoder, &mut uploads, &config, s as u64 + 1)?;
                uploads.flush(ctx);
                ctx.queue().submit([encoder.finish()]);
                if clip.is_some() {
                    let scratch = read_buffer(ctx, clipper.scratch(), clipper.total_at() + 1)?;
                    norms.push(scratch[clipper.total_at()]);
                }
                after.push(unflatten(&read_buffer(ctx, &p_buf, len)?)?);
            }
        }
    }
    Ok((after, norms))
}
