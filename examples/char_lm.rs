//! A character-level language model, trained on any UTF-8 text on your GPU, then sampled.
//!
//!     cargo run --release --example char_lm [-- --text FILE --cell lstm --epochs 5 ...]
//!
//! The model reads one character at a time, one-hot encoded over the text's vocabulary (its
//! distinct characters), through `nn.RNN(V, 64, batch_first=True)` (`--cell lstm|gru`,
//! `--hidden`) and an `nn.Linear(64, V)` to the logits of the next character; the loss is
//! `nn.CrossEntropyLoss()`. Training is PyTorch's word-language-model recipe at the character
//! level: the text is cut into N = 8 streams (`--batch`) read side by side, T = 35 characters
//! of each per iteration (`--seq-len`); the state is carried from one batch to the next and
//! detached (truncated BPTT), from zeros at the start of each epoch; before each step
//! `clip_grad_norm_(parameters, 1.0)` (`--clip`, 0 for none); the optimizer is SGD with lr 1.0
//! (`--optimizer adam`, `--lr`). Each epoch prints the perplexity, exp of the mean loss.
//!
//! The text is the repository's README.md unless `--text FILE` says otherwise. After training
//! the model is saved as a PyTorch `state_dict` (target/char_lm.safetensors: `rnn.*`,
//! `linear.*`), loaded back into an inference model (`GpuRnn`), and sampled: the prompt
//! (`--prompt`, by default the text's first characters) runs through it, then each sampled
//! character (softmax of the logits / `--temperature`, seeded) is fed back as the next input.
//! `--cpu` runs the CPU reference path (`CpuTrainer`, `CpuRnn`) instead. `--torch PYTHON`
//! also times the same loop in PyTorch (on the CPU, `--torch-threads` threads, 2 by default;
//! same text, streams, model, loss, optimizer and clipping), alternating with ours after
//! training, and ends with the line `ms_per_iteration=<ours> torch_ms_per_iteration=<PyTorch's>`
//! (medians over the rounds).

#[path = "support/torch_loop.rs"]
mod torch_loop;
#[path = "support/training.rs"]
mod training;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use torch_loop::TorchLoop;
use training::{Cell, RecurrenceArg, Rng, progress_bar};
use wgpu_rnn::{
    Adam, Batch, CpuRnn, CpuTrainer, GpuContext, GpuRnn, GpuTrainer, Hx, InitialState, Linear,
    Loss, OptimizerConfig, Reduction, Rnn, RnnWeights, Sgd, Target, Tensor, Train,
};

type Error = Box<dyn std::error::Error>;

