//! Helpers shared by the integration tests. Each test binary compiles its own copy and uses
//! only part of it.
//!
//! Every suite runs every mode: write a test body once as `fn body(mode: RnnMode)` and
//! [`for_each_mode!`] makes one `#[test]` per mode of it, named after the mode, so a failure
//! says which cell broke (as candle's `test_device!` does for backends).
#![allow(dead_code)]

use wgpu_rnn::compare::{Comparison, compare};
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{Hx, Nonlinearity, RnnConfig, RnnMode, RnnOutput, Tensor};

/// Every mode: Elman tanh and relu, LSTM, GRU.
pub const MODES: [RnnMode; 4] = [
    RnnMode::Rnn(Nonlinearity::Tanh),
    RnnMode::Rnn(Nonlinearity::Relu),
    RnnMode::Lstm,
    RnnMode::Gru,
];

/// One `#[test]` per mode from a body `fn(RnnMode)`: `for_each_mode!(name, body);` gives
/// `name::rnn_tanh`, `name::rnn_relu`, `name::lstm` and `name::gru`.
#[macro_export]
macro_rules! for_each_mode {
    ($name:ident, $body:path) => {
        mod $name {
            // `super::$body` does not parse when `$body` is a `path` fragment: bring the
            // parent's items in scope and call the path as given.
            #[allow(unused_imports)]
            use super::*;
            use wgpu_rnn::{Nonlinearity, RnnMode};
            #[test]
            fn rnn_tanh() {
                $body(RnnMode::Rnn(Nonlinearity::Tanh));
            }
            #[test]
            fn rnn_relu() {
                $body(RnnMode::Rnn(Nonlinearity::Relu));
            }
            #[test]
            fn lstm() {
                $body(RnnMode::Lstm);
            }
            #[test]
            fn gru() {
                $body(RnnMode::Gru);
            }
        }
    };
}

/// Where `ctx`'s adapter is a CPU one with a fixed subgroup size and subgroup operations
/// (lavapipe), that size and the most lanes one workgroup may have: there the persistent
/// LSTM and GRU kernels split wide states' rows over more lanes (H up to 256 with 256 lanes
/// a workgroup and 8-lane subgroups, 512 with 1024), elsewhere they stop at H = 64 and 84.
pub fn cpu_subgroup_lanes(ctx: &wgpu_rnn::GpuContext) -> Option<(u32, u32)> {
    let device = ctx.device();
    let info = device.adapter_info();
    let limits = ctx.limits();
    (device.features().contains(wgpu::Features::SUBGROUP)
        && info.device_type == wgpu::DeviceType::Cpu
        && info.subgroup_min_size == info.subgroup_max_size
        && info.subgroup_min_size >= 4)
        .then(|| {
            let lanes = limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x);
            (info.subgroup_min_size, lanes)
        })
}

/// A short name for messages: `rnn_tanh`, `rnn_relu`, `lstm`, `gru`.
pub fn mode_name(mode: RnnMode) -> &'static str {
    match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => "rnn_tanh",
        RnnMode::Rnn(Nonlinearity::Relu) => "rnn_relu",
        RnnMode::Lstm => "lstm",
        RnnMode::Gru => "gru",
    }
}

/// An initial state for a forward: h0, and c0 for an LSTM. Lend it as [`Hx`] with `hx()`.
#[derive(Clone, Debug)]
pub struct State {
    pub h0: Tensor,
    pub c0: Option<Tensor>,
}

impl State {
    pub fn hx(&self) -> Hx<'_> {
        Hx {
            h0: &self.h0,
            c0: self.c0.as_ref(),
        }
    }
}

/// GPU results must match the CPU reference to this (max abs up to magnitude 1, relative
/// above: `compare_scaled`).
pub const TOLERANCE: f64 = 1e-4;

/// SplitMix64: small, well mixed and deterministic, so that every failure names a seed that
/// reproduces it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability 1/`one_in`.
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.next_u64() % one_in == 0
    }

    /// Uniform in [-2, 2).
    pub fn value(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    pub fn values(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.value()).collect()
    }

    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        Tensor::new(self.values(shape.iter().product()), shape).unwrap()
    }
}

/// The input shape PyTorch expects for (T, N) under `config`.
pub fn input_shape(config: &RnnConfig, seq_len: usize, batch: usize) -> [usize; 3] {
    if config.batch_first {
        [batch, seq_len, config.input_size]
    } else {
        [seq_len, batch, config.input_size]
    }
}

