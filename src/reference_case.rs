//! Reference cases made by PyTorch: one safetensors file holding a model's parameters, its
//! inputs and PyTorch's outputs, with the configuration as string metadata (`kind`,
//! `input_size`, `hidden_size`, `num_layers`, `nonlinearity`, `bias`, `batch_first`,
//! `bidirectional`, `has_h0`, `unbatched`, ...). The parity tool and the tests read them; so can
//! anyone checking this crate against their own PyTorch build.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::cell::{CellConfig, RnnCell};
use crate::checkpoint::{map_file, parse, read_tensor};
use crate::compare::{Comparison, compare};
use crate::config::{RnnConfig, RnnMode};
use crate::error::{Result, RnnError};
use crate::gpu::model::GpuRnn;
use crate::gpu::stream::{RnnStream, StreamOptions};
use crate::layout::{ForwardShape, TimeSlice};
use crate::rnn::{Hx, Rnn};
use crate::tensor::Tensor;
use crate::weights::{DirectionWeights, RnnWeights};

/// One reference case file, read into memory.
#[derive(Debug)]
pub struct ReferenceCase {
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl ReferenceCase {
    /// Reads and parses a case file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let bytes = map_file(path.as_ref())?.to_vec();
        // Parsing it whole first checks every tensor's offsets, hostile headers included.
        parse(&bytes)?;
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

    /// The model configuration of a forward case (`kind` = `rnn`, `rnn_packed`, `lstm`,
    /// `lstm_packed`, `gru` or `gru_packed`; tests/fixtures/README.torch_rnn.md and
    /// tests/fixtures/torch_gated/README.md).
    pub fn config(&self) -> Result<RnnConfig> {
        let mode = match self.kind() {
            "rnn" | "rnn_packed" => {
                RnnMode::Rnn(self.meta("nonlinearity").unwrap_or("tanh").parse()?)
            }
            "lstm" | "lstm_packed" => RnnMode::Lstm,
            "gru" | "gru_packed" => RnnMode::Gru,
            other => {
                return Err(RnnError::InvalidConfig(format!(
                    "case kind `{other}` is not a forward case of nn.RNN, nn.LSTM or nn.GRU"
                )));
            }
        };
        Ok(RnnConfig {
            mode,
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

    /// The model's parameters (names without prefix, as the fixtures store them beside the
    /// inputs and outputs).
    pub fn weights(&self, config: &RnnConfig) -> Result<RnnWeights> {
        RnnWeights::read(config, &parse(&self.bytes)?, "", false)
    }

    /// Any float32 tensor of the file, with its stored shape.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        read_tensor(&parse(&self.bytes)?, name)
    }

    /// The int32 `lengths` tensor of a variable-length (`*_packed`) case, if the file has one.
    pub fn lengths(&self) -> Result<Option<Vec<usize>>> {
        if !self.has("lengths") {
            return Ok(None);
        }
        self.indices("lengths").map(|(values, _)| Some(values))
    }

    /// An int32 tensor of non-negative values (lengths, tokens, labels) and its shape.
    pub fn indices(&self, name: &str) -> Result<(Vec<usize>, Vec<usize>)> {
        let file = parse(&self.bytes)?;
        let view = file
            .tensor(name)
            .map_err(|_| RnnError::weights(name, "is missing".to_string()))?;
        if view.dtype() != safetensors::Dtype::I32 {
            return Err(RnnError::weights(
                name,
                format!("has dtype {:?}, expected I32", view.dtype()),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| {
                let value = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                usize::try_from(value)
                    .map_err(|_| RnnError::weights(name, format!("holds {value}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((values, view.shape().to_vec()))
    }

    /// The file's bytes (to load parameters under a prefix, as `init.rnn.`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The `nn.RNNCell` configuration of a `kind = "rnn_cell"` case.
    pub fn cell_config(&self) -> Result<CellConfig> {
        Ok(CellConfig {
            mode: RnnMode::Rnn(self.meta("nonlinearity").unwrap_or("tanh").parse()?),
            input_size: self.number("input_size")?,
            hidden_size: self.number("hidden_size")?,
            bias: self.meta("bias").is_none() || self.flag("bias")?,
        })
    }

    /// The cell's parameters (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
    pub fn cell_weights(&self, config: &CellConfig) -> Result<DirectionWeights> {
        config.read_weights(&self.bytes, "", false)
    }

    /// Feeds the case's `inputs` (S, N, I) through `cell` one step at a time from `h0`
    /// (zeros when absent), carrying h, and compares every step's h with `h_steps`.
    pub fn check_cell<M: Rnn>(&self, cell: &RnnCell<M>, tolerance: f64) -> Result<Comparison> {
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
        parse(&self.bytes).is_ok_and(|f| f.tensor(name).is_ok())
    }
}

/// How a model's forward compared with PyTorch's stored results for one case.
#[derive(Clone, Copy, Debug)]
pub struct CaseCheck {
    /// `output` against the stored `output`.
    pub output: Comparison,
    /// `h_n` against the stored `h_n`.
    pub h_n: Comparison,
    /// `c_n` against the stored `c_n` (LSTM cases only).
    pub c_n: Option<Comparison>,
}

impl CaseCheck {
    /// True when every compared tensor is within the tolerance.
    pub fn passed(&self) -> bool {
        self.output.passed() && self.h_n.passed() && self.c_n.is_none_or(|c| c.passed())
    }
}

impl ReferenceCase {
    /// The stored tensor `name`, when the file has one.
    fn optional(&self, name: &str) -> Result<Option<Tensor>> {
        if self.has(name) {
            self.tensor(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// [`check`](Self::check) through a GPU stream: the input is pushed in chunks of `chunk`
    /// frames (from `h0`, and `c0` for an LSTM, when stored) and the concatenated outputs and
    /// the stream's final state are compared. For unidirectional, full-length cases.
    pub fn check_streamed(
        &self,
        model: &GpuRnn,
        chunk: usize,
        tolerance: f64,
    ) -> Result<CaseCheck> {
        let config = model.config();
        let input = self.tensor("input")?;
        let shape = ForwardShape::resolve(config, &input, None, None)?;
        let mut stream = model.stream(StreamOptions {
            batch: shape.batch,
            delay: 0,
        })?;
        let layers = |features| [config.num_layers, shape.batch, features];
        let h0 = self
            .optional("h0")?
            .map(|h0| Tensor::new(h0.into_data(), &layers(config.state_size())))
            .transpose()?;
        let c0 = self
            .optional("c0")?
            .map(|c0| Tensor::new(c0.into_data(), &layers(config.hidden_size)))
            .transpose()?;
        if let Some(h0) = &h0 {
            stream.reset_to(Hx {
                h0,
                c0: c0.as_ref(),
            })?;
        }
        let output = push_in_chunks(&mut stream, &input, shape, config.input_size, chunk)?;
        let c_n = match stream.cell_state()? {
            Some(c) => Some(compare(c.data(), self.tensor("c_n")?.data(), tolerance)),
            None => None,
        };
        Ok(CaseCheck {
            output: compare(&output, self.tensor("output")?.data(), tolerance),
            h_n: compare(
                stream.state()?.data(),
                self.tensor("h_n")?.data(),
                tolerance,
            ),
            c_n,
        })
    }

    /// Runs the case's `input` (with `h0` and, for an LSTM, `c0` when stored, and `lengths`
    /// for packed cases) through `model` and compares `output`, `h_n` and, for an LSTM, `c_n`
    /// with PyTorch's, element by element, at `tolerance` (max abs error).
    pub fn check(&self, model: &impl Rnn, tolerance: f64) -> Result<CaseCheck> {
        let input = self.tensor("input")?;
        let (h0, c0) = (self.optional("h0")?, self.optional("c0")?);
        let hx = h0.as_ref().map(|h0| Hx {
            h0,
            c0: c0.as_ref(),
        });
        let result = match self.lengths()? {
            Some(lengths) => model.forward_with_lengths(&input, &lengths, hx)?,
            None => model.forward(&input, hx)?,
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
        Ok(CaseCheck {
            output: checked("output", &result.output)?,
            h_n: checked("h_n", &result.h_n)?,
            c_n: result
                .c_n
                .as_ref()
                .map(|c_n| checked("c_n", c_n))
                .transpose()?,
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