/// Trains a character-level language model on a text, then samples from it.
#[derive(Parser)]
#[command(name = "char_lm")]
struct Args {
    /// The training text (UTF-8); the repository's README.md by default.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// The recurrent layer.
    #[arg(long, value_enum, default_value_t = Cell::Rnn)]
    cell: Cell,
    /// The GPU trainer's recurrent kernels.
    #[arg(long, value_enum, default_value_t = RecurrenceArg::Auto)]
    recurrence: RecurrenceArg,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = Optimizer::Sgd)]
    optimizer: Optimizer,
    /// Learning rate [default: 1.0 for SGD, 0.002 for Adam].
    #[arg(long)]
    lr: Option<f32>,
    /// clip_grad_norm's max_norm before each step (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Streams read side by side (the batch size N).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Characters of each stream per iteration (T).
    #[arg(long, default_value_t = 35)]
    seq_len: usize,
    /// Passes over the text.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Read the loss back (a wait for the GPU) every this many iterations; the epoch's
    /// perplexity is then that of the losses read.
    #[arg(long, default_value_t = 1)]
    loss_every: usize,
    /// Where sampling starts [default: the text's first 10 characters].
    #[arg(long)]
    prompt: Option<String>,
    /// Characters to sample.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Sampling temperature: the logits are divided by it (0: always the likeliest).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Seed of the initial weights and of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the CPU reference path instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Also time the same loop in PyTorch (on the CPU), run by this Python interpreter,
    /// alternating with ours after training; the last line printed is then
    /// `ms_per_iteration=<ours> torch_ms_per_iteration=<PyTorch's>` (medians over the rounds).
    #[arg(long, value_name = "PYTHON")]
    torch: Option<String>,
    /// PyTorch's threads (torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// With --torch: rounds of (ours, PyTorch), alternated.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// With --torch: iterations per round and side.
    #[arg(long, default_value_t = 200)]
    round_iterations: usize,
    /// After training on the GPU, time each dispatch of an iteration's forward and backward
    /// alone and print them (where the time goes; see benches/README.md).
    #[arg(long)]
    profile: bool,
    /// Where the trained model (safetensors, PyTorch's names) goes.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/char_lm.safetensors"
    )]
    save: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Optimizer {
    /// torch.optim.SGD.
    Sgd,
    /// torch.optim.Adam.
    Adam,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("char_lm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let path = args.text.clone().unwrap_or_else(default_text);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let vocab = Vocabulary::of(&text);
    let data = Streams::new(vocab.encode(&text)?, vocab.len(), args.batch, args.seq_len)?;
    println!(
        "text: {}, {} characters, vocabulary of {}; {} streams of {} characters, {} batches of \
         ({}, {}) per epoch",
        path.display(),
        data.tokens.len(),
        vocab.len(),
        args.batch,
        data.per_stream,
        data.batches,
        args.batch,
        args.seq_len
    );
    let prompt = match &args.prompt {
        Some(prompt) => prompt.clone(),
        None => text.chars().take(10).collect(),
    };
    let prompt = vocab
        .encode(&prompt)
        .map_err(|e| format!("--prompt: {e}"))?;
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }

    let config = args.cell.config(vocab.len(), args.hidden);
    let mut rng = Rng::new(args.seed);
    let weights = RnnWeights::init(&config, rng.next_u64())?;
    let head = training::linear_init(&mut rng, args.hidden, vocab.len());
    let sampled = if args.cpu {
        println!("device: the CPU reference path (CpuTrainer)");
        let mut model = CpuTrainer::new(config.clone(), &weights)?.with_head(&head)?;
        train(&mut model, args, &data)?;
        let (weights, head) = save_and_load(&model, args, vocab.len())?;
        let model = CpuRnn::new(config, &weights)?.with_head(&head)?;
        sample(&model, &vocab, &prompt, args, &mut rng)?
    } else {
        let ctx = GpuContext::new()?;
        println!("adapter: {}", ctx.describe());
        let mut model = GpuTrainer::new(&ctx, config.clone(), &weights)?
            .with_recurrence(args.recurrence.recurrence())
            .with_head(&head)?;
        train(&mut model, args, &data)?;
        if args.profile {
            profile(&mut model, args)?;
        }
        let (weights, head) = save_and_load(&model, args, vocab.len())?;
        let model = GpuRnn::new(&ctx, config, &weights)?.with_head(&head)?;
        sample(&model, &vocab, &prompt, args, &mut rng)?
    };
    println!(
        "sample (temperature {}, seed {}):\n{}{sampled}",
        args.temperature,
        args.seed,
        vocab.decode(&prompt)
    );
    Ok(())
}

/// Prints the time of each dispatch of an iteration's forward and backward, alone (20 in a
/// pass, the median of 5 submissions; the loss, clipping and the optimizer's step are one
/// dispatch each besides).
fn profile(model: &mut GpuTrainer, args: &Args) -> Result<(), Error> {
    let timings = model.profile_programs(args.seq_len, args.batch, 20, 5)?;
    // The dispatches recomputed on the workspace and added into the gradients.
    model.zero_grad()?;
    println!("profile: each dispatch of an iteration alone");
    for t in &timings {
        println!("  {:8} {:8.1} µs  {}", t.program, t.ms * 1e3, t.op);
    }
    let total: f64 = timings.iter().map(|t| t.ms).sum();
    println!("  total    {:8.1} µs", total * 1e3);
    Ok(())
}

/// The text's distinct characters, in order, and back.
struct Vocabulary {
    chars: Vec<char>,
}

