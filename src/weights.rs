//! Model parameters with PyTorch's names and shapes, for every mode, loaded from a
//! `state_dict` in safetensors.

use std::collections::BTreeSet;
use std::path::Path;

use safetensors::SafeTensors;

use crate::checkpoint::{map_file, parse, read_f32, reject_unexpected};
use crate::config::RnnConfig;
use crate::error::{Result, RnnError};

/// The parameters of one direction of one layer. G is 1 for an Elman RNN, 4 for an LSTM
/// (gates i, f, g, o) and 3 for a GRU (gates r, z, n); `H_out` is `proj_size` when set,
/// `hidden_size` otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionWeights {
    /// `weight_ih_l{k}`: (G·H, I_k), row-major, gates stacked in PyTorch's order.
    pub weight_ih: Vec<f32>,
    /// `weight_hh_l{k}`: (G·H, H_out), row-major.
    pub weight_hh: Vec<f32>,
    /// `bias_ih_l{k}`: (G·H), absent when `bias = false`.
    pub bias_ih: Option<Vec<f32>>,
    /// `bias_hh_l{k}`: (G·H), absent when `bias = false`.
    pub bias_hh: Option<Vec<f32>>,
    /// `weight_hr_l{k}`: (P, H), an LSTM with `proj_size` P > 0 only.
    pub weight_hr: Option<Vec<f32>>,
}

/// The shapes of one (layer, direction)'s parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UnitShape {
    /// G·H: rows of every matrix and bias.
    pub rows: usize,
    /// I_k: columns of `weight_ih`.
    pub input: usize,
    /// H_out: columns of `weight_hh`.
    pub recurrent: usize,
    pub bias: bool,
    /// (P, H) of `weight_hr`, when the LSTM projects.
    pub projection: Option<(usize, usize)>,
}

impl UnitShape {
    /// Layer `layer`'s shapes under `config`.
    pub fn of(config: &RnnConfig, layer: usize) -> Self {
        UnitShape {
            rows: config.gate_size(),
            input: config.layer_input_size(layer),
            recurrent: config.state_size(),
            bias: config.bias,
            projection: (config.proj_size > 0).then_some((config.proj_size, config.hidden_size)),
        }
    }

    /// The names of the parameters, as `name` spells them, that a file must hold.
    pub fn names(&self, name: impl Fn(&str) -> String) -> Vec<String> {
        let mut names = vec![name("weight_ih"), name("weight_hh")];
        if self.bias {
            names.extend([name("bias_ih"), name("bias_hh")]);
        }
        if self.projection.is_some() {
            names.push(name("weight_hr"));
        }
        names
    }
}

impl DirectionWeights {
    /// Reads one direction's tensors, named by `name("weight_ih")` and so on. `strict`
    /// refuses biases or a `weight_hr` the configuration has no place for; otherwise they
    /// are ignored, as PyTorch's `strict=False` ignores unexpected keys.
    pub(crate) fn read(
        file: &SafeTensors<'_>,
        name: impl Fn(&str) -> String,
        shape: UnitShape,
        strict: bool,
    ) -> Result<Self> {
        let weight_ih = read_f32(file, &name("weight_ih"), &[shape.rows, shape.input])?;
        let weight_hh = read_f32(file, &name("weight_hh"), &[shape.rows, shape.recurrent])?;
        let optional = |part: &str, dims: Option<&[usize]>, setting: &str| match dims {
            Some(dims) => read_f32(file, &name(part), dims).map(Some),
            None if strict && file.tensor(&name(part)).is_ok() => Err(RnnError::weights(
                name(part),
                format!("present, but the configuration says {setting}"),
            )),
            None => Ok(None),
        };
        let rows = [shape.rows];
        let bias_dims = shape.bias.then_some(&rows[..]);
        let projection = shape.projection.map(|(p, h)| [p, h]);
        Ok(DirectionWeights {
            weight_ih,
            weight_hh,
            bias_ih: optional("bias_ih", bias_dims, "bias = false")?,
            bias_hh: optional("bias_hh", bias_dims, "bias = false")?,
            weight_hr: optional(
                "weight_hr",
                projection.as_ref().map(|d| &d[..]),
                "proj_size = 0",
            )?,
        })
    }

    /// Checks every tensor's size against `shape`; names in errors end with `suffix` (none
    /// for a cell's `weight_ih`, `_l0` and so on for a layer's).
    pub(crate) fn check(&self, shape: UnitShape, suffix: &str) -> Result<()> {
        let check = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(RnnError::weights(
                    format!("{name}{suffix}"),
                    format!("has {len} elements, expected {want}"),
                ))
            }
        };
        check("weight_ih", self.weight_ih.len(), shape.rows * shape.input)?;
        check(
            "weight_hh",
            self.weight_hh.len(),
            shape.rows * shape.recurrent,
        )?;
        match (&self.bias_ih, &self.bias_hh, shape.bias) {
            (Some(a), Some(b), true) => {
                check("bias_ih", a.len(), shape.rows)?;
                check("bias_hh", b.len(), shape.rows)?;
            }
            (None, None, false) => {}
            _ => {
                return Err(RnnError::weights(
                    format!("bias_ih{suffix}"),
                    format!(
                        "biases must be both present when bias = true and both absent when \
                         bias = false (bias = {})",
                        shape.bias
                    ),
                ));
            }
        }
        match (&self.weight_hr, shape.projection) {
            (Some(w), Some((p, h))) => check("weight_hr", w.len(), p * h),
            (None, None) => Ok(()),
            _ => Err(RnnError::weights(
                format!("weight_hr{suffix}"),
                format!(
                    "must be present exactly when proj_size > 0 (proj_size = {})",
                    shape.projection.map_or(0, |(p, _)| p)
                ),
            )),
        }
    }
}

