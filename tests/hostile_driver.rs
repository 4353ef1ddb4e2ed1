//! The fuzz driver over the forward entry points: CPU and GPU `forward` and
//! `forward_with_lengths`, streams (`push`, `state`, `cell_state`, `reset`, `reset_to`,
//! `finish`), the three cells and `time_chunk`, under workspace budgets, with arbitrary
//! shapes, lengths, `h0`s and `c0`s, on models of every mode (LSTMs with and without
//! `proj_size`). The result must be `Ok` with PyTorch's shapes and the CPU's values, or the
//! typed error PyTorch's rules call for; never a panic, never an absurd allocation.
//!
//! Every distinct failure is shrunk to a small input and reported with it. `FUZZ_SEED=n`
//! replays a run; `FUZZ_SCALE=k` multiplies the time budget.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use hostile::{Outcome, call, fail, fuzz, scaled, variant};
use proptest::prelude::*;
use proptest::sample::select;
use support::{MODES, Rng, State, check_output, input_shape, state_shape};
use wgpu_rnn::{
    CellConfig, CpuRnn, GpuContext, GpuRnn, GruCell, Hx, LstmCell, Rnn, RnnCell, RnnConfig,
    RnnError, RnnMode, RnnOutput, RnnWeights, StreamOptions, Tensor, testing,
};

/// The models the entry points are fuzzed on, in every mode: stacked, bidirectional
/// batch-first, and a degenerate one (1 → 1, no bias, three layers, batch-first); and LSTMs
/// that project (stacked, and bidirectional batch-first).
fn models() -> Vec<RnnConfig> {
    let mut models = Vec::new();
    for mode in MODES {
        models.extend([
            RnnConfig {
                num_layers: 2,
                ..RnnConfig::new(mode, 3, 5)
            },
            RnnConfig {
                bidirectional: true,
                batch_first: true,
                ..RnnConfig::new(mode, 2, 4)
            },
            RnnConfig {
                num_layers: 3,
                bias: false,
                batch_first: true,
                ..RnnConfig::new(mode, 1, 1)
            },
        ]);
    }
    models.extend([
        RnnConfig {
            num_layers: 2,
            proj_size: 3,
            ..RnnConfig::lstm(3, 5)
        },
        RnnConfig {
            bidirectional: true,
            batch_first: true,
            proj_size: 1,
            ..RnnConfig::lstm(2, 4)
        },
    ]);
    models
}

const CELL_INPUT: usize = 3;
const CELL_HIDDEN: usize = 4;

fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Any shape a tensor can have: up to 4 dims, mostly small or one of `features`, and absurd
/// sizes (2^40, usize::MAX) only beside a 0, since the tensor's data must exist.
fn any_dims(features: Vec<usize>) -> impl Strategy<Value = Vec<usize>> + Clone {
    let dim = prop_oneof![
        6 => 0usize..=5,
        3 => select(features),
        1 => select(vec![1usize << 20, 1 << 40, usize::MAX / 2, usize::MAX]),
    ];
    proptest::collection::vec(dim, 0..=4).prop_map(|mut dims| {
        if element_count(&dims).is_none_or(|n| n > 4096) {
            dims[0] = 0;
        }
        dims
    })
}

fn features(config: &RnnConfig) -> Vec<usize> {
    vec![
        config.input_size,
        config.hidden_size,
        config.state_size(),
        config.state_rows(),
        config.output_size(),
    ]
}

#[derive(Clone, Debug)]
enum StreamStep {
    Push(Vec<usize>),
    State,
    Reset,
    /// h0's shape, and c0's when one is given.
    ResetTo(Vec<usize>, Option<Vec<usize>>),
    Finish,
}

#[derive(Clone, Debug)]
enum Op {
    Forward {
        model: usize,
        input: Vec<usize>,
        h0: Option<Vec<usize>>,
        /// Passed only beside an h0 (`Hx` has no c0 without h0).
        c0: Option<Vec<usize>>,
        lengths: Option<Vec<usize>>,
        budget: Option<u64>,
        seed: u64,
    },
    Stream {
        model: usize,
        batch: usize,
        delay: usize,
        steps: Vec<StreamStep>,
        seed: u64,
    },
    Cell {
        /// Index into `MODES`.
        mode: usize,
        input: Vec<usize>,
        hx: Option<Vec<usize>>,
        /// An LSTM cell's c; its state is passed only when both are given.
        cx: Option<Vec<usize>>,
        seed: u64,
    },
    TimeChunk {
        model: usize,
        seq_len: usize,
        batch: usize,
        budget: Option<u64>,
    },
}

