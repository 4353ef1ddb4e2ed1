//! The sequence-length scaling report: how the time of an `nn.RNN`, `nn.LSTM` or `nn.GRU`
//! forward (`--cell`) grows with the sequence length T on your GPU, next to the CPU reference
//! path and to PyTorch and onnxruntime CPU baselines: stored ones, or (`--torch PYTHON`)
//! timed in the same run.
//!
//!     cargo run --release --example scaling -- [--quick] [--cell lstm] [--torch PYTHON] [...]
//!
//! For each configuration (hidden size H = input size, batch N) and each T it prints a row:
//! median wall time over several forwards after a warm-up, µs per step, GFLOP/s, the GPU's own
//! execution time (timestamp queries) and so the host overhead, the CPU path's time and the
//! speedup, and the baselines where they have a row. Then, per configuration, the time to a
//! first GPU forward (making the model and its first run, which compiles its kernels: steady
//! speed and start-up are separate costs), and a least-squares line per configuration and
//! path, time = overhead + T · (time per step). Files in `--out`
//! (default `target/scaling/`): `scaling.csv`, `fit.csv`, `scaling.svg`. `--help` lists every
//! flag; `--gemm` measures only the input-projection GEMM, in each form the adapter has;
//! `--peak` only the adapter's multiply-add ceiling (what every GFLOP/s is read against).
//!
//! `--backward` times training steps instead: `GpuTrainer` (and `CpuTrainer`) forward_train
//! and backward_params of loss = output.sum() (the parameters' gradients only, as PyTorch's
//! baseline with x and h0 not requiring grad), with their forward and backward shares and the GPU
//! training workspace's size, next to PyTorch's forward + `y.sum().backward()` with
//! `--torch`. Its files: `training.csv`, `training_fit.csv`, `training.svg`.

mod baselines;
mod fit;
mod measure;
mod model;
mod options;
mod progress;
mod shape;
mod svg;
mod table;
mod torch;

use std::cell::OnceCell;
use std::path::Path as FilePath;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wgpu_rnn::testing::ProjectionForm;
use wgpu_rnn::{CpuTrainer, GpuContext, GpuTrainer, Tensor};

use baselines::{BaselineTimes, Baselines};
use measure::{Path, Predictor, Sampling, Timing, Workload};
use model::{CpuModel, GpuModel};
use options::{Command, Gemm, Options};
use progress::Progress;
use shape::{Cell, Shape};
use table::{FitRow, Row};
use torch::TorchTimer;

type Error = Box<dyn std::error::Error>;

/// onnxruntime's output may differ from PyTorch's by rounding only; more is noted.
const ORT_TOLERANCE: f64 = 1e-4;

/// Long forwards on software adapters run for minutes; the library's default is 2 minutes.
const GPU_TIMEOUT: Duration = Duration::from_secs(3600);

/// `println!` that ends the program quietly when stdout has been closed (the report piped into
/// `head`, say) instead of panicking as `println!` does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

