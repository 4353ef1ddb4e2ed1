//! Every case made by PyTorch must match, for every mode: the `nn.RNN` cases of tests/fixtures
//! (README.torch_rnn.md) and the `nn.LSTM` / `nn.GRU` cases of tests/fixtures/torch_gated
//! (its README.md), packed ones included. Output, h_n and (LSTM) c_n within 1e-5 max abs error
//! on the CPU path and 1e-4 on the GPU, whole, in forced time chunks, and streamed; cells of
//! every kind stepped through PyTorch's sequences (h after every step, the final c).
//! PyTorch's rules for configurations, weight files and forward arguments are in
//! torch_rules.rs.

mod support;

use support::{cases_in, gated_cases, mode_name};
use wgpu_rnn::compare::compare;
use wgpu_rnn::reference_case::{CaseCheck, ReferenceCase};
use wgpu_rnn::{
    CellConfig, CpuRnn, DirectionWeights, GpuContext, GpuRnn, GruCell, LstmCell, Nonlinearity, Rnn,
    RnnCell, RnnConfig, RnnError, RnnMode, RnnWeights, Tensor, testing,
};

const CPU_TOLERANCE: f64 = 1e-5;
const GPU_TOLERANCE: f64 = 1e-4;

/// Every forward fixture of `mode`, by file name. The READMEs list 15 tanh and 2 relu
/// `nn.RNN` cases (3 packed, 1 unbatched), 6 LSTM cases (one packed, one projected) and 5 GRU
/// cases (one packed): a missing file must fail, not shrink the test.
fn forward_cases(mode: RnnMode) -> Vec<(String, ReferenceCase)> {
    let found: Vec<_> = cases_in("tests/fixtures")
        .into_iter()
        .chain(gated_cases())
        .filter(|(_, case)| case.config().is_ok_and(|config| config.mode == mode))
        .collect();
    let expected = match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => 15,
        RnnMode::Rnn(Nonlinearity::Relu) => 2,
        RnnMode::Lstm => 6,
        RnnMode::Gru => 5,
    };
    assert_eq!(
        found.len(),
        expected,
        "{} fixtures went missing",
        mode_name(mode)
    );
    found
}

/// The worst error of each compared tensor over many checks, and every check off tolerance.
#[derive(Default)]
struct Tally {
    worst: [f64; 3],
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, what: &str, check: &CaseCheck) {
        let c_n = check
            .c_n
            .map_or("-".to_string(), |c| format!("{:.2e}", c.max_abs));
        println!(
            "{what:<40} output {:.2e}  h_n {:.2e}  c_n {c_n}",
            check.output.max_abs, check.h_n.max_abs
        );
        let c_n = check.c_n.map_or(0.0, |c| c.max_abs);
        for (worst, value) in
            self.worst
                .iter_mut()
                .zip([check.output.max_abs, check.h_n.max_abs, c_n])
        {
            *worst = worst.max(value);
        }
        if !check.passed() {
            self.failures.push(format!(
                "{what}: output {}; h_n {}; c_n {:?}",
                check.output, check.h_n, check.c_n
            ));
        }
    }

    fn assert_passed(&self, path: &str, tolerance: f64) {
        let [output, h_n, c_n] = self.worst;
        println!(
            "{path} worst: output {output:.2e}, h_n {h_n:.2e}, c_n {c_n:.2e} \
             (tolerance {tolerance:e})"
        );
        assert!(
            self.failures.is_empty(),
            "{path} cases off tolerance:\n{}",
            self.failures.join("\n")
        );
    }
}

fn cpu_matches_pytorch(mode: RnnMode) {
    let mut tally = Tally::default();
    for (name, case) in forward_cases(mode) {
        let config = case.config().unwrap();
        let weights = case.weights(&config).unwrap();
        let model = CpuRnn::new(config, &weights).unwrap();
        let check = case.check(&model, CPU_TOLERANCE).unwrap();
        tally.add(&format!("cpu {name}"), &check);
    }
    tally.assert_passed("cpu", CPU_TOLERANCE);
}
for_each_mode!(cpu_path_matches_pytorch, cpu_matches_pytorch);

