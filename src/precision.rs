//! How weights are stored on the GPU: f32, or f16 (IEEE binary16) read back as f32.

/// How a model stores its weights on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightPrecision {
    /// 32-bit floats, as PyTorch trains them (the default).
    #[default]
    F32,
    /// 16-bit floats (IEEE half), converted to f32 as they are read: half the memory and
    /// bandwidth for the weights; every sum, the state and the activations stay f32. Needs
    /// an adapter with `wgpu::Features::SHADER_F16`.
    F16,
}

impl WeightPrecision {
    /// `value` as it is stored: unchanged for f32, rounded to the nearest f16 (ties to even)
    /// for f16. Running the CPU reference on weights rounded this way gives what the GPU
    /// computes, up to f32 rounding.
    pub fn round(self, value: f32) -> f32 {
        match self {
            WeightPrecision::F32 => value,
            WeightPrecision::F16 => f16_to_f32(f32_to_f16(value)),
        }
    }

    /// The bytes of `values` stored with this precision (little-endian, as GPUs read them).
    pub(crate) fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            WeightPrecision::F32 => bytemuck::cast_slice(values).to_vec(),
            WeightPrecision::F16 => values
                .iter()
                .flat_map(|&v| f32_to_f16(v).to_le_bytes())
                .collect(),
        }
    }
}

/// The f16 nearest to `value` (ties to even): overflow to ±inf, underflow through the
/// subnormals to ±0, NaN stays NaN.
fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        // Infinity, or NaN (kept quiet and non-zero).
        return sign | 0x7c00 | if mantissa != 0 { 0x200 } else { 0 };
    }
    // The value is 1.mantissa · 2^(exponent − 127); f16 normals have exponents −14..=15.
    let unbiased = exponent - 127;
    if unbiased > 15 {
        return sign | 0x7c00;
    }
    if unbiased >= -14 {
        // Normal: keep 10 of the 23 mantissa bits, rounding the 13 dropped ones.
        let half = ((unbiased + 15) as u32) << 10 | (mantissa >> 13);
        let rest = mantissa & 0x1fff;
        let round_up = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
        // A carry out of the mantissa correctly bumps the exponent (up to infinity).
        return sign | (half + u32::from(round_up)) as u16;
    }
    if unbiased < -25 {
        return sign;
    }
    // Subnormal: the implicit bit joins the mantissa, shifted right by the missing exponent.
    let full = mantissa | 0x80_0000;
    let shift = (-14 - unbiased + 13) as u32;
    let half = full >> shift;
    let rest = full & ((1 << shift) - 1);
    let midpoint = 1 << (shift - 1);
    let round_up = rest > midpoint || (rest == midpoint && half & 1 == 1);
    sign | (half + u32::from(round_up)) as u16
}

fn f16_to_f32(half: u16) -> f32 {
    let sign = u32::from(half & 0x8000) << 16;
    let exponent = u32::from((half >> 10) & 0x1f);
    let mantissa = u32::from(half & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        // Subnormal: mantissa · 2^−24, exact in f32.
        (0, _) => {
            let magnitude = mantissa as f32 * 2f32.powi(-24);
            return if sign != 0 { -magnitude } else { magnitude };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (mantissa << 13),
        _ => sign | ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::{f16_to_f32, f32_to_f16};

    #[test]
    fn known_values_round_trip() {
        for (value, bits) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),        // the largest f16
            (6.103_515_6e-5, 0x0400), // the smallest normal
            (5.960_464_5e-8, 0x0001), // the smallest subnormal
            (f32::INFINITY, 0x7c00),
            (f32::NEG_INFINITY, 0xfc00),
        ] {
            assert_eq!(f32_to_f16(value), bits, "{value}");
            assert_eq!(f16_to_f32(bits).to_bits(), value.to_bits(), "{bits:#x}");
        }
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn rounds_to_nearest_even_and_saturates() {
        // 1 + 2^−11 lies halfway between 1 and the next f16 (1 + 2^−10): ties to even, 1.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // Slightly above the midpoint rounds up.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // 1 + 3·2^−11 is halfway between odd 0x3c01 and even 0x3c02: up to the even one.
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds past the largest: infinity
        assert_eq!(f32_to_f16(1e-9), 0x0000);
        // Every f16 converts to f32 and back unchanged.
        for bits in 0..=u16::MAX {
            let value = f16_to_f32(bits);
            if !value.is_nan() {
                assert_eq!(f32_to_f16(value), bits, "{bits:#x}");
            }
        }
    }
}
