//! Training: a forward that keeps what the backward needs, backpropagation through time with
//! PyTorch's gradients, and parameter gradients that accumulate as PyTorch's `.grad` does.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::loss::{Loss, Target};
use crate::optim::OptimizerConfig;
use crate::rnn::{Hx, RnnOutput};
use crate::tensor::Tensor;

/// The upstream gradients of a backward pass: d loss / d `output` and, where the loss reads
/// them, d loss / d `h_n` and (LSTM) d loss / d `c_n`. Absent ones are zeros, as autograd
/// treats an output the loss does not use.
#[derive(Clone, Copy, Debug)]
pub struct OutputGrads<'a> {
    /// Shaped as the forward's `output` (the head's output where the model has a head).
    pub d_output: &'a Tensor,
    /// Shaped as `h_n`.
    pub d_h_n: Option<&'a Tensor>,
    /// Shaped as `c_n`; LSTM only.
    pub d_c_n: Option<&'a Tensor>,
}

impl<'a> OutputGrads<'a> {
    /// Only `output` reaches the loss.
    pub fn output(d_output: &'a Tensor) -> Self {
        OutputGrads {
            d_output,
            d_h_n: None,
            d_c_n: None,
        }
    }
}

/// Where a training forward starts from.
#[derive(Clone, Copy, Debug, Default)]
pub enum InitialState<'a> {
    /// Zeros.
    #[default]
    Zeros,
    /// The given h0 (and c0).
    Given(Hx<'a>),
    /// The final state of this model's previous training forward, detached (`h = h.detach()`
    /// between iterations, as truncated BPTT does): the next backward's gradients stop at it.
    /// Zeros before the first forward; the batch size must stay the same.
    Carried,
}

/// One iteration's data for [`Train::train_step`].
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The input, as [`Train::forward_train`] takes it.
    pub input: &'a Tensor,
    /// Per-sequence lengths (`PackedSequence` semantics), or `None` for full length.
    pub lengths: Option<&'a [usize]>,
    /// Where the forward starts from.
    pub state: InitialState<'a>,
    /// What the loss compares the output with.
    pub target: Target<'a>,
}

/// What a backward pass returns: the gradients of the forward's inputs. (The parameters'
/// accumulate in the model; read them with [`Train::gradients`].)
#[derive(Clone, Debug, PartialEq)]
pub struct InputGrads {
    /// d loss / d input, shaped as the input; zero at frames past a sequence's length.
    pub d_input: Tensor,
    /// d loss / d h0, shaped as `h0` (whether h0 was given or zero).
    pub d_h0: Tensor,
    /// An LSTM's d loss / d c0, shaped as `c0`; `None` for the other modes.
    pub d_c0: Option<Tensor>,
}

/// A receipt for one training forward: what [`Train::backward`] needs to find the values that
/// forward saved. Consumed by the backward (a second backward of one forward is a compile
/// error); a tape of another model, or of a forward older than the model's last one, is
/// refused with [`RnnError::Tape`].
#[derive(Debug)]
#[must_use = "a training forward's tape is what its backward takes"]
pub struct Tape {
    pub(crate) model: u64,
    pub(crate) forward: u64,
}