/// The shape of `h0` / `h_n` for a batch of `batch`: (D·L, N, H_out).
pub fn state_shape(config: &RnnConfig, batch: usize) -> [usize; 3] {
    [config.state_rows(), batch, config.state_size()]
}

/// The shape of an LSTM's `c0` / `c_n` for a batch of `batch`: (D·L, N, H).
pub fn cell_state_shape(config: &RnnConfig, batch: usize) -> [usize; 3] {
    [config.state_rows(), batch, config.hidden_size]
}

/// A random initial state for `config` and `batch` sequences: h0, and c0 for an LSTM.
pub fn random_state(rng: &mut Rng, config: &RnnConfig, batch: usize) -> State {
    State {
        h0: rng.tensor(&state_shape(config, batch)),
        c0: (config.mode == RnnMode::Lstm).then(|| rng.tensor(&cell_state_shape(config, batch))),
    }
}

/// Output, h_n and c_n of `got` against `want`: shapes equal, values within `TOLERANCE` of
/// max(1, |want|) (NaN matching NaN; `compare_scaled`). `Err` says which part differs and how.
pub fn check_output(got: &RnnOutput, want: &RnnOutput) -> Result<(), String> {
    match (&got.c_n, &want.c_n) {
        (Some(g), Some(w)) => {
            check_values("c_n", g, w)?;
        }
        (None, None) => {}
        (g, w) => {
            return Err(format!(
                "c_n is {} but expected {}",
                if g.is_some() { "present" } else { "absent" },
                if w.is_some() { "present" } else { "absent" }
            ));
        }
    }
    for (what, g, w) in [
        ("output", &got.output, &want.output),
        ("h_n", &got.h_n, &want.h_n),
    ] {
        if g.shape() != w.shape() {
            return Err(format!(
                "{what} has shape {:?}, expected {:?}",
                g.shape(),
                w.shape()
            ));
        }
        let c = compare_scaled(g.data(), w.data());
        if !c.passed() {
            return Err(format!("{what}: {c}"));
        }
    }
    Ok(())
}

/// `compare` at `TOLERANCE` of each difference relative to max(1, |want|): an absolute
/// 1e-4 for values up to 1 and a relative one above (f32 sums round in proportion to their
/// size, and an unbounded ReLU stack reaches tens: a random problem with I = 128 and three
/// layers missed an absolute 1e-4 by rounding alone). Infinities and NaNs compare as
/// `compare` compares them.
fn compare_scaled(got: &[f32], want: &[f32]) -> Comparison {
    if got.len() != want.len() {
        return compare(got, want, TOLERANCE);
    }
    let scale = |w: f32| if w.is_finite() { w.abs().max(1.0) } else { 1.0 };
    let got: Vec<f32> = got.iter().zip(want).map(|(&g, &w)| g / scale(w)).collect();
    let want: Vec<f32> = want.iter().map(|&w| w / scale(w)).collect();
    compare(&got, &want, TOLERANCE)
}

/// [`compare_scaled`], as a `Result` naming `what`.
pub fn check_values(what: &str, got: &Tensor, want: &Tensor) -> Result<Comparison, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what} has shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let c = compare_scaled(got.data(), want.data());
    if c.passed() {
        Ok(c)
    } else {
        Err(format!("{what}: {c}"))
    }
}

thread_local! {
    /// Set while `no_panic` runs on this thread: its panics are reported, not printed.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last panic caught by `no_panic` on this thread happened.
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Chains a panic hook that records where a panic happened (the payload does not say) and
/// keeps panics caught by `no_panic` out of the output: a fuzz run may catch hundreds.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(|c| c.get()) {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err("<message> at <file:line>")`, so that a fuzz case can
/// report the input that made the library panic instead of ending the whole test.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    let was = CATCHING.with(|c| c.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic with a non-string payload".into());
        let at = PANIC_AT.with(|p| std::mem::take(&mut *p.borrow_mut()));
        format!("panicked: {} at {at}", message.trim_end())
    })
}

/// Every LSTM/GRU fixture in tests/fixtures/torch_gated, by file name, sorted.
pub fn gated_cases() -> Vec<(String, ReferenceCase)> {
    cases_in("tests/fixtures/torch_gated")
}

