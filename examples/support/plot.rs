//! A tiny SVG line plot, enough for the examples' figures (no plotting crate needed).

use std::fmt::Write;

/// One line of a plot: a label, a colour and (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Draw dots at the points instead of a line.
    pub dots: bool,
}

/// Renders `series` on linear axes into an SVG document.
pub fn line_plot(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let (width, height, margin) = (900.0, 480.0, 60.0);
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (x0, x1) = bounds(all().map(|p| p.0));
    let (y0, y1) = bounds(all().map(|p| p.1));
    let px = |x: f64| margin + (x - x0) / (x1 - x0) * (width - 2.0 * margin);
    let py = |y: f64| height - margin - (y - y0) / (y1 - y0) * (height - 2.0 * margin);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{title}</text>"#,
        width / 2.0
    );
    // Axes with five ticks each.
    let _ = writeln!(
        svg,
        r#"<path d="M{m},{t} V{b} H{r}" stroke="black" fill="none"/>"#,
        m = margin,
        t = margin,
        b = height - margin,
        r = width - margin
    );
    for i in 0..=4 {
        let (x, y) = (
            x0 + (x1 - x0) * i as f64 / 4.0,
            y0 + (y1 - y0) * i as f64 / 4.0,
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x:.3}</text>"#,
            px(x),
            height - margin + 18.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{y:.2}</text>"#,
            margin - 6.0,
            py(y) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        width / 2.0,
        height - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{y_label}</text>"#,
        height / 2.0,
        height / 2.0
    );
    for (k, s) in series.iter().enumerate() {
        if s.dots {
            for &(x, y) in &s.points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                    px(x),
                    py(y),
                    s.colour
                );
            }
        } else {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.join(" "),
                s.colour
            );
        }
        let ly = margin + 8.0 + 18.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{:.1}" width="14" height="4" fill="{}"/>"#,
            width - margin - 230.0,
            ly - 4.0,
            s.colour
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}">{}</text>"#,
            width - margin - 210.0,
            ly + 1.0,
            s.label
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The range of `values`, padded so that a flat series still gets a visible band.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}
