//! The parity tool: runs PyTorch reference cases on the CPU path and on the GPU path and
//! compares both with PyTorch's stored results.
//!
//!     cargo run --release --example parity -- tests/fixtures/*.safetensors
//!
//! One line per file: name, configuration, adapter, max abs error of output and h_n on each
//! path, and PASS, FAIL or SKIP (a kind this crate does not run yet, with the reason).
//! LSTM cases (tests/fixtures/torch_gated, `lstm*`) also report c_n.
//! Exits 1 if any file fails. Tolerances: 1e-5 on the CPU path, 1e-4 on the GPU path.
//! `--chunk N` runs the GPU path of each unidirectional case through a stream, N frames per
//! push, carrying the state on the GPU.
//!
//! `--grad` checks the backward pass instead, on `CpuTrainer` and `GpuTrainer`:
//!
//!     cargo run --release --example parity -- --grad tests/fixtures/*.safetensors \
//!         tests/fixtures/torch_train/gated_grad/*.safetensors
//!
//! For every file with gradients (`grad_*` tensors: the nn.RNN cases of tests/fixtures and the
//! RNNCell case, the nn.LSTM / nn.GRU cases of tests/fixtures/torch_train/gated_grad) it runs
//! `forward_train` and `backward` from the file's upstream gradients (`grad_output`,
//! `grad_h_n`, `grad_c_n`; an RNNCell case is a one-layer nn.RNN over its steps whose output
//! is `h_steps`, upstream `grad_h_steps`) and prints, per gradient tensor (`input`, `h0`,
//! `c0`, each parameter), its error on the CPU and on the GPU path, `cpu/gpu`, measured as
//! `max|x − ref| / max(1, max|ref|)`. PASS when every tensor is within 1e-5 on the CPU path
//! and 1e-4 on the GPU path; files without gradients are SKIP.

use std::process::ExitCode;

use clap::Parser;

use wgpu_rnn::reference_case::{CaseCheck, ReferenceCase};
use wgpu_rnn::{
    CpuRnn, CpuTrainer, GpuContext, GpuRnn, GpuTrainer, Hx, OutputGrads, Result, RnnCell,
    RnnConfig, RnnMode, RnnWeights, Tensor, Train,
};

const CPU_TOLERANCE: f64 = 1e-5;
const GPU_TOLERANCE: f64 = 1e-4;

enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
}

fn describe(config: &RnnConfig, case: &ReferenceCase) -> String {
    let mode = match config.mode {
        RnnMode::Rnn(nonlinearity) => format!("nn.RNN {nonlinearity:?}"),
        other => other.torch_name().to_string(),
    };
    let projection = if config.proj_size > 0 {
        format!(" proj={}", config.proj_size)
    } else {
        String::new()
    };
    let head = format!(
        "{mode} I={} H={} L={}",
        config.input_size, config.hidden_size, config.num_layers
    );
    let flags = [config.bias, config.batch_first, config.bidirectional];
    head + &case_details(case, flags, &projection)
}

/// What every case line shows after the model's sizes: the flags that are set (`[bias,
/// batch_first, bidirectional]`), `extra`, h0, T, N and the lengths when the case has them.
fn case_details(
    case: &ReferenceCase,
    [bias, batch_first, bidirectional]: [bool; 3],
    extra: &str,
) -> String {
    let mut text = String::new();
    for (on, flag) in [
        (!bias, " nobias"),
        (batch_first, " batch_first"),
        (bidirectional, " bidir"),
        (case.has("h0"), " h0"),
    ] {
        if on {
            text.push_str(flag);
        }
    }
    text += extra;
    let batch = if case.flag("unbatched").unwrap_or(false) {
        "unbatched"
    } else {
        case.meta("batch").unwrap_or("?")
    };
    text += &format!(" T={} N={batch}", case.meta("seq_len").unwrap_or("?"));
    if let Ok(Some(lengths)) = case.lengths() {
        text += &format!(" lengths={lengths:?}");
    }
    text
}

fn errors(check: &CaseCheck) -> String {
    let c_n = check
        .c_n
        .map_or(String::new(), |c| format!(" c_n {:.1e}", c.max_abs));
    format!(
        "out {:.1e} h_n {:.1e}{c_n}",
        check.output.max_abs, check.h_n.max_abs
    )
}