impl Vocabulary {
    fn of(text: &str) -> Self {
        let chars: BTreeSet<char> = text.chars().collect();
        Vocabulary {
            chars: chars.into_iter().collect(),
        }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    /// Every character's index; an error names a character the vocabulary lacks.
    fn encode(&self, text: &str) -> Result<Vec<usize>, String> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map_err(|_| format!("{c:?} is not in the training text"))
            })
            .collect()
    }

    fn decode(&self, tokens: &[usize]) -> String {
        tokens.iter().map(|&t| self.chars[t]).collect()
    }

    /// (1, T, V): the tokens one-hot encoded, one sequence, batch-first.
    fn one_hot(&self, tokens: &[usize]) -> wgpu_rnn::Result<Tensor> {
        let v = self.len();
        let mut data = vec![0.0f32; tokens.len() * v];
        for (frame, &token) in tokens.iter().enumerate() {
            data[frame * v + token] = 1.0;
        }
        Tensor::new(data, &[1, tokens.len(), v])
    }
}

/// The text cut into `batch` streams read side by side (stream n is the n-th of `batch` equal
/// parts; the remainder is dropped), and the batches of `seq_len` characters of each stream.
struct Streams {
    tokens: Vec<usize>,
    vocab: usize,
    batch: usize,
    seq_len: usize,
    per_stream: usize,
    /// Batches per epoch (a last, shorter one is dropped).
    batches: usize,
}

impl Streams {
    fn new(tokens: Vec<usize>, vocab: usize, batch: usize, seq_len: usize) -> Result<Self, String> {
        if batch == 0 || seq_len == 0 {
            return Err("--batch and --seq-len must be at least 1".into());
        }
        let per_stream = tokens.len() / batch;
        let batches = (per_stream.saturating_sub(1)) / seq_len;
        if batches == 0 {
            return Err(format!(
                "the text has {} characters: {batch} streams of {seq_len} (+1) need at least {}",
                tokens.len(),
                batch * (seq_len + 1)
            ));
        }
        Ok(Streams {
            tokens,
            vocab,
            batch,
            seq_len,
            per_stream,
            batches,
        })
    }

    /// Batch `b`: the input (N, T, V), one-hot, and the next character of every frame as the
    /// target classes, in the output's order (stream by stream).
    fn batch(&self, b: usize) -> wgpu_rnn::Result<(Tensor, Vec<usize>)> {
        let (n, t, v) = (self.batch, self.seq_len, self.vocab);
        let mut input = vec![0.0f32; n * t * v];
        let mut classes = Vec::with_capacity(n * t);
        for stream in 0..n {
            let start = stream * self.per_stream + b * t;
            for step in 0..t {
                let frame = stream * t + step;
                input[frame * v + self.tokens[start + step]] = 1.0;
                classes.push(self.tokens[start + step + 1]);
            }
        }
        Ok((Tensor::new(input, &[n, t, v])?, classes))
    }
}

