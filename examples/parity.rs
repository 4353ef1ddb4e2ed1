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
//! Training fixtures (`tests/fixtures/torch_train/optim`, `runs`: metadata `kind` `optim` or
//! `train_run`) are replayed on both paths against PyTorch's results within their README's
//! bounds (an optimizer's steps within 1e-6; a whole training run's parameters, losses and final
//! loss), one line per file as for the forward cases:
//!
//!     cargo run --release --example parity -- tests/fixtures/torch_train/optim/*.safetensors \
//!         tests/fixtures/torch_train/runs/*.safetensors
//!
//! `--grad` checks the backward pass instead, on `CpuTrainer` and `GpuTrainer`:
//!
//!     cargo run --release --example parity -- --grad tests/fixtures/*.safetensors \
//!         tests/fixtures/torch_train/gated_grad/*.safetensors
//!
//! For every file with gradients (`grad_*` tensors: the nn.RNN cases of tests/fixtures and the
//! RNNCell case, the nn.LSTM / nn.GRU cases of tests/fixtures/torch_train/gated_grad) it runs
//! `forward_train` and `backward` from the file's upstream gradients (`grad_output`,
//! `grad_h_n`, `grad_c_n`; an RNNCell case trains unrolled over its steps through
//! `CpuTrainer::cell` / `GpuTrainer::cell`, its output `h_steps`, upstream `grad_h_steps`) and
//! prints, per gradient tensor (`input`, `h0`, `c0`, each parameter), its error on the CPU and
//! on the GPU path as `cpu/gpu`, measured as `max|x − ref| / max(1, max|ref|)`. PASS when every
//! tensor is within 1e-5 on the CPU path and 1e-4 on the GPU path; files without gradients
//! are SKIP. Exits 1 if any file fails.

use std::process::ExitCode;

#[path = "../tests/support/replay.rs"]
mod replay;

use clap::Parser;

