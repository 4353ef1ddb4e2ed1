//! Reference cases made by PyTorch: one safetensors file holding a model's parameters, its
//! inputs and PyTorch's outputs, with the configuration as string metadata (`kind`,
//! `input_size`, `hidden_size`, `num_layers`, `nonlinearity`, `bias`, `batch_first`,
//! `bidirectional`, `has_h0`, `unbatched`, ...). The parity tool and the tests read them; so can
//! anyone checking this crate against their own PyTorch build.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::cell::{RnnCell, RnnCellConfig};
use crate::compare::{Comparison, compare};
use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gated::{GateKind, GatedConfig, GatedRnn, GatedWeights, GpuGatedRnn};
use crate::gpu::model::GpuRnn;
use crate::gpu::stream::{RnnStream, StreamOptions};
use crate::layout::{ForwardShape, TimeSlice};
use crate::rnn::Rnn;
use crate::tensor::Tensor;
use crate::weights::{DirectionWeights, RnnWeights, parse_safetensors, read_file, read_tensor};

/// One reference case file, read into memory.
#[derive(Debug)]
pub struct ReferenceCase {
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl ReferenceCase {
    /// Reads and parses a case file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let bytes = read_file(path.as_ref())?;
        // Parsing it whole first checks every tensor's offsets, hostile headers included.
        parse_safetensors(&bytes)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(ReferenceCase { bytes, metadata })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The case's `kind` (`rnn`, `rnn_cell`, `rnn_packed`, `lstm`, ...), `"unknown"` if absent.
    pub fn kind(&self) -> &str {
        self.meta("kind").unwrap_or("unknown")
    }

    fn required(&self, key: &str) -> Result<&str> {
        self.meta(key)
            .ok_or_else(|| RnnError::InvalidConfig(format!("case metadata lacks `{key}`")))
    }

    fn number(&self, key: &str) -> Result<usize> {
        let value = self.required(key)?;
        value.parse().map_err(|_| {
            RnnError::InvalidConfig(format!("case metadata `{key}` = `{value}` is not a number"))
        })
    }

    /// A boolean metadata value; absent means false.
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.meta(key) {
            None | Some("false") | Some("False") | Some("0") => Ok(false),
            Some("true") | Some("True") | Some("1") => Ok(true),
            Some(other) => Err(RnnError::InvalidConfig(format!(
                "case metadata `{key}` = `{other}` is not a boolean"
            ))),
        }
    }

    /// The `nn.RNN` configuration the metadata describes.
    pub fn rnn_config(&self) -> Result<RnnConfig> {
        Ok(RnnConfig {
            input_size: self.number("input_size")?,
            hidden_size: self.number("hidden_size")?,
            num_layers: self.number("num_layers")?,
            nonlinearity: self.meta("nonlinearity").unwrap_or("tanh").parse()?,
            bias: self.meta("bias").is_none() || self.flag("bias")?,
            batch_first: self.flag("batch_first")?,
            dropout: 0.0,
            bidirectional: self.flag("bidirectional")?,
        })
    }

    /// The model's parameters (names without prefix, as the fixtures store them).
    pub fn rnn_weights(&self, config: &RnnConfig) -> Result<RnnWeights> {
        RnnWeights::from_safetensors(config, &self.bytes, "")
    }

