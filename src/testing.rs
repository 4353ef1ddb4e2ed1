//! Test support shared by the unit tests, the integration tests and the examples: one GPU
//! context per process, and the `RNN_REQUIRE_GPU` rule. Not part of the stable API.

use std::sync::OnceLock;

use crate::GpuContext;

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
    let mut sources = crate::shaders::all_sources();
    sources.extend(crate::shaders::beyond_downlevel_sources());
    sources
}

/// The names of the sources of [`shader_sources`] that need more than wgpu's downlevel limits
/// (`wgpu::Limits::downlevel_defaults()`): the library compiles them only on devices whose
/// limits allow them, and runs other kernels elsewhere.
pub fn beyond_downlevel_names() -> Vec<String> {
    crate::shaders::beyond_downlevel_sources()
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

/// Times the input projection kernel alone on a (rows × depth) · (cols × depth)ᵀ problem:
/// `repeats` dispatches recorded in one pass, one submission, after one warm-up submission.
/// Returns the wall-clock time per dispatch (submit and wait included, spread over the
/// repeats). Used by the scaling report's `--gemm` measurement.
pub fn time_input_projection(
    ctx: &GpuContext,
    rows: usize,
    depth: usize,
    cols: usize,
    repeats: u32,
) -> crate::Result<std::time::Duration> {
    use crate::gpu::kernels::{ProjectionBindings, ProjectionParams};

    let _gl = ctx.gl_guard();
    let device = ctx.device();
    let storage = |label: &str, len: usize| {
        let data: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
        ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let params = ProjectionParams::contiguous(rows, cols, depth);
    let kernel = &ctx.inner().kernels.projection;
    let group = kernel.bind_group(
        ctx,
        ProjectionBindings {
            params: &ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("projection params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            }),
            x: &storage("x", rows * depth),
            weight: &storage("w", cols * depth),
            bias: &storage("bias", cols),
            p: &storage("p", rows * cols),
        },
    );
    let submit = |count: u32| -> crate::Result<std::time::Duration> {
        let start = std::time::Instant::now();
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..count {
                kernel.encode(&mut pass, &group, &params);
            }
        }
        ctx.queue().submit([encoder.finish()]);
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| ctx.classify("timing the projection", e))?;
        Ok(start.elapsed())
    };
    submit(1)?;
    Ok(submit(repeats.max(1))? / repeats.max(1))
}
