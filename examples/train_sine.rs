//! Trains the sine-wave predictor of the PyTorch tutorial on your GPU, exactly as the tutorial
//! does, then lets it run free.
//!
//!     cargo run --release --example train_sine [-- --cell lstm --cpu --torch PYTHON ...]
//!
//! The model is `nn.RNN(1, 16, batch_first=True)` (`--cell lstm|gru` for the others) and an
//! `nn.Linear(16, 1)` head that predicts the next point of a sine wave. Each iteration draws
//! an interval start k from {0, 1, 2}, takes `sin(linspace(k, k + 10, 50))`, feeds points
//! 0..48 as the input (1, 49, 1) and points 1..49 as the target, and takes one Adam step
//! (lr 0.01) on the mean squared error. The state is carried from one iteration to the next
//! and detached (truncated BPTT), as the tutorial's `h = h.detach()` does. The RNN's
//! parameters start from N(0, 0.001) (LSTM and GRU: PyTorch's default initialisation), the
//! Linear's from PyTorch's default.
//!
//! Everything stays on the GPU: forward, loss, backward, Adam step. The loss is read back
//! only every 50 iterations, for the progress bar and the loss curve. After training the
//! model is saved as a PyTorch `state_dict` (target/train_sine.safetensors: `rnn.weight_ih_l0`,
//! ..., `linear.weight`, `linear.bias`), loaded back into an inference model (`GpuRnn`), and
//! run free: from the first point of the wave, each prediction is fed back as the next input.
//! target/train_sine.svg shows the loss curve and the free-running prediction against sin(t).
//!
//! `--cpu` trains on the CPU reference path (`CpuTrainer`, `CpuRnn`) instead. `--torch PYTHON`
//! also times the same loop in PyTorch (on the CPU, `--torch-threads` threads, 1 by default),
//! alternating with ours, and ends with the line
//! `ms_per_iteration=<ours> torch_ms_per_iteration=<PyTorch's>` (medians over the rounds).

#[path = "support/torch_loop.rs"]
mod torch_loop;
#[path = "support/training.rs"]
mod training;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use plotters::prelude::*;

use torch_loop::TorchLoop;
use training::{Cell, Rng, progress_bar};
use wgpu_rnn::{
    Adam, Batch, CpuRnn, CpuTrainer, GpuContext, GpuRnn, GpuTrainer, Hx, InitialState, Linear,
    Loss, Optimizer, Reduction, Rnn, RnnConfig, RnnWeights, Target, Tensor, Train,
};

type Error = Box<dyn std::error::Error>;

const HIDDEN: usize = 16;
/// Points per window: 49 inputs and 49 targets.
const POINTS: usize = 50;
/// The window covers [k, k + 10].
const SPAN: f64 = 10.0;
/// The loss is read back (a wait for the GPU) every this many iterations.
const READ_EVERY: usize = 50;
/// And printed every this many.
const PRINT_EVERY: usize = 1000;

/// Trains the tutorial's sine-wave predictor (an RNN and a Linear head) on the GPU.
#[derive(Parser)]
#[command(name = "train_sine")]
struct Args {
    /// Training iterations (one window, one Adam step each).
    #[arg(long, default_value_t = 6000)]
    iterations: usize,
    /// The recurrent layer.
    #[arg(long, value_enum, default_value_t = Cell::Rnn)]
    cell: Cell,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Seed of the initial weights and of the interval starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the CPU reference path instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Steps of free-running prediction after training.
    #[arg(long, default_value_t = 200)]
    predict: usize,
    /// Where the plot (SVG) goes.
    #[arg(long, value_name = "FILE", default_value = "target/train_sine.svg")]
    out: PathBuf,
    /// Where the trained model (safetensors, PyTorch's names) goes.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/train_sine.safetensors"
    )]
    save: PathBuf,
    /// Also time the same loop in PyTorch with this Python interpreter (which has torch).
    #[arg(long, value_name = "PYTHON")]
    torch: Option<String>,
    /// PyTorch's threads (torch.set_num_threads).
    #[arg(long, default_value_t = 1)]
    torch_threads: usize,
    /// With --torch: rounds of (ours, PyTorch), alternated.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// With --torch: iterations per round and side.
    #[arg(long, default_value_t = 500)]
    round_iterations: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_sine: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let config = args.cell.config(1, HIDDEN);
    let mut rng = Rng::new(args.seed);
    let weights = initial_weights(&config, &mut rng)?;
    let head = training::linear_init(&mut rng, HIDDEN, 1);
    if args.cpu {
        println!("device: the CPU reference path (CpuTrainer)");
        let mut model = CpuTrainer::new(config.clone(), &weights)?.with_head(&head)?;
        session(&mut model, args, &mut rng, |weights, head| {
            Ok(Box::new(
                CpuRnn::new(config.clone(), weights)?.with_head(head)?,
            ))
        })
    } else {
        let ctx = GpuContext::new()?;
        println!("adapter: {}", ctx.describe());
        let mut model = GpuTrainer::new(&ctx, config.clone(), &weights)?.with_head(&head)?;
        session(&mut model, args, &mut rng, |weights, head| {
            Ok(Box::new(
                GpuRnn::new(&ctx, config.clone(), weights)?.with_head(head)?,
            ))
        })
    }
}