/// Hands out the identities of trainers and of their forwards.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Tape {
    /// `Ok` when this tape is the last training forward of the model `model`.
    pub(crate) fn check(&self, model: u64, last_forward: Option<u64>) -> Result<()> {
        if self.model != model {
            return Err(RnnError::Tape(
                "this tape was made by another model's forward_train".into(),
            ));
        }
        if last_forward != Some(self.forward) {
            return Err(RnnError::Tape(
                "the model ran another forward_train after this tape's (only the last \
                 training forward's values are kept): run the backward before the next forward"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A recurrent model (and its optional Linear head) that trains: PyTorch's module in
/// `train()` mode with `requires_grad` parameters. Implemented by [`CpuTrainer`](crate::CpuTrainer),
/// the plain reference, and [`GpuTrainer`](crate::GpuTrainer).
///
/// ```
/// use wgpu_rnn::{CpuTrainer, OutputGrads, RnnConfig, RnnWeights, Tensor, Train};
///
/// # fn main() -> wgpu_rnn::Result<()> {
/// let config = RnnConfig::lstm(3, 8);
/// let mut model = CpuTrainer::new(config.clone(), &RnnWeights::init(&config, 0)?)?;
/// let input = Tensor::new((0..5 * 2 * 3).map(|i| i as f32 / 30.0).collect(), &[5, 2, 3])?;
/// let (out, tape) = model.forward_train(&input, None, None)?;
/// // loss = out.output.sum(): d loss / d output is all ones.
/// let ones = Tensor::new(vec![1.0; out.output.data().len()], out.output.shape())?;
/// let inputs = model.backward(tape, OutputGrads::output(&ones))?;
/// assert_eq!(inputs.d_input.shape(), input.shape());
/// let grads = model.gradients()?;
/// assert_eq!(grads[0].0, "weight_ih_l0");
/// # Ok(()) }
/// ```
pub trait Train {
    /// The model's configuration.
    fn config(&self) -> &RnnConfig;

    /// The forward pass, as [`Rnn::forward`](crate::Rnn::forward) or, with `lengths`,
    /// [`Rnn::forward_with_lengths`](crate::Rnn::forward_with_lengths), keeping what the
    /// backward needs. Returns the output and the tape the backward takes; a later training
    /// forward replaces what this one kept.
    fn forward_train(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        hx: Option<Hx<'_>>,
    ) -> Result<(RnnOutput, Tape)>;

    /// Backpropagation through time of the forward `tape` recorded, from the upstream
    /// gradients `grads`. Adds every parameter's gradient to what the model holds (`+=`, as
    /// `loss.backward()` does to `.grad`) and returns the inputs' gradients.
    fn backward(&mut self, tape: Tape, grads: OutputGrads<'_>) -> Result<InputGrads>;

    /// [`backward`](Self::backward) for the parameters only, as PyTorch's when neither the
    /// input nor the initial state requires grad: adds every parameter's gradient (`+=`) and
    /// computes no input gradient; a GPU trainer reads nothing back (the next read waits for
    /// it). The same errors as `backward`.
    fn backward_params(&mut self, tape: Tape, grads: OutputGrads<'_>) -> Result<()> {
        self.backward(tape, grads).map(|_| ())
    }

    /// Sets every parameter's gradient to zero (`optimizer.zero_grad(set_to_none=False)`).
    fn zero_grad(&mut self) -> Result<()>;

    /// Every parameter's accumulated gradient, read back: the recurrent layers' under
    /// PyTorch's names (`weight_ih_l0`, …, `weight_hr_l1_reverse`), in `state_dict` order,
    /// then a head's as `head.weight` and `head.bias`.
    fn gradients(&self) -> Result<Vec<(String, Tensor)>>;

    /// Every parameter, read back, named and ordered as [`gradients`](Self::gradients).
    fn parameters(&self) -> Result<Vec<(String, Tensor)>>;

    /// The training forward of [`forward_train`](Self::forward_train), leaving the output and
    /// the final state on the model's device (nothing is read back): the forward of a training
    /// loop whose loss is computed there too ([`backward_loss`](Self::backward_loss)).
    fn forward_on_device(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
    ) -> Result<Tape>;

    /// `loss(output, target).backward()`: computes `loss` on the output of the forward `tape`
    /// recorded, on the model's device, and backpropagates its gradient (only the output
    /// reaches the loss). Adds to the parameters' gradients; nothing is read back
    /// ([`last_loss`](Self::last_loss) reads the loss).
    fn backward_loss(&mut self, tape: Tape, loss: Loss, target: Target<'_>) -> Result<()>;

    /// The value of the last [`backward_loss`](Self::backward_loss)'s loss, read back (a
    /// wait for the device). NaN or infinite where the loss is, as PyTorch's would be: the
    /// gradients and, after a step, the parameters are then not finite either.
    fn last_loss(&self) -> Result<f32>;

    /// One iteration of the usual loop: `zero_grad`, the forward of `batch` from its state,
    /// `loss` against its target and the backward, `clip_grad_norm(max_norm)` where `clip` is
    /// given, and `optimizer`'s step. On a GPU all of it is one submission and nothing is read
    /// back ([`last_loss`](Self::last_loss) and [`last_grad_norm`](Self::last_grad_norm) read
    /// on request).
    fn train_step(
        &mut self,
        batch: Batch<'_>,
        loss: Loss,
        optimizer: &mut Optimizer,
        clip: Option<f32>,
    ) -> Result<()> {
        self.zero_grad()?;
        let tape = self.forward_on_device(batch.input, batch.lengths, batch.state)?;
        self.backward_loss(tape, loss, batch.target)?;
        if let Some(max_norm) = clip {
            self.clip_grad_norm(max_norm)?;
        }
        self.step(optimizer)
    }

    /// [`train_step`](Self::train_step) on each of `batches` in turn, with the same results.
    /// On a GPU all of them are one submission (each iteration's data still uploaded for it
    /// alone), which saves a submission's fixed cost per iteration: ~70 µs on a software
    /// adapter, a fifth of a small model's iteration. Nothing is read back;
    /// [`last_loss`](Self::last_loss) reads the last batch's loss. Where a batch is refused
    /// (a typed error), the batches before it have run.
    fn train_steps(
        &mut self,
        batches: &[Batch<'_>],
        loss: Loss,
        optimizer: &mut Optimizer,
        clip: Option<f32>,
    ) -> Result<()> {
        for &batch in batches {
            self.train_step(batch, loss, optimizer, clip)?;
        }
        Ok(())
    }

    /// Writes the parameters to `path` as safetensors under PyTorch's names, the recurrent
    /// layer's after `rnn_prefix` and a head's after `head_prefix` (`"rnn."`, `"linear."` for a
    /// module with attributes `rnn` and `linear`): `model.load_state_dict(load_file(path))`
    /// takes it in PyTorch, and [`RnnWeights::load`](crate::RnnWeights::load) and
    /// [`Linear::load`](crate::Linear::load) here.
    fn save(
        &self,
        path: impl AsRef<std::path::Path>,
        rnn_prefix: &str,
        head_prefix: &str,
    ) -> Result<()>
    where
        Self: Sized,
    {
        let named: Vec<(String, Tensor)> = self
            .parameters()?
            .into_iter()
            .map(|(name, t)| match name.strip_prefix("head.") {
                Some(rest) => (format!("{head_prefix}{rest}"), t),
                None => (format!("{rnn_prefix}{name}"), t),
            })
            .collect();
        crate::checkpoint::write_f32(path.as_ref(), &named, &[])
    }

    /// Writes `optimizer`'s state to `path` as safetensors (PyTorch's names for it:
    /// `exp_avg.<param>`, `exp_avg_sq.<param>` for Adam, `momentum_buffer.<param>` for SGD, the
    /// step count in the metadata), so that [`load_optimizer`](Self::load_optimizer) resumes
    /// training exactly where it stopped.
    fn save_optimizer(
        &self,
        optimizer: &Optimizer,
        path: impl AsRef<std::path::Path>,
    ) -> Result<()>
    where
        Self: Sized;

    /// An optimizer with `config` and the state [`save_optimizer`](Self::save_optimizer) wrote
    /// to `path` for a model of this configuration (a typed error names what differs).
    fn load_optimizer(
        &self,
        config: OptimizerConfig,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Optimizer>
    where
        Self: Sized;

    /// An optimizer over every parameter of this model (`torch.optim.Adam(model.parameters(),
    /// ...)`), its state zero and on the model's device.
    fn optimizer(&self, config: OptimizerConfig) -> Result<Optimizer>;

    /// One step of `optimizer` from the gradients the model holds (`optimizer.step()`). The
    /// gradients stay: call [`zero_grad`](Self::zero_grad) before the next backward, as in
    /// PyTorch.
    fn step(&mut self, optimizer: &mut Optimizer) -> Result<()>;

    /// `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`: scales every gradient
    /// by `min(max_norm / (total + 1e-6), 1)`, the total the norm of all gradients together.
    /// The total stays on the device: [`last_grad_norm`](Self::last_grad_norm) reads it.
    fn clip_grad_norm(&mut self, max_norm: f32) -> Result<()>;

    /// The total norm the last [`clip_grad_norm`](Self::clip_grad_norm) measured (before
    /// clipping), read back; an error before any clipping.
    fn last_grad_norm(&self) -> Result<f32>;
}

/// The state an optimizer keeps for a model's parameters: its configuration, the step
/// count and (on the host or the GPU) momentum or moments. Made by
/// [`Train::optimizer`] for one model; [`Train::step`] of another model refuses it.
#[derive(Debug)]
pub struct Optimizer {
    pub(crate) config: OptimizerConfig,
    pub(crate) step: u64,
    /// The model it was made for.
    pub(crate) model: u64,
    pub(crate) state: OptimizerState,
}

/// Where an optimizer's state lives.
#[derive(Debug)]
pub(crate) enum OptimizerState {
    Cpu(Vec<f32>),
    Gpu(crate::gpu::optim::GpuOptimizerState),
}

impl Optimizer {
    /// An optimizer for the model `model` with state `state`, its configuration checked.
    pub(crate) fn new(config: OptimizerConfig, model: u64, state: OptimizerState) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer {
            config,
            step: 0,
            model,
            state,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub(crate) fn check_model(&self, model: u64) -> Result<()> {
        if self.model == model {
            Ok(())
        } else {
            Err(RnnError::InvalidConfig(
                "this optimizer was made for another model's parameters".into(),
            ))
        }
    }
}

/// One parameter's place in a trainer's flat parameter (and gradient) vector.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamSlot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where one unit's tensors start in the flat vector (a tensor it lacks: 0), and where the
/// next unit starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UnitSlots {
    pub weight_ih: usize,
    pub weight_hh: usize,
    pub bias_ih: usize,
    pub bias_hh: usize,
    pub weight_hr: usize,
    pub end: usize,
}

/// Where every parameter lies in one flat f32 vector, in `state_dict` order: per layer and
/// direction `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, `weight_hr`; then a head's
/// `weight` and `bias`. Both directions of a layer have the same shapes, so the reverse
/// direction's parameters follow the forward's at a fixed stride. Every tensor starts at a
/// multiple of four elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamLayout {
    pub slots: Vec<ParamSlot>,
    /// Elements of all parameters.
    pub len: usize,
    /// Where each unit's (`layer · D + direction`) tensors start.
    pub units: Vec<UnitSlots>,
    /// Where a head's weight starts, and its bias.
    pub head: Option<(usize, Option<usize>)>,
    /// A cell's parameters: named without the layer suffix (`weight_ih`, not `weight_ih_l0`).
    pub cell: bool,
}

impl ParamLayout {
    /// `head`: the head's (out_features, has bias).
    pub fn new(config: &RnnConfig, head: Option<(usize, bool)>) -> Self {
        let mut slots: Vec<ParamSlot> = Vec::new();
        let mut units = Vec::new();
        // Every tensor starts at a multiple of four elements, so that kernels may read any of
        // them as vec4s; the gaps stay zero (and so do their gradients).
        let end = |slots: &[ParamSlot]| {
            slots
                .last()
                .map_or(0, |s| (s.offset + s.len()).next_multiple_of(4))
        };
        let push = |slots: &mut Vec<ParamSlot>, name: String, shape: Vec<usize>| {
            let offset = end(slots);
            slots.push(ParamSlot {
                name,
                shape,
                offset,
            });
        };
        let (rows, state) = (config.gate_size(), config.state_size());
        for layer in 0..config.num_layers {
            for direction in 0..config.num_directions() {
                let suffix = crate::weights::suffix(layer, direction);
                let inputs = config.layer_input_size(layer);
                let mut unit = UnitSlots {
                    weight_ih: end(&slots),
                    ..UnitSlots::default()
                };
                push(
                    &mut slots,
                    format!("weight_ih_{suffix}"),
                    vec![rows, inputs],
                );
                unit.weight_hh = end(&slots);
                push(&mut slots, format!("weight_hh_{suffix}"), vec![rows, state]);
                if config.bias {
                    unit.bias_ih = end(&slots);
                    push(&mut slots, format!("bias_ih_{suffix}"), vec![rows]);
                    unit.bias_hh = end(&slots);
                    push(&mut slots, format!("bias_hh_{suffix}"), vec![rows]);
                }
                if config.proj_size > 0 {
                    unit.weight_hr = end(&slots);
                    let shape = vec![config.proj_size, config.hidden_size];
                    push(&mut slots, format!("weight_hr_{suffix}"), shape);
                }
                unit.end = end(&slots);
                units.push(unit);
            }
        }
        let head = head.map(|(out, bias)| {
            let at = end(&slots);
            push(
                &mut slots,
                "head.weight".into(),
                vec![out, config.output_size()],
            );
            let bias_at = bias.then(|| end(&slots));
            if bias {
                push(&mut slots, "head.bias".into(), vec![out]);
            }
            (at, bias_at)
        });
        let len = end(&slots);
        ParamLayout {
            slots,
            len,
            units,
            head,
            cell: false,
        }
    }

    /// The layout of a cell (a one-layer model): PyTorch's cell names, without `_l0`.
    pub fn cell(config: &RnnConfig) -> Self {
        Self::new(config, None).with_cell_names()
    }

    /// The layout of the same model with `head` added (a cell's keeping its names).
    pub fn with_head(&self, config: &RnnConfig, head: &crate::head::Linear) -> Self {
        let layout = Self::new(config, Some((head.out_features, head.bias.is_some())));
        match self.cell {
            true => layout.with_cell_names(),
            false => layout,
        }
    }

    /// This layout with a cell's names (the model has one layer and direction).
    pub fn with_cell_names(mut self) -> Self {
        for slot in &mut self.slots {
            slot.name = slot.name.trim_end_matches("_l0").to_string();
        }
        self.cell = true;
        self
    }

    /// The slot named `name`.
    pub fn slot(&self, name: &str) -> Option<&ParamSlot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// `weights` and `head` as one flat vector.
    pub fn flatten(
        &self,
        weights: &crate::weights::RnnWeights,
        head: Option<&crate::head::Linear>,
    ) -> Vec<f32> {
        let mut parts: Vec<&[f32]> = Vec::new();
        for unit in weights.units() {
            parts.extend([&unit.weight_ih, &unit.weight_hh].map(Vec::as_slice));
            parts.extend(
                [&unit.bias_ih, &unit.bias_hh, &unit.weight_hr]
                    .into_iter()
                    .flatten()
                    .map(Vec::as_slice),
            );
        }
        if let Some(head) = head {
            parts.push(&head.weight);
            parts.extend(head.bias.as_deref());
        }
        debug_assert_eq!(parts.len(), self.slots.len());
        let mut flat = vec![0.0; self.len];
        for (slot, part) in self.slots.iter().zip(parts) {
            flat[slot.offset..slot.offset + slot.len()].copy_from_slice(part);
        }
        flat
    }

    /// Every tensor's (offset, length) in the flat vector.
    pub fn ranges(&self) -> Vec<(usize, usize)> {
        self.slots.iter().map(|s| (s.offset, s.len())).collect()
    }

    /// `flat` cut into named tensors.
    pub fn named(&self, flat: &[f32]) -> Result<Vec<(String, Tensor)>> {
        self.slots
            .iter()
            .map(|s| {
                let data = flat[s.offset..s.offset + s.len()].to_vec();
                Ok((s.name.clone(), Tensor::new(data, &s.shape)?))
            })
            .collect()
    }
}

impl ParamLayout {
    /// `flat` back as the model's weights and head.
    pub fn unflatten(
        &self,
        config: &RnnConfig,
        flat: &[f32],
    ) -> Result<(crate::weights::RnnWeights, Option<crate::head::Linear>)> {
        let take = |name: &str| {
            self.slot(name)
                .map(|s| flat[s.offset..s.offset + s.len()].to_vec())
        };
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            for direction in 0..config.num_directions() {
                let suffix = crate::weights::suffix(layer, direction);
                let part = |p: &str| match self.cell {
                    true => take(p),
                    false => take(&format!("{p}_{suffix}")),
                };
                units.push(crate::weights::DirectionWeights {
                    weight_ih: part("weight_ih").unwrap_or_default(),
                    weight_hh: part("weight_hh").unwrap_or_default(),
                    bias_ih: part("bias_ih"),
                    bias_hh: part("bias_hh"),
                    weight_hr: part("weight_hr"),
                });
            }
        }
        let weights = crate::weights::RnnWeights::new(config, units)?;
        let head = self.slot("head.weight").map(|slot| crate::head::Linear {
            in_features: config.output_size(),
            out_features: slot.shape[0],
            weight: take("head.weight").unwrap_or_default(),
            bias: take("head.bias"),
        });
        Ok((weights, head))
    }
}

/// The names an optimizer's state goes under, per element of state (see
/// [`Train::save_optimizer`]).
fn state_names(config: &OptimizerConfig) -> &'static [&'static str] {
    match crate::optim::state_per_element(config) {
        0 => &[],
        1 => &["momentum_buffer"],
        _ => &["exp_avg", "exp_avg_sq"],
    }
}

fn optimizer_kind(config: &OptimizerConfig) -> &'static str {
    match config {
        OptimizerConfig::Sgd(s) if s.momentum != 0.0 => "sgd with momentum",
        OptimizerConfig::Sgd(_) => "sgd",
        OptimizerConfig::Adam(_) => "adam",
    }
}

impl ParamLayout {
    /// Writes an optimizer's `state` (flat, per element of state) and step count to `path`.
    pub(crate) fn save_optimizer(
        &self,
        path: &std::path::Path,
        config: &OptimizerConfig,
        step: u64,
        state: &[f32],
    ) -> Result<()> {
        let mut tensors = Vec::new();
        for (k, part) in state_names(config).iter().enumerate() {
            let flat = &state[k * self.len..(k + 1) * self.len];
            for (name, t) in self.named(flat)? {
                tensors.push((format!("{part}.{name}"), t));
            }
        }
        let metadata = [
            ("optimizer", optimizer_kind(config).to_string()),
            ("step", step.to_string()),
        ];
        crate::checkpoint::write_f32(path, &tensors, &metadata)
    }

    /// Reads what [`save_optimizer`](Self::save_optimizer) wrote: the step count and the flat
    /// state.
    pub(crate) fn load_optimizer(
        &self,
        path: &std::path::Path,
        config: &OptimizerConfig,
    ) -> Result<(u64, Vec<f32>)> {
        let bytes = crate::checkpoint::map_file(path)?;
        let file = crate::checkpoint::parse(&bytes)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| metadata.get(key).cloned().unwrap_or_default();
        let kind = field("optimizer");
        if kind != optimizer_kind(config) {
            return Err(RnnError::InvalidConfig(format!(
                "{} holds the state of {}, not of {}",
                path.display(),
                if kind.is_empty() {
                    "no optimizer"
                } else {
                    &kind
                },
                optimizer_kind(config)
            )));
        }
        let step = field("step").parse::<u64>().map_err(|_| {
            RnnError::InvalidConfig(format!("{} has no step count", path.display()))
        })?;
        let names = state_names(config);
        let mut state = vec![0.0f32; names.len() * self.len];
        for (k, part) in names.iter().enumerate() {
            for slot in &self.slots {
                let values = crate::checkpoint::read_f32(
                    &file,
                    &format!("{part}.{}", slot.name),
                    &slot.shape,
                )?;
                let at = k * self.len + slot.offset;
                state[at..at + values.len()].copy_from_slice(&values);
            }
        }
        Ok((step, state))
    }
}
