//! Command-line flags of the scaling report, parsed by clap. The flags' help lives in the doc
//! comments of `Flags`; the defaults that depend on `--quick` and `--cell` are filled in after
//! parsing, in `Flags::into_command`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use wgpu_rnn::Recurrence;

use crate::measure::Workload;
use crate::shape::{Cell, Shape};

/// What the user asked for (`--help` and bad flags never get here: clap answers them).
#[derive(Debug)]
pub enum Command {
    Gemm(Gemm),
    /// `--peak`: the adapter's multiply-add ceiling.
    Peak,
    Report(Options),
}

/// `--gemm`'s settings.
#[derive(Debug, PartialEq, Eq)]
pub struct Gemm {
    /// (rows, K, columns) of the product.
    pub shape: (usize, usize, usize),
}

/// `--gemm`'s default problem: T·N = 4096 rows, I = H = 256.
const GEMM_SHAPE: (usize, usize, usize) = (4096, 256, 256);

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
    /// `--backward`: training steps (forward + backward) instead of inference forwards.
    pub workload: Workload,
    /// `--recurrence`: the GPU models' recurrent kernels.
    pub recurrence: Recurrence,
}

/// (hidden size, batch) of the default configurations.
const DEFAULT_CONFIGS: [(usize, usize); 3] = [(64, 1), (256, 16), (1024, 64)];
/// `--quick` with `lstm` or `gru`: their GPU path runs a dispatch per step, and H=1024
/// N=64 takes seconds per forward at T=16 already on lavapipe.
const QUICK_GATED_CONFIGS: [(usize, usize); 2] = [(64, 1), (256, 16)];
const DEFAULT_LENGTHS: [usize; 5] = [16, 64, 256, 1024, 4096];
/// The lengths where the PyTorch and onnxruntime baselines have rows.
const QUICK_LENGTHS: [usize; 3] = [16, 128, 1024];
/// Per-forward time budgets in seconds: (cpu, gpu).
const DEFAULT_BUDGETS: (f64, f64) = (2.0, 20.0);
const QUICK_BUDGETS: (f64, f64) = (0.5, 5.0);

/// Shown after the flags by `--help`: what is measured, for every flag at once.
const AFTER_HELP: &str = "\
Every model has one layer, one direction, input size = hidden size H, input (T, N, H),
zero initial state. Times are medians of several forwards after a warm-up; a forward
includes the upload, the GPU work and the readback.
What is timed: GpuRnn and CpuRnn of the cell. rnn: the persistent recurrence kernel, one
dispatch for the whole sequence, for H <= 256 (512 on lavapipe); one dispatch per step
above. lstm, gru: one projection GEMM, then the persistent gated kernel (on lavapipe up to
LSTM H <= 512 and GRU H <= 672; on adapters without a fixed subgroup size LSTM H <= 64 and
GRU H <= 84), one fused gate kernel per timestep above.
--quick with lstm or gru leaves out 1024x64 (64 times the work per step of 256x16) unless
--configs names it.
--backward times GpuTrainer and CpuTrainer instead: forward_train, then backward with the
upstream gradient all ones, per run (their time, and the forward's and backward's shares).
The GPU adapter follows WGPU_BACKEND and WGPU_ADAPTER_NAME.";

