//! Reference cases made by PyTorch: one safetensors file holding a model's parameters, its
//! inputs and PyTorch's outputs, with the configuration as string metadata (`kind`,
//! `input_size`, `hidden_size`, `num_layers`, `nonlinearity`, `bias`, `batch_first`,
//! `bidirectional`, `has_h0`, `unbatched`, ...). The parity tool and the tests read them; so can
//! anyone checking this crate against their own PyTorch build.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::compare::{Comparison, compare};
use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::rnn::Rnn;
use crate::tensor::Tensor;
use crate::weights::{RnnWeights, read_tensor};

/// One reference case file, read into memory.
#[derive(Debug)]
pub struct ReferenceCase {
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl ReferenceCase {
    /// Reads and parses a case file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| RnnError::Io {
            path: path.to_owned(),
            source,
        })?;
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
        read_tensor(&SafeTensors::deserialize(&self.bytes)?, name)
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes).is_ok_and(|f| f.tensor(name).is_ok())
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
    /// Runs the case's `input` (and `h0`, when stored) through `model` and compares `output`
    /// and `h_n` with PyTorch's, element by element, at `tolerance` (max abs error).
    pub fn check_rnn(&self, model: &impl Rnn, tolerance: f64) -> Result<CaseCheck> {
        let input = self.tensor("input")?;
        let h0 = if self.has("h0") {
            Some(self.tensor("h0")?)
        } else {
            None
        };
        let result = model.forward(&input, h0.as_ref())?;
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
