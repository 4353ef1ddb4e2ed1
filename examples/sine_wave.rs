//! The trained sine-wave model, on the GPU: an `nn.RNN(1, 16, batch_first=True)` with an
//! `nn.Linear(16, 1)` head, trained in PyTorch to predict the next point of a sine wave
//! (tests/fixtures/sine_model.safetensors; see tests/fixtures/README.torch_rnn.md).
//!
//!     cargo run --release --example sine_wave
//!
//! (a) Prediction over the stored window from the stored h0 (teacher forcing), one forward
//! with the head on the GPU. (b) Autoregressive generation: a stream starts from the first
//! input point and h0 and feeds each prediction back as the next input, carrying h on the GPU.
//! Both are compared with PyTorch's stored outputs (exit status 1 above 1e-4), and a plot of
//! the true curve and both predictions is written to target/sine_wave.svg (or `--out FILE`).

#[path = "support/plot.rs"]
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use wgpu_rnn::compare::compare;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{GpuContext, GpuRnn, Hx, Linear, Rnn, RnnConfig, RnnWeights, StreamOptions, Tensor};

const TOLERANCE: f64 = 1e-4;

/// The trained sine-wave model (nn.RNN(1, 16) with an nn.Linear(16, 1) head) on the GPU,
/// compared with PyTorch's stored outputs (exit status 1 above 1e-4), with a plot of the true
/// curve and the teacher-forced and autoregressive predictions.
#[derive(Parser)]
#[command(name = "sine_wave")]
struct Args {
    /// Where the plot (SVG) goes.
    #[arg(long, value_name = "FILE", default_value = "target/sine_wave.svg")]
    out: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sine_wave: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> wgpu_rnn::Result<bool> {
    let out = Args::parse().out;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sine_model.safetensors");
    let case = ReferenceCase::load(&path)?;
    let config = RnnConfig {
        batch_first: true,
        ..RnnConfig::rnn(1, 16)
    };
    let weights = RnnWeights::load(&config, &path, "rnn.")?;
    let head = Linear::load(&path, "linear.", 16, 1)?;

    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.describe());
    let model = GpuRnn::new(&ctx, config, &weights)?.with_head(&head)?;
    let (input, h0) = (case.tensor("input")?, case.tensor("h0")?);
    let steps = input.shape()[1];

    // (a) Teacher forcing: the whole window in one forward, the head applied on the GPU.
    let forced = model.forward(&input, Some(Hx::h0(&h0)))?;
    let forced_output = compare(
        forced.output.data(),
        case.tensor("teacher_forced_output")?.data(),
        TOLERANCE,
    );
    let forced_h_n = compare(
        forced.h_n.data(),
        case.tensor("teacher_forced_h_n")?.data(),
        TOLERANCE,
    );
    println!("teacher forced ({steps} steps): output {forced_output}; h_n {forced_h_n}");

    // (b) Free-running generation: one frame per push, the prediction fed back as input.
    let mut stream = model.stream(StreamOptions::default())?;
    stream.reset_to(Hx::h0(&h0))?;
    let mut x = input.data()[0];
    let mut generated = Vec::with_capacity(steps);
    for _ in 0..steps {
        let y = stream.push(&Tensor::new(vec![x], &[1, 1, 1])?)?.data()[0];
        generated.push(y);
        x = y;
    }
    let free_output = compare(
        &generated,
        case.tensor("autoregressive_output")?.data(),
        TOLERANCE,
    );
    let free_h_n = compare(
        stream.state()?.data(),
        case.tensor("autoregressive_h_n")?.data(),
        TOLERANCE,
    );
    println!("autoregressive ({steps} steps): output {free_output}; h_n {free_h_n}");

    let time = case.tensor("time_steps")?;
    let target = case.tensor("target")?;
    // Prediction i is for time step i + 1 (the next point).
    let at = |values: &[f32]| -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(time.data()[i + 1]), f64::from(v)))
            .collect()
    };
    let plotted = plot::line_plot(
        "sine_model on the GPU: next-point prediction",
        "t",
        "value",
        &[
            plot::Series {
                label: "true sin(t)",
                colour: "#444444",
                points: at(target.data()),
                dots: false,
            },
            plot::Series {
                label: "teacher forced",
                colour: "#1f77b4",
                points: at(forced.output.data()),
                dots: true,
            },
            plot::Series {
                label: "autoregressive",
                colour: "#d62728",
                points: at(&generated),
                dots: false,
            },
        ],
    );
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    plotted
        .and_then(|svg| std::fs::write(&out, svg))
        .map_err(|source| wgpu_rnn::RnnError::Io {
            path: out.clone(),
            source,
        })?;
    println!("plot: {}", out.display());

    let passed = [forced_output, forced_h_n, free_output, free_h_n]
        .iter()
        .all(|c| c.passed());
    println!(
        "{}",
        if passed {
            "PASS (≤ 1e-4 against PyTorch)"
        } else {
            "FAIL (> 1e-4 against PyTorch)"
        }
    );
    Ok(passed)
}
