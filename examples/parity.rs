//! The parity tool: runs PyTorch reference cases on the CPU path and on the GPU path and
//! compares both with PyTorch's stored results.
//!
//!     cargo run --release --example parity -- tests/fixtures/*.safetensors
//!
//! One line per file: name, configuration, adapter, max abs error of output and h_n on each
//! path, and PASS, FAIL or SKIP (a kind this crate does not run yet, with the reason).
//! Exits 1 if any file fails. Tolerances: 1e-5 on the CPU path, 1e-4 on the GPU path.

use std::process::ExitCode;

use wgpu_rnn::reference_case::{CaseCheck, ReferenceCase};
use wgpu_rnn::{CpuRnn, GpuContext, GpuRnn, Result, RnnCell, RnnConfig};

const CPU_TOLERANCE: f64 = 1e-5;
const GPU_TOLERANCE: f64 = 1e-4;

enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
}

fn describe(config: &RnnConfig, case: &ReferenceCase) -> String {
    let mut text = format!(
        "I={} H={} L={} {:?}",
        config.input_size, config.hidden_size, config.num_layers, config.nonlinearity
    );
    for (on, flag) in [
        (!config.bias, " nobias"),
        (config.batch_first, " batch_first"),
        (config.bidirectional, " bidir"),
        (case.has("h0"), " h0"),
    ] {
        if on {
            text.push_str(flag);
        }
    }
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
    format!(
        "out {:.1e} h_n {:.1e}",
        check.output.max_abs, check.h_n.max_abs
    )
}

fn run_rnn(case: &ReferenceCase, gpu: Option<&GpuContext>) -> Result<Verdict> {
    let config = case.rnn_config()?;
    let weights = case.rnn_weights(&config)?;
    let what = describe(&config, case);
    let cpu = case.check_rnn(
        &CpuRnn::new(config.clone(), weights.clone())?,
        CPU_TOLERANCE,
    )?;
    let Some(ctx) = gpu else {
        return Ok(Verdict::Fail(format!(
            "{what} | cpu {} | gpu: no adapter",
            errors(&cpu)
        )));
    };
    let gpu = case.check_rnn(&GpuRnn::new(ctx, config, &weights)?, GPU_TOLERANCE)?;
    let line = format!("{what} | cpu {} | gpu {}", errors(&cpu), errors(&gpu));
    Ok(if cpu.passed() && gpu.passed() {
        Verdict::Pass(line)
    } else {
        Verdict::Fail(line)
    })
}

fn run_cell(case: &ReferenceCase, gpu: Option<&GpuContext>) -> Result<Verdict> {
    let config = case.rnn_cell_config()?;
    let weights = case.rnn_cell_weights(&config)?;
    let what = format!(
        "RNNCell I={} H={} {:?}{} steps={} N={}{}",
        config.input_size,
        config.hidden_size,
        config.nonlinearity,
        if config.bias { "" } else { " nobias" },
        case.meta("steps").unwrap_or("?"),
        case.meta("batch").unwrap_or("?"),
        if case.has("h0") { " h0" } else { "" },
    );
    let cpu = case.check_rnn_cell(
        &RnnCell::cpu(config.clone(), weights.clone())?,
        CPU_TOLERANCE,
    )?;
    let Some(ctx) = gpu else {
        return Ok(Verdict::Fail(format!(
            "{what} | cpu h {:.1e} | gpu: no adapter",
            cpu.max_abs
        )));
    };
    let gpu = case.check_rnn_cell(&RnnCell::gpu(ctx, config, weights)?, GPU_TOLERANCE)?;
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

fn run_file(path: &str, gpu: Option<&GpuContext>) -> Verdict {
    let case = match ReferenceCase::load(path) {
        Ok(case) => case,
        Err(e) => return Verdict::Fail(format!("unreadable: {e}")),
    };
    match case.kind() {
        "rnn" | "rnn_packed" => run_rnn(&case, gpu),
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

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f == "--help" || f == "-h") {
        eprintln!(
            "usage: parity FILE.safetensors...  (PyTorch reference cases; see tests/fixtures)"
        );
        return ExitCode::from(2);
    }
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
        let (status, detail) = match run_file(path, gpu.as_ref()) {
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
