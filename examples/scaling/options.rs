//! Command-line flags of the scaling report, parsed by hand (the crate has no CLI dependency).

use std::path::PathBuf;
use std::time::Duration;

use crate::shape::{Cell, Shape};

pub const HELP: &str = "\
Sequence-length scaling of nn.RNN, nn.LSTM or nn.GRU forwards on the GPU (and the CPU
reference path), optionally next to PyTorch timed in the same run.

USAGE:
    cargo run --release --example scaling -- [FLAGS]

FLAGS:
    --cell KIND           the model: rnn (nn.RNN, tanh), lstm (nn.LSTM) or gru (nn.GRU)
                          [default: rnn]
    --quick               a subset that finishes in about a minute on lavapipe:
                          lengths 16,128,1024 (where the stored baselines have rows), fewer
                          runs per point, budgets of 0.5 s (cpu) and 5 s (gpu, torch)
    --configs LIST        hidden x batch pairs, e.g. 64x1,256x16 (input size = hidden)
                          [default: 64x1,256x16,1024x64]
    --lengths LIST        sequence lengths T, e.g. 16,256,4096
                          [default: 16,64,256,1024,4096]
    --gpu-only            skip the CPU reference path
    --cpu-budget SECONDS  skip CPU measurements whose forward is predicted to take longer
                          (from the measurements so far); `none`: no limit [default: 2]
    --gpu-budget SECONDS  the same for the GPU path and for --torch: software adapters such
                          as lavapipe would need hours for the largest default points
                          [default: 20]
    --torch PYTHON        also time PyTorch's CPU forward of the same model at every point,
                          right after ours, by running benches/baselines/time_torch.py with
                          this interpreter (which needs torch; onnxruntime and onnx too for
                          the ort column): --torch-threads threads, eval, no_grad, float32,
                          zero state.
                          Adds the columns torch/gpu and ort/gpu (their time over ours: above
                          1 means the GPU path is faster). Without it, the torch and ort
                          columns come from the CSVs in benches/baselines/ (nn.RNN only,
                          measured on another day)
    --torch-threads N     torch.set_num_threads and onnxruntime's intra-op threads for
                          --torch [default: 2, the baseline the targets are stated against;
                          1 shows what a busy second core costs PyTorch's OpenMP threads]
    --rounds N            measure each point N times, our paths and PyTorch alternating
                          round by round, and keep each path's median round: on a shared,
                          noisy machine one slow stretch then cannot decide a ratio
                          [default: 1]
    --out DIR             where scaling.csv, fit.csv and scaling.svg go
                          [default: target/scaling]
    --gemm                measure only the input-projection GEMM (rows = T·N = 4096,
                          I = H = 256) and print gemm_gflops=<x> as the last line
    -h, --help            this text

Every model has one layer, one direction, input size = hidden size H, input (T, N, H),
zero initial state. Times are medians of several forwards after a warm-up; a forward
includes the upload, the GPU work and the readback.
What is timed: rnn: GpuRnn (the persistent recurrence kernel, one dispatch for the whole
sequence, for H <= 256; one dispatch per step above) and CpuRnn. lstm, gru: GpuGatedRnn
(one projection GEMM, then the persistent gated kernel for LSTM H <= 64 and GRU H <= 84, one
fused gate kernel per timestep above: about 1 ms per step on lavapipe at H=256 N=16) and
CpuGatedRnn. --quick with lstm or gru leaves out 1024x64 (64 times the work per step of
256x16) unless --configs names it.
The GPU adapter follows WGPU_BACKEND and WGPU_ADAPTER_NAME.";

/// What the user asked for.
#[derive(Debug)]
pub enum Command {
    Help,
    Gemm,
    Report(Options),
}

/// The report's settings.
#[derive(Debug)]
pub struct Options {
    pub cell: Cell,
    /// Every shape has `cell`.
    pub configs: Vec<Shape>,
    /// Ascending, without repeats.
    pub lengths: Vec<usize>,
    pub gpu_only: bool,
    pub quick: bool,
    /// Longest predicted forward worth measuring on each path; `None`: no limit.
    pub cpu_budget: Option<Duration>,
    pub gpu_budget: Option<Duration>,
    pub out_dir: PathBuf,
    /// `--torch PYTHON`: the interpreter that times PyTorch in this run.
    pub torch: Option<String>,
    /// `--torch-threads`.
    pub torch_threads: usize,
    /// `--rounds`: each point is measured this many times, the paths alternating.
    pub rounds: usize,
}

const DEFAULT_CONFIGS: &str = "64x1,256x16,1024x64";
const DEFAULT_LENGTHS: &str = "16,64,256,1024,4096";
/// The lengths where the PyTorch and onnxruntime baselines have rows.
const QUICK_LENGTHS: &str = "16,128,1024";
/// The PyTorch baseline's threads: the crate's targets are ratios against 2-thread PyTorch.
const DEFAULT_TORCH_THREADS: usize = 2;
/// `--quick` with `lstm` or `gru`: their GPU path runs a dispatch per step, and H=1024
/// N=64 takes seconds per forward at T=16 already on lavapipe.
const QUICK_GATED_CONFIGS: &str = "64x1,256x16";

/// Everything the flags can set, before defaults are filled in.
#[derive(Default)]
struct Flags {
    quick: bool,
    gemm: bool,
    help: bool,
    gpu_only: bool,
    configs: Option<Vec<(usize, usize)>>,
    lengths: Option<Vec<usize>>,
    cpu_budget: Option<Option<Duration>>,
    gpu_budget: Option<Option<Duration>>,
    out_dir: Option<PathBuf>,
    cell: Option<Cell>,
    rounds: Option<usize>,
    torch: Option<String>,
    torch_threads: Option<usize>,
}

/// Per-forward time budgets in seconds: (cpu, gpu).
const DEFAULT_BUDGETS: (f64, f64) = (2.0, 20.0);
const QUICK_BUDGETS: (f64, f64) = (0.5, 5.0);

/// Parses the arguments after the program name. `Err` holds a message for the user.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let flags = read_flags(args)?;
    if flags.help {
        return Ok(Command::Help);
    }
    if flags.gemm {
        return Ok(Command::Gemm);
    }
    let cell = flags.cell.unwrap_or_default();
    let (lengths, (cpu_budget, gpu_budget)) = if flags.quick {
        (QUICK_LENGTHS, QUICK_BUDGETS)
    } else {
        (DEFAULT_LENGTHS, DEFAULT_BUDGETS)
    };
    let configs = match (flags.quick, cell) {
        (true, Cell::Lstm | Cell::Gru) => QUICK_GATED_CONFIGS,
        _ => DEFAULT_CONFIGS,
    };
    let configs = flags
        .configs
        .unwrap_or_else(|| parse_configs(configs).expect("valid defaults"));
    Ok(Command::Report(Options {
        cell,
        configs: configs
            .into_iter()
            .map(|(hidden, batch)| Shape {
                cell,
                hidden,
                batch,
            })
            .collect(),
        lengths: flags
            .lengths
            .unwrap_or_else(|| parse_lengths(lengths).expect("valid defaults")),
        gpu_only: flags.gpu_only,
        quick: flags.quick,
        cpu_budget: flags
            .cpu_budget
            .unwrap_or(Some(Duration::from_secs_f64(cpu_budget))),
        gpu_budget: flags
            .gpu_budget
            .unwrap_or(Some(Duration::from_secs_f64(gpu_budget))),
        out_dir: flags
            .out_dir
            .unwrap_or_else(|| PathBuf::from("target/scaling")),
        torch: flags.torch,
        torch_threads: flags.torch_threads.unwrap_or(DEFAULT_TORCH_THREADS),
        rounds: flags.rounds.unwrap_or(1),
    }))
}