    /// Any float32 tensor of the file, with its stored shape.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        read_tensor(&parse_safetensors(&self.bytes)?, name)
    }

    /// The int32 `lengths` tensor of a variable-length (`*_packed`) case, if the file has one.
    pub fn lengths(&self) -> Result<Option<Vec<usize>>> {
        let file = parse_safetensors(&self.bytes)?;
        let Ok(view) = file.tensor("lengths") else {
            return Ok(None);
        };
        if view.dtype() != safetensors::Dtype::I32 {
            return Err(RnnError::weights(
                "lengths",
                format!("has dtype {:?}, expected I32", view.dtype()),
            ));
        }
        view.data()
            .chunks_exact(4)
            .map(|b| {
                let value = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                usize::try_from(value)
                    .map_err(|_| RnnError::weights("lengths", format!("holds {value}")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The `nn.RNNCell` configuration of a `kind = "rnn_cell"` case.
    pub fn rnn_cell_config(&self) -> Result<RnnCellConfig> {
        Ok(RnnCellConfig {
            input_size: self.number("input_size")?,
            hidden_size: self.number("hidden_size")?,
            bias: self.meta("bias").is_none() || self.flag("bias")?,
            nonlinearity: self.meta("nonlinearity").unwrap_or("tanh").parse()?,
        })
    }

    /// The cell's parameters (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
    pub fn rnn_cell_weights(&self, config: &RnnCellConfig) -> Result<DirectionWeights> {
        config.weights_from_safetensors(&self.bytes, "")
    }

    /// Feeds the case's `inputs` (S, N, I) through `cell` one step at a time from `h0`
    /// (zeros when absent), carrying h, and compares every step's h with `h_steps`.
    pub fn check_rnn_cell<M: Rnn>(&self, cell: &RnnCell<M>, tolerance: f64) -> Result<Comparison> {
        let inputs = self.tensor("inputs")?;
        let want = self.tensor("h_steps")?;
        let (steps, frame) = match *inputs.shape() {
            [s, n, i] => (s, n * i),
            _ => return Err(RnnError::shape("inputs", "(S, N, I)", inputs.shape())),
        };
        let batch = inputs.shape()[1];
        let mut h = if self.has("h0") {
            self.tensor("h0")?
        } else {
            Tensor::zeros(&[batch, cell.config().hidden_size])?
        };
        let mut got = Vec::with_capacity(want.data().len());
        for s in 0..steps {
            let x = Tensor::new(
                inputs.data()[s * frame..(s + 1) * frame].to_vec(),
                &inputs.shape()[1..],
            )?;
            h = cell.step(&x, Some(&h))?;
            got.extend_from_slice(h.data());
        }
        Ok(compare(&got, want.data(), tolerance))
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        parse_safetensors(&self.bytes).is_ok_and(|f| f.tensor(name).is_ok())
    }
}

/// How a model's forward compared with PyTorch's stored results for one case.
#[derive(Clone, Copy, Debug)]
pub struct CaseCheck {
    /// `output` against the stored `output`.
    pub output: Comparison,
    /// `h_n` against the stored `h_n`.
    pub h_n: Comparison,
}

impl CaseCheck {
    /// True when both are within the tolerance.
    pub fn passed(&self) -> bool {
        self.output.passed() && self.h_n.passed()
    }
}

impl ReferenceCase {
    /// Like [`check_rnn`](Self::check_rnn), but feeds the input through a GPU stream in
    /// chunks of `chunk` frames (from `h0`, when stored) and compares the concatenated outputs
    /// and the stream's final state. For unidirectional, full-length cases.
    pub fn check_rnn_streamed(
        &self,
        model: &GpuRnn,
        chunk: usize,
        tolerance: f64,
    ) -> Result<CaseCheck> {
        let config = model.config();
        let input = self.tensor("input")?;
        let shape = ForwardShape::resolve(config, &input, None)?;
        let mut stream = model.stream(StreamOptions {
            batch: shape.batch,
            delay: 0,
        })?;
        if self.has("h0") {
            let h0 = self.tensor("h0")?;
            let state = [config.num_layers, shape.batch, config.hidden_size];
            stream.reset_to(&Tensor::new(h0.into_data(), &state)?)?;
        }
        let output = push_in_chunks(&mut stream, &input, shape, config.input_size, chunk)?;
        Ok(CaseCheck {
            output: compare(&output, self.tensor("output")?.data(), tolerance),
            h_n: compare(
                stream.state()?.data(),
                self.tensor("h_n")?.data(),
                tolerance,
            ),
        })
    }

    /// [`check_rnn_streamed`](Self::check_rnn_streamed) for an LSTM or GRU: the stream
    /// starts from `h0` (and `c0`) when stored; its final h and c are compared with `h_n` and
    /// `c_n`.
    pub fn check_gated_streamed(
        &self,
        model: &GpuGatedRnn,
        chunk: usize,
        tolerance: f64,
    ) -> Result<GatedCaseCheck> {
        let config = model.config();
        let input = self.tensor("input")?;
        let shape = ForwardShape::resolve_input(config.input_size, config.batch_first, &input)?;
        let mut stream = model.stream(StreamOptions {
            batch: shape.batch,
            delay: 0,
        })?;
        if self.has("h0") {
            let layers = |features| [config.num_layers, shape.batch, features];
            let h0 = Tensor::new(self.tensor("h0")?.into_data(), &layers(config.state_size()))?;
            match config.kind {
                GateKind::Lstm => {
                    let c0 = self.tensor("c0")?.into_data();
                    let c0 = Tensor::new(c0, &layers(config.hidden_size))?;
                    stream.reset_to_lstm_state(&h0, &c0)?;
                }
                GateKind::Gru => stream.reset_to(&h0)?,
            }
        }
        let output = push_in_chunks(&mut stream, &input, shape, config.input_size, chunk)?;
        let c_n = match stream.cell_state()? {
            Some(c) => Some(compare(c.data(), self.tensor("c_n")?.data(), tolerance)),
            None => None,
        };
        Ok(GatedCaseCheck {
            output: compare(&output, self.tensor("output")?.data(), tolerance),
            h_n: compare(
                stream.state()?.data(),
                self.tensor("h_n")?.data(),
                tolerance,
            ),
            c_n,
        })
    }

    /// Runs the case's `input` (and `h0`, when stored) through `model` and compares `output`
    /// and `h_n` with PyTorch's, element by element, at `tolerance` (max abs error).
    pub fn check_rnn(&self, model: &impl Rnn, tolerance: f64) -> Result<CaseCheck> {
        let input = self.tensor("input")?;
        let h0 = if self.has("h0") {
            Some(self.tensor("h0")?)
        } else {
            None
        };
        let result = match self.lengths()? {
            Some(lengths) => model.forward_with_lengths(&input, &lengths, h0.as_ref())?,
            None => model.forward(&input, h0.as_ref())?,
        };
        let want_output = self.tensor("output")?;
        let want_h_n = self.tensor("h_n")?;
        let shape_ok = |got: &Tensor, want: &Tensor| got.shape() == want.shape();
        if !shape_ok(&result.output, &want_output) {
            return Err(RnnError::shape(
                "output",
                format!("{:?}", want_output.shape()),
                result.output.shape(),
            ));
        }
        if !shape_ok(&result.h_n, &want_h_n) {
            return Err(RnnError::shape(
                "h_n",
                format!("{:?}", want_h_n.shape()),
                result.h_n.shape(),
            ));
        }
        Ok(CaseCheck {
            output: compare(result.output.data(), want_output.data(), tolerance),
            h_n: compare(result.h_n.data(), want_h_n.data(), tolerance),
        })
    }
}

/// Pushes `input` (laid out as `shape` says, `input_size` features a frame) through `stream`
/// `chunk` frames at a time; returns the outputs reassembled in the same layout.
fn push_in_chunks(
    stream: &mut RnnStream<'_>,
    input: &Tensor,
    shape: ForwardShape,
    input_size: usize,
    chunk: usize,
) -> Result<Vec<f32>> {
    let mut output = Vec::new();
    for t0 in (0..shape.seq_len).step_by(chunk.max(1)) {
        let len = chunk.max(1).min(shape.seq_len - t0);
        let frames = |features| TimeSlice {
            shape,
            t0,
            len,
            features,
        };
        let part = ForwardShape {
            seq_len: len,
            ..shape
        };
        let part_input = Tensor::new(
            frames(input_size).gather(input.data()),
            &part.frames_shape(input_size),
        )?;
        let part_output = stream.push(&part_input)?;
        let features = part_output.data().len() / (len * shape.batch);
        if output.is_empty() {
            output = vec![0.0; shape.seq_len * shape.batch * features];
        }
        frames(features).scatter(part_output.data(), &mut output);
    }
    Ok(output)
}

/// How a gated model's forward compared with PyTorch's stored results for one case.
#[derive(Clone, Copy, Debug)]
pub struct GatedCaseCheck {
    /// `output` against the stored `output`.
    pub output: Comparison,
    /// `h_n` against the stored `h_n`.
    pub h_n: Comparison,
    /// `c_n` against the stored `c_n` (LSTM cases only).
    pub c_n: Option<Comparison>,
}

impl GatedCaseCheck {
    /// True when every compared tensor is within the tolerance.
    pub fn passed(&self) -> bool {
        self.output.passed() && self.h_n.passed() && self.c_n.is_none_or(|c| c.passed())
    }
}

impl ReferenceCase {
    /// The `nn.LSTM` / `nn.GRU` configuration of a `kind` = `lstm`, `lstm_packed`, `gru` or
    /// `gru_packed` case (tests/fixtures/torch_gated/README.md).
    pub fn gated_config(&self) -> Result<GatedConfig> {
        let kind = match self.kind() {
            "lstm" | "lstm_packed" => GateKind::Lstm,
            "gru" | "gru_packed" => GateKind::Gru,
            other => {
                return Err(RnnError::InvalidConfig(format!(
                    "case kind `{other}` is not an LSTM or GRU case"
                )));
            }
        };
        Ok(GatedConfig {
            kind,
            input_size: self.number("input_size")?,
            hidden_size: self.number("hidden_size")?,
            num_layers: self.number("num_layers")?,
            bias: self.meta("bias").is_none() || self.flag("bias")?,
            batch_first: self.flag("batch_first")?,
            dropout: 0.0,
            bidirectional: self.flag("bidirectional")?,
            proj_size: match self.meta("proj_size") {
                None => 0,
                Some(_) => self.number("proj_size")?,
            },
        })
    }

    /// The gated model's parameters (names without prefix, as the fixtures store them).
    pub fn gated_weights(&self, config: &GatedConfig) -> Result<GatedWeights> {
        GatedWeights::from_safetensors(config, &self.bytes, "")
    }

    /// Runs the case's `input` (with `h0` and, for an LSTM, `c0` when stored, and `lengths`
    /// for packed cases) through `model` and compares `output`, `h_n` and, for an LSTM, `c_n`
    /// with PyTorch's, element by element, at `tolerance` (max abs error).
    pub fn check_gated(&self, model: &impl GatedRnn, tolerance: f64) -> Result<GatedCaseCheck> {
        let input = self.tensor("input")?;
        let optional = |name: &str| -> Result<Option<Tensor>> {
            if self.has(name) {
                self.tensor(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let (h0, c0) = (optional("h0")?, optional("c0")?);
        let result = match self.lengths()? {
            Some(lengths) => {
                model.forward_with_lengths(&input, &lengths, h0.as_ref(), c0.as_ref())?
            }
            None => model.forward(&input, h0.as_ref(), c0.as_ref())?,
        };
        let checked = |what: &'static str, got: &Tensor| -> Result<Comparison> {
            let want = self.tensor(what)?;
            if got.shape() != want.shape() {
                return Err(RnnError::shape(
                    what,
                    format!("{:?}", want.shape()),
                    got.shape(),
                ));
            }
            Ok(compare(got.data(), want.data(), tolerance))
        };
        let c_n = match (&result.c_n, model.config().kind) {
            (Some(c_n), GateKind::Lstm) => Some(checked("c_n", c_n)?),
            _ => None,
        };
        Ok(GatedCaseCheck {
            output: checked("output", &result.output)?,
            h_n: checked("h_n", &result.h_n)?,
            c_n,
        })
    }
}