/// Every fixture in `dir` (relative to the crate), by file name, sorted.
pub fn cases_in(dir: &str) -> Vec<(String, ReferenceCase)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, ReferenceCase::load(&path).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// One forward run on the CPU reference and on a GPU: a configuration, the recurrent kernel
/// the GPU model is asked for, the input's shape, and whether it starts from a random state
/// (h0, and c0 for an LSTM) and has per-sequence lengths. Inputs, states and weights all
/// derive from `seed`, so a failing case's `Debug` reproduces it.
#[derive(Clone, Debug)]
pub struct Problem {
    pub config: RnnConfig,
    pub recurrence: wgpu_rnn::Recurrence,
    pub seq_len: usize,
    pub batch: usize,
    /// Input (T, I) and states (D·L, ·) without the batch dimension (`batch` must be 1).
    pub unbatched: bool,
    pub with_state: bool,
    pub lengths: Option<Vec<usize>>,
    pub seed: u64,
}

impl Problem {
    /// `config` over (T, N) with `Recurrence::Auto`, batched, from zeros, full length.
    pub fn new(config: RnnConfig, seq_len: usize, batch: usize, seed: u64) -> Self {
        Problem {
            config,
            recurrence: wgpu_rnn::Recurrence::Auto,
            seq_len,
            batch,
            unbatched: false,
            with_state: false,
            lengths: None,
            seed,
        }
    }

    /// The input, in the configuration's layout (or unbatched).
    pub fn input(&self) -> Tensor {
        let (t, n, i) = (self.seq_len, self.batch, self.config.input_size);
        let shape = if self.unbatched {
            vec![t, i]
        } else {
            input_shape(&self.config, t, n).to_vec()
        };
        Tensor::new(Rng(self.seed).values(t * n * i), &shape).unwrap()
    }

    /// The initial state, when the problem has one: h0 and, for an LSTM, c0.
    pub fn state(&self) -> Option<State> {
        if !self.with_state {
            return None;
        }
        let mut rng = Rng(self.seed ^ 0x5EED);
        let rows = self.config.state_rows();
        let mut block = |features: usize| {
            let values = rng.values(rows * self.batch * features);
            if self.unbatched {
                Tensor::new(values, &[rows, features]).unwrap()
            } else {
                Tensor::new(values, &[rows, self.batch, features]).unwrap()
            }
        };
        let h0 = block(self.config.state_size());
        let c0 = self
            .config
            .mode
            .has_cell_state()
            .then(|| block(self.config.hidden_size));
        Some(State { h0, c0 })
    }

    /// The problem's forward through `model` (with its lengths, when it has them).
    pub fn run(&self, model: &impl wgpu_rnn::Rnn) -> wgpu_rnn::Result<RnnOutput> {
        let (input, state) = (self.input(), self.state());
        let hx = state.as_ref().map(State::hx);
        match &self.lengths {
            Some(lengths) => model.forward_with_lengths(&input, lengths, hx),
            None => model.forward(&input, hx),
        }
    }

    /// Random weights for the configuration, from the seed.
    pub fn weights(&self) -> wgpu_rnn::RnnWeights {
        wgpu_rnn::RnnWeights::init(&self.config, self.seed).unwrap()
    }