/// A workspace budget under which `case` runs in chunks of about two timesteps.
fn chunk_budget(model: &GpuRnn, case: &ReferenceCase) -> u64 {
    let input = case.tensor("input").unwrap();
    let (t, n) = match (input.shape(), model.config().batch_first) {
        (&[t, _], _) => (t, 1),
        (&[n, t, _], true) => (t, n),
        (&[t, n, _], false) => (t, n),
        (shape, _) => panic!("input of shape {shape:?}"),
    };
    // Grow the budget until a chunk holds two steps (or the whole sequence).
    let mut budget = 1024u64;
    loop {
        model.set_workspace_budget(Some(budget));
        if let Ok(chunk) = model.time_chunk(t, n) {
            if chunk >= 2.min(t) {
                assert!(t < 3 || chunk < t, "the budget must force chunks");
                return budget;
            }
        }
        budget += 256;
    }
}

/// Every fixture on the GPU, whole and (with a budget that forces chunks of a few steps) in
/// time chunks, which bidirectional cases run layer by layer.
fn gpu_matches_pytorch(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("gpu_path_matches_pytorch::{}", mode_name(mode))) else {
        return;
    };
    let mut tally = Tally::default();
    for (name, case) in forward_cases(mode) {
        let config = case.config().unwrap();
        let weights = case.weights(&config).unwrap();
        let model = GpuRnn::new(&ctx, config, &weights).unwrap();
        for chunked in [false, true] {
            let budget = chunked.then(|| chunk_budget(&model, &case));
            model.set_workspace_budget(budget);
            let check = case
                .check(&model, GPU_TOLERANCE)
                .unwrap_or_else(|e| panic!("{name} (chunked: {chunked}): {e}"));
            tally.add(&format!("gpu {name} chunked={chunked}"), &check);
        }
    }
    tally.assert_passed("gpu", GPU_TOLERANCE);
}
for_each_mode!(gpu_path_matches_pytorch, gpu_matches_pytorch);

/// Every unidirectional full-length fixture pushed through a GPU stream in chunks of 1, 2
/// and 7 frames: the same outputs and final state (h, and c for an LSTM).
fn gpu_streams_match(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("gpu_streams_match_pytorch::{}", mode_name(mode))) else {
        return;
    };
    let mut tally = Tally::default();
    let mut streamed = 0;
    for (name, case) in forward_cases(mode) {
        let config = case.config().unwrap();
        if config.bidirectional || case.lengths().unwrap().is_some() {
            continue;
        }
        let weights = case.weights(&config).unwrap();
        let model = GpuRnn::new(&ctx, config, &weights).unwrap();
        for chunk in [1, 2, 7] {
            let check = case
                .check_streamed(&model, chunk, GPU_TOLERANCE)
                .unwrap_or_else(|e| panic!("{name}, chunks of {chunk}: {e}"));
            tally.add(&format!("stream {name} chunk {chunk}"), &check);
        }
        streamed += 1;
    }
    tally.assert_passed("stream", GPU_TOLERANCE);
    // The unidirectional, unpacked fixtures the READMEs list.
    let expected = match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => 10,
        RnnMode::Rnn(Nonlinearity::Relu) => 1,
        RnnMode::Lstm => 4,
        RnnMode::Gru => 3,
    };
    assert_eq!(streamed, expected, "unidirectional cases streamed");
}
for_each_mode!(gpu_streams_match_pytorch, gpu_streams_match);

// ---------------------------------------------------------------------------------------------
// Cells: nn.RNNCell, nn.LSTMCell and nn.GRUCell.

/// A cell's state: h, and c for an LSTMCell.
type CellState = (Tensor, Option<Tensor>);

/// The cell type of a mode, so that one body steps any of them.
enum AnyCell<M> {
    Rnn(RnnCell<M>),
    Lstm(LstmCell<M>),
    Gru(GruCell<M>),
}

impl AnyCell<CpuRnn> {
    fn cpu(config: CellConfig, weights: &DirectionWeights) -> wgpu_rnn::Result<Self> {
        Ok(match config.mode {
            RnnMode::Rnn(_) => AnyCell::Rnn(RnnCell::cpu(config, weights)?),
            RnnMode::Lstm => AnyCell::Lstm(LstmCell::cpu(config, weights)?),
            RnnMode::Gru => AnyCell::Gru(GruCell::cpu(config, weights)?),
        })
    }
}

impl AnyCell<GpuRnn> {
    fn gpu(
        ctx: &GpuContext,
        config: CellConfig,
        weights: &DirectionWeights,
    ) -> wgpu_rnn::Result<Self> {
        Ok(match config.mode {
            RnnMode::Rnn(_) => AnyCell::Rnn(RnnCell::gpu(ctx, config, weights)?),
            RnnMode::Lstm => AnyCell::Lstm(LstmCell::gpu(ctx, config, weights)?),
            RnnMode::Gru => AnyCell::Gru(GruCell::gpu(ctx, config, weights)?),
        })
    }
}