fn budgets() -> impl Strategy<Value = Option<u64>> + Clone {
    prop_oneof![
        4 => Just(None),
        1 => select(vec![0u64, 1, 64, 512, 2048, 1 << 20]).prop_map(Some),
    ]
}

/// Mostly valid calls (so that the Ok path is checked against the CPU), with one thing at a
/// time made arbitrary; c0 mostly where an LSTM needs it, sometimes missing or where none
/// belongs.
fn forward_op() -> impl Strategy<Value = Op> {
    (
        0..models().len(),
        1..=6usize,
        1..=4usize,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(model, t, n, unbatched, seed)| {
            let config = &models()[model];
            let n = if unbatched { 1 } else { n };
            let rows = config.state_rows();
            let (input, h0, c0) = if unbatched {
                (
                    vec![t, config.input_size],
                    vec![rows, config.state_size()],
                    vec![rows, config.hidden_size],
                )
            } else {
                (
                    input_shape(config, t, n).to_vec(),
                    state_shape(config, n).to_vec(),
                    support::cell_state_shape(config, n).to_vec(),
                )
            };
            let input = prop_oneof![3 => Just(input), 1 => any_dims(features(config))];
            let h0 = prop_oneof![
                2 => Just(None),
                2 => Just(Some(h0)),
                1 => any_dims(features(config)).prop_map(Some),
            ];
            let lstm = config.mode == RnnMode::Lstm;
            let c0 = prop_oneof![
                if lstm { 1 } else { 6 } => Just(None),
                if lstm { 6 } else { 1 } => Just(Some(c0)),
                1 => any_dims(features(config)).prop_map(Some),
            ];
            let length = prop_oneof![
                4 => 1..=t,
                1 => select(vec![0, t + 1, usize::MAX, 1 << 32]),
            ];
            let lengths = prop_oneof![
                2 => Just(None),
                2 => proptest::collection::vec(length.clone(), n..=n).prop_map(Some),
                1 => proptest::collection::vec(length, 0..=5).prop_map(Some),
            ];
            (input, h0, c0, lengths, budgets()).prop_map(move |(input, h0, c0, lengths, budget)| {
                Op::Forward {
                    model,
                    input,
                    h0,
                    c0,
                    lengths,
                    budget,
                    seed,
                }
            })
        })
}

fn stream_op() -> impl Strategy<Value = Op> {
    // Absurd batches and delays are ones a naive implementation overflows on (a catchable
    // panic); sizes that would make it attempt a terabyte allocation instead abort the
    // process, which no test can report, so they are left to the pinned cases' reasoning.
    (
        0..models().len(),
        prop_oneof![4 => 0usize..=3, 1 => select(vec![1usize << 40, usize::MAX / 2])],
        prop_oneof![4 => 0usize..=5, 1 => select(vec![1usize << 61, usize::MAX])],
        any::<u64>(),
    )
        .prop_flat_map(|(model, batch, delay, seed)| {
            let config = models()[model].clone();
            let n = batch.clamp(1, 4);
            let (l, i) = (config.num_layers, config.input_size);
            let (h_out, h) = (config.state_size(), config.hidden_size);
            let chunk = {
                let config = config.clone();
                (1..=5usize, any::<bool>()).prop_map(move |(t, unbatched)| {
                    if unbatched && n == 1 {
                        vec![t, i]
                    } else {
                        input_shape(&config, t, n).to_vec()
                    }
                })
            };
            let lstm = config.mode == RnnMode::Lstm;
            let own_state = StreamStep::ResetTo(vec![l, n, h_out], lstm.then(|| vec![l, n, h]));
            // A stream of one sequence also takes its state without N.
            let unbatched_state = if n == 1 {
                StreamStep::ResetTo(vec![l, h_out], lstm.then(|| vec![l, h]))
            } else {
                StreamStep::State
            };
            let other_c0 = StreamStep::ResetTo(vec![l, n, h_out], (!lstm).then(|| vec![l, n, h]));
            let dims = any_dims(features(&config));
            let step = prop_oneof![
                6 => chunk.prop_map(StreamStep::Push),
                1 => dims.clone().prop_map(StreamStep::Push),
                1 => Just(StreamStep::State),
                1 => Just(StreamStep::Reset),
                2 => Just(own_state),
                1 => Just(unbatched_state),
                1 => Just(other_c0),
                1 => (dims.clone(), proptest::option::of(dims))
                    .prop_map(|(h0, c0)| StreamStep::ResetTo(h0, c0)),
                1 => Just(StreamStep::Finish),
            ];
            proptest::collection::vec(step, 0..=6).prop_map(move |steps| Op::Stream {
                model,
                batch,
                delay,
                steps,
                seed,
            })
        })
}

