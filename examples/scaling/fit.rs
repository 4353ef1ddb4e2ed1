//! Least-squares straight line through (T, time) points: time ≈ overhead + T · per-step.

/// `y = intercept + slope · x`, and how well it explains the points.
#[derive(Clone, Copy, Debug)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination; `None` with fewer than three points (two points always
    /// fit exactly, so R² would say nothing) or when every y is the same.
    pub r2: Option<f64>,
    pub points: usize,
}

/// The ordinary least-squares fit, or `None` with fewer than two distinct x.
pub fn least_squares(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let total: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let r2 = (points.len() >= 3 && total > 0.0).then(|| 1.0 - residual / total);
    Some(LinearFit {
        slope,
        intercept,
        r2,
        points: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line() {
        let fit = least_squares(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 3.0).abs() < 1e-12);
        assert!((fit.r2.unwrap() - 1.0).abs() < 1e-12);
        assert!(least_squares(&[(1.0, 1.0)]).is_none());
        assert!(
            least_squares(&[(1.0, 1.0), (2.0, 3.0)])
                .unwrap()
                .r2
                .is_none()
        );
    }
}