/// Every parameter of a model, one [`DirectionWeights`] per (layer, direction), in the order
/// of `h_n`'s first dimension: `index = layer · D + direction`.
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
    /// Weights for `config` from parts (ordered `layer · D + direction`), checked against the
    /// configuration.
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

    /// Random weights drawn like PyTorch's initialisation, U(−1/√H, 1/√H) for every parameter
    /// (`weight_hr` included), from `seed`. (The numbers differ from PyTorch's own generator;
    /// the distribution is the same.) Sizes that do not fit in memory are an error, not an
    /// abort.
    pub fn init(config: &RnnConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let bound = 1.0 / (config.hidden_size as f64).sqrt();
        let mut rng = SplitMix64(seed);
        let mut draw = |n: usize| -> Result<Vec<f32>> {
            let mut values = Vec::new();
            values.try_reserve_exact(n).map_err(|_| {
                RnnError::InvalidConfig(format!(
                    "{n} parameters in one tensor do not fit in this machine's memory"
                ))
            })?;
            values.extend((0..n).map(|_| ((rng.next_unit() * 2.0 - 1.0) * bound) as f32));
            Ok(values)
        };
        let too_many = || RnnError::InvalidConfig("the parameter count overflows usize".into());
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            let shape = UnitShape::of(config, layer);
            for _ in 0..config.num_directions() {
                let weight_ih = draw(shape.rows.checked_mul(shape.input).ok_or_else(too_many)?)?;
                let weight_hh = draw(
                    shape
                        .rows
                        .checked_mul(shape.recurrent)
                        .ok_or_else(too_many)?,
                )?;
                let (bias_ih, bias_hh) = if shape.bias {
                    (Some(draw(shape.rows)?), Some(draw(shape.rows)?))
                } else {
                    (None, None)
                };
                let weight_hr = match shape.projection {
                    Some((p, h)) => Some(draw(p * h)?),
                    None => None,
                };
                units.push(DirectionWeights {
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                    weight_hr,
                });
            }
        }
        Ok(RnnWeights { units })
    }

    /// Loads a PyTorch `state_dict` saved as safetensors (`safetensors.torch.save_file(
    /// model.state_dict(), path)`). `prefix` is prepended to every name, e.g. `"rnn."` for a
    /// model stored as the attribute `rnn` of a larger module; use `""` for none.
    ///
    /// Strict, as PyTorch's `load_state_dict` is by default: a tensor under `prefix` that the
    /// configuration has no place for (another layer, a reverse direction, a projection) is
    /// an error; [`load_non_strict`](Self::load_non_strict) ignores them. Only the header and
    /// the model's own tensors are read: the file is memory-mapped.
    pub fn load(config: &RnnConfig, path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::from_safetensors(config, &map_file(path.as_ref())?, prefix)
    }

    /// [`load`](Self::load) that ignores tensors under `prefix` the configuration does not use
    /// (PyTorch's `strict=False`; missing tensors are still an error).
    pub fn load_non_strict(
        config: &RnnConfig,
        path: impl AsRef<Path>,
        prefix: &str,
    ) -> Result<Self> {
        let bytes = map_file(path.as_ref())?;
        Self::read(config, &parse(&bytes)?, prefix, false)
    }

    /// Like [`load`](Self::load), from the bytes of a safetensors file.
    pub fn from_safetensors(config: &RnnConfig, bytes: &[u8], prefix: &str) -> Result<Self> {
        Self::read(config, &parse(bytes)?, prefix, true)
    }

    /// Reads every (layer, direction)'s tensors under `prefix`; `strict` rejects others there.
    pub(crate) fn read(
        config: &RnnConfig,
        file: &SafeTensors<'_>,
        prefix: &str,
        strict: bool,
    ) -> Result<Self> {
        config.validate()?;
        let mut units = Vec::new();
        let mut expected = BTreeSet::new();
        for layer in 0..config.num_layers {
            for direction in 0..config.num_directions() {
                let s = suffix(layer, direction);
                let name = |part: &str| format!("{prefix}{part}_{s}");
                let shape = UnitShape::of(config, layer);
                expected.extend(shape.names(name));
                units.push(DirectionWeights::read(file, name, shape, strict)?);
            }
        }
        if strict {
            reject_unexpected(file, prefix, &expected)?;
        }
        Ok(RnnWeights { units })
    }

    /// Checks that every tensor has the size `config` implies.
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
        for (index, unit) in self.units.iter().enumerate() {
            let (layer, direction) = (index / d, index % d);
            let shape = UnitShape::of(config, layer);
            unit.check(shape, &format!("_{}", suffix(layer, direction)))?;
        }
        Ok(())
    }
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
            ..RnnConfig::rnn(3, 16)
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

    #[test]
    fn init_shapes_every_mode() {
        let lstm = RnnConfig {
            proj_size: 3,
            ..RnnConfig::lstm(5, 8)
        };
        let unit = &RnnWeights::init(&lstm, 1).unwrap().units[0];
        assert_eq!(unit.weight_ih.len(), 32 * 5);
        assert_eq!(unit.weight_hh.len(), 32 * 3);
        assert_eq!(unit.weight_hr.as_ref().map(Vec::len), Some(3 * 8));
        let gru = RnnWeights::init(&RnnConfig::gru(5, 8), 1).unwrap();
        assert_eq!(gru.units[0].bias_hh.as_ref().map(Vec::len), Some(24));
        assert!(gru.units[0].weight_hr.is_none());
    }
}