fn cell_op() -> impl Strategy<Value = Op> {
    (0..MODES.len(), 1..=4usize, any::<bool>(), any::<u64>()).prop_flat_map(
        |(mode, n, unbatched, seed)| {
            let (input, state) = if unbatched {
                (vec![CELL_INPUT], vec![CELL_HIDDEN])
            } else {
                (vec![n, CELL_INPUT], vec![n, CELL_HIDDEN])
            };
            let dims = any_dims(vec![CELL_INPUT, CELL_HIDDEN]);
            let state = prop_oneof![
                1 => Just(None),
                2 => Just(Some(state)),
                1 => dims.clone().prop_map(Some),
            ];
            (
                prop_oneof![3 => Just(input), 1 => dims],
                state.clone(),
                state,
            )
                .prop_map(move |(input, hx, cx)| Op::Cell {
                    mode,
                    input,
                    hx,
                    cx,
                    seed,
                })
        },
    )
}

fn time_chunk_op() -> impl Strategy<Value = Op> {
    let size = select(vec![0usize, 1, 2, 7, 1 << 20, 1 << 40, usize::MAX]);
    (0..models().len(), size.clone(), size, budgets()).prop_map(
        |(model, seq_len, batch, budget)| Op::TimeChunk {
            model,
            seq_len,
            batch,
            budget,
        },
    )
}

/// The shapes a valid forward returns: output, h_n, and c_n for an LSTM.
type Shapes = (Vec<usize>, Vec<usize>, Option<Vec<usize>>);

/// PyTorch's rules (as the crate documents them): the shapes of output, h_n and c_n, or
/// `None` when the call must fail. `c0` counts only beside an `h0`.
fn expected_forward(
    config: &RnnConfig,
    input: &[usize],
    h0: Option<&[usize]>,
    c0: Option<&[usize]>,
    lengths: Option<&[usize]>,
) -> Option<Shapes> {
    let (i, out) = (config.input_size, config.output_size());
    let rows = config.state_rows();
    let (t, n, unbatched) = match *input {
        [t, f] if f == i => (t, 1, true),
        [a, b, f] if f == i && config.batch_first => (b, a, false),
        [a, b, f] if f == i => (a, b, false),
        _ => return None,
    };
    if t == 0 || n == 0 {
        return None;
    }
    let state = |features| {
        if unbatched {
            vec![rows, features]
        } else {
            vec![rows, n, features]
        }
    };
    let (h_n, c_n) = (state(config.state_size()), state(config.hidden_size));
    if let Some(h0) = h0 {
        if h0 != h_n.as_slice() {
            return None;
        }
        // An LSTM takes (h0, c0) together; the other modes have no c.
        let lstm = config.mode == RnnMode::Lstm;
        if (lstm && c0 != Some(c_n.as_slice())) || (!lstm && c0.is_some()) {
            return None;
        }
    }
    if lengths.is_some_and(|l| l.len() != n || l.iter().any(|&l| l == 0 || l > t)) {
        return None;
    }
    let output = if unbatched {
        vec![t, out]
    } else if config.batch_first {
        vec![n, t, out]
    } else {
        vec![t, n, out]
    };
    Some((output, h_n, (config.mode == RnnMode::Lstm).then_some(c_n)))
}

/// Checks one entry point's result against what PyTorch's rules expect. `limits_allowed`:
/// the call had a workspace budget, so `ExceedsLimits` is a fair answer to a valid call.
fn check_result(
    what: &str,
    result: &wgpu_rnn::Result<RnnOutput>,
    expected: &Option<Shapes>,
    limits_allowed: bool,
) -> Outcome {
    match (result, expected) {
        (Ok(out), Some((output, h_n, c_n))) => {
            let got_c_n = out.c_n.as_ref().map(|c| c.shape().to_vec());
            if out.output.shape() != output.as_slice()
                || out.h_n.shape() != h_n.as_slice()
                || got_c_n != *c_n
            {
                return Err(fail(
                    format!("{what}: wrong output shapes"),
                    format!(
                        "output {:?} (expected {output:?}), h_n {:?} (expected {h_n:?}), \
                         c_n {got_c_n:?} (expected {c_n:?})",
                        out.output.shape(),
                        out.h_n.shape()
                    ),
                ));
            }
            Ok(())
        }
        (Ok(_), None) => Err(fail(format!("{what}: accepted a call PyTorch rejects"), "")),
        (Err(RnnError::ShapeMismatch { .. } | RnnError::InvalidLength { .. }), None) => Ok(()),
        (Err(RnnError::ExceedsLimits { .. }), Some(_)) if limits_allowed => Ok(()),
        (Err(e), None) => Err(fail(
            format!("{what}: rejected a bad call with {}", variant(e)),
            e.to_string(),
        )),
        (Err(e), Some(_)) => Err(fail(
            format!("{what}: rejected a valid call with {}", variant(e)),
            e.to_string(),
        )),
    }
}

