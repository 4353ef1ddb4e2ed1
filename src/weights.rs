//! Model parameters with PyTorch's names and shapes, loaded from a `state_dict` in safetensors.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::tensor::Tensor;

/// The parameters of one direction of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionWeights {
    /// `weight_ih_l{k}`: (H, I_k), row-major.
    pub weight_ih: Vec<f32>,
    /// `weight_hh_l{k}`: (H, H), row-major.
    pub weight_hh: Vec<f32>,
    /// `bias_ih_l{k}`: (H), absent when `bias = false`.
    pub bias_ih: Option<Vec<f32>>,
    /// `bias_hh_l{k}`: (H), absent when `bias = false`.
    pub bias_hh: Option<Vec<f32>>,
}

impl DirectionWeights {
    /// Reads one direction's four tensors, (hidden, input) sized, named by `name("weight_ih")`
    /// and so on.
    pub(crate) fn read(
        file: &SafeTensors<'_>,
        name: impl Fn(&str) -> String,
        (h, i): (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        Self::read_shaped(file, name, (h, i, h), bias)
    }

    /// Like [`read`](Self::read) for any row count: `weight_ih` (rows, input), `weight_hh`
    /// (rows, recurrent), biases (rows). Gated models stack their gates in the rows (4H for an
    /// LSTM, 3H for a GRU) and an LSTM with a projection has P recurrent columns.
    pub(crate) fn read_shaped(
        file: &SafeTensors<'_>,
        name: impl Fn(&str) -> String,
        (rows, input, recurrent): (usize, usize, usize),
        bias: bool,
    ) -> Result<Self> {
        let weight_ih = read_f32(file, &name("weight_ih"), &[rows, input])?;
        let weight_hh = read_f32(file, &name("weight_hh"), &[rows, recurrent])?;
        let (bias_ih, bias_hh) = if bias {
            (
                Some(read_f32(file, &name("bias_ih"), &[rows])?),
                Some(read_f32(file, &name("bias_hh"), &[rows])?),
            )
        } else {
            for part in ["bias_ih", "bias_hh"] {
                if file.tensor(&name(part)).is_ok() {
                    return Err(RnnError::weights(
                        name(part),
                        "present, but the configuration says bias = false",
                    ));
                }
            }
            (None, None)
        };
        Ok(DirectionWeights {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
        })
    }

    /// `b_ih + b_hh` (zeros without bias): what the input projection adds to every row.
    pub fn combined_bias(&self, hidden_size: usize) -> Vec<f32> {
        match (&self.bias_ih, &self.bias_hh) {
            (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x + y).collect(),
            _ => vec![0.0; hidden_size],
        }
    }
}

/// Every parameter of an `nn.RNN`, one [`DirectionWeights`] per (layer, direction), in the
/// order of `h_n`'s first dimension: `index = layer · D + direction`.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnWeights {
    units: Vec<DirectionWeights>,
}

/// PyTorch's parameter name suffix for (layer, direction): `l0`, `l1_reverse`, ...
pub(crate) fn suffix(layer: usize, direction: usize) -> String {
    if direction == 0 {
        format!("l{layer}")
    } else {
        format!("l{layer}_reverse")
    }
}

impl RnnWeights {
    /// Weights for `config` from parts, checked against the configuration.
    pub fn new(config: &RnnConfig, units: Vec<DirectionWeights>) -> Result<Self> {
        config.validate()?;
        let weights = RnnWeights { units };
        weights.check(config)?;
        Ok(weights)
    }

    /// Every (layer, direction)'s parameters, ordered `layer · D + direction` (as
    /// [`new`](Self::new) takes them).
    pub fn units(&self) -> &[DirectionWeights] {
        &self.units
    }

    /// The parameters of `layer`, `direction` (0 forward, 1 reverse) of a model with
    /// `config`; `None` when the model has no such layer or direction.
    pub fn get(
        &self,
        layer: usize,
        direction: usize,
        config: &RnnConfig,
    ) -> Option<&DirectionWeights> {
        let directions = config.num_directions();
        if layer >= config.num_layers || direction >= directions {
            return None;
        }
        self.units.get(layer * directions + direction)
    }

    /// `get` for indices the caller has already bounded by a checked configuration.
    pub(crate) fn unit(
        &self,
        layer: usize,
        direction: usize,
        config: &RnnConfig,
    ) -> &DirectionWeights {
        &self.units[layer * config.num_directions() + direction]
    }