/// An `nn.RNN`, `nn.LSTM` or `nn.GRU` case on both paths.
fn run_model(
    case: &ReferenceCase,
    gpu: Option<&GpuContext>,
    chunk: Option<usize>,
) -> Result<Verdict> {
    let config = case.config()?;
    let weights = case.weights(&config)?;
    let mut what = describe(&config, case);
    if let Some(chunk) = chunk {
        if let Some(reason) = unstreamable(config.bidirectional, case)? {
            return Ok(Verdict::Skip(format!("{what} | {reason}")));
        }
        what += &format!(" stream chunks of {chunk}");
    }
    let cpu = case.check(&CpuRnn::new(config.clone(), &weights)?, CPU_TOLERANCE)?;
    let Some(ctx) = gpu else {
        return Ok(Verdict::Fail(format!(
            "{what} | cpu {} | gpu: no adapter",
            errors(&cpu)
        )));
    };
    let model = GpuRnn::new(ctx, config, &weights)?;
    let gpu = match chunk {
        Some(chunk) => case.check_streamed(&model, chunk, GPU_TOLERANCE)?,
        None => case.check(&model, GPU_TOLERANCE)?,
    };
    let line = format!("{what} | cpu {} | gpu {}", errors(&cpu), errors(&gpu));
    Ok(if cpu.passed() && gpu.passed() {
        Verdict::Pass(line)
    } else {
        Verdict::Fail(line)
    })
}

fn run_cell(case: &ReferenceCase, gpu: Option<&GpuContext>) -> Result<Verdict> {
    let config = case.cell_config()?;
    let weights = case.cell_weights(&config)?;
    let what = format!(
        "RNNCell I={} H={} {:?}{} steps={} N={}{}",
        config.input_size,
        config.hidden_size,
        config.mode,
        if config.bias { "" } else { " nobias" },
        case.meta("steps").unwrap_or("?"),
        case.meta("batch").unwrap_or("?"),
        if case.has("h0") { " h0" } else { "" },
    );
    let cpu = case.check_cell(&RnnCell::cpu(config.clone(), &weights)?, CPU_TOLERANCE)?;
    let Some(ctx) = gpu else {
        return Ok(Verdict::Fail(format!(
            "{what} | cpu h {:.1e} | gpu: no adapter",
            cpu.max_abs
        )));
    };
    let gpu = case.check_cell(&RnnCell::gpu(ctx, config, &weights)?, GPU_TOLERANCE)?;
    let line = format!(
        "{what} | cpu h {:.1e} | gpu h {:.1e}",
        cpu.max_abs, gpu.max_abs
    );
    Ok(if cpu.passed() && gpu.passed() {
        Verdict::Pass(line)
    } else {
        Verdict::Fail(line)
    })
}

/// Why a case cannot run through a stream, if it cannot.
fn unstreamable(bidirectional: bool, case: &ReferenceCase) -> Result<Option<&'static str>> {
    Ok(if bidirectional {
        Some("bidirectional models cannot stream")
    } else if case.lengths()?.is_some() {
        Some("streams take full-length frames")
    } else {
        None
    })
}

fn run_file(path: &str, gpu: Option<&GpuContext>, chunk: Option<usize>) -> Verdict {
    let case = match ReferenceCase::load(path) {
        Ok(case) => case,
        Err(e) => return Verdict::Fail(format!("unreadable: {e}")),
    };
    match case.kind() {
        "rnn" | "rnn_packed" | "lstm" | "lstm_packed" | "gru" | "gru_packed" => {
            run_model(&case, gpu, chunk)
        }
        "rnn_cell" => run_cell(&case, gpu),
        "sine_model" => Ok(Verdict::Skip(
            "a trained model with a Linear head, not a parity case (see the sine_wave example)"
                .into(),
        )),
        other => Ok(Verdict::Skip(format!(
            "kind `{other}` is not supported yet"
        ))),
    }
    .unwrap_or_else(|e| Verdict::Fail(e.to_string()))
}

/// Runs PyTorch reference cases (see tests/fixtures) on the CPU and GPU paths and compares
/// both with PyTorch's stored results: one line per file, exit status 1 if any fails.
#[derive(Parser)]
#[command(name = "parity")]
struct Args {
    /// Run the GPU path of unidirectional cases (RNN, LSTM, GRU) through a stream, N frames a
    /// push, carrying the state on the GPU.
    #[arg(long, value_name = "N", value_parser = frames)]
    chunk: Option<usize>,

    /// Reference cases written by the PyTorch scripts in tests/fixtures.
    #[arg(value_name = "FILE.safetensors", required = true)]
    files: Vec<String>,
}

/// `--chunk`'s value: a whole number of frames, at least 1.
fn frames(text: &str) -> std::result::Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("not a number of frames ≥ 1".into()),
    }
}

fn main() -> ExitCode {
    let Args { chunk, files } = Args::parse();
    let gpu = match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            eprintln!("no GPU path: {e}");
            None
        }
    };
    let adapter = gpu
        .as_ref()
        .map_or("none".to_string(), GpuContext::describe);
    println!("adapter: {adapter}");
    let mut failed = 0;
    for path in &files {
        let name = std::path::Path::new(path)
            .file_stem()
            .map_or(path.clone(), |s| s.to_string_lossy().into_owned());
        let (status, detail) = match run_file(path, gpu.as_ref(), chunk) {
            Verdict::Pass(d) => ("PASS", d),
            Verdict::Fail(d) => {
                failed += 1;
                ("FAIL", d)
            }
            Verdict::Skip(d) => ("SKIP", d),
        };
        println!("{name:<28} {detail} | {adapter} | {status}");
    }
    println!("{} files, {failed} failed", files.len());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