/// One cell of each mode on both backends.
enum Cells {
    Rnn(RnnCell<CpuRnn>, RnnCell<GpuRnn>),
    Lstm(LstmCell<CpuRnn>, LstmCell<GpuRnn>),
    Gru(GruCell<CpuRnn>, GruCell<GpuRnn>),
}

/// A cell step's result: h', and c' for an LSTM.
type Step = wgpu_rnn::Result<(Tensor, Option<Tensor>)>;

impl Cells {
    fn new(ctx: &GpuContext, mode: RnnMode) -> Self {
        let config = CellConfig {
            mode,
            ..CellConfig::rnn(CELL_INPUT, CELL_HIDDEN)
        };
        let w = support::cell_weights(&config, 9);
        match mode {
            RnnMode::Rnn(_) => Cells::Rnn(
                RnnCell::cpu(config.clone(), &w).unwrap(),
                RnnCell::gpu(ctx, config, &w).unwrap(),
            ),
            RnnMode::Lstm => Cells::Lstm(
                LstmCell::cpu(config.clone(), &w).unwrap(),
                LstmCell::gpu(ctx, config, &w).unwrap(),
            ),
            RnnMode::Gru => Cells::Gru(
                GruCell::cpu(config.clone(), &w).unwrap(),
                GruCell::gpu(ctx, config, &w).unwrap(),
            ),
        }
    }

    /// One step on the CPU (`gpu` false) or the GPU; an LSTM gets (hx, cx) when both exist.
    fn step(&self, gpu: bool, x: &Tensor, hx: Option<&Tensor>, cx: Option<&Tensor>) -> Step {
        let h_only = |h: wgpu_rnn::Result<Tensor>| h.map(|h| (h, None));
        match self {
            Cells::Rnn(c, g) if gpu => h_only(g.step(x, hx)),
            Cells::Rnn(c, _) => h_only(c.step(x, hx)),
            Cells::Gru(_, g) if gpu => h_only(g.step(x, hx)),
            Cells::Gru(c, _) => h_only(c.step(x, hx)),
            Cells::Lstm(c, g) => {
                let state = hx.zip(cx);
                let step = if gpu {
                    g.step(x, state)
                } else {
                    c.step(x, state)
                };
                step.map(|(h, c)| (h, Some(c)))
            }
        }
    }
}

struct Models {
    configs: Vec<RnnConfig>,
    cpu: Vec<CpuRnn>,
    gpu: Vec<GpuRnn>,
    cells: Vec<Cells>,
}