/// Sequence-length scaling of nn.RNN, nn.LSTM or nn.GRU forwards on the GPU (and the CPU
/// reference path), optionally next to PyTorch timed in the same run.
#[derive(Parser, Debug)]
#[command(
    name = "scaling",
    override_usage = "cargo run --release --example scaling -- [FLAGS]",
    after_long_help = AFTER_HELP,
    // A flag given twice keeps its last value, as a hand-edited command line expects.
    args_override_self = true
)]
struct Flags {
    /// The model: rnn (nn.RNN, tanh), lstm (nn.LSTM) or gru (nn.GRU).
    #[arg(
        long,
        value_name = "KIND",
        default_value = "rnn",
        value_parser = PossibleValuesParser::new(Cell::ALL.map(Cell::name))
            .map(|name| Cell::parse(&name).expect("one of the possible values"))
    )]
    cell: Cell,

    /// A subset that finishes in about a minute on lavapipe: lengths 16,128,1024 (where the
    /// stored baselines have rows), fewer runs per point, budgets of 0.5 s (cpu) and 5 s (gpu,
    /// torch).
    #[arg(long)]
    quick: bool,

    /// Hidden x batch pairs, e.g. 64x1,256x16 (input size = hidden) [default:
    /// 64x1,256x16,1024x64; with --quick and lstm or gru: 64x1,256x16].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        value_parser = parse_config,
        action = clap::ArgAction::Set
    )]
    configs: Vec<(usize, usize)>,

    /// Sequence lengths T, e.g. 16,256,4096; measured ascending, without repeats [default:
    /// 16,64,256,1024,4096; with --quick: 16,128,1024].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        value_parser = positive,
        action = clap::ArgAction::Set
    )]
    lengths: Vec<usize>,

    /// Skip the CPU reference path.
    #[arg(long)]
    gpu_only: bool,

    /// Skip CPU measurements whose forward is predicted to take longer (from the measurements
    /// so far); `none`: no limit [default: 2; with --quick: 0.5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_budget, allow_negative_numbers = true)]
    cpu_budget: Option<Budget>,

    /// The same for the GPU path and for --torch: software adapters such as lavapipe would need
    /// hours for the largest default points [default: 20; with --quick: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_budget, allow_negative_numbers = true)]
    gpu_budget: Option<Budget>,

    /// Also time PyTorch's CPU forward of the same model at every point, right after ours, by
    /// running benches/baselines/time_torch.py with this interpreter (which needs torch;
    /// onnxruntime and onnx too for the ort column): --torch-threads threads, eval, no_grad,
    /// float32, zero state.
    ///
    /// Adds the columns torch/gpu and ort/gpu (their time over ours: above 1 means the GPU path
    /// is faster). Without it, the torch and ort columns come from the CSVs in
    /// benches/baselines/ (nn.RNN only, measured on another day).
    #[arg(long, value_name = "PYTHON", value_parser = parse_python)]
    torch: Option<String>,

    /// torch.set_num_threads and onnxruntime's intra-op threads for --torch: 2 is the baseline
    /// the targets are stated against; 1 shows what a busy second core costs PyTorch's OpenMP
    /// threads.
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 2)]
    torch_threads: usize,

    /// Measure each point N times, our paths and PyTorch alternating round by round, and keep
    /// each path's median round: on a shared, noisy machine one slow stretch then cannot decide
    /// a ratio.
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 1)]
    rounds: usize,

    /// Time training instead of inference: one forward_train and one backward of GpuTrainer
    /// (and CpuTrainer, unless --gpu-only) per run, upstream gradient all ones (loss =
    /// output.sum(), h_n unused), and the training workspace's GPU memory per point. With
    /// --torch, PyTorch's forward + y.sum().backward() of the same model
    /// (examples/scaling/time_torch_train.py); the stored baselines are forwards only.
    #[arg(long)]
    backward: bool,

    /// The GPU models' recurrent kernels: auto (the library's default: kernels that compile
    /// within seconds), persistent (the fastest, whatever they cost to compile) or per-step
    /// (one dispatch a timestep).
    #[arg(
        long,
        value_name = "KIND",
        default_value = "auto",
        value_parser = PossibleValuesParser::new(["auto", "persistent", "per-step"])
            .map(|name| parse_recurrence(&name))
    )]
    recurrence: Recurrence,

    /// Where scaling.csv, fit.csv and scaling.svg go.
    #[arg(long = "out", value_name = "DIR", default_value = "target/scaling")]
    out_dir: PathBuf,

    /// Measure only the input-projection GEMM (rows = T·N = 4096, I = H = 256), in each form
    /// the adapter has (the tile kernel; the weight-stationary one where it applies), and
    /// print gemm_gflops=<x> of the form a layer of that shape runs as the last line.
    #[arg(long, conflicts_with = "peak")]
    gemm: bool,

    /// Measure only the adapter's multiply-add ceiling: register-resident chains of fused
    /// multiply-adds with no memory traffic, the bound every kernel's GFLOP/s is read against;
    /// prints peak_gflops=<x> as the last line.
    #[arg(long)]
    peak: bool,

    /// With --gemm: the product's rows, K and columns, e.g. 16384x64x256.
    #[arg(long, value_name = "ROWSxKxCOLS", value_parser = parse_gemm_shape, requires = "gemm")]
    gemm_shape: Option<(usize, usize, usize)>,
}