impl<M: Rnn> AnyCell<M> {
    fn step(&self, input: &Tensor, state: Option<&CellState>) -> wgpu_rnn::Result<CellState> {
        let h = state.map(|(h, _)| h);
        Ok(match self {
            AnyCell::Rnn(cell) => (cell.step(input, h)?, None),
            AnyCell::Gru(cell) => (cell.step(input, h)?, None),
            AnyCell::Lstm(cell) => {
                let hx = state.map(|(h, c)| (h, c.as_ref().expect("an LSTMCell state has c")));
                let (h, c) = cell.step(input, hx)?;
                (h, Some(c))
            }
        })
    }
}

/// Frame t of a (T, N, F) tensor as an (N, F) tensor.
fn frame(tensor: &Tensor, t: usize) -> Tensor {
    let (n, f) = (tensor.shape()[1], tensor.shape()[2]);
    Tensor::new(tensor.data()[t * n * f..(t + 1) * n * f].to_vec(), &[n, f]).unwrap()
}

/// A stored (1, N, F) state as the cell's (N, F).
fn one_layer(case: &ReferenceCase, name: &str) -> Option<Tensor> {
    case.has(name).then(|| {
        let t = case.tensor(name).unwrap();
        Tensor::new(t.data().to_vec(), &t.shape()[1..]).unwrap()
    })
}

/// The `rnn_cell` fixtures of `mode`'s nonlinearity (tests/fixtures has one, tanh): the cell
/// stepped through `inputs`, every step's h against PyTorch's.
fn check_rnn_cell_fixtures<M: Rnn>(
    mode: RnnMode,
    path: &str,
    tolerance: f64,
    build: impl Fn(CellConfig, &DirectionWeights) -> AnyCell<M>,
) -> usize {
    let mut checked = 0;
    for (name, case) in cases_in("tests/fixtures") {
        if case.kind() != "rnn_cell" || case.cell_config().unwrap().mode != mode {
            continue;
        }
        let config = case.cell_config().unwrap();
        let weights = case.cell_weights(&config).unwrap();
        let AnyCell::Rnn(cell) = build(config, &weights) else {
            panic!("{name}: an rnn_cell case makes an RnnCell");
        };
        let check = case.check_cell(&cell, tolerance).unwrap();
        println!("{path} {name}: h_steps {check}");
        assert!(check.passed(), "{path} {name}: {check}");
        checked += 1;
    }
    checked
}

/// The cell of every one-layer, unidirectional, sequence-first, unpacked forward fixture of
/// `mode`, its weights saved as a cell `state_dict` and loaded through the cell's loader (its
/// names have no layer suffix), stepped through the input from the stored h0 (and c0): every
/// step's h equals PyTorch's output frame, the last c its c_n.
fn check_cells_through_forward_fixtures<M: Rnn>(
    mode: RnnMode,
    path: &str,
    tolerance: f64,
    build: impl Fn(CellConfig, &DirectionWeights) -> AnyCell<M>,
) -> usize {
    let mut checked = 0;
    for (name, case) in forward_cases(mode) {
        let config = case.config().unwrap();
        let input = case.tensor("input").unwrap();
        if config.num_layers != 1
            || config.bidirectional
            || config.batch_first
            || input.shape().len() != 3
            || case.lengths().unwrap().is_some()
        {
            continue;
        }
        let weights = case.weights(&config).unwrap();
        let tensors: Vec<_> = support::named_state_dict(&config, &weights, "cell.")
            .into_iter()
            .map(|(name, shape, data)| (name.replace("_l0", ""), shape, data))
            .collect();
        let cell_config = CellConfig {
            mode,
            input_size: config.input_size,
            hidden_size: config.hidden_size,
            bias: config.bias,
        };
        let cell_weights = cell_config
            .weights_from_safetensors(&support::safetensors_f32(&tensors, &[]), "cell.")
            .unwrap();
        assert_eq!(&cell_weights, &weights.units()[0], "{name}");
        let cell = build(cell_config, &cell_weights);

        let output = case.tensor("output").unwrap();
        let mut state: Option<CellState> =
            one_layer(&case, "h0").map(|h0| (h0, one_layer(&case, "c0")));
        for t in 0..input.shape()[0] {
            let next = cell.step(&frame(&input, t), state.as_ref()).unwrap();
            let c = compare(next.0.data(), frame(&output, t).data(), tolerance);
            assert!(c.passed(), "{path} {name}: cell step {t}: {c}");
            state = Some(next);
        }
        if let Some(c) = state.and_then(|(_, c)| c) {
            let want = case.tensor("c_n").unwrap();
            let check = compare(c.data(), want.data(), tolerance);
            assert!(check.passed(), "{path} {name}: the cell's last c: {check}");
        }
        println!("{path} {name}: stepped as a cell");
        checked += 1;
    }
    checked
}