impl Models {
    fn new(ctx: &GpuContext) -> Self {
        let configs = models();
        let weights: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(k, c)| RnnWeights::init(c, k as u64).unwrap())
            .collect();
        Models {
            cpu: configs
                .iter()
                .zip(&weights)
                .map(|(c, w)| CpuRnn::new(c.clone(), w).unwrap())
                .collect(),
            gpu: configs
                .iter()
                .zip(&weights)
                .map(|(c, w)| GpuRnn::new(ctx, c.clone(), w).unwrap())
                .collect(),
            cells: MODES.iter().map(|&mode| Cells::new(ctx, mode)).collect(),
            configs,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_forward(
    models: &Models,
    model: usize,
    input: &[usize],
    h0: Option<&[usize]>,
    c0: Option<&[usize]>,
    lengths: Option<&[usize]>,
    budget: Option<u64>,
    seed: u64,
) -> Outcome {
    let config = &models.configs[model];
    let mut rng = Rng(seed);
    let x = rng.tensor(input);
    let h0_tensor = h0.map(|d| rng.tensor(d));
    let c0_tensor = c0.map(|d| rng.tensor(d));
    let hx = h0_tensor.as_ref().map(|h0| Hx {
        h0,
        c0: c0_tensor.as_ref(),
    });
    let c0 = if h0.is_some() { c0 } else { None };
    let expected = expected_forward(config, input, h0, c0, lengths);
    let run = |m: &dyn Rnn| match lengths {
        Some(l) => m.forward_with_lengths(&x, l, hx),
        None => m.forward(&x, hx),
    };
    let what = if lengths.is_some() {
        "forward_with_lengths"
    } else {
        "forward"
    };
    let cpu = call(&format!("CPU {what}"), || run(&models.cpu[model]))?;
    check_result(&format!("CPU {what}"), &cpu, &expected, false)?;
    let gpu_model = &models.gpu[model];
    gpu_model.set_workspace_budget(budget);
    let gpu = call(&format!("GPU {what}"), || run(gpu_model));
    gpu_model.set_workspace_budget(None);
    let gpu = gpu?;
    check_result(&format!("GPU {what}"), &gpu, &expected, budget.is_some())?;
    if let (Ok(g), Ok(c)) = (&gpu, &cpu) {
        check_output(g, c).map_err(|e| fail(format!("GPU {what}: differs from the CPU"), e))?;
    }
    Ok(())
}

/// Transposes the first two dims of an (a, b, f) tensor's data.
fn swap01(data: &[f32], a: usize, b: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for x in 0..a {
        for y in 0..b {
            let (from, to) = ((x * b + y) * f, (y * a + x) * f);
            out[to..to + f].copy_from_slice(&data[from..from + f]);
        }
    }
    out
}

/// What a stream should hold: the frames pushed since its last reset (sequence-first,
/// (T, N, I)), its initial state, the outputs it returned (sequence-first), how many
/// outputs the delay still holds back, and whether the last tensor it was given (a chunk, or
/// the state of `reset_to`) was unbatched: a stream of one sequence answers in that form.
struct StreamModel<'a> {
    config: &'a RnnConfig,
    cpu: &'a CpuRnn,
    batch: usize,
    delay: usize,
    initial: Option<State>,
    frames: Vec<f32>,
    returned: Vec<f32>,
    to_skip: usize,
    unbatched: bool,
}

impl StreamModel<'_> {
    fn reset(&mut self, initial: Option<State>) {
        self.initial = initial;
        self.frames.clear();
        self.returned.clear();
        self.to_skip = self.delay;
    }

    /// Frames (seq-first) of a chunk or output in the model's layout.
    fn seq_first(&self, data: &[f32], t: usize, f: usize) -> Vec<f32> {
        if self.config.batch_first {
            swap01(data, self.batch, t, f)
        } else {
            data.to_vec()
        }
    }

    /// The CPU's forward over everything pushed since the reset: (outputs seq-first, h_n,
    /// c_n for an LSTM).
    fn reference(&self) -> (Vec<f32>, Tensor, Option<Tensor>) {
        let (n, i) = (self.batch, self.config.input_size);
        let t = self.frames.len() / (n * i);
        if t == 0 {
            let layers = |f| [self.config.num_layers, n, f];
            let h0 = self.initial.as_ref().map_or_else(
                || Tensor::zeros(&layers(self.config.state_size())).unwrap(),
                |s| s.h0.clone(),
            );
            let c0 = (self.config.mode == RnnMode::Lstm).then(|| {
                self.initial
                    .as_ref()
                    .and_then(|s| s.c0.clone())
                    .unwrap_or_else(|| Tensor::zeros(&layers(self.config.hidden_size)).unwrap())
            });
            return (vec![], h0, c0);
        }
        let input = if self.config.batch_first {
            swap01(&self.frames, t, n, i)
        } else {
            self.frames.clone()
        };
        let input = Tensor::new(input, &input_shape(self.config, t, n)).unwrap();
        let out = self
            .cpu
            .forward(&input, self.initial.as_ref().map(State::hx))
            .unwrap();
        let f = self.config.output_size();
        (self.seq_first(out.output.data(), t, f), out.h_n, out.c_n)
    }

    /// The outputs returned so far are the CPU's outputs from frame `delay` on.
    fn check_outputs(&self, when: &str) -> Outcome {
        let frame = self.batch * self.config.output_size();
        let (want, ..) = self.reference();
        let t = want.len() / frame;
        let want = &want[self.delay.min(t) * frame..];
        if self.returned.len() != want.len() {
            return Err(fail(
                "stream: wrong number of output frames",
                format!(
                    "{when}: {} frames returned, {} expected (delay {})",
                    self.returned.len() / frame,
                    want.len() / frame,
                    self.delay
                ),
            ));
        }
        let c = wgpu_rnn::compare::compare(&self.returned, want, support::TOLERANCE);
        if !c.passed() {
            return Err(fail(
                "stream: outputs differ from the CPU",
                format!("{when}: {c}"),
            ));
        }
        Ok(())
    }
}

