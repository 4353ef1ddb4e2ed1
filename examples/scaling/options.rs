//! Command-line flags of the scaling report, parsed by hand (the crate has no CLI dependency).

use std::path::PathBuf;
use std::time::Duration;

use crate::shape::Shape;

pub const HELP: &str = "\
Sequence-length scaling of nn.RNN forwards on the GPU (and the CPU reference path).

USAGE:
    cargo run --release --example scaling -- [FLAGS]

FLAGS:
    --quick               a subset that finishes in about a minute on lavapipe:
                          lengths 16,128,1024 (where the baselines have rows), fewer
                          runs per point, budgets of 0.5 s (cpu) and 5 s (gpu)
    --configs LIST        hidden x batch pairs, e.g. 64x1,256x16 (input size = hidden)
                          [default: 64x1,256x16,1024x64]
    --lengths LIST        sequence lengths T, e.g. 16,256,4096
                          [default: 16,64,256,1024,4096]
    --gpu-only            skip the CPU reference path
    --cpu-budget SECONDS  skip CPU measurements whose forward is predicted to take longer
                          (from the measurements so far); `none`: no limit [default: 2]
    --gpu-budget SECONDS  the same for the GPU path: software adapters such as lavapipe
                          would need hours for the largest default points [default: 20]
    --out DIR             where scaling.csv, fit.csv and scaling.svg go
                          [default: target/scaling]
    --gemm                measure only the input-projection GEMM (rows = T·N = 4096,
                          I = H = 256) and print gemm_gflops=<x> as the last line
    --cell KIND           the recurrent cell; only `rnn` exists today
    -h, --help            this text

Every model is nn.RNN(H, H), one layer, tanh, unidirectional. Times are medians of several
forwards after a warm-up; a forward includes the upload, the GPU work and the readback.
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
    pub configs: Vec<Shape>,
    /// Ascending, without repeats.
    pub lengths: Vec<usize>,
    pub gpu_only: bool,
    pub quick: bool,
    /// Longest predicted forward worth measuring on each path; `None`: no limit.
    pub cpu_budget: Option<Duration>,
    pub gpu_budget: Option<Duration>,
    pub out_dir: PathBuf,
}

const DEFAULT_CONFIGS: &str = "64x1,256x16,1024x64";
const DEFAULT_LENGTHS: &str = "16,64,256,1024,4096";
/// The lengths where the PyTorch and onnxruntime baselines have rows.
const QUICK_LENGTHS: &str = "16,128,1024";

/// Everything the flags can set, before defaults are filled in.
#[derive(Default)]
struct Flags {
    quick: bool,
    gemm: bool,
    help: bool,
    gpu_only: bool,
    configs: Option<Vec<Shape>>,
    lengths: Option<Vec<usize>>,
    cpu_budget: Option<Option<Duration>>,
    gpu_budget: Option<Option<Duration>>,
    out_dir: Option<PathBuf>,
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
    let (lengths, (cpu_budget, gpu_budget)) = if flags.quick {
        (QUICK_LENGTHS, QUICK_BUDGETS)
    } else {
        (DEFAULT_LENGTHS, DEFAULT_BUDGETS)
    };
    Ok(Command::Report(Options {
        configs: flags
            .configs
            .unwrap_or_else(|| parse_configs(DEFAULT_CONFIGS).expect("valid defaults")),
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
            "--cell" => check_cell(&value()?)?,
            _ => return Err(format!("unknown argument `{arg}`")),
        }
        let takes_value = [
            "--configs",
            "--lengths",
            "--cpu-budget",
            "--gpu-budget",
            "--out",
            "--cell",
        ];
        if inline.is_some() && !takes_value.contains(&name.as_str()) {
            return Err(format!("{name} takes no value"));
        }
    }
    Ok(flags)
}

fn check_cell(kind: &str) -> Result<(), String> {
    match kind {
        "rnn" => Ok(()),
        "lstm" | "gru" => Err(format!(
            "--cell {kind}: not implemented yet; only `rnn` (nn.RNN) exists today"
        )),
        other => Err(format!("--cell {other}: unknown cell (only `rnn` exists)")),
    }
}

/// `64x1,256x16`: hidden size × batch.
fn parse_configs(text: &str) -> Result<Vec<Shape>, String> {
    let configs: Vec<Shape> = text
        .split(',')
        .map(|item| {
            let (hidden, batch) = item
                .trim()
                .split_once(['x', 'X'])
                .ok_or_else(|| format!("--configs: `{item}` is not HxN, e.g. 256x16"))?;
            Ok(Shape {
                hidden: positive("--configs", hidden)?,
                batch: positive("--configs", batch)?,
            })
        })
        .collect::<Result<Vec<Shape>, String>>()?;
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
            &["--cell", "lstm"],
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
}
