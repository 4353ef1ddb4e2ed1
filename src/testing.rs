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
    crate::shaders::all_sources()
}