fn check_stream(
    models: &Models,
    model: usize,
    batch: usize,
    delay: usize,
    steps: &[StreamStep],
    seed: u64,
) -> Outcome {
    let config = &models.configs[model];
    let (l, i) = (config.num_layers, config.input_size);
    let (f, h_out, h) = (
        config.output_size(),
        config.state_size(),
        config.hidden_size,
    );
    let lstm = config.mode == RnnMode::Lstm;
    let options = StreamOptions { batch, delay };
    let made = call("GpuRnn::stream", || models.gpu[model].stream(options))?;
    // A stream of more sequences than fit in one buffer cannot exist on any adapter, and a
    // delay whose final flush (delay zero frames) needs more than 2^28 floats is refused.
    let long_delay = delay.saturating_mul(batch).saturating_mul(i.max(f)) > 1 << 28;
    let absurd = batch > 1 << 30 || long_delay;
    let mut stream = match made {
        Ok(_) if config.bidirectional || batch == 0 || absurd => {
            return Err(fail("GpuRnn::stream: accepted invalid options", ""));
        }
        Ok(stream) => stream,
        Err(RnnError::InvalidConfig(_)) if config.bidirectional || batch == 0 => return Ok(()),
        Err(RnnError::InvalidConfig(_) | RnnError::ExceedsLimits { .. }) if absurd => {
            return Ok(());
        }
        Err(e) => {
            return Err(fail(
                format!("GpuRnn::stream: failed with {}", variant(&e)),
                e.to_string(),
            ));
        }
    };
    let mut sim = StreamModel {
        config,
        cpu: &models.cpu[model],
        batch,
        delay,
        initial: None,
        frames: vec![],
        returned: vec![],
        to_skip: delay,
        unbatched: false,
    };
    let mut rng = Rng(seed);
    let frames_shape = |t: usize, unbatched: bool| -> Vec<usize> {
        if unbatched {
            vec![t, f]
        } else if config.batch_first {
            vec![batch, t, f]
        } else {
            vec![t, batch, f]
        }
    };
    for (k, step) in steps.iter().enumerate() {
        let when = format!("step {k} ({step:?})");
        match step {
            StreamStep::Push(dims) => {
                let chunk = rng.tensor(dims);
                let got = call("RnnStream::push", || stream.push(&chunk))?;
                let valid = match dims[..] {
                    [t, fi] if fi == i && batch == 1 && t > 0 => Some((t, true)),
                    [a, b, fi] if fi == i => {
                        let (t, n) = if config.batch_first { (b, a) } else { (a, b) };
                        (t > 0 && n == batch).then_some((t, false))
                    }
                    _ => None,
                };
                match (got, valid) {
                    (Ok(out), Some((t, unbatched))) => {
                        let skipped = sim.to_skip.min(t);
                        sim.to_skip -= skipped;
                        let kept = t - skipped;
                        if out.shape() != frames_shape(kept, unbatched).as_slice() {
                            return Err(fail(
                                "RnnStream::push: wrong output shape",
                                format!("{when}: {:?}", out.shape()),
                            ));
                        }
                        sim.unbatched = unbatched;
                        let frames = sim.seq_first(chunk.data(), t, i);
                        sim.frames.extend(frames);
                        let out = sim.seq_first(out.data(), kept, f);
                        sim.returned.extend(out);
                    }
                    (Err(RnnError::ShapeMismatch { .. }), None) => {}
                    (Ok(_), None) => {
                        return Err(fail("RnnStream::push: accepted a bad chunk", when));
                    }
                    (Err(e), _) => {
                        return Err(fail(
                            format!("RnnStream::push: failed with {}", variant(&e)),
                            format!("{when}: {e}"),
                        ));
                    }
                }
            }
            StreamStep::State => {
                let got = call("RnnStream::state", || stream.state())?
                    .map_err(|e| fail("RnnStream::state failed", e.to_string()))?;
                let got_c = call("RnnStream::cell_state", || stream.cell_state())?
                    .map_err(|e| fail("RnnStream::cell_state failed", e.to_string()))?;
                let (_, want, want_c) = sim.reference();
                let block = |features| {
                    if sim.unbatched {
                        vec![l, features]
                    } else {
                        vec![l, batch, features]
                    }
                };
                let want = Tensor::new(want.into_data(), &block(h_out)).unwrap();
                support::check_values("state", &got, &want).map_err(|e| {
                    fail(
                        "RnnStream::state: differs from the CPU",
                        format!("{when}: {e}"),
                    )
                })?;
                match (got_c, want_c) {
                    (Some(got), Some(want)) => {
                        let want = Tensor::new(want.into_data(), &block(h)).unwrap();
                        support::check_values("cell state", &got, &want).map_err(|e| {
                            fail(
                                "RnnStream::cell_state: differs from the CPU",
                                format!("{when}: {e}"),
                            )
                        })?;
                    }
                    (None, None) => {}
                    (got, _) => {
                        return Err(fail(
                            "RnnStream::cell_state: present exactly for an LSTM",
                            format!("{when}: {got:?}"),
                        ));
                    }
                }
            }
            StreamStep::Reset => {
                call("RnnStream::reset", || stream.reset())?;
                sim.reset(None);
            }
            StreamStep::ResetTo(h_dims, c_dims) => {
                let state = State {
                    h0: rng.tensor(h_dims),
                    c0: c_dims.as_ref().map(|d| rng.tensor(d)),
                };
                let got = call("RnnStream::reset_to", || stream.reset_to(state.hx()))?;
                // A stream of one sequence also takes (L, H_out) and (L, H), both so or
                // neither; later outputs and states then take that form.
                let unbatched = batch == 1 && h_dims.len() == 2;
                let block = |features| {
                    if unbatched {
                        vec![l, features]
                    } else {
                        vec![l, batch, features]
                    }
                };
                let c_valid = match c_dims {
                    Some(c) => lstm && *c == block(h),
                    None => !lstm,
                };
                match (got, *h_dims == block(h_out) && c_valid) {
                    (Ok(()), true) => {
                        // The reference runs batched: the same values as (L, 1, ·).
                        let batched =
                            |t: &Tensor, f| Tensor::new(t.data().to_vec(), &[l, batch, f]).unwrap();
                        sim.reset(Some(State {
                            h0: batched(&state.h0, h_out),
                            c0: state.c0.as_ref().map(|c| batched(c, h)),
                        }));
                        sim.unbatched = unbatched;
                    }
                    (Err(RnnError::ShapeMismatch { .. }), false) => {}
                    (got, _) => {
                        return Err(fail(
                            "RnnStream::reset_to: wrong outcome",
                            format!("{when}: {got:?}"),
                        ));
                    }
                }
            }
            StreamStep::Finish => {
                let got = call("RnnStream::finish", || stream.finish())?;
                let out = got.map_err(|e| {
                    fail(
                        format!("RnnStream::finish: failed with {}", variant(&e)),
                        format!("{when}: {e}"),
                    )
                })?;
                // The delay's zero frames go in; the outputs still held back come out.
                let skipped = sim.to_skip.min(delay);
                let kept = delay - skipped;
                if out.shape() != frames_shape(kept, sim.unbatched).as_slice() {
                    return Err(fail(
                        "RnnStream::finish: wrong output shape",
                        format!("{when}: {:?}", out.shape()),
                    ));
                }
                sim.frames.extend(vec![0.0; delay * batch * i]);
                let out = sim.seq_first(out.data(), kept, f);
                sim.returned.extend(out);
                sim.check_outputs(&when)?;
                sim.reset(None);
            }
        }
    }
    sim.check_outputs("the end")
}