/// The cells each mode's fixtures check (the `rnn_cell` fixtures, then the forward ones): at
/// least one of each kind, so that no mode goes unchecked.
fn cell_fixtures_checked(mode: RnnMode, checked: usize) {
    println!("{}: {checked} cell fixtures", mode_name(mode));
    assert!(checked >= 1, "no cell fixture of {}", mode_name(mode));
}

/// What a cell of `mode` does with bad arguments, and the unbatched form: an unbatched input
/// gives an unbatched state; a batched state for it, an input of the wrong width, and
/// another cell type made from this configuration are typed errors.
fn check_cell_arguments(config: CellConfig, cell: &AnyCell<impl Rnn>, weights: &DirectionWeights) {
    let (i, h) = (config.input_size, config.hidden_size);
    let x = Tensor::zeros(&[i]).unwrap();
    let (h1, c1) = cell.step(&x, None).unwrap();
    assert_eq!(h1.shape(), &[h]);
    assert_eq!(
        c1.as_ref().map(|c| c.shape().to_vec()),
        config.mode.has_cell_state().then(|| vec![h])
    );
    let batched: CellState = (
        Tensor::zeros(&[1, h]).unwrap(),
        c1.map(|_| Tensor::zeros(&[h]).unwrap()),
    );
    let shape_of = |what: &str, result: wgpu_rnn::Result<CellState>| match result {
        Err(RnnError::ShapeMismatch { what: w, .. }) if w == what => {}
        other => panic!(
            "{:?}: expected a shape error naming {what}, got {other:?}",
            config.mode
        ),
    };
    shape_of("hx", cell.step(&x, Some(&batched)));
    shape_of(
        "input",
        cell.step(&Tensor::zeros(&[2, i + 1]).unwrap(), None),
    );
    let other_types = [
        ("RnnCell", RnnCell::cpu(config.clone(), weights).err()),
        ("LstmCell", LstmCell::cpu(config.clone(), weights).err()),
        ("GruCell", GruCell::cpu(config.clone(), weights).err()),
    ];
    let refused = other_types
        .iter()
        .filter(|(_, e)| matches!(e, Some(RnnError::InvalidConfig(_))))
        .count();
    assert_eq!(
        refused, 2,
        "{:?}: the other two cell types refuse it: {other_types:?}",
        config.mode
    );
}

fn cpu_cells_match(mode: RnnMode) {
    let build = |config, weights: &DirectionWeights| AnyCell::cpu(config, weights).unwrap();
    let checked = check_rnn_cell_fixtures(mode, "cpu", CPU_TOLERANCE, build)
        + check_cells_through_forward_fixtures(mode, "cpu", CPU_TOLERANCE, build);
    cell_fixtures_checked(mode, checked);
    let config = CellConfig {
        mode,
        ..CellConfig::rnn(3, 5)
    };
    // Any weights do for the argument checks: those of a one-layer model of the mode.
    let model = RnnWeights::init(&RnnConfig::new(mode, 3, 5), 2).unwrap();
    let weights = model.units()[0].clone();
    let cell = AnyCell::cpu(config.clone(), &weights).unwrap();
    check_cell_arguments(config, &cell, &weights);
}
for_each_mode!(cpu_cells_match_pytorch, cpu_cells_match);

fn gpu_cells_match(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("gpu_cells_match_pytorch::{}", mode_name(mode))) else {
        return;
    };
    let build = |config, weights: &DirectionWeights| AnyCell::gpu(&ctx, config, weights).unwrap();
    let checked = check_rnn_cell_fixtures(mode, "gpu", GPU_TOLERANCE, build)
        + check_cells_through_forward_fixtures(mode, "gpu", GPU_TOLERANCE, build);
    cell_fixtures_checked(mode, checked);
}
for_each_mode!(gpu_cells_match_pytorch, gpu_cells_match);