/// A `--cpu-budget` or `--gpu-budget`: `None` for `none`. A newtype, since clap reads a bare
/// `Option<Option<_>>` field as a flag whose value may be left out.
#[derive(Clone, Copy, Debug)]
struct Budget(Option<Duration>);

/// Parses the whole command line, program name first. `Err` is clap's answer (help, version
/// or a message about a bad flag), which `clap::Error::exit` prints with the right status.
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Flags::try_parse_from(args).map(Flags::into_command)
}

impl Flags {
    fn into_command(self) -> Command {
        if self.peak {
            return Command::Peak;
        }
        if self.gemm {
            return Command::Gemm(Gemm {
                shape: self.gemm_shape.unwrap_or(GEMM_SHAPE),
            });
        }
        let cell = self.cell;
        let (lengths, (cpu_budget, gpu_budget)) = if self.quick {
            (&QUICK_LENGTHS[..], QUICK_BUDGETS)
        } else {
            (&DEFAULT_LENGTHS[..], DEFAULT_BUDGETS)
        };
        let configs = match (self.configs.is_empty(), self.quick, cell) {
            (false, ..) => self.configs,
            (true, true, Cell::Lstm | Cell::Gru) => QUICK_GATED_CONFIGS.to_vec(),
            (true, ..) => DEFAULT_CONFIGS.to_vec(),
        };
        let mut unique: Vec<Shape> = Vec::new();
        for (hidden, batch) in configs {
            let shape = Shape {
                cell,
                hidden,
                batch,
            };
            if !unique.contains(&shape) {
                unique.push(shape);
            }
        }
        // Ascending: the fit and the extrapolation that skips slow runs go from short to long.
        let mut lengths = match self.lengths.is_empty() {
            true => lengths.to_vec(),
            false => self.lengths,
        };
        lengths.sort_unstable();
        lengths.dedup();
        let budget = |given: Option<Budget>, default: f64| {
            given.map_or(Some(Duration::from_secs_f64(default)), |Budget(b)| b)
        };
        Command::Report(Options {
            cell,
            configs: unique,
            lengths,
            gpu_only: self.gpu_only,
            quick: self.quick,
            cpu_budget: budget(self.cpu_budget, cpu_budget),
            gpu_budget: budget(self.gpu_budget, gpu_budget),
            out_dir: self.out_dir,
            torch: self.torch,
            torch_threads: self.torch_threads,
            rounds: self.rounds,
            workload: match self.backward {
                true => Workload::Training,
                false => Workload::Forward,
            },
            recurrence: self.recurrence,
        })
    }
}

/// One of `--recurrence`'s possible values (clap has checked it is one).
fn parse_recurrence(name: &str) -> Recurrence {
    match name {
        "persistent" => Recurrence::Persistent,
        "per-step" => Recurrence::PerStep,
        _ => Recurrence::Auto,
    }
}

fn parse_python(path: &str) -> Result<String, String> {
    match path.trim() {
        "" => Err("needs a Python interpreter, e.g. --torch .venv-bench/bin/python".into()),
        path => Ok(path.to_string()),
    }
}