fn check_cell(
    models: &Models,
    mode: usize,
    input: &[usize],
    hx: Option<&[usize]>,
    cx: Option<&[usize]>,
    seed: u64,
) -> Outcome {
    let lstm = MODES[mode] == RnnMode::Lstm;
    let mut rng = Rng(seed);
    let x = rng.tensor(input);
    let hx_tensor = hx.map(|d| rng.tensor(d));
    let cx_tensor = cx.map(|d| rng.tensor(d));
    let state = match input[..] {
        [n, CELL_INPUT] if n > 0 => Some(vec![n, CELL_HIDDEN]),
        [CELL_INPUT] => Some(vec![CELL_HIDDEN]),
        _ => None,
    };
    // An LSTM cell gets its state only as the pair; the other cells take hx alone.
    let given: Vec<&[usize]> = match (lstm, hx, cx) {
        (true, Some(h), Some(c)) => vec![h, c],
        (true, ..) => vec![],
        (false, h, _) => h.into_iter().collect(),
    };
    let expected = state.filter(|s| given.iter().all(|d| *d == s.as_slice()));
    let cells = &models.cells[mode];
    let step = |gpu| cells.step(gpu, &x, hx_tensor.as_ref(), cx_tensor.as_ref());
    let cpu = call("CPU cell step", || step(false))?;
    let gpu = call("GPU cell step", || step(true))?;
    for (what, got) in [("CPU cell step", &cpu), ("GPU cell step", &gpu)] {
        let shapes = got
            .as_ref()
            .map(|(h, c)| (h.shape().to_vec(), c.as_ref().map(|c| c.shape().to_vec())));
        match (&shapes, &expected) {
            (Ok((h, c)), Some(shape))
                if h == shape && c.as_ref().is_some() == lstm && c.iter().all(|c| c == shape) => {}
            (Err(RnnError::ShapeMismatch { .. }), None) => {}
            _ => {
                return Err(fail(
                    format!("{what}: wrong outcome"),
                    format!("{shapes:?}, expected shape {expected:?}"),
                ));
            }
        }
    }
    if let (Ok((g, gc)), Ok((c, cc))) = (&gpu, &cpu) {
        support::check_values("h'", g, c)
            .map_err(|e| fail("GPU cell step: differs from the CPU", e))?;
        if let (Some(g), Some(c)) = (gc, cc) {
            support::check_values("c'", g, c)
                .map_err(|e| fail("GPU cell step: c' differs from the CPU", e))?;
        }
    }
    Ok(())
}