    /// The GPU model of the problem's recurrence, with `weights`.
    pub fn gpu(
        &self,
        ctx: &wgpu_rnn::GpuContext,
        weights: &wgpu_rnn::RnnWeights,
    ) -> wgpu_rnn::GpuRnn {
        let options = wgpu_rnn::GpuOptions::recurrence(self.recurrence);
        wgpu_rnn::GpuRnn::with_options(ctx, self.config.clone(), weights, options)
            .unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    /// `gpu`'s forward against the CPU reference's with the same weights: `Err` names the
    /// problem and what differs.
    pub fn check_model(
        &self,
        gpu: &wgpu_rnn::GpuRnn,
        weights: &wgpu_rnn::RnnWeights,
    ) -> Result<(), String> {
        let cpu = wgpu_rnn::CpuRnn::new(self.config.clone(), weights).unwrap();
        let want = self.run(&cpu).map_err(|e| format!("{self:?}: CPU: {e}"))?;
        let got = self.run(gpu).map_err(|e| format!("{self:?}: GPU: {e}"))?;
        check_output(&got, &want).map_err(|e| format!("{self:?}: {e}"))
    }

    /// The GPU path against the CPU reference on random weights from the seed.
    pub fn check(&self, ctx: &wgpu_rnn::GpuContext) -> Result<(), String> {
        let weights = self.weights();
        self.check_model(&self.gpu(ctx, &weights), &weights)
    }
}

/// `batch` lengths in 1..=`seq_len`, drawn from `rng`.
pub fn random_lengths(rng: &mut Rng, batch: usize, seq_len: usize) -> Vec<usize> {
    (0..batch).map(|_| rng.range(1, seq_len)).collect()
}

/// One tensor of a `state_dict`: its name, shape and values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The parameter tensors of one (layer, direction) under PyTorch's names: `name("weight_ih")`
/// and so on, shapes (G·H, I_k), (G·H, H_out), (G·H), (G·H) and, when it projects, (P, H).
fn named_unit_tensors(
    unit: &wgpu_rnn::DirectionWeights,
    (rows, input, recurrent, hidden): (usize, usize, usize, usize),
    name: impl Fn(&str) -> String,
) -> Vec<NamedTensor> {
    let mut tensors = vec![
        (name("weight_ih"), vec![rows, input], unit.weight_ih.clone()),
        (
            name("weight_hh"),
            vec![rows, recurrent],
            unit.weight_hh.clone(),
        ),
    ];
    for (part, bias) in [("bias_ih", &unit.bias_ih), ("bias_hh", &unit.bias_hh)] {
        if let Some(bias) = bias {
            tensors.push((name(part), vec![rows], bias.clone()));
        }
    }
    if let Some(w) = &unit.weight_hr {
        tensors.push((name("weight_hr"), vec![w.len() / hidden, hidden], w.clone()));
    }
    tensors
}

/// `model.state_dict()` of a model with `config` and `weights`, every name after `prefix`:
/// what `safetensors.torch.save_file(model.state_dict(), path)` writes.
pub fn named_state_dict(
    config: &RnnConfig,
    weights: &wgpu_rnn::RnnWeights,
    prefix: &str,
) -> Vec<NamedTensor> {
    let mut tensors = Vec::new();
    for layer in 0..config.num_layers {
        for direction in 0..config.num_directions() {
            let unit = weights
                .get(layer, direction, config)
                .expect("unit in range");
            let suffix = if direction == 0 {
                format!("l{layer}")
            } else {
                format!("l{layer}_reverse")
            };
            let dims = (
                config.gate_size(),
                config.layer_input_size(layer),
                config.state_size(),
                config.hidden_size,
            );
            tensors.extend(named_unit_tensors(unit, dims, |part| {
                format!("{prefix}{part}_{suffix}")
            }));
        }
    }
    tensors
}

/// A cell's `state_dict` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`) under `prefix`.
pub fn cell_state_dict(
    config: &wgpu_rnn::CellConfig,
    weights: &wgpu_rnn::DirectionWeights,
    prefix: &str,
) -> Vec<NamedTensor> {
    let rows = config.mode.gates() * config.hidden_size;
    let dims = (
        rows,
        config.input_size,
        config.hidden_size,
        config.hidden_size,
    );
    named_unit_tensors(weights, dims, |part| format!("{prefix}{part}"))
}

/// The one-layer, one-direction weights of a cell of `config`, drawn from `seed`.
pub fn cell_weights(config: &wgpu_rnn::CellConfig, seed: u64) -> wgpu_rnn::DirectionWeights {
    let model = RnnConfig {
        bias: config.bias,
        ..RnnConfig::new(config.mode, config.input_size, config.hidden_size)
    };
    wgpu_rnn::RnnWeights::init(&model, seed).unwrap().units()[0].clone()
}

/// A safetensors file of float32 `tensors` with string `metadata`.
pub fn safetensors_f32(tensors: &[NamedTensor], metadata: &[(&str, String)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|((name, shape, _), data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
        (name.clone(), view.unwrap())
    });
    let metadata: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize(views, (!metadata.is_empty()).then_some(metadata)).unwrap()
}

/// A context whose device allows buffers of at most `bytes` (as a renderer's device, or a
/// small GPU, might have): forwards must then run in time chunks or say they cannot.
pub fn small_buffer_context(bytes: u64) -> Option<wgpu_rnn::GpuContext> {
    context_with(|limits| wgpu::Limits {
        max_buffer_size: bytes,
        max_storage_buffer_binding_size: bytes.min(u64::from(u32::MAX)) as _,
        ..limits
    })
}

/// A context on the default adapter with the limits `limits` makes of the adapter's, and no
/// optional features (no SUBGROUP, for one): what a caller's own device might be.
pub fn context_with(
    limits: impl FnOnce(wgpu::Limits) -> wgpu::Limits,
) -> Option<wgpu_rnn::GpuContext> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .ok()?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits(adapter.limits()),
        ..Default::default()
    }))
    .ok()?;
    wgpu_rnn::GpuContext::from_device(device, queue).ok()
}