/// The tutorial's initialisation: the RNN's parameters from N(0, 0.001); an LSTM's or GRU's
/// PyTorch's default, U(−1/√H, 1/√H).
fn initial_weights(config: &RnnConfig, rng: &mut Rng) -> wgpu_rnn::Result<RnnWeights> {
    let mut weights = RnnWeights::init(config, rng.next_u64())?;
    if config.mode.gates() == 1 {
        let units = weights
            .units()
            .iter()
            .cloned()
            .map(|mut unit| {
                let tensors = [&mut unit.weight_ih, &mut unit.weight_hh];
                let biases = [unit.bias_ih.as_mut(), unit.bias_hh.as_mut()];
                for values in tensors.into_iter().chain(biases.into_iter().flatten()) {
                    values.iter_mut().for_each(|v| *v = rng.normal(0.0, 0.001));
                }
                unit
            })
            .collect();
        weights = RnnWeights::new(config, units)?;
    }
    Ok(weights)
}

/// The window starting at `k`: the input (1, 49, 1) and the target, the same points shifted
/// by one (`data = sin(linspace(k, k + 10, 50)); x = data[:-1]; y = data[1:]`).
fn window(k: f64) -> wgpu_rnn::Result<(Tensor, Tensor)> {
    let data: Vec<f32> = (0..POINTS)
        .map(|j| (k + SPAN * j as f64 / (POINTS - 1) as f64).sin() as f32)
        .collect();
    let shape = [1, POINTS - 1, 1];
    Ok((
        Tensor::new(data[..POINTS - 1].to_vec(), &shape)?,
        Tensor::new(data[1..].to_vec(), &shape)?,
    ))
}

/// `count` iterations of the tutorial's loop: `optimizer.zero_grad(); out, h = rnn(x, h);
/// loss = mse(linear(out), y); loss.backward(); optimizer.step(); h = h.detach()`, each on the
/// window of a random start k in {0, 1, 2}.
///
/// `train_steps` runs `train_step` (`zero_grad`, `forward_on_device` from the carried state,
/// `backward_loss` and `step`) for each window: on a GPU all of them in one submission,
/// nothing read back.
fn iterations(
    model: &mut impl Train,
    optimizer: &mut Optimizer,
    rng: &mut Rng,
    count: usize,
) -> wgpu_rnn::Result<()> {
    let windows = (0..count)
        .map(|_| window(rng.below(3) as f64))
        .collect::<wgpu_rnn::Result<Vec<_>>>()?;
    let batches: Vec<Batch> = windows
        .iter()
        .map(|(x, y)| Batch {
            input: x,
            lengths: None,
            state: InitialState::Carried,
            target: Target::Values(y),
        })
        .collect();
    model.train_steps(&batches, Loss::Mse(Reduction::Mean), optimizer, None)
}

/// Iterations until the next multiple of READ_EVERY (where the loss is read), at most `left`.
fn until_read(done: usize, left: usize) -> usize {
    (READ_EVERY - done % READ_EVERY).min(left)
}