fn check_time_chunk(
    models: &Models,
    model: usize,
    seq_len: usize,
    batch: usize,
    budget: Option<u64>,
) -> Outcome {
    let gpu = &models.gpu[model];
    gpu.set_workspace_budget(budget);
    let got = call("GpuRnn::time_chunk", || gpu.time_chunk(seq_len, batch));
    gpu.set_workspace_budget(None);
    match got? {
        Ok(chunk) if chunk > seq_len || (seq_len > 0 && chunk == 0) => Err(fail(
            "GpuRnn::time_chunk: chunk outside 1..=T",
            format!("{chunk}"),
        )),
        Err(e @ RnnError::Gpu(_)) => Err(fail("GpuRnn::time_chunk: Gpu error", e.to_string())),
        _ => Ok(()),
    }
}

fn check_op(models: &Models, op: &Op) -> Outcome {
    match op {
        Op::Forward {
            model,
            input,
            h0,
            c0,
            lengths,
            budget,
            seed,
        } => check_forward(
            models,
            *model,
            input,
            h0.as_deref(),
            c0.as_deref(),
            lengths.as_deref(),
            *budget,
            *seed,
        ),
        Op::Stream {
            model,
            batch,
            delay,
            steps,
            seed,
        } => check_stream(models, *model, *batch, *delay, steps, *seed),
        Op::Cell {
            mode,
            input,
            hx,
            cx,
            seed,
        } => check_cell(models, *mode, input, hx.as_deref(), cx.as_deref(), *seed),
        Op::TimeChunk {
            model,
            seq_len,
            batch,
            budget,
        } => check_time_chunk(models, *model, *seq_len, *batch, *budget),
    }
}

#[test]
fn fuzzed_calls_get_pytorch_shapes_or_typed_errors() {
    let Some(ctx) = testing::gpu("fuzzed_calls_get_pytorch_shapes_or_typed_errors") else {
        return;
    };
    let models = Models::new(&ctx);
    let ops = prop_oneof![
        6 => forward_op(),
        3 => stream_op(),
        2 => cell_op(),
        1 => time_chunk_op(),
    ];
    // Half the old single binary's 30 s: this binary runs alone, its fuzz on a core of its
    // own instead of sharing two with the file and small-buffer runs.
    fuzz("entry points", scaled(15.0), 1_000_000, ops, |op| {
        check_op(&models, op)
    });
}

/// The harness itself: every model and cell of the run answers a valid call, on both paths,
/// with equal results, so a fuzzed call that fails fails for what the fuzzing changed.
#[test]
fn every_fuzzed_model_runs_a_valid_call() {
    let Some(ctx) = testing::gpu("every_fuzzed_model_runs_a_valid_call") else {
        return;
    };
    let models = Models::new(&ctx);
    for (model, config) in models.configs.iter().enumerate() {
        let h0 = state_shape(config, 2).to_vec();
        let c0 = support::cell_state_shape(config, 2).to_vec();
        let op = Op::Forward {
            model,
            input: input_shape(config, 3, 2).to_vec(),
            h0: Some(h0),
            c0: (config.mode == RnnMode::Lstm).then_some(c0),
            lengths: Some(vec![3, 1]),
            budget: None,
            seed: 1,
        };
        let outcome = check_op(&models, &op);
        assert!(outcome.is_ok(), "{config:?}: {outcome:?}");
    }
    for (mode, name) in MODES.iter().enumerate() {
        let state = Some(vec![2, CELL_HIDDEN]);
        let op = Op::Cell {
            mode,
            input: vec![2, CELL_INPUT],
            hx: state.clone(),
            cx: state,
            seed: 1,
        };
        let outcome = check_op(&models, &op);
        assert!(outcome.is_ok(), "{name:?} cell: {outcome:?}");
    }
}