/// Trains `model` for `args.epochs` passes over the streams.
fn train(model: &mut impl Train, args: &Args, data: &Streams) -> Result<(), Error> {
    let (config, name): (OptimizerConfig, _) = match args.optimizer {
        Optimizer::Sgd => (Sgd::new(args.lr.unwrap_or(1.0)).into(), "SGD"),
        Optimizer::Adam => (Adam::new(args.lr.unwrap_or(0.002)).into(), "Adam"),
    };
    let lr = match config {
        OptimizerConfig::Sgd(sgd) => sgd.lr,
        OptimizerConfig::Adam(adam) => adam.lr,
    };
    println!(
        "model: nn.{}({}, {}, batch_first=True) + nn.Linear({}, {}); {name} lr {lr}; \
         clip_grad_norm {}",
        args.cell.torch_name(),
        data.vocab,
        args.hidden,
        args.hidden,
        data.vocab,
        args.clip
    );
    let mut optimizer = model.optimizer(config)?;
    let loss_every = args.loss_every.max(1);
    // Started (and warmed up) now, so that a missing interpreter or torch shows at once; it
    // waits, idle, until training is over.
    let mut torch = match &args.torch {
        Some(python) => {
            let path = args.text.clone().unwrap_or_else(default_text);
            let torch_args = [
                path.display().to_string(),
                args.torch_threads.to_string(),
                args.cell.torch_name().to_string(),
                args.hidden.to_string(),
                args.batch.to_string(),
                args.seq_len.to_string(),
                name.to_string(),
                lr.to_string(),
                args.clip.to_string(),
                loss_every.to_string(),
                args.seed.to_string(),
            ];
            Some(TorchLoop::start(python, TORCH_LOOP, &torch_args)?)
        }
        None => None,
    };
    let bar = progress_bar(args.epochs * data.batches);
    let started = Instant::now();
    for epoch in 1..=args.epochs {
        let epoch_started = Instant::now();
        let (mut sum, mut count) = (0.0f64, 0usize);
        let mut b = 0;
        while b < data.batches {
            let group = until_read(b, loss_every, data.batches);
            iterations(model, &mut optimizer, data, group.clone(), args.clip)?;
            if (group.end - 1) % loss_every == 0 {
                // Reading the loss waits for the GPU.
                let loss = f64::from(model.last_loss()?);
                sum += loss;
                count += 1;
                bar.set_message(format!("epoch {epoch}, loss {loss:.3}"));
            }
            bar.inc(group.len() as u64);
            b = group.end;
        }
        let ms = epoch_started.elapsed().as_secs_f64() * 1e3 / data.batches as f64;
        let mean = sum / count as f64;
        bar.suspend(|| {
            println!(
                "epoch {epoch:>3}: loss {mean:.4}, perplexity {:.2} ({ms:.2} ms per iteration)",
                mean.exp()
            )
        });
    }
    bar.finish_and_clear();
    let trained = args.epochs * data.batches;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "trained: {trained} iterations in {elapsed:.1} s ({:.2} ms per iteration)",
        elapsed * 1e3 / trained.max(1) as f64
    );

    // Timing against PyTorch, alternated: ours, PyTorch, ours, PyTorch, ...
    if let Some(torch) = &mut torch {
        torch.race(
            args.rounds,
            args.round_iterations,
            args.torch_threads,
            || {
                let mut i = 0;
                while i < args.round_iterations {
                    let b = i % data.batches;
                    let end = data.batches.min(b + args.round_iterations - i);
                    let group = until_read(b, loss_every, end);
                    iterations(model, &mut optimizer, data, group.clone(), args.clip)?;
                    i += group.len();
                    if (group.end - 1) % loss_every == 0 || i == args.round_iterations {
                        model.last_loss()?; // as in training; the last read waits for all the work
                    }
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Batches `range` of the streams, an iteration each: `zero_grad`, `forward_on_device`,
/// `backward_loss` (cross-entropy), `clip_grad_norm` (unless `clip` is 0) and the optimizer's
/// step; `train_steps` records them all into one submission on a GPU, nothing read back.
fn iterations(
    model: &mut impl Train,
    optimizer: &mut wgpu_rnn::Optimizer,
    data: &Streams,
    range: std::ops::Range<usize>,
    clip: f32,
) -> wgpu_rnn::Result<()> {
    let made = range
        .map(|b| data.batch(b).map(|(input, classes)| (b, input, classes)))
        .collect::<wgpu_rnn::Result<Vec<_>>>()?;
    let batches: Vec<Batch> = made
        .iter()
        .map(|(b, input, classes)| Batch {
            input,
            lengths: None,
            // Each epoch starts from zeros; then each batch from the last one's final state.
            state: match b {
                0 => InitialState::Zeros,
                _ => InitialState::Carried,
            },
            target: Target::Classes(classes),
        })
        .collect();
    let loss = Loss::CrossEntropy(Reduction::Mean);
    model.train_steps(&batches, loss, optimizer, (clip > 0.0).then_some(clip))
}

/// The batches from `b` to the next whose loss is read (every `loss_every`th from the
/// epoch's first), that one included, and before `end`.
fn until_read(b: usize, loss_every: usize, end: usize) -> std::ops::Range<usize> {
    let read = b.next_multiple_of(loss_every);
    b..(read + 1).min(end)
}

/// The repository's README.md, the default training text.
fn default_text() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// The same loop in PyTorch, run by `--torch PYTHON` as a server (see `support/torch_loop.rs`):
/// the same text, vocabulary, streams, model, loss, optimizer and clipping.
const TORCH_LOOP: &str = r#"
import sys, time
import torch
from torch import nn

path = sys.argv[1]
threads, cell, hidden, batch, seq_len = int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:7])
optimizer_name, lr, clip = sys.argv[7], float(sys.argv[8]), float(sys.argv[9])
loss_every, seed = int(sys.argv[10]), int(sys.argv[11])
torch.set_num_threads(threads)
torch.manual_seed(seed)

text = open(path, encoding="utf-8").read()
chars = sorted(set(text))
index = {c: i for i, c in enumerate(chars)}
vocab = len(chars)
tokens = torch.tensor([index[c] for c in text])
per_stream = len(tokens) // batch
batches = (per_stream - 1) // seq_len
streams = tokens[: per_stream * batch].reshape(batch, per_stream)

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = getattr(nn, cell)(vocab, hidden, batch_first=True)
        self.linear = nn.Linear(hidden, vocab)

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        return self.linear(out), h

model = Model()
if optimizer_name == "SGD":
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
else:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
cross_entropy = nn.CrossEntropyLoss()
done = 0
h = None

def train(iterations):
    global done, h
    for _ in range(iterations):
        b = done % batches
        done += 1
        window = streams[:, b * seq_len : b * seq_len + seq_len + 1]
        x = nn.functional.one_hot(window[:, :-1], vocab).float()
        y = window[:, 1:].reshape(-1)
        if b == 0:
            h = None
        logits, h = model(x, h)
        loss = cross_entropy(logits.reshape(-1, vocab), y)
        optimizer.zero_grad()
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()
        if b % loss_every == 0:
            loss.item()  # as ours reads its loss

train(50)  # warm-up
print(f"ready {torch.__version__}", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    train(int(line))
    print(time.perf_counter() - start, flush=True)
"#;

/// Saves the trained model as a PyTorch state_dict and loads it back, as an inference program
/// would.
fn save_and_load(
    model: &impl Train,
    args: &Args,
    vocab: usize,
) -> wgpu_rnn::Result<(RnnWeights, Linear)> {
    training::create_parent(&args.save)?;
    model.save(&args.save, "rnn.", "linear.")?;
    println!("model: {}", args.save.display());
    let weights = RnnWeights::load(model.config(), &args.save, "rnn.")?;
    let head = Linear::load(&args.save, "linear.", args.hidden, vocab)?;
    Ok((weights, head))
}

/// `args.length` characters after the prompt: the prompt runs through the model in one
/// forward, then each sampled character is the next input, the state carried.
fn sample(
    model: &dyn Rnn,
    vocab: &Vocabulary,
    prompt: &[usize],
    args: &Args,
    rng: &mut Rng,
) -> wgpu_rnn::Result<String> {
    let v = vocab.len();
    let mut out = model.forward(&vocab.one_hot(prompt)?, None)?;
    let mut sampled = Vec::with_capacity(args.length);
    for _ in 0..args.length {
        // The logits of the last frame.
        let logits = &out.output.data()[out.output.data().len() - v..];
        let next = pick(logits, args.temperature, rng);
        sampled.push(next);
        let hx = Hx {
            h0: &out.h_n,
            c0: out.c_n.as_ref(),
        };
        out = model.forward(&vocab.one_hot(&[next])?, Some(hx))?;
    }
    Ok(vocab.decode(&sampled))
}

/// A class drawn from softmax(logits / temperature); the likeliest at temperature 0.
fn pick(logits: &[f32], temperature: f32, rng: &mut Rng) -> usize {
    let likeliest = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0);
    if temperature <= 0.0 {
        return likeliest;
    }
    let max = logits[likeliest];
    let weights: Vec<f64> = logits
        .iter()
        .map(|&z| (f64::from(z - max) / f64::from(temperature)).exp())
        .collect();
    let mut r = rng.unit() * weights.iter().sum::<f64>();
    for (class, w) in weights.iter().enumerate() {
        r -= w;
        if r < 0.0 {
            return class;
        }
    }
    likeliest
}