/// Trains `model`, saves it, runs it free, plots, and (`--torch`) times it against PyTorch.
/// `inference` makes the inference model (`GpuRnn` or `CpuRnn`) of the trained weights.
fn session(
    model: &mut impl Train,
    args: &Args,
    rng: &mut Rng,
    inference: impl Fn(&RnnWeights, &Linear) -> wgpu_rnn::Result<Box<dyn Rnn>>,
) -> Result<(), Error> {
    let config = model.config().clone();
    println!(
        "model: nn.{}(1, {HIDDEN}, batch_first=True) + nn.Linear({HIDDEN}, 1); Adam lr {}; \
         {} iterations of one (1, {}, 1) window",
        args.cell.torch_name(),
        args.lr,
        args.iterations,
        POINTS - 1
    );
    let mut optimizer = model.optimizer(Adam::new(args.lr).into())?;
    // Started (and warmed up) now, so that a missing interpreter or torch shows at once; it
    // waits, idle, until training is over.
    let mut torch = match &args.torch {
        Some(python) => {
            let torch_args = [
                args.torch_threads.to_string(),
                args.cell.torch_name().to_string(),
                args.lr.to_string(),
                args.seed.to_string(),
            ];
            Some(TorchLoop::start(python, TORCH_LOOP, &torch_args)?)
        }
        None => None,
    };

    // Training.
    let bar = progress_bar(args.iterations);
    let mut losses = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while i < args.iterations {
        let count = until_read(i, args.iterations - i);
        iterations(model, &mut optimizer, rng, count)?;
        i += count;
        // Reading the loss waits for the GPU: only every READ_EVERY iterations.
        let loss = model.last_loss()?;
        losses.push((i as f64, f64::from(loss)));
        bar.set_message(format!("loss {loss:.3e}"));
        if i % PRINT_EVERY == 0 {
            bar.suspend(|| println!("iteration {i:>6}: loss {loss:.4e}"));
        }
        bar.inc(count as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let ms_per_iteration = elapsed.as_secs_f64() * 1e3 / args.iterations.max(1) as f64;
    if let Some(&(_, loss)) = losses.last() {
        println!(
            "trained: {} iterations in {:.1} s ({ms_per_iteration:.3} ms per iteration), \
             final loss {loss:.4e}",
            args.iterations,
            elapsed.as_secs_f64()
        );
    }

    // Saved as a PyTorch state_dict, then loaded back for inference.
    training::create_parent(&args.save)?;
    model.save(&args.save, "rnn.", "linear.")?;
    println!("model: {}", args.save.display());
    let weights = RnnWeights::load(&config, &args.save, "rnn.")?;
    let head = Linear::load(&args.save, "linear.", HIDDEN, 1)?;
    let predictor = inference(&weights, &head)?;
    let predicted = free_run(predictor.as_ref(), args.predict)?;
    // Errors accumulate as predictions are fed back: the first window's steps, then all.
    let rms = |points: &[(f64, f64)]| {
        let sum: f64 = points.iter().map(|&(t, y)| (y - t.sin()).powi(2)).sum();
        (sum / points.len().max(1) as f64).sqrt()
    };
    let first = &predicted[..predicted.len().min(POINTS - 1)];
    if !predicted.is_empty() {
        println!(
            "free-running prediction from sin(0), RMS error against sin(t): {:.4} over the \
             first {} steps, {:.4} over all {}",
            rms(first),
            first.len(),
            rms(&predicted),
            predicted.len()
        );
    }
    plot(&args.out, args, &losses, &predicted)?;
    println!("plot: {}", args.out.display());

    // Timing against PyTorch, alternated: ours, PyTorch, ours, PyTorch, ...
    let Some(torch) = &mut torch else {
        println!("ms_per_iteration={ms_per_iteration:.4}");
        return Ok(());
    };
    torch.race(
        args.rounds,
        args.round_iterations,
        args.torch_threads,
        || {
            let mut i = 0;
            while i < args.round_iterations {
                let count = until_read(i, args.round_iterations - i);
                iterations(model, &mut optimizer, rng, count)?;
                i += count;
                model.last_loss()?; // as in training; the last read waits for all the work
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// From the first point of the wave, sin(0), and a zero state: each prediction becomes the
/// next input (the model's `h_n` carried from one step to the next). Returns (t, prediction
/// for t) for every step.
fn free_run(model: &dyn Rnn, steps: usize) -> wgpu_rnn::Result<Vec<(f64, f64)>> {
    let dt = SPAN / (POINTS - 1) as f64;
    let mut x = 0.0f32;
    let mut state: Option<(Tensor, Option<Tensor>)> = None;
    let mut points = Vec::with_capacity(steps);
    for step in 1..=steps {
        let input = Tensor::new(vec![x], &[1, 1, 1])?;
        let hx = state.as_ref().map(|(h, c)| Hx {
            h0: h,
            c0: c.as_ref(),
        });
        let out = model.forward(&input, hx)?;
        x = out.output.data()[0];
        points.push((step as f64 * dt, f64::from(x)));
        state = Some((out.h_n, out.c_n));
    }
    Ok(points)
}

/// The loss curve (log scale) above, the free-running prediction against sin(t) below.
fn plot(
    path: &Path,
    args: &Args,
    losses: &[(f64, f64)],
    predicted: &[(f64, f64)],
) -> Result<(), Error> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 860)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(420);
        let font = ("sans-serif", 15);
        let device = if args.cpu { "CPU" } else { "GPU" };

        // A log axis: only positive, finite losses (a diverged run's NaN or inf are left out).
        let plotted: Vec<(f64, f64)> = losses
            .iter()
            .copied()
            .filter(|&(_, l)| l.is_finite() && l > 0.0)
            .collect();
        let (lo, hi) = match plotted.is_empty() {
            true => (1e-4, 1.0),
            false => plotted
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, l)| {
                    (lo.min(l), hi.max(l))
                }),
        };
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("train_sine ({}, {device}): loss", args.cell.torch_name()),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                0.0..args.iterations.max(1) as f64,
                (lo * 0.8..hi * 1.25).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("MSE loss")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(font)
            .draw()?;
        chart.draw_series(LineSeries::new(
            plotted,
            RGBColor(0x1f, 0x77, 0xb4).stroke_width(2),
        ))?;

        let t_end = predicted.last().map_or(SPAN, |p| p.0);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("free-running prediction from sin(0)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_end, -1.5..1.5)?;
        chart
            .configure_mesh()
            .x_desc("t")
            .y_desc("value")
            .label_style(font)
            .draw()?;
        let truth = (0..=1000).map(|i| {
            let t = t_end * f64::from(i) / 1000.0;
            (t, t.sin())
        });
        chart
            .draw_series(LineSeries::new(
                truth,
                RGBColor(0x44, 0x44, 0x44).stroke_width(2),
            ))?
            .label("sin(t)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(0x44, 0x44, 0x44)));
        let red = RGBColor(0xd6, 0x27, 0x28);
        chart
            .draw_series(LineSeries::new(
                predicted.iter().copied(),
                red.stroke_width(2),
            ))?
            .label("prediction, fed back")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], red));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    training::write_file(path, svg)?;
    Ok(())
}

/// The same loop in PyTorch, run by `--torch PYTHON` as a server: it builds the model, warms
/// up, prints `ready <version>`, then answers each line `N` on stdin with the seconds that N
/// more iterations took.
const TORCH_LOOP: &str = r#"
import random, sys, time
import torch
from torch import nn

threads, cell, lr, seed = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(seed)

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = getattr(nn, cell)(1, 16, batch_first=True)
        self.linear = nn.Linear(16, 1)
        if cell == "RNN":
            for p in self.rnn.parameters():
                nn.init.normal_(p, 0.0, 0.001)

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        return self.linear(out), h

model = Model()
optimizer = torch.optim.Adam(model.parameters(), lr=lr)
mse = nn.MSELoss()
rng = random.Random(seed)
h = None

def train(iterations):
    global h
    for i in range(1, iterations + 1):
        k = rng.randrange(3)
        data = torch.sin(torch.linspace(k, k + 10, 50))
        x, y = data[:-1].reshape(1, 49, 1), data[1:].reshape(1, 49, 1)
        prediction, h = model(x, h)
        loss = mse(prediction, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()
        if i % 50 == 0:
            loss.item()  # as ours reads its loss every 50 iterations

train(100)  # warm-up
print(f"ready {torch.__version__}", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    train(int(line))
    print(time.perf_counter() - start, flush=True)
"#;
