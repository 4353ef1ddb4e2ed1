//! Comparing results: the worst absolute error, where it is, and NaN/Inf handled on purpose.

/// The outcome of comparing two equally long slices element by element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The largest `|got − want|` over finite pairs; infinite if any pair disagrees on
    /// NaN-ness or on an infinity.
    pub max_abs: f64,
    /// Where `max_abs` was found.
    pub worst_index: usize,
    /// How many elements differ by more than the tolerance given to [`compare`].
    pub mismatches: usize,
    /// Elements compared.
    pub len: usize,
}

impl Comparison {
    /// True when no element differs by more than the tolerance.
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max abs error {:.3e} at {}, {} of {} beyond tolerance",
            self.max_abs, self.worst_index, self.mismatches, self.len
        )
    }
}

/// Compares `got` with `want`. Two NaNs, or two equal infinities, count as equal (PyTorch
/// propagates them and so must we); a NaN or infinity against anything else is an infinite error.
/// Slices of different lengths compare as one infinite error.
pub fn compare(got: &[f32], want: &[f32], tolerance: f64) -> Comparison {
    if got.len() != want.len() {
        return Comparison {
            max_abs: f64::INFINITY,
            worst_index: got.len().min(want.len()),
            mismatches: 1,
            len: got.len().max(want.len()),
        };
    }
    let mut result = Comparison {
        max_abs: 0.0,
        worst_index: 0,
        mismatches: 0,
        len: got.len(),
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = if g.is_nan() && w.is_nan() || g.is_infinite() && g == w {
            0.0
        } else if !g.is_finite() || !w.is_finite() {
            f64::INFINITY
        } else {
            (f64::from(g) - f64::from(w)).abs()
        };
        if err > tolerance {
            result.mismatches += 1;
        }
        if err > result.max_abs {
            result.max_abs = err;
            result.worst_index = i;
        }
    }
    result
}

/// The error measure of the PyTorch fixtures (`tests/fixtures/*/README.md`):
/// `max|got − want| / max(1, max|want|)`. A NaN difference, or slices of different lengths,
/// make it infinite.
pub fn scaled_max_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(1.0f64, |m, &v| m.max(f64::from(v).abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
        .fold(
            0.0f64,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        );
    worst / scale
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn finds_the_worst_element_and_counts_mismatches() {
        let c = compare(&[1.0, 2.0, 3.5, 4.0], &[1.0, 2.1, 3.0, 4.0], 0.2);
        assert!((c.max_abs - 0.5).abs() < 1e-12);
        assert_eq!((c.worst_index, c.mismatches, c.len), (2, 1, 4));
        assert!(!c.passed());
    }

    #[test]
    fn nan_matches_only_nan() {
        assert!(compare(&[f32::NAN, f32::INFINITY], &[f32::NAN, f32::INFINITY], 0.0).passed());
        assert!(!compare(&[f32::NAN], &[0.0], 1e9).passed());
        assert!(!compare(&[1.0], &[f32::NEG_INFINITY], 1e9).passed());
        assert!(!compare(&[1.0], &[1.0, 2.0], 1e9).passed());
    }
}