use wgpu_rnn::reference_case::{CaseCheck, ReferenceCase};
use wgpu_rnn::{
    CellConfig, CpuRnn, CpuTrainer, DirectionWeights, GpuContext, GpuRnn, GpuTrainer, Hx,
    OutputGrads, Result, RnnCell, RnnConfig, RnnMode, RnnWeights, Tensor, Train,
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

/// What a cell case's line shows: its sizes, flags, steps and batch.
fn describe_cell(config: &CellConfig, case: &ReferenceCase) -> String {
    format!(
        "RNNCell I={} H={} {:?}{} steps={} N={}{}",
        config.input_size,
        config.hidden_size,
        config.mode,
        if config.bias { "" } else { " nobias" },
        case.meta("steps").unwrap_or("?"),
        case.meta("batch").unwrap_or("?"),
        if case.has("h0") { " h0" } else { "" },
    )
}

fn run_cell(case: &ReferenceCase, gpu: Option<&GpuContext>) -> Result<Verdict> {
    let config = case.cell_config()?;
    let weights = case.cell_weights(&config)?;
    let what = describe_cell(&config, case);
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
        "optim" => Ok(run_optim(&case, gpu)),
        "train_run" => Ok(run_training(path, &case, gpu)),
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

// ---------------------------------------------------------------------------------------------
// Training fixtures: optimizer steps and whole training runs (tests/support/replay.rs)

/// An `optim` fixture replayed on both paths: parameters after every step within 1e-6.
fn run_optim(case: &ReferenceCase, gpu: Option<&GpuContext>) -> Verdict {
    let optimizer = case.meta("optimizer").unwrap_or("?");
    let clip = case.meta("clip_grad_norm").unwrap_or("none");
    let describe = format!("optim {optimizer} clip {clip}");
    let mut errors = Vec::new();
    // The CPU path, then the GPU's where there is one.
    for ctx in std::iter::once(None).chain(gpu.map(Some)) {
        match replay::replay_optim(case, ctx) {
            Ok(worst) if worst <= 1e-6 => errors.push(format!("{worst:.1e}")),
            Ok(worst) => {
                return Verdict::Fail(format!("{describe} | parameters differ by {worst:.1e}"));
            }
            Err(e) => return Verdict::Fail(format!("{describe} | {e}")),
        }
    }
    Verdict::Pass(format!("{describe} | worst cpu/gpu {}", errors.join("/")))
}

/// A `train_run` fixture replayed: the whole run on the CPU path, on the GPU path too (every
/// iteration), within the fixture README's bounds.
fn run_training(path: &str, case: &ReferenceCase, gpu: Option<&GpuContext>) -> Verdict {
    let name = std::path::Path::new(path)
        .file_stem()
        .map_or(path.to_string(), |s| s.to_string_lossy().into_owned());
    match replay::replay_train_run(&name, case, gpu, usize::MAX) {
        Ok(lines) => Verdict::Pass(lines.join(" | ")),
        Err(failure) => Verdict::Fail(failure),
    }
}

// ---------------------------------------------------------------------------------------------
// --grad

/// A backward problem read from a case: the model, the training forward's arguments, the
/// upstream gradients, and the file's names of the expected gradients.
struct GradCase {
    what: String,
    model: GradModel,
    input: Tensor,
    lengths: Option<Vec<usize>>,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    d_output: Tensor,
    d_h_n: Option<Tensor>,
    d_c_n: Option<Tensor>,
    /// The file's name for the input's gradient: `grad_input`, or `grad_inputs` (RNNCell).
    d_input_name: &'static str,
}

/// What trains: a model, or a cell unrolled over the case's steps (its parameters under the
/// cell's names, `weight_ih` rather than `weight_ih_l0`, as the file has them).
enum GradModel {
    Rnn(RnnConfig, RnnWeights),
    Cell(CellConfig, DirectionWeights),
}

impl GradCase {
    /// An nn.RNN / nn.LSTM / nn.GRU case: loss = Σ output·grad_output + Σ h_n·grad_h_n
    /// (+ Σ c_n·grad_c_n).
    fn model(case: &ReferenceCase) -> Result<Self> {
        let config = case.config()?;
        let optional = |name: &str| case.has(name).then(|| case.tensor(name)).transpose();
        Ok(GradCase {
            what: describe(&config, case),
            model: GradModel::Rnn(config.clone(), case.weights(&config)?),
            input: case.tensor("input")?,
            lengths: case.lengths()?,
            h0: optional("h0")?,
            c0: optional("c0")?,
            d_output: case.tensor("grad_output")?,
            d_h_n: optional("grad_h_n")?,
            d_c_n: optional("grad_c_n")?,
            d_input_name: "grad_input",
        })
    }

    /// An nn.RNNCell case run for S steps: the cell unrolled over S frames, its output
    /// `h_steps`; the upstream gradient is `grad_h_steps`, and h_n reaches no loss.
    fn cell(case: &ReferenceCase) -> Result<Self> {
        let cell = case.cell_config()?;
        let weights = case.cell_weights(&cell)?;
        let input = case.tensor("inputs")?;
        // The cell's h0 is (N, H); the model's (1, N, H).
        let h0 = match case.has("h0") {
            true => {
                let h0 = case.tensor("h0")?;
                let shape = [1, h0.shape()[0], cell.hidden_size];
                Some(Tensor::new(h0.into_data(), &shape)?)
            }
            false => None,
        };
        Ok(GradCase {
            what: describe_cell(&cell, case),
            model: GradModel::Cell(cell, weights),
            input,
            lengths: None,
            h0,
            c0: None,
            d_output: case.tensor("grad_h_steps")?,
            d_h_n: None,
            d_c_n: None,
            d_input_name: "grad_inputs",
        })
    }

    /// One training forward and backward on `model` (fresh: its gradients are this backward's
    /// alone): `(the file's name, error)` of every gradient the file holds.
    fn errors(&self, model: &mut impl Train, case: &ReferenceCase) -> Result<Vec<(String, f64)>> {
        let hx = self.h0.as_ref().map(|h0| Hx {
            h0,
            c0: self.c0.as_ref(),
        });
        let (_, tape) = model.forward_train(&self.input, self.lengths.as_deref(), hx)?;
        let upstream = OutputGrads {
            d_output: &self.d_output,
            d_h_n: self.d_h_n.as_ref(),
            d_c_n: self.d_c_n.as_ref(),
        };
        let inputs = model.backward(tape, upstream)?;
        let mut got = vec![(self.d_input_name.to_string(), Some(inputs.d_input))];
        if case.has("grad_h0") {
            got.push(("grad_h0".into(), Some(inputs.d_h0)));
        }
        if case.has("grad_c0") {
            got.push(("grad_c0".into(), inputs.d_c0));
        }
        for (name, grad) in model.gradients()? {
            got.push((format!("grad.{name}"), Some(grad)));
        }
        got.into_iter()
            .map(|(name, grad)| {
                let want = case.tensor(&name)?;
                let error = grad.map_or(f64::INFINITY, |grad| grad_error(&grad, &want));
                Ok((name, error))
            })
            .collect()
    }
}

/// The fixtures' error measure, `max|x − ref| / max(1, max|ref|)`; NaN or a different number
/// of elements is infinite. States may be stored without a dimension of one (an unbatched
/// h0, a cell's h0), so only the element counts must agree.
fn grad_error(got: &Tensor, want: &Tensor) -> f64 {
    wgpu_rnn::compare::scaled_max_error(got.data(), want.data())
}

/// `grad.weight_ih_l0` → `weight_ih_l0`, `grad_h0` → `h0`.
fn short_name(name: &str) -> &str {
    name.strip_prefix("grad.")
        .or_else(|| name.strip_prefix("grad_"))
        .unwrap_or(name)
}

/// A case's gradients on both trainers: `cpu/gpu` error per tensor, and the tensors beyond
/// the tolerances.
fn run_grad(problem: &GradCase, case: &ReferenceCase, gpu: Option<&GpuContext>) -> Result<Verdict> {
    let cpu_model = &mut match &problem.model {
        GradModel::Rnn(config, weights) => CpuTrainer::new(config.clone(), weights)?,
        GradModel::Cell(config, weights) => CpuTrainer::cell(config.clone(), weights)?,
    };
    let cpu = problem.errors(cpu_model, case)?;
    let gpu = match gpu {
        Some(ctx) => {
            let gpu_model = &mut match &problem.model {
                GradModel::Rnn(config, weights) => GpuTrainer::new(ctx, config.clone(), weights)?,
                GradModel::Cell(config, weights) => GpuTrainer::cell(ctx, config.clone(), weights)?,
            };
            Some(problem.errors(gpu_model, case)?)
        }
        None => None,
    };
    let mut cells = Vec::new();
    let mut over = Vec::new();
    for (i, (name, cpu)) in cpu.iter().enumerate() {
        let name = short_name(name);
        let gpu = gpu.as_ref().map(|gpu| gpu[i].1);
        let gpu_text = gpu.map_or("-".into(), |e| format!("{e:.1e}"));
        cells.push(format!("{name} {cpu:.1e}/{gpu_text}"));
        for (path, error, tolerance) in [
            ("cpu", Some(*cpu), CPU_TOLERANCE),
            ("gpu", gpu, GPU_TOLERANCE),
        ] {
            if error.is_some_and(|e| e.is_nan() || e > tolerance) {
                over.push(format!("{path} {name}"));
            }
        }
    }
    let mut line = format!("{} | grads cpu/gpu: {}", problem.what, cells.join(", "));
    if gpu.is_none() {
        line += " | gpu: no adapter";
    }
    Ok(if over.is_empty() && gpu.is_some() {
        Verdict::Pass(line)
    } else {
        if !over.is_empty() {
            line += &format!(" | over tolerance: {}", over.join(", "));
        }
        Verdict::Fail(line)
    })
}

fn run_grad_file(path: &str, gpu: Option<&GpuContext>) -> Verdict {
    let case = match ReferenceCase::load(path) {
        Ok(case) => case,
        Err(e) => return Verdict::Fail(format!("unreadable: {e}")),
    };
    let problem = match case.kind() {
        kind if !case.has("grad_output") && !case.has("grad_h_steps") => {
            return Verdict::Skip(format!(
                "kind `{kind}`: no gradients in this file (no grad_output or grad_h_steps)"
            ));
        }
        "rnn" | "rnn_packed" | "lstm" | "lstm_packed" | "gru" | "gru_packed" => {
            GradCase::model(&case)
        }
        "rnn_cell" => GradCase::cell(&case),
        other => {
            return Verdict::Skip(format!(
                "kind `{other}`: gradients of this kind are not supported"
            ));
        }
    };
    problem
        .and_then(|problem| run_grad(&problem, &case, gpu))
        .unwrap_or_else(|e| Verdict::Fail(e.to_string()))
}

/// Runs PyTorch reference cases (see tests/fixtures) on the CPU and GPU paths and compares
/// both with PyTorch's stored results (with --grad: the gradients of a backward pass): one
/// line per file, exit status 1 if any fails.
#[derive(Parser)]
#[command(name = "parity")]
struct Args {
    /// Run the GPU path of unidirectional cases (RNN, LSTM, GRU) through a stream, N frames a
    /// push, carrying the state on the GPU.
    #[arg(long, value_name = "N", value_parser = frames, conflicts_with = "grad")]
    chunk: Option<usize>,

    /// Check the backward pass instead of the forward: every file with gradients (`grad_*`
    /// tensors) runs forward_train and backward on CpuTrainer and GpuTrainer, and each
    /// gradient is compared with PyTorch's.
    #[arg(long)]
    grad: bool,

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
    let Args { chunk, grad, files } = Args::parse();
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
        let verdict = match grad {
            true => run_grad_file(path, gpu.as_ref()),
            false => run_file(path, gpu.as_ref(), chunk),
        };
        let (status, detail) = match verdict {
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
