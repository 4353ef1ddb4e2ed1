//! A log–log line chart written as plain SVG: the report's only picture, so no plotting crate.

use std::fmt::Write;

/// One line of the chart.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// `stroke-dasharray` of the line (e.g. `"7 5"`); `None`: solid. Dashed series get
    /// hollow markers.
    pub dash: Option<&'static str>,
    /// (x, y), both positive (log axes); others are left out.
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Colours that stay apart from each other, also for most colour-blind readers.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
/// The plot area; the legend goes right of it.
const LEFT: f64 = 90.0;
const RIGHT: f64 = 720.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 525.0;

/// A logarithmic axis mapping [lo, hi] (in log10) onto pixels [from, to].
#[derive(Clone, Copy)]
struct LogAxis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl LogAxis {
    fn pixel(self, value: f64) -> f64 {
        self.from + (value.log10() - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }
}

pub fn render(chart: &Chart) -> String {
    let points: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|&(x, y)| x > 0.0 && y > 0.0)
        .collect();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    text(&mut svg, WIDTH / 2.0, 30.0, 18, "middle", &chart.title, "");
    text(
        &mut svg,
        WIDTH / 2.0,
        54.0,
        12,
        "middle",
        &chart.subtitle,
        "",
    );
    if points.is_empty() {
        text(
            &mut svg,
            WIDTH / 2.0,
            HEIGHT / 2.0,
            14,
            "middle",
            "no data",
            "",
        );
    } else {
        let (x_axis, y_axis) = axes(&points);
        draw_x_axis(&mut svg, x_axis, &points, &chart.x_label);
        draw_y_axis(&mut svg, y_axis, &chart.y_label);
        for series in &chart.series {
            draw_series(&mut svg, series, x_axis, y_axis);
        }
        draw_legend(&mut svg, &chart.series);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The x axis spans the data with a margin; the y axis whole decades around it.
fn axes(points: &[(f64, f64)]) -> (LogAxis, LogAxis) {
    let (x_min, x_max) = extent(points.iter().map(|p| p.0.log10()));
    let margin = ((x_max - x_min) * 0.05).max(0.1);
    let (y_min, y_max) = extent(points.iter().map(|p| p.1.log10()));
    let (y_lo, mut y_hi) = (y_min.floor(), y_max.ceil());
    if y_hi <= y_lo {
        y_hi = y_lo + 1.0;
    }
    (
        LogAxis {
            lo: x_min - margin,
            hi: x_max + margin,
            from: LEFT,
            to: RIGHT,
        },
        LogAxis {
            lo: y_lo,
            hi: y_hi,
            from: BOTTOM,
            to: TOP,
        },
    )
}

fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Ticks at the measured x values (the sequence lengths), leaving out any that would crowd
/// the previous label.
fn draw_x_axis(svg: &mut String, axis: LogAxis, points: &[(f64, f64)], label: &str) {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let mut last_pixel = f64::NEG_INFINITY;
    for x in xs {
        let px = axis.pixel(x);
        if px - last_pixel < 40.0 {
            continue;
        }
        last_pixel = px;
        line(svg, px, TOP, px, BOTTOM, "#e0e0e0", 1.0);
        line(svg, px, BOTTOM, px, BOTTOM + 5.0, "#333", 1.0);
        text(svg, px, BOTTOM + 20.0, 12, "middle", &number(x), "");
    }
    line(svg, LEFT, BOTTOM, RIGHT, BOTTOM, "#333", 1.0);
    text(
        svg,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 45.0,
        14,
        "middle",
        label,
        "",
    );
}

/// Labelled gridlines at every decade, faint ones at 2–9 times each.
fn draw_y_axis(svg: &mut String, axis: LogAxis, label: &str) {
    let (lo, hi) = (axis.lo as i32, axis.hi as i32);
    for decade in lo..=hi {
        let value = 10f64.powi(decade);
        let py = axis.pixel(value);
        line(svg, LEFT, py, RIGHT, py, "#d0d0d0", 1.0);
        line(svg, LEFT - 5.0, py, LEFT, py, "#333", 1.0);
        text(svg, LEFT - 9.0, py + 4.0, 12, "end", &number(value), "");
        if decade < hi {
            for multiple in 2..=9 {
                let py = axis.pixel(value * f64::from(multiple));
                line(svg, LEFT, py, RIGHT, py, "#f0f0f0", 1.0);
            }
        }
    }
    line(svg, LEFT, TOP, LEFT, BOTTOM, "#333", 1.0);
    let (x, y) = (22.0, (TOP + BOTTOM) / 2.0);
    let rotate = format!(r#" transform="rotate(-90 {x} {y})""#);
    text(svg, x, y, 14, "middle", label, &rotate);
}

fn draw_series(svg: &mut String, series: &Series, x_axis: LogAxis, y_axis: LogAxis) {
    let pixels: Vec<(f64, f64)> = series
        .points
        .iter()
        .filter(|&&(x, y)| x > 0.0 && y > 0.0)
        .map(|&(x, y)| (x_axis.pixel(x), y_axis.pixel(y)))
        .collect();
    let dash = dash_attribute(series);
    let path: Vec<String> = pixels
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
        path.join(" "),
        series.color
    );
    // Hollow markers for dashed series, so they stay apart where the lines cross.
    let fill = if series.dash.is_some() {
        "white"
    } else {
        series.color
    };
    for ((px, py), (x, y)) in pixels.iter().zip(&series.points) {
        let _ = writeln!(
            svg,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{fill}" stroke="{}" stroke-width="1.5"><title>{}: T={} {} ms</title></circle>"#,
            series.color,
            escape(&series.label),
            number(*x),
            number(*y)
        );
    }
}

fn draw_legend(svg: &mut String, series: &[Series]) {
    let x = RIGHT + 25.0;
    for (i, series) in series.iter().filter(|s| !s.points.is_empty()).enumerate() {
        let y = TOP + 10.0 + 24.0 * i as f64;
        let dash = dash_attribute(series);
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/>"#,
            x + 36.0,
            series.color
        );
        let fill = if series.dash.is_some() {
            "white"
        } else {
            series.color
        };
        let _ = writeln!(
            svg,
            r#"<circle cx="{}" cy="{y}" r="4" fill="{fill}" stroke="{}" stroke-width="1.5"/>"#,
            x + 18.0,
            series.color
        );
        text(svg, x + 46.0, y + 4.0, 13, "start", &series.label, "");
    }
}

fn dash_attribute(series: &Series) -> String {
    series.dash.map_or(String::new(), |dash| {
        format!(r#" stroke-dasharray="{dash}""#)
    })
}

fn line(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, color: &str, width: f64) {
    let _ = writeln!(
        svg,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="{width}"/>"#
    );
}

fn text(svg: &mut String, x: f64, y: f64, size: u32, anchor: &str, content: &str, extra: &str) {
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" fill="#222"{extra}>{}</text>"##,
        escape(content)
    );
}

/// Axis numbers: whole numbers as they are, small ones with the digits they need.
fn number(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-value.log10()).ceil() as usize + 2;
        let text = format!("{value:.decimals$}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
