//! Lists the adapters wgpu can see (honouring `WGPU_BACKEND`), and which one
//! `GpuContext::new()` would pick. Exits 1 when there is none.
//!
//!     cargo run --example adapters
//!     WGPU_BACKEND=gl cargo run --example adapters

use std::process::ExitCode;

fn main() -> ExitCode {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    for adapter in &adapters {
        let info = adapter.get_info();
        println!(
            "{} ({:?}, {:?}), driver: {} {}",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        );
    }
    match wgpu_rnn::GpuContext::new() {
        Ok(ctx) => {
            println!("default: {}", ctx.describe());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("no adapter: {e}");
            ExitCode::FAILURE
        }
    }
}