fn read_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--flag=value` and `--flag value` are both accepted.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => flags.help = true,
            "--quick" => flags.quick = true,
            "--gemm" => flags.gemm = true,
            "--gpu-only" => flags.gpu_only = true,
            "--configs" => flags.configs = Some(parse_configs(&value()?)?),
            "--lengths" => flags.lengths = Some(parse_lengths(&value()?)?),
            "--cpu-budget" => flags.cpu_budget = Some(parse_budget(&name, &value()?)?),
            "--gpu-budget" => flags.gpu_budget = Some(parse_budget(&name, &value()?)?),
            "--out" => flags.out_dir = Some(PathBuf::from(value()?)),
            "--cell" => flags.cell = Some(parse_cell(&value()?)?),
            "--torch" => flags.torch = Some(parse_python(&value()?)?),
            "--torch-threads" => flags.torch_threads = Some(positive(&name, &value()?)?),
            "--rounds" => flags.rounds = Some(positive(&name, &value()?)?),
            _ => return Err(format!("unknown argument `{arg}`")),
        }
        let takes_value = [
            "--configs",
            "--lengths",
            "--cpu-budget",
            "--gpu-budget",
            "--out",
            "--cell",
            "--torch",
            "--torch-threads",
            "--rounds",
        ];
        if inline.is_some() && !takes_value.contains(&name.as_str()) {
            return Err(format!("{name} takes no value"));
        }
    }
    Ok(flags)
}

fn parse_cell(kind: &str) -> Result<Cell, String> {
    Cell::parse(kind).ok_or_else(|| format!("--cell: `{kind}` is not rnn, lstm or gru"))
}

fn parse_python(path: &str) -> Result<String, String> {
    match path.trim() {
        "" => Err("--torch needs a Python interpreter, e.g. --torch /work/venv/bin/python".into()),
        path => Ok(path.to_string()),
    }
}

/// `64x1,256x16`: (hidden size, batch) pairs, without repeats.
fn parse_configs(text: &str) -> Result<Vec<(usize, usize)>, String> {
    let configs: Vec<(usize, usize)> = text
        .split(',')
        .map(|item| {
            let (hidden, batch) = item
                .trim()
                .split_once(['x', 'X'])
                .ok_or_else(|| format!("--configs: `{item}` is not HxN, e.g. 256x16"))?;
            Ok((
                positive("--configs", hidden)?,
                positive("--configs", batch)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut unique = Vec::new();
    for shape in configs {
        if !unique.contains(&shape) {
            unique.push(shape);
        }
    }
    Ok(unique)
}

/// `16,256,4096`, returned ascending without repeats (the fit and the extrapolation that
/// skips slow CPU runs go from short to long).
fn parse_lengths(text: &str) -> Result<Vec<usize>, String> {
    let mut lengths = text
        .split(',')
        .map(|item| positive("--lengths", item))
        .collect::<Result<Vec<_>, String>>()?;
    lengths.sort_unstable();
    lengths.dedup();
    Ok(lengths)
}

/// Seconds, or `none` for no limit.
fn parse_budget(flag: &str, text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(Some)
        .ok_or_else(|| format!("{flag}: `{text}` is neither a number of seconds nor `none`"))
}

fn positive(flag: &str, text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{text}` is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_quick() {
        let Ok(Command::Report(options)) = parse_args(&[]) else {
            panic!("defaults")
        };
        assert_eq!(options.configs.len(), 3);
        assert_eq!(options.lengths, [16, 64, 256, 1024, 4096]);
        let Ok(Command::Report(options)) = parse_args(&["--quick", "--lengths=64,16,64"]) else {
            panic!("quick")
        };
        assert_eq!(options.lengths, [16, 64]);
        assert_eq!(options.cpu_budget, Some(Duration::from_millis(500)));
        let Ok(Command::Report(options)) = parse_args(&["--gpu-budget", "none"]) else {
            panic!("no budget")
        };
        assert_eq!(options.gpu_budget, None);
    }

    #[test]
    fn rejects_bad_input() {
        for args in [
            &["--configs", "64"][..],
            &["--lengths", "0"],
            &["--cpu-budget", "-1"],
            &["--cell", "lstm2"],
            &["--cell", "LSTM"],
            &["--cell"],
            &["--torch"],
            &["--torch", ""],
            &["--out"],
            &["--gemm=1"],
            &["--frobnicate"],
        ] {
            assert!(parse_args(args).is_err(), "{args:?}");
        }
        assert!(matches!(
            parse_args(&["--cell", "rnn", "--gemm"]),
            Ok(Command::Gemm)
        ));
    }

    #[test]
    fn cells() {
        let Ok(Command::Report(options)) = parse_args(&[]) else {
            panic!("defaults")
        };
        assert_eq!(options.cell, Cell::Rnn);
        assert!(options.configs.iter().all(|shape| shape.cell == Cell::Rnn));
        for (arg, cell) in [("rnn", Cell::Rnn), ("lstm", Cell::Lstm), ("gru", Cell::Gru)] {
            let Ok(Command::Report(options)) = parse_args(&["--cell", arg, "--configs=64x1"])
            else {
                panic!("--cell {arg}")
            };
            assert_eq!(options.cell, cell);
            assert_eq!(
                options.configs,
                [Shape {
                    cell,
                    hidden: 64,
                    batch: 1
                }]
            );
            // `--flag=value`, and after the other flags.
            let Ok(Command::Report(options)) = parse_args(&["--quick", &format!("--cell={arg}")])
            else {
                panic!("--cell={arg}")
            };
            assert_eq!(options.cell, cell);
        }
        // The last one wins, as for every flag.
        let Ok(Command::Report(options)) = parse_args(&["--cell", "gru", "--cell", "lstm"]) else {
            panic!("two cells")
        };
        assert_eq!(options.cell, Cell::Lstm);
        let error = parse_args(&["--cell", "transformer"]).unwrap_err();
        assert!(error.contains("rnn, lstm or gru"), "{error}");
    }

    #[test]
    fn quick_gated_leaves_out_the_largest_config() {
        let hidden = |args: &[&str]| match parse_args(args) {
            Ok(Command::Report(options)) => {
                options.configs.iter().map(|s| s.hidden).collect::<Vec<_>>()
            }
            _ => panic!("{args:?}"),
        };
        assert_eq!(hidden(&["--quick"]), [64, 256, 1024]);
        assert_eq!(hidden(&["--quick", "--cell", "lstm"]), [64, 256]);
        assert_eq!(hidden(&["--cell", "gru", "--quick"]), [64, 256]);
        assert_eq!(hidden(&["--cell", "gru"]), [64, 256, 1024]);
        assert_eq!(
            hidden(&["--cell", "gru", "--quick", "--configs", "1024x64"]),
            [1024]
        );
        let Ok(Command::Report(options)) = parse_args(&["--quick", "--cell", "lstm"]) else {
            panic!("quick lstm")
        };
        assert_eq!(options.lengths, [16, 128, 1024]);
    }

    #[test]
    fn torch_interpreter() {
        let Ok(Command::Report(options)) = parse_args(&[]) else {
            panic!("defaults")
        };
        assert_eq!(options.torch, None);
        assert_eq!(options.torch_threads, 2);
        let Ok(Command::Report(options)) =
            parse_args(&["--torch", "/work/venv/bin/python", "--cell", "gru"])
        else {
            panic!("--torch")
        };
        assert_eq!(options.torch.as_deref(), Some("/work/venv/bin/python"));
        let Ok(Command::Report(options)) = parse_args(&["--torch=python3"]) else {
            panic!("--torch=")
        };
        assert_eq!(options.torch.as_deref(), Some("python3"));
        let Ok(Command::Report(options)) = parse_args(&["--torch-threads", "1"]) else {
            panic!("--torch-threads")
        };
        assert_eq!(options.torch_threads, 1);
        assert!(parse_args(&["--torch-threads", "0"]).is_err());
    }

    #[test]
    fn rounds() {
        let rounds = |args: &[&str]| match parse_args(args) {
            Ok(Command::Report(options)) => Ok(options.rounds),
            Ok(_) => panic!("{args:?}: not a report"),
            Err(error) => Err(error),
        };
        assert_eq!(rounds(&[]), Ok(1));
        assert_eq!(rounds(&["--rounds", "5"]), Ok(5));
        assert_eq!(rounds(&["--rounds=3", "--quick"]), Ok(3));
        for bad in [&["--rounds", "0"][..], &["--rounds"], &["--rounds", "two"]] {
            assert!(rounds(bad).is_err(), "{bad:?}");
        }
    }
}
