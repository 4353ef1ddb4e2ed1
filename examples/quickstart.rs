//! A forward pass of each mode on the default adapter, checked against the CPU path.
//!
//!     cargo run --release --example quickstart
//!
//! Builds `nn.RNN`, `nn.LSTM` and `nn.GRU(32, 64, num_layers=2, bidirectional=True,
//! batch_first=True)` with PyTorch's initialisation, runs a batch of 8 sequences of 100 frames
//! through each on the GPU and on the CPU, and prints the adapter, the shapes, the times and
//! the largest difference between the paths.

use std::time::Instant;

use wgpu_rnn::compare::compare;
use wgpu_rnn::{CpuRnn, GpuContext, GpuRnn, Rnn, RnnConfig, RnnWeights, Tensor};

fn main() -> wgpu_rnn::Result<()> {
    let ctx = GpuContext::new()?;
    let info = ctx.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    let mut passed = true;
    for base in [
        RnnConfig::rnn(32, 64),
        RnnConfig::lstm(32, 64),
        RnnConfig::gru(32, 64),
    ] {
        let config = RnnConfig {
            num_layers: 2,
            bidirectional: true,
            batch_first: true,
            ..base
        };
        let weights = RnnWeights::init(&config, 42)?;
        let (batch, steps) = (8, 100);
        let input: Vec<f32> = (0..batch * steps * config.input_size)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let input = Tensor::new(input, &[batch, steps, config.input_size])?;

        let gpu = GpuRnn::new(&ctx, config.clone(), &weights)?;
        let cpu = CpuRnn::new(config.clone(), &weights)?;
        gpu.forward(&input, None)?; // first call: allocates this shape's workspace
        let start = Instant::now();
        let on_gpu = gpu.forward(&input, None)?;
        let gpu_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let on_cpu = cpu.forward(&input, None)?;
        let cpu_ms = start.elapsed().as_secs_f64() * 1e3;

        println!("\n{}: input {:?}", config.mode.torch_name(), input.shape());
        println!(
            "output {:?}   h_n {:?}   c_n {:?}",
            on_gpu.output.shape(),
            on_gpu.h_n.shape(),
            on_gpu.c_n.as_ref().map(Tensor::shape)
        );
        let output = compare(on_gpu.output.data(), on_cpu.output.data(), 1e-4);
        let h_n = compare(on_gpu.h_n.data(), on_cpu.h_n.data(), 1e-4);
        println!("gpu {gpu_ms:.2} ms, cpu reference {cpu_ms:.2} ms");
        println!("parity with the CPU path: output {output}; h_n {h_n}");
        passed &= output.passed() && h_n.passed();
        if let (Some(g), Some(c)) = (&on_gpu.c_n, &on_cpu.c_n) {
            let c_n = compare(g.data(), c.data(), 1e-4);
            println!("                          c_n {c_n}");
            passed &= c_n.passed();
        }
    }
    if passed {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        std::process::exit(1)
    }
}