fn main() -> ExitCode {
    // `--help` and bad flags: clap prints the help or the error and exits (0 or 2).
    let command = options::parse(std::env::args_os()).unwrap_or_else(|error| error.exit());
    let result = match command {
        Command::Gemm(gemm) => run_gemm(&gemm),
        Command::Peak => run_peak(),
        Command::Report(options) => run_report(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn open_gpu() -> Result<GpuContext, Error> {
    let ctx = GpuContext::new()?;
    ctx.set_timeout(GPU_TIMEOUT);
    let info = ctx.adapter_info();
    out!(
        "adapter: {} | backend {:?} | type {:?} | driver {} {}",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info
    );
    Ok(ctx)
}

// ---------------------------------------------------------------------------------------------
// --gemm

/// Each timed submission of `--gemm` and `--peak` runs at least this long, so that submit and
/// wait are a small share; the median of this many is reported.
const KERNEL_SUBMISSION: Duration = Duration::from_millis(200);
const KERNEL_ROUNDS: usize = 5;

/// Dispatches per timed submission for a kernel one dispatch of which took `once`.
fn repeats_for(once: Duration) -> u32 {
    (KERNEL_SUBMISSION.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 1000.0) as u32
}

fn run_gemm(gemm: &Gemm) -> Result<(), Error> {
    let ctx = open_gpu()?;
    let (rows, depth, cols) = gemm.shape;
    let time =
        |form, repeats| wgpu_rnn::testing::time_input_projection(&ctx, gemm.shape, form, repeats);
    // The tile kernel, and the weight-stationary one where this adapter runs it for the shape.
    let mut forms = vec![(ProjectionForm::Tile, time(ProjectionForm::Tile, 1)?)];
    match time(ProjectionForm::Stationary, 1) {
        Ok(once) => forms.push((ProjectionForm::Stationary, once)),
        Err(wgpu_rnn::RnnError::InvalidConfig(why)) => out!("{why}: the tile kernel only"),
        Err(error) => return Err(error.into()),
    }
    let longest = forms
        .iter()
        .map(|&(_, once)| once)
        .max()
        .unwrap_or_default();
    let repeats = repeats_for(longest);
    // Rounds alternate between the forms, so that both see the same machine.
    let mut times = vec![Vec::new(); forms.len()];
    for _ in 0..KERNEL_ROUNDS {
        for (&(form, _), times) in forms.iter().zip(&mut times) {
            times.push(time(form, repeats)?);
        }
    }
    out!(
        "input projection GEMM P = X·Wᵀ + b: X {rows}×{depth}, W {cols}×{depth}; \
         {repeats} dispatch(es) per submission, median of {KERNEL_ROUNDS} submissions"
    );
    let flops = 2.0 * (rows * depth * cols) as f64;
    let mut gflops = Vec::new();
    for (&(form, _), times) in forms.iter().zip(&mut times) {
        times.sort_unstable();
        let time = times[KERNEL_ROUNDS / 2];
        gflops.push(flops / time.as_secs_f64() / 1e9);
        out!(
            "{form:?}: {:.3} ms per dispatch, {:.1} GFLOP/s",
            table::millis(time),
            gflops[gflops.len() - 1]
        );
    }
    if let [tile, stationary] = gflops[..] {
        out!("stationary / tile: {:.2}×", stationary / tile);
    }
    // What a layer's projection of this shape runs: the last form timed.
    out!("gemm_gflops={:.2}", gflops[gflops.len() - 1]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// --peak

/// The peak kernel's dispatch: enough invocations to fill a large GPU, each running this
/// many iterations (within llvmpipe's loop limit).
const PEAK_WORKGROUPS: u32 = 1024;
const PEAK_ITERATIONS: u32 = 1024;

fn run_peak() -> Result<(), Error> {
    let ctx = open_gpu()?;
    let time = |repeats| {
        wgpu_rnn::testing::time_peak_multiply_adds(&ctx, PEAK_WORKGROUPS, PEAK_ITERATIONS, repeats)
    };
    let once = time(1)?.per_dispatch;
    let repeats = repeats_for(once);
    let mut runs = (0..KERNEL_ROUNDS)
        .map(|_| time(repeats))
        .collect::<Result<Vec<_>, _>>()?;
    runs.sort_by_key(|run| run.per_dispatch);
    let run = &runs[KERNEL_ROUNDS / 2];
    // The chains converge to 1: a sum far from eight a component means the kernel did not run.
    if let Some(bad) = run.sums.iter().find(|sum| (*sum - 8.0).abs() > 1e-3) {
        return Err(format!("the peak kernel's chains ended at {bad}, not 8").into());
    }
    let rate = run.rate();
    out!(
        "multiply-add ceiling: {PEAK_WORKGROUPS} workgroups × 64 invocations × 8 vec4 chains of 8 × \
         {PEAK_ITERATIONS} fused multiply-adds, in registers; {repeats} dispatch(es) per \
         submission, median of {KERNEL_ROUNDS} submissions"
    );
    out!(
        "{:.3} ms per dispatch: {:.1} G multiply-adds/s, {:.1} GFLOP/s",
        table::millis(run.per_dispatch),
        rate / 1e9,
        2.0 * rate / 1e9
    );
    out!("peak_gflops={:.2}", 2.0 * rate / 1e9);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report

fn run_report(options: &Options) -> Result<(), Error> {
    let started = Instant::now();
    let ctx = open_gpu()?;
    let workload = options.workload;
    let torch = match &options.torch {
        Some(python) => Some(start_torch(python, options.torch_threads, workload)?),
        None => None,
    };
    let run = match workload {
        Workload::Forward => "forward",
        Workload::Training => "training step (forward_train + backward_params)",
    };
    out!(
        "{}; Recurrence::{:?}; input (T, N, H); {}: one warm-up {run}, then the median of 3 to {}\n",
        model_description(options.cell),
        options.recurrence,
        if options.quick {
            "--quick"
        } else {
            "each point"
        },
        if options.quick { 20 } else { 50 },
    );
    let (legend, live_legend) = match workload {
        Workload::Forward => (table::LEGEND, table::LIVE_LEGEND),
        Workload::Training => (table::TRAINING_LEGEND, table::TRAINING_LIVE_LEGEND),
    };
    out!("{legend}");
    if torch.is_some() {
        out!("{live_legend}");
    }
    out!();
    let provenance = match (&torch, workload) {
        (Some(torch), _) => live_provenance(options, torch),
        (None, Workload::Training) => "torch: benches/baselines/ holds forwards only: --torch \
                                       PYTHON times PyTorch's training step in this run."
            .to_string(),
        (None, Workload::Forward) if options.cell == Cell::Rnn => baselines::PROVENANCE.to_string(),
        (None, Workload::Forward) => baselines::missing(options.cell),
    };
    let mut session = Session::new(ctx.clone(), options, torch);
    let header = table::header(session.live(), workload);
    session.progress.suspend(|| out!("{header}"));
    let mut rows = Vec::new();
    for &shape in &options.configs {
        rows.extend(session.measure_config(shape)?);
    }
    session.progress.finish();
    out!();
    if let Some(diff) = session.ort_diff {
        session.notes.push(format!(
            "onnxruntime's outputs match PyTorch's to {diff:.1e} (largest difference)"
        ));
    }
    if !session.first_runs.is_empty() {
        out!("{}", first_runs_legend(workload));
        for (shape, seq_len, time) in &session.first_runs {
            out!(
                "{:<14} T={seq_len:<6} {:8.2} s",
                shape.label(),
                time.as_secs_f64()
            );
        }
        out!();
    }
    for note in &session.notes {
        out!("note: {note}");
    }
    out!("{provenance}\n");

    let fits = fit_all(&options.configs, &rows);
    out!("Least-squares fit per configuration and path: time = overhead + T × (µs/step)");
    out!("(ordinary least squares, so the longest sequences dominate: an overhead below");
    out!("zero only means the fixed cost is smaller than the noise of the longest runs)");
    out!("{}", table::format_fits(&fits));
    let live = session.live();
    drop(session); // ends the PyTorch process before the files are written
    write_outputs(options, &ctx, &rows, &fits, live)?;
    out!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `nn.RNN(H, H), 1 layer, tanh, unidirectional`, and the same for the other cells.
fn model_description(cell: Cell) -> String {
    let tanh = if cell == Cell::Rnn { ", tanh" } else { "" };
    format!("{}(H, H), 1 layer{tanh}, unidirectional", cell.torch_name())
}

fn start_torch(python: &str, threads: usize, workload: Workload) -> Result<TorchTimer, Error> {
    out!(
        "starting PyTorch ({python} -c {}) ...",
        torch::script_name(workload)
    );
    let torch = TorchTimer::start(python, threads, workload)?;
    let versions = &torch.versions;
    out!(
        "torch {} | onnxruntime {} | {} threads",
        versions.torch,
        versions.ort.as_deref().unwrap_or("not installed there"),
        versions.threads
    );
    Ok(torch)
}

fn live_provenance(options: &Options, torch: &TorchTimer) -> String {
    let versions = &torch.versions;
    if options.workload == Workload::Training {
        return format!(
            "torch: PyTorch {} {} on the CPU, {} threads: train(), `y, _ = model(x);\n\
             y.sum().backward()` (float32, zero state, x without requires_grad, .grad\n\
             accumulating from run to run as ours does), timed in this run by\n\
             examples/scaling/time_torch_train.py under {}, right after our paths at\n\
             each point, with the same warm-up and number of runs.",
            versions.torch,
            options.cell.torch_name(),
            versions.threads,
            options.torch.as_deref().unwrap_or_default()
        );
    }
    let ort = match &versions.ort {
        Some(version) => format!(" and onnxruntime {version}"),
        None => String::new(),
    };
    format!(
        "torch / ort: PyTorch {}{ort} {} on the CPU, {} threads (eval, no_grad, float32,\n\
         zero state), timed in this run by benches/baselines/time_torch.py under {}, right\n\
         after the GPU and CPU paths at each point, with the same warm-up and number of runs.",
        versions.torch,
        options.cell.torch_name(),
        versions.threads,
        options.torch.as_deref().unwrap_or_default()
    )
}

/// The heading of the time to a first run, which says whether Mesa's shader cache could serve
/// kernels compiled by an earlier process.
fn first_runs_legend(workload: Workload) -> String {
    let run = match workload {
        Workload::Forward => "forward",
        Workload::Training => "training step",
    };
    let cache_off = std::env::var("MESA_SHADER_CACHE_DISABLE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let cache = if cache_off {
        "Mesa's shader cache off (MESA_SHADER_CACHE_DISABLE): every kernel compiled cold"
    } else {
        "kernels an earlier process compiled may load from the driver's shader cache \
         (MESA_SHADER_CACHE_DISABLE=true for cold compiles on Mesa)"
    };
    format!(
        "Time to a first GPU {run}: making the model, then its first {run} at the first \
         length (the first configuration also compiles what later ones share)\n({cache})"
    )
}

/// One configuration's models: for inference, or trainers (`--backward`). `cpu` is `None` with
/// `--gpu-only`, `gpu` when the adapter could not take the model. Boxed: they are large, and
/// there is one set per configuration.
enum Models {
    Inference {
        gpu: Option<Box<GpuModel>>,
        cpu: Option<Box<CpuModel>>,
    },
    Training {
        gpu: Option<Box<GpuTrainer>>,
        cpu: Option<Box<CpuTrainer>>,
    },
}

/// What the measurements of one report share.
struct Session<'a> {
    ctx: GpuContext,
    options: &'a Options,
    sampling: Sampling,
    baselines: Baselines,
    predictor: Predictor,
    /// Configurations and paths past their time budget: their longer lengths are skipped too.
    over_budget: Vec<(Shape, Path)>,
    /// Configurations already noted as running in time chunks.
    chunked: Vec<Shape>,
    progress: Progress,
    notes: Vec<String>,
    /// `--torch`: the PyTorch process.
    torch: Option<TorchTimer>,
    /// The largest difference between onnxruntime's and PyTorch's outputs so far.
    ort_diff: Option<f64>,
    /// Per configuration, the time to a first GPU forward (or training step): making the
    /// model, then its first run at the first length.
    first_runs: Vec<(Shape, usize, Duration)>,
}

impl<'a> Session<'a> {
    fn new(ctx: GpuContext, options: &'a Options, torch: Option<TorchTimer>) -> Self {
        let paths = if options.gpu_only { 1 } else { 2 } + usize::from(torch.is_some());
        Session {
            ctx,
            options,
            sampling: Sampling::new(options.quick),
            baselines: Baselines::load(),
            predictor: Predictor::new(),
            over_budget: Vec::new(),
            chunked: Vec::new(),
            progress: Progress::new(
                options.configs.len() * options.lengths.len() * paths * options.rounds,
            ),
            notes: Vec::new(),
            torch,
            ort_diff: None,
            first_runs: Vec::new(),
        }
    }

    /// Whether the torch and ort columns are this run's (`--torch`).
    fn live(&self) -> bool {
        self.torch.is_some()
    }

    /// Every length of one configuration, each row printed as soon as it is measured.
    fn measure_config(&mut self, shape: Shape) -> Result<Vec<Row>, Error> {
        let making = Instant::now();
        let mut models = self.models(shape)?;
        let making = making.elapsed();
        let options = self.options;
        let mut rows = Vec::new();
        for &seq_len in &options.lengths {
            let (row, first_gpu) = self.measure_length(shape, seq_len, &mut models);
            if let (true, Some(first)) = (rows.is_empty(), first_gpu.and_then(|t| t.warm_up)) {
                self.first_runs.push((shape, seq_len, making + first));
            }
            let line = table::format_row(&row, self.live(), options.workload);
            self.progress.suspend(|| out!("{line}"));
            rows.push(row);
        }
        Ok(rows)
    }

    /// The configuration's models, from the same weights. A GPU model the adapter cannot hold
    /// becomes a note; the CPU path still runs.
    fn models(&mut self, shape: Shape) -> Result<Models, Error> {
        let (gpu_only, recurrence) = (self.options.gpu_only, self.options.recurrence);
        Ok(match self.options.workload {
            Workload::Forward => {
                let (gpu, cpu) = model::build(&self.ctx, shape, gpu_only, recurrence)?;
                let gpu = self.gpu_or_note(shape, gpu).map(Box::new);
                let cpu = cpu.map(Box::new);
                Models::Inference { gpu, cpu }
            }
            Workload::Training => {
                let (gpu, cpu) = model::build_trainers(&self.ctx, shape, gpu_only, recurrence)?;
                let gpu = self.gpu_or_note(shape, gpu).map(Box::new);
                let cpu = cpu.map(Box::new);
                Models::Training { gpu, cpu }
            }
        })
    }

    fn gpu_or_note<M>(&mut self, shape: Shape, gpu: wgpu_rnn::Result<M>) -> Option<M> {
        gpu.map_err(|error| {
            self.notes
                .push(format!("{}: no GPU model: {error}", shape.label()))
        })
        .ok()
    }

    /// One point: every path `--rounds` times, alternating, each keeping its median round;
    /// and the GPU path's first round.
    fn measure_length(
        &mut self,
        shape: Shape,
        seq_len: usize,
        models: &mut Models,
    ) -> (Row, Option<Timing>) {
        // Made only if a path runs: the largest inputs are a GiB.
        let input = OnceCell::new();
        let ones = OnceCell::new();
        let workspace = self.workspace_bytes(shape, seq_len, models);
        let mut rounds: [Vec<Timing>; 4] = Default::default();
        for _ in 0..self.options.rounds {
            let (gpu, cpu) = self.measure_ours(shape, seq_len, models, &input, &ones);
            let (torch, ort) = self.measure_torch(shape, seq_len);
            for (kept, timing) in rounds.iter_mut().zip([gpu, cpu, torch, ort]) {
                kept.extend(timing);
            }
        }
        let first_gpu = rounds[0].first().copied();
        let [gpu, cpu, torch, ort] = rounds.map(median_round);
        let baseline = match self.options.workload {
            Workload::Forward => self.baselines.lookup(
                shape.cell,
                shape.hidden,
                shape.input(),
                shape.batch,
                seq_len,
            ),
            // The stored baselines are forwards.
            Workload::Training => BaselineTimes::default(),
        };
        let row = Row {
            shape,
            seq_len,
            gpu,
            cpu,
            torch,
            ort,
            baseline,
            workspace,
        };
        (row, first_gpu)
    }

    /// One round of our paths at one point: the GPU's timing and the CPU's. `input` and (for
    /// training) `ones`, the upstream gradient, are made at the first run that needs them.
    fn measure_ours(
        &mut self,
        shape: Shape,
        seq_len: usize,
        models: &mut Models,
        input: &OnceCell<Tensor>,
        ones: &OnceCell<Tensor>,
    ) -> (Option<Timing>, Option<Timing>) {
        let sampling = self.sampling;
        let input = || input.get_or_init(|| shape.make_input(seq_len));
        let ones = || ones.get_or_init(|| shape.output_ones(seq_len));
        match models {
            Models::Inference { gpu, cpu } => {
                let gpu = gpu.as_deref().and_then(|model| {
                    let timing = self.measure(Path::Gpu, shape, seq_len, || {
                        measure::time_gpu(model, input(), sampling)
                    })?;
                    self.note_time_chunks(model, shape, seq_len);
                    Some(timing)
                });
                let cpu = cpu.as_deref().and_then(|model| {
                    self.measure(Path::Cpu, shape, seq_len, || {
                        measure::time_cpu(model, input(), sampling)
                    })
                });
                (gpu, cpu)
            }
            Models::Training { gpu, cpu } => {
                let ctx = self.ctx.clone();
                let wait_for_device = move || {
                    ctx.device()
                        .poll(wgpu::PollType::wait_indefinitely())
                        .map(|_| ())
                        .map_err(|e| wgpu_rnn::RnnError::DeviceLost(e.to_string()))
                };
                let gpu = gpu.as_deref_mut().and_then(|model| {
                    self.measure(Path::Gpu, shape, seq_len, || {
                        measure::time_training(model, input(), ones(), sampling, &wait_for_device)
                    })
                });
                let cpu = cpu.as_deref_mut().and_then(|model| {
                    self.measure(Path::Cpu, shape, seq_len, || {
                        measure::time_training(model, input(), ones(), sampling, || Ok(()))
                    })
                });
                (gpu, cpu)
            }
        }
    }

    /// `--backward`: the bytes of GPU memory the trainer's workspace of (T, N) takes (made
    /// here, as the first training step would make it). Where the whole sequence's workspace
    /// would exceed the adapter's limits, the sequence trains in time chunks (checkpointing)
    /// and this is one chunk's workspace, noted. A failure becomes a note.
    fn workspace_bytes(
        &mut self,
        shape: Shape,
        seq_len: usize,
        models: &mut Models,
    ) -> Option<u64> {
        let Models::Training {
            gpu: Some(model), ..
        } = models
        else {
            return None;
        };
        let what = format!("{} T={seq_len} gpu", shape.label());
        let bytes = model.time_chunk(seq_len, shape.batch).and_then(|chunk| {
            if chunk < seq_len {
                self.notes.push(format!(
                    "{what}: trains in time chunks of {chunk} steps (checkpointing: the whole \
                     sequence's workspace exceeds the adapter's limits), the backward \
                     recomputing each chunk's forward; workspace: one chunk's"
                ));
            }
            model.workspace_bytes(chunk, shape.batch)
        });
        bytes
            .map_err(|error| {
                self.notes
                    .push(format!("{what}: no training workspace: {error}"))
            })
            .ok()
    }

    /// With `--torch`: PyTorch's and onnxruntime's times of the same point, unless PyTorch is
    /// predicted to exceed `--gpu-budget` or its process has failed.
    fn measure_torch(&mut self, shape: Shape, seq_len: usize) -> (Option<Timing>, Option<Timing>) {
        if !self.torch.as_ref().is_some_and(TorchTimer::is_alive) {
            return (None, None);
        }
        if self.over_budget(Path::Torch, shape, seq_len) {
            self.progress.advance();
            return (None, None);
        }
        let what = format!("{} T={seq_len} torch", shape.label());
        self.progress.working_on(&what);
        let torch = self.torch.as_mut().expect("checked above");
        let result = torch.measure(shape, seq_len, self.sampling);
        self.progress.advance();
        match result {
            Ok(measured) => {
                self.predictor
                    .record(Path::Torch, shape, seq_len, &measured.torch);
                if let Some(diff) = measured.ort_diff {
                    self.ort_diff = Some(self.ort_diff.map_or(diff, |d| d.max(diff)));
                    if diff > ORT_TOLERANCE {
                        self.notes.push(format!(
                            "{what}: onnxruntime's output differs from PyTorch's by {diff:.1e}"
                        ));
                    }
                }
                (Some(measured.torch), measured.ort)
            }
            Err(error) => {
                self.notes.push(format!("{what}: failed: {error}"));
                (None, None)
            }
        }
    }

    /// Runs one measurement under the progress bar unless it is predicted to exceed its path's
    /// budget. A failure becomes a note.
    fn measure(
        &mut self,
        path: Path,
        shape: Shape,
        seq_len: usize,
        run: impl FnOnce() -> wgpu_rnn::Result<Timing>,
    ) -> Option<Timing> {
        let what = format!("{} T={seq_len} {}", shape.label(), path.name());
        if self.over_budget(path, shape, seq_len) {
            self.progress.advance();
            return None;
        }
        self.progress.working_on(&what);
        let result = run();
        self.progress.advance();
        match result {
            Ok(timing) => {
                self.predictor.record(path, shape, seq_len, &timing);
                Some(timing)
            }
            Err(error) => {
                self.notes.push(format!("{what}: failed: {error}"));
                None
            }
        }
    }

    /// Whether a forward would take longer than the path's budget; noted once per
    /// configuration and path, whose longer sequences are then skipped too.
    fn over_budget(&mut self, path: Path, shape: Shape, seq_len: usize) -> bool {
        if self.over_budget.contains(&(shape, path)) {
            return true;
        }
        let (budget, flag) = match path {
            Path::Gpu | Path::Torch | Path::Ort => (self.options.gpu_budget, "--gpu-budget"),
            Path::Cpu => (self.options.cpu_budget, "--cpu-budget"),
        };
        let predicted = self.predictor.predict(path, shape, seq_len);
        let Some((budget, predicted)) = budget.zip(predicted).filter(|(b, p)| p > b) else {
            return false;
        };
        self.over_budget.push((shape, path));
        self.notes.push(format!(
            "{} {}: skipped from T={seq_len} on, predicted {} s per forward ({flag} {} s)",
            shape.label(),
            path.name(),
            table::significant(predicted.as_secs_f64()),
            budget.as_secs_f64()
        ));
        true
    }

    /// Notes, once per configuration, from which measured length on a forward runs in time
    /// chunks (the adapter's buffer limits): one submission and readback per chunk.
    fn note_time_chunks(&mut self, model: &GpuModel, shape: Shape, seq_len: usize) {
        if self.chunked.contains(&shape) {
            return;
        }
        if let Ok(chunk) = model.time_chunk(seq_len, shape.batch)
            && chunk < seq_len
        {
            self.chunked.push(shape);
            self.notes.push(format!(
                "{} gpu: from T={seq_len} on, a forward runs in time chunks of {chunk} steps \
                 (the adapter's buffer limits), one submission each",
                shape.label()
            ));
        }
    }
}

fn fit_all(configs: &[Shape], rows: &[Row]) -> Vec<FitRow> {
    let mut fits = Vec::new();
    for &shape in configs {
        for path in Path::ALL {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|row| row.shape == shape)
                .filter_map(|row| {
                    let ms = table::millis(row.timing(path)?.median);
                    Some((row.seq_len as f64, ms))
                })
                .collect();
            if let Some(fit) = fit::least_squares(&points) {
                fits.push(FitRow { shape, path, fit });
            }
        }
    }
    fits
}

fn write_outputs(
    options: &Options,
    ctx: &GpuContext,
    rows: &[Row],
    fits: &[FitRow],
    live: bool,
) -> Result<(), Error> {
    let dir: &FilePath = &options.out_dir;
    std::fs::create_dir_all(dir)?;
    let [csv, fit, plot] = match options.workload {
        Workload::Forward => ["scaling.csv", "fit.csv", "scaling.svg"],
        Workload::Training => ["training.csv", "training_fit.csv", "training.svg"],
    };
    match options.workload {
        Workload::Forward => table::write_scaling_csv(&dir.join(csv), rows, live)?,
        Workload::Training => table::write_training_csv(&dir.join(csv), rows)?,
    }
    table::write_fit_csv(&dir.join(fit), fits)?;
    let chart = chart(ctx, options.cell, options.workload, rows);
    std::fs::write(dir.join(plot), svg::render(&chart)?)?;
    out!("wrote {}, {fit} and {plot}", dir.join(csv).display());
    Ok(())
}

/// Time against T, one line per configuration (a colour each) and path: GPU solid, CPU
/// dashed, PyTorch dotted and onnxruntime dash-dotted (these two with `--torch`).
fn chart(ctx: &GpuContext, cell: Cell, workload: Workload, rows: &[Row]) -> svg::Chart {
    let mut shapes: Vec<Shape> = rows.iter().map(|row| row.shape).collect();
    shapes.dedup();
    let mut series = Vec::new();
    for (i, &shape) in shapes.iter().enumerate() {
        for path in Path::ALL {
            series.push(svg::Series {
                label: format!("{} {}", path.name(), shape.label()),
                color: svg::PALETTE[i % svg::PALETTE.len()],
                stroke: match path {
                    Path::Gpu => svg::Stroke::Solid,
                    Path::Cpu => svg::Stroke::Dashed,
                    Path::Torch => svg::Stroke::Dotted,
                    Path::Ort => svg::Stroke::DashDotted,
                },
                points: rows
                    .iter()
                    .filter(|row| row.shape == shape)
                    .filter_map(|row| {
                        let ms = table::millis(row.timing(path)?.median);
                        Some((row.seq_len as f64, ms))
                    })
                    .collect(),
            });
        }
    }
    let drawn = |path: Path| {
        series
            .iter()
            .any(|s| s.label.starts_with(&format!("{} ", path.name())) && !s.points.is_empty())
    };
    let styles: Vec<&str> = [
        (Path::Cpu, "cpu reference path dashed"),
        (Path::Torch, "torch dotted"),
        (Path::Ort, "ort dash-dotted"),
    ]
    .into_iter()
    .filter(|&(path, _)| drawn(path))
    .map(|(_, style)| style)
    .collect();
    let styles = match styles.is_empty() {
        true => String::new(),
        false => format!("; gpu solid, {}", styles.join(", ")),
    };
    let (run, per) = match workload {
        Workload::Forward => ("forward", "forward"),
        Workload::Training => ("forward + backward", "training step"),
    };
    svg::Chart {
        title: format!("{} {run}: time against sequence length", cell.torch_name()),
        subtitle: format!("{}; {}{styles}", ctx.describe(), model_description(cell)),
        x_label: "sequence length T (log scale)".into(),
        y_label: format!("median time per {per}, ms (log scale)"),
        series,
    }
}

/// The round whose median time is the median of the rounds' (the lower middle one of an even
/// count), or `None` where the path did not run.
fn median_round(mut rounds: Vec<Timing>) -> Option<Timing> {
    rounds.sort_by_key(|timing| timing.median);
    let middle = rounds.len().checked_sub(1)? / 2;
    Some(rounds.swap_remove(middle))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::median_round;
    use crate::measure::Timing;

    fn timing(ms: u64) -> Timing {
        Timing {
            median: Duration::from_millis(ms),
            gpu: None,
            parts: None,
            runs: 3,
            warm_up: None,
        }
    }

    #[test]
    fn the_median_round_is_kept() {
        assert!(median_round(Vec::new()).is_none());
        let kept = |ms: &[u64]| median_round(ms.iter().map(|&ms| timing(ms)).collect());
        assert_eq!(kept(&[7]).unwrap().median, Duration::from_millis(7));
        assert_eq!(kept(&[9, 2, 5]).unwrap().median, Duration::from_millis(5));
        // An even count keeps the lower middle round.
        assert_eq!(
            kept(&[9, 2, 5, 4]).unwrap().median,
            Duration::from_millis(4)
        );
    }
}