/// One `HxN` item of `--configs`, e.g. `256x16`: (hidden size, batch).
fn parse_config(item: &str) -> Result<(usize, usize), String> {
    let (hidden, batch) = item
        .trim()
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{item}` is not HxN, e.g. 256x16"))?;
    Ok((positive(hidden)?, positive(batch)?))
}

fn parse_gemm_shape(item: &str) -> Result<(usize, usize, usize), String> {
    let sizes = item
        .split(['x', 'X'])
        .map(positive)
        .collect::<Result<Vec<_>, _>>()?;
    match sizes[..] {
        [rows, depth, cols] => Ok((rows, depth, cols)),
        _ => Err(format!("`{item}` is not ROWSxKxCOLS, e.g. 16384x64x256")),
    }
}

/// Seconds, or `none` for no limit.
fn parse_budget(text: &str) -> Result<Budget, String> {
    if text.trim() == "none" {
        return Ok(Budget(None));
    }
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(|d| Budget(Some(d)))
        .ok_or_else(|| format!("`{text}` is neither a number of seconds nor `none`"))
}

fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, clap::Error> {
        parse(std::iter::once("scaling").chain(args.iter().copied()))
    }

    fn report(args: &[&str]) -> Options {
        match parse_args(args) {
            Ok(Command::Report(options)) => options,
            Ok(Command::Gemm(_)) => panic!("{args:?}: --gemm"),
            Ok(Command::Peak) => panic!("{args:?}: --peak"),
            Err(error) => panic!("{args:?}: {error}"),
        }
    }

    #[test]
    fn the_flags_are_consistent() {
        // clap's own checks of the definitions (names, defaults, value parsers).
        Flags::command().debug_assert();
    }

    #[test]
    fn help_is_answered_by_clap() {
        for flag in ["-h", "--help"] {
            let error = parse_args(&[flag]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{flag}");
        }
        let help = Flags::command().render_long_help().to_string();
        for text in ["--configs <LIST>", "`none`: no limit", "WGPU_ADAPTER_NAME"] {
            assert!(help.contains(text), "{text}: {help}");
        }
    }

    #[test]
    fn defaults_and_quick() {
        let options = report(&[]);
        assert_eq!(options.configs.len(), 3);
        assert_eq!(options.lengths, [16, 64, 256, 1024, 4096]);
        assert_eq!(options.cpu_budget, Some(Duration::from_secs(2)));
        assert_eq!(options.gpu_budget, Some(Duration::from_secs(20)));
        assert_eq!(options.out_dir, PathBuf::from("target/scaling"));
        assert!(!options.quick && !options.gpu_only);
        let options = report(&["--quick", "--lengths=64,16,64"]);
        assert!(options.quick);
        assert_eq!(options.lengths, [16, 64]);
        assert_eq!(options.cpu_budget, Some(Duration::from_millis(500)));
        assert_eq!(options.gpu_budget, Some(Duration::from_secs(5)));
        let options = report(&["--gpu-budget", "none", "--cpu-budget=0.25", "--gpu-only"]);
        assert_eq!(options.gpu_budget, None);
        assert_eq!(options.cpu_budget, Some(Duration::from_millis(250)));
        assert!(options.gpu_only);
        assert_eq!(
            report(&["--out", "/tmp/x"]).out_dir,
            PathBuf::from("/tmp/x")
        );
    }

    #[test]
    fn lists() {
        let options = report(&["--configs", "256x16,64X1,256x16", "--lengths", "4096,16"]);
        let pairs: Vec<_> = options
            .configs
            .iter()
            .map(|s| (s.hidden, s.batch))
            .collect();
        assert_eq!(pairs, [(256, 16), (64, 1)]);
        assert_eq!(options.lengths, [16, 4096]);
        // A list given twice: the last one counts, as for every flag.
        assert_eq!(report(&["--lengths=16,64", "--lengths=8"]).lengths, [8]);
    }

    #[test]
    fn rejects_bad_input() {
        for args in [
            &["--configs", "64"][..],
            &["--configs", "64x0"],
            &["--configs", "64x1,"],
            &["--lengths", "0"],
            &["--lengths", "16,x"],
            &["--cpu-budget", "-1"],
            &["--gpu-budget", "never"],
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
        // The messages name the flag and the offending value.
        let error = parse_args(&["--configs", "64x1,64"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--configs") && error.contains("`64` is not HxN"),
            "{error}"
        );
        let error = parse_args(&["--cpu-budget", "-1"]).unwrap_err().to_string();
        assert!(error.contains("nor `none`"), "{error}");
        assert!(matches!(
            parse_args(&["--cell", "rnn", "--gemm"]),
            Ok(Command::Gemm(Gemm { shape: GEMM_SHAPE }))
        ));
        assert!(matches!(
            parse_args(&["--gemm", "--gemm-shape", "16384x64x192"]),
            Ok(Command::Gemm(Gemm {
                shape: (16384, 64, 192)
            }))
        ));
        assert!(matches!(
            parse_args(&["--cell", "lstm", "--peak"]),
            Ok(Command::Peak)
        ));
        for args in [
            &["--gemm", "--peak"][..],
            &["--gemm-shape", "64x64x64"][..],
            &["--gemm", "--gemm-shape", "64x64"],
            &["--gemm", "--gemm-shape", "0x64x64"],
        ] {
            assert!(parse_args(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn cells() {
        let options = report(&[]);
        assert_eq!(options.cell, Cell::Rnn);
        assert!(options.configs.iter().all(|shape| shape.cell == Cell::Rnn));
        for (arg, cell) in [("rnn", Cell::Rnn), ("lstm", Cell::Lstm), ("gru", Cell::Gru)] {
            let options = report(&["--cell", arg, "--configs=64x1"]);
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
            assert_eq!(report(&["--quick", &format!("--cell={arg}")]).cell, cell);
        }
        // The last one wins, as for every flag.
        assert_eq!(
            report(&["--cell", "gru", "--cell", "lstm"]).cell,
            Cell::Lstm
        );
        let error = parse_args(&["--cell", "transformer"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let error = error.to_string();
        assert!(error.contains("rnn, lstm, gru"), "{error}");
    }

    #[test]
    fn quick_gated_leaves_out_the_largest_config() {
        let hidden = |args: &[&str]| {
            report(args)
                .configs
                .iter()
                .map(|s| s.hidden)
                .collect::<Vec<_>>()
        };
        assert_eq!(hidden(&["--quick"]), [64, 256, 1024]);
        assert_eq!(hidden(&["--quick", "--cell", "lstm"]), [64, 256]);
        assert_eq!(hidden(&["--cell", "gru", "--quick"]), [64, 256]);
        assert_eq!(hidden(&["--cell", "gru"]), [64, 256, 1024]);
        assert_eq!(
            hidden(&["--cell", "gru", "--quick", "--configs", "1024x64"]),
            [1024]
        );
        assert_eq!(
            report(&["--quick", "--cell", "lstm"]).lengths,
            [16, 128, 1024]
        );
    }

    #[test]
    fn torch_interpreter() {
        let options = report(&[]);
        assert_eq!(options.torch, None);
        assert_eq!(options.torch_threads, 2);
        let options = report(&["--torch", ".venv-bench/bin/python", "--cell", "gru"]);
        assert_eq!(options.torch.as_deref(), Some(".venv-bench/bin/python"));
        let options = report(&["--torch=python3"]);
        assert_eq!(options.torch.as_deref(), Some("python3"));
        assert_eq!(report(&["--torch-threads", "1"]).torch_threads, 1);
        assert!(parse_args(&["--torch-threads", "0"]).is_err());
    }

    #[test]
    fn backward() {
        assert_eq!(report(&[]).workload, Workload::Forward);
        let options = report(&["--backward", "--cell", "gru", "--torch", "python3"]);
        assert_eq!(options.workload, Workload::Training);
        assert_eq!(options.cell, Cell::Gru);
        assert!(parse_args(&["--backward=1"]).is_err());
    }

    #[test]
    fn recurrence() {
        assert_eq!(report(&[]).recurrence, Recurrence::Auto);
        let kind = |name: &str| report(&["--backward", "--recurrence", name]).recurrence;
        assert_eq!(kind("persistent"), Recurrence::Persistent);
        assert_eq!(kind("per-step"), Recurrence::PerStep);
        assert_eq!(kind("auto"), Recurrence::Auto);
        assert!(parse_args(&["--recurrence", "fast"]).is_err());
        assert!(parse_args(&["--recurrence"]).is_err());
    }

    #[test]
    fn rounds() {
        let rounds = |args: &[&str]| parse_args(args).map(|_| report(args).rounds);
        assert_eq!(rounds(&[]).unwrap(), 1);
        assert_eq!(rounds(&["--rounds", "5"]).unwrap(), 5);
        assert_eq!(rounds(&["--rounds=3", "--quick"]).unwrap(), 3);
        for bad in [&["--rounds", "0"][..], &["--rounds"], &["--rounds", "two"]] {
            assert!(rounds(bad).is_err(), "{bad:?}");
        }
    }
}
