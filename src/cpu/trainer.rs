//! `CpuTrainer`: the training API on the CPU reference path: the forward of [`CpuRnn`], the
//! reference backpropagation through time (`backward.rs`), and a head's gradients, plain loops.

use super::CpuRnn;
use super::backward::{self, Upstream};
use crate::cell::CellConfig;
use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::training::check_output_grads;
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::loss::{Loss, Target, check_target, cpu_loss};
use crate::optim::{OptimizerConfig, cpu_clip, cpu_step, state_per_element};
use crate::rnn::{Hx, Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::train::{
    InitialState, InputGrads, Optimizer, OptimizerState, OutputGrads, ParamLayout, Tape, Train,
    next_id,
};
use crate::weights::{DirectionWeights, RnnWeights};

/// The training API on the CPU: the plain, obviously correct reference every GPU gradient is
/// checked against. Parameters and gradients are host vectors.
#[derive(Debug)]
pub struct CpuTrainer {
    config: RnnConfig,
    layout: ParamLayout,
    params: Vec<f32>,
    grads: Vec<f32>,
    id: u64,
    last: Option<Saved>,
    /// The total norm the last clipping measured.
    last_norm: Option<f32>,
    /// The last forward's output and final state (for `InitialState::Carried`).
    last_output: Option<RnnOutput>,
    last_loss: Option<f32>,
    /// The head reads the last layer's final state, not every frame.
    state_head: bool,
}

/// What the last training forward keeps: its arguments (the reference backward runs the
/// forward again) and the recurrent layers' output, which a head's gradient reads.
#[derive(Debug)]
struct Saved {
    id: u64,
    input: Tensor,
    lengths: Option<Vec<usize>>,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    rnn_output: Tensor,
}

impl CpuTrainer {
    /// A trainer starting from `weights`; gradients start at zero.
    pub fn new(config: RnnConfig, weights: &RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        let layout = ParamLayout::new(&config, None);
        let params = layout.flatten(weights, None);
        Ok(CpuTrainer {
            config,
            grads: vec![0.0; params.len()],
            params,
            layout,
            id: next_id(),
            last: None,
            last_norm: None,
            last_output: None,
            last_loss: None,
            state_head: false,
        })
    }

    /// A cell (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`) trained unrolled over a sequence:
    /// `forward_train` takes every frame at once, (T, N, I), and computes what the Python loop
    /// `for x_t in xs: h = cell(x_t, h)` does, its output the h of every step; h0 (and c0) are
    /// (1, N, H). Parameters and gradients carry the cell's names (`weight_ih`, `bias_hh`).
    pub fn cell(config: CellConfig, weights: &DirectionWeights) -> Result<Self> {
        let (config, weights) = config.unrolled(weights)?;
        let layout = ParamLayout::cell(&config);
        let params = layout.flatten(&weights, None);
        Ok(CpuTrainer {
            config,
            grads: vec![0.0; params.len()],
            params,
            layout,
            id: next_id(),
            last: None,
            last_norm: None,
            last_output: None,
            last_loss: None,
            state_head: false,
        })
    }

    /// Adds a Linear head that trains with the model. Gradients start again from zero.
    pub fn with_head(self, head: &Linear) -> Result<Self> {
        self.add_head(head, false)
    }

    /// Adds a Linear head on the last layer's final state, as
    /// [`GpuTrainer::with_state_head`](crate::GpuTrainer::with_state_head) describes.
    pub fn with_state_head(self, head: &Linear) -> Result<Self> {
        self.add_head(head, true)
    }

    fn add_head(self, head: &Linear, state_head: bool) -> Result<Self> {
        head.check(self.config.output_size())?;
        let (weights, _) = self.layout.unflatten(&self.config, &self.params)?;
        let layout = self.layout.with_head(&self.config, head);
        let params = layout.flatten(&weights, Some(head));
        Ok(CpuTrainer {
            grads: vec![0.0; params.len()],
            params,
            layout,
            state_head,
            ..self
        })
    }

    fn model(&self) -> Result<(RnnWeights, Option<Linear>)> {
        self.layout.unflatten(&self.config, &self.params)
    }
}

/// The last layer's final state, directions side by side: (N, D·H_out), or (D·H_out)
/// unbatched.
fn last_state(config: &RnnConfig, h_n: &Tensor) -> Result<Tensor> {
    let (s, d) = (config.state_size(), config.num_directions());
    let batch = h_n.data().len() / (config.state_rows() * s);
    let rows = (config.num_layers - 1) * d;
    let mut last = Vec::with_capacity(batch * d * s);
    for n in 0..batch {
        for dir in 0..d {
            let at = ((rows + dir) * batch + n) * s;
            last.extend_from_slice(&h_n.data()[at..at + s]);
        }
    }
    match h_n.shape().len() {
        2 => Tensor::new(last, &[d * s]),
        _ => Tensor::new(last, &[batch, d * s]),
    }
}

/// `frames · Wᵀ + b` for every frame of `y` (features last).
fn apply_head(head: &Linear, y: &Tensor) -> Result<Tensor> {
    let (fin, fout) = (head.in_features, head.out_features);
    let bias = head.bias_or_zeros();
    let out: Vec<f32> = y
        .data()
        .chunks(fin)
        .flat_map(|frame| {
            (0..fout).map(|o| {
                let w = &head.weight[o * fin..(o + 1) * fin];
                let dot: f64 = frame
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                (dot + f64::from(bias[o])) as f32
            })
        })
        .collect();
    let mut shape = y.shape().to_vec();
    *shape.last_mut().expect("outputs have a feature dimension") = fout;
    Tensor::new(out, &shape)
}

impl Train for CpuTrainer {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward_train(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        hx: Option<Hx<'_>>,
    ) -> Result<(RnnOutput, Tape)> {
        let (weights, head) = self.model()?;
        let rnn = CpuRnn::new(self.config.clone(), &weights)?;
        let out = match lengths {
            Some(l) => rnn.forward_with_lengths(input, l, hx)?,
            None => rnn.forward(input, hx)?,
        };
        // What the head reads: every frame, or the last layer's final state.
        let head_input = match self.state_head {
            true => last_state(&self.config, &out.h_n)?,
            false => out.output.clone(),
        };
        let output = match &head {
            Some(head) => apply_head(head, &head_input)?,
            None => out.output.clone(),
        };
        self.last_output = Some(RnnOutput {
            output: output.clone(),
            h_n: out.h_n.clone(),
            c_n: out.c_n.clone(),
        });
        let id = next_id();
        self.last = Some(Saved {
            id,
            input: input.clone(),
            lengths: lengths.map(<[usize]>::to_vec),
            h0: hx.map(|hx| hx.h0.clone()),
            c0: hx.and_then(|hx| hx.c0.cloned()),
            rnn_output: head_input,
        });
        Ok((
            RnnOutput {
                output,
                h_n: out.h_n,
                c_n: out.c_n,
            },
            Tape {
                model: self.id,
                forward: id,
            },
        ))
    }

    fn backward(&mut self, tape: Tape, grads: OutputGrads<'_>) -> Result<InputGrads> {
        tape.check(self.id, self.last.as_ref().map(|s| s.id))?;
        let saved = self
            .last
            .take()
            .ok_or_else(|| RnnError::Tape("the model holds no training forward".into()))?;
        let config = self.config.clone();
        let hx = saved.h0.as_ref().map(|h0| Hx {
            h0,
            c0: saved.c0.as_ref(),
        });
        let lengths = saved.lengths.as_deref();
        let shape = ForwardShape::resolve(&config, &saved.input, hx, lengths)?;
        let (weights, head) = self.model()?;
        let features = head
            .as_ref()
            .map_or(config.output_size(), |h| h.out_features);
        let output_shape = match (self.state_head, shape.unbatched) {
            (false, _) => shape.frames_shape(features),
            (true, true) => vec![features],
            (true, false) => vec![shape.batch, features],
        };
        check_output_grads(&config, &shape, &output_shape, grads)?;

        // The head: dW += doutᵀ·Y, db += Σ dout, dY = dout·W.
        let d_rnn_output = match &head {
            None => grads.d_output.clone(),
            Some(head) => {
                let (fin, fout) = (head.in_features, head.out_features);
                let (at, bias_at) = self.layout.head.expect("a head has a place");
                let mut dw = vec![0.0f64; fout * fin];
                let mut db = vec![0.0f64; fout];
                let mut dy = Vec::with_capacity(saved.rnn_output.data().len());
                let frames = grads.d_output.data().chunks(fout);
                for (dout, y) in frames.zip(saved.rnn_output.data().chunks(fin)) {
                    for o in 0..fout {
                        db[o] += f64::from(dout[o]);
                        for f in 0..fin {
                            dw[o * fin + f] += f64::from(dout[o]) * f64::from(y[f]);
                        }
                    }
                    dy.extend((0..fin).map(|f| {
                        (0..fout)
                            .map(|o| f64::from(dout[o]) * f64::from(head.weight[o * fin + f]))
                            .sum::<f64>() as f32
                    }));
                }
                for (g, d) in self.grads[at..at + fout * fin].iter_mut().zip(&dw) {
                    *g += *d as f32;
                }
                if let Some(b) = bias_at {
                    for (g, d) in self.grads[b..b + fout].iter_mut().zip(&db) {
                        *g += *d as f32;
                    }
                }
                Tensor::new(dy, saved.rnn_output.shape())?
            }
        };
        let mut d_h_n = match grads.d_h_n {
            Some(d) => d.clone(),
            None => Tensor::zeros(&shape.state_shape(&config))?,
        };
        // A head on the final state: its gradient enters at the last layer's h_n, none at the
        // frames.
        let d_rnn_output = if self.state_head {
            let mut data = d_h_n.into_data();
            let (s, d) = (config.state_size(), config.num_directions());
            let rows = (config.num_layers - 1) * d;
            for (n, frame) in d_rnn_output.data().chunks(d * s).enumerate() {
                for dir in 0..d {
                    let at = ((rows + dir) * shape.batch + n) * s;
                    for (acc, &v) in data[at..at + s]
                        .iter_mut()
                        .zip(&frame[dir * s..(dir + 1) * s])
                    {
                        *acc += v;
                    }
                }
            }
            d_h_n = Tensor::new(data, &shape.state_shape(&config))?;
            Tensor::zeros(&shape.frames_shape(config.output_size()))?
        } else {
            d_rnn_output
        };
        let upstream = Upstream {
            d_output: &d_rnn_output,
            d_h_n: &d_h_n,
            d_c_n: grads.d_c_n,
        };
        let g = backward::backward(&config, &weights, &saved.input, lengths, hx, upstream)?;
        // The reference lists the recurrent parameters in the layout's order (a cell's
        // layout names them without `_l0`).
        for ((_, grad), slot) in g.params.iter().zip(&self.layout.slots) {
            debug_assert_eq!(grad.shape(), slot.shape.as_slice());
            let range = slot.offset..slot.offset + slot.len();
            for (acc, &v) in self.grads[range].iter_mut().zip(grad.data()) {
                *acc += v;
            }
        }
        Ok(InputGrads {
            d_input: g.d_input,
            d_h0: g.d_h0,
            d_c0: g.d_c0,
        })
    }

    fn forward_on_device(
        &mut self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        state: InitialState<'_>,
    ) -> Result<Tape> {
        let carried = match state {
            InitialState::Carried => self
                .last_output
                .as_ref()
                .map(|o| (o.h_n.clone(), o.c_n.clone())),
            _ => None,
        };
        let hx = match (&state, &carried) {
            (InitialState::Given(hx), _) => Some(*hx),
            // A batch of another size is refused by the shape check, as an h0 would be.
            (InitialState::Carried, Some((h, c))) => Some(Hx {
                h0: h,
                c0: c.as_ref(),
            }),
            _ => None,
        };
        Ok(self.forward_train(input, lengths, hx)?.1)
    }

    fn backward_loss(&mut self, tape: Tape, loss: Loss, target: Target<'_>) -> Result<()> {
        tape.check(self.id, self.last.as_ref().map(|s| s.id))?;
        let output = &self
            .last_output
            .as_ref()
            .ok_or_else(|| RnnError::Tape("the model holds no training forward".into()))?
            .output;
        let features = *output.shape().last().expect("outputs have features");
        let rows = output.data().len() / features;
        let target = check_target(loss, target, output.shape(), rows, features)?;
        let (value, grad) = cpu_loss(loss, output.data(), &target, rows, features);
        let grad = Tensor::new(grad, output.shape())?;
        self.backward(tape, OutputGrads::output(&grad))?;
        self.last_loss = Some(value);
        Ok(())
    }

    fn last_loss(&self) -> Result<f32> {
        self.last_loss.ok_or_else(|| {
            RnnError::InvalidConfig("no backward_loss has computed a loss yet".into())
        })
    }

    fn save_optimizer(
        &self,
        optimizer: &Optimizer,
        path: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        optimizer.check_model(self.id)?;
        let OptimizerState::Cpu(state) = &optimizer.state else {
            return Err(RnnError::InvalidConfig(
                "this optimizer's state is on a GPU".into(),
            ));
        };
        self.layout
            .save_optimizer(path.as_ref(), &optimizer.config, optimizer.step, state)
    }

    fn load_optimizer(
        &self,
        config: OptimizerConfig,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Optimizer> {
        config.validate()?;
        let (step, state) = self.layout.load_optimizer(path.as_ref(), &config)?;
        let mut optimizer = Optimizer::new(config, self.id, OptimizerState::Cpu(state))?;
        optimizer.step = step;
        Ok(optimizer)
    }

    fn zero_grad(&mut self) -> Result<()> {
        self.grads.fill(0.0);
        Ok(())
    }

    fn gradients(&self) -> Result<Vec<(String, Tensor)>> {
        self.layout.named(&self.grads)
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.layout.named(&self.params)
    }

    fn optimizer(&self, config: OptimizerConfig) -> Result<Optimizer> {
        let per = state_per_element(&config);
        Optimizer::new(
            config,
            self.id,
            OptimizerState::Cpu(vec![0.0; per * self.params.len()]),
        )
    }

    fn step(&mut self, optimizer: &mut Optimizer) -> Result<()> {
        optimizer.check_model(self.id)?;
        let OptimizerState::Cpu(state) = &mut optimizer.state else {
            return Err(RnnError::InvalidConfig(
                "this optimizer's state is on a GPU, not the CPU".into(),
            ));
        };
        optimizer.step += 1;
        cpu_step(
            &optimizer.config,
            optimizer.step,
            &mut self.params,
            &self.grads,
            state,
        );
        Ok(())
    }

    fn clip_grad_norm(&mut self, max_norm: f32) -> Result<()> {
        self.last_norm = Some(cpu_clip(&mut self.grads, &self.layout.ranges(), max_norm));
        Ok(())
    }

    fn last_grad_norm(&self) -> Result<f32> {
        self.last_norm.ok_or_else(|| {
            RnnError::InvalidConfig("no clip_grad_norm has measured a norm yet".into())
        })
    }
}