    /// Random weights drawn like PyTorch's initialisation, U(−1/√H, 1/√H), from `seed`.
    /// (The numbers differ from PyTorch's own generator; the distribution is the same.)
    pub fn init(config: &RnnConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let h = config.hidden_size;
        let bound = 1.0 / (h as f64).sqrt();
        let mut rng = SplitMix64(seed);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.next_unit() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            for _ in 0..config.num_directions() {
                let weight_ih = draw(h * config.layer_input_size(layer));
                let weight_hh = draw(h * h);
                let (bias_ih, bias_hh) = if config.bias {
                    (Some(draw(h)), Some(draw(h)))
                } else {
                    (None, None)
                };
                units.push(DirectionWeights {
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                });
            }
        }
        Ok(RnnWeights { units })
    }

    /// Loads a PyTorch `state_dict` saved as safetensors (`safetensors.torch.save_file(
    /// model.state_dict(), path)`). `prefix` is prepended to every name, e.g. `"rnn."` for an
    /// `nn.RNN` stored as the attribute `rnn` of a larger module; use `""` for none.
    pub fn load(config: &RnnConfig, path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::from_safetensors(config, &read_file(path.as_ref())?, prefix)
    }

    /// Like [`load`](Self::load), from the bytes of a safetensors file.
    pub fn from_safetensors(config: &RnnConfig, bytes: &[u8], prefix: &str) -> Result<Self> {
        config.validate()?;
        let file = parse_safetensors(bytes)?;
        let h = config.hidden_size;
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            for direction in 0..config.num_directions() {
                let s = suffix(layer, direction);
                units.push(DirectionWeights::read(
                    &file,
                    |name| format!("{prefix}{name}_{s}"),
                    (h, config.layer_input_size(layer)),
                    config.bias,
                )?);
            }
        }
        Ok(RnnWeights { units })
    }

    /// Checks that every tensor has the shape `config` implies.
    pub(crate) fn check(&self, config: &RnnConfig) -> Result<()> {
        let d = config.num_directions();
        let expected_units = config.num_layers * d;
        if self.units.len() != expected_units {
            return Err(RnnError::weights(
                "(all)",
                format!(
                    "{} (layer, direction) units given, the configuration needs {expected_units}",
                    self.units.len()
                ),
            ));
        }
        let h = config.hidden_size;
        for (index, unit) in self.units.iter().enumerate() {
            let (layer, direction) = (index / d, index % d);
            let s = suffix(layer, direction);
            let i = config.layer_input_size(layer);
            let check = |name: &str, len: usize, want: usize| {
                if len == want {
                    Ok(())
                } else {
                    Err(RnnError::weights(
                        format!("{name}_{s}"),
                        format!("has {len} elements, expected {want}"),
                    ))
                }
            };
            check("weight_ih", unit.weight_ih.len(), h * i)?;
            check("weight_hh", unit.weight_hh.len(), h * h)?;
            match (&unit.bias_ih, &unit.bias_hh, config.bias) {
                (Some(a), Some(b), true) => {
                    check("bias_ih", a.len(), h)?;
                    check("bias_hh", b.len(), h)?;
                }
                (None, None, false) => {}
                _ => {
                    return Err(RnnError::weights(
                        format!("bias_ih_{s}"),
                        format!(
                            "biases must be both present when bias = true and both absent when \
                             bias = false (bias = {})",
                            config.bias
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses a safetensors container. safetensors 0.6 can overflow an addition on some hostile
/// headers (a panic in debug builds, an error in release ones), so a panic while parsing is
/// turned into an error too: untrusted files must never take the process down.
pub(crate) fn parse_safetensors(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    match std::panic::catch_unwind(|| SafeTensors::deserialize(bytes)) {
        Ok(parsed) => Ok(parsed?),
        Err(_) => Err(RnnError::weights(
            "(safetensors header)",
            "corrupt: its offsets overflow",
        )),
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| RnnError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads one float32 tensor and checks its shape.
pub(crate) fn read_f32(file: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let tensor = read_tensor(file, name)?;
    if tensor.shape() != shape {
        return Err(RnnError::weights(
            name,
            format!("has shape {:?}, expected {shape:?}", tensor.shape()),
        ));
    }
    Ok(tensor.into_data())
}

/// Reads one float32 tensor with its stored shape. Data in safetensors is little-endian and may
/// be unaligned, so it is decoded element by element.
pub(crate) fn read_tensor(file: &SafeTensors<'_>, name: &str) -> Result<Tensor> {
    let view = file
        .tensor(name)
        .map_err(|_| RnnError::weights(name, "missing from the file"))?;
    if view.dtype() != Dtype::F32 {
        return Err(RnnError::weights(
            name,
            format!("has dtype {:?}, expected F32", view.dtype()),
        ));
    }
    Tensor::new(decode_f32(view.data()), view.shape())
        .map_err(|_| RnnError::weights(name, "its data does not match its shape"))
}

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// SplitMix64: a tiny, well-mixed generator; plenty for weight initialisation and test data.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    #[cfg(test)]
    pub fn uniform(&mut self, lo: f32, hi: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| lo + (hi - lo) * self.next_unit() as f32)
            .collect()
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_respects_pytorch_bound_and_shapes() {
        let config = RnnConfig {
            num_layers: 2,
            bidirectional: true,
            ..RnnConfig::new(3, 16)
        };
        let w = RnnWeights::init(&config, 7).unwrap();
        w.check(&config).unwrap();
        let bound = 0.25f32; // 1/sqrt(16)
        let top = w.get(1, 1, &config).unwrap();
        assert!(w.get(2, 0, &config).is_none() && w.get(0, 2, &config).is_none());
        assert_eq!(top.weight_ih.len(), 16 * 32);
        assert!(top.weight_hh.iter().all(|v| v.abs() <= bound));
        let spread = top.weight_hh.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            spread > 0.2,
            "values should fill the range, max |w| = {spread}"
        );
        assert_ne!(w, RnnWeights::init(&config, 8).unwrap());
    }
}
