//! A line plot on linear axes, drawn by plotters into an SVG: enough for the examples' figures.

use plotters::prelude::*;

/// One line of a plot: a label, a colour (`#rrggbb`) and (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Draw dots at the points instead of a line.
    pub dots: bool,
}

const SIZE: (u32, u32) = (900, 480);
const FONT: &str = "sans-serif";

/// Renders `series` on linear axes into an SVG document. An error is plotters' (a bad colour
/// among them), as an `io::Error` since the document is meant for a file.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> std::io::Result<String> {
    let mut svg = String::new();
    draw(&mut svg, title, x_label, y_label, series)
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (x0, x1) = bounds(all().map(|p| p.0));
    let (y0, y1) = bounds(all().map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(5)
        .y_labels(5)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 15))
        .draw()?;
    for s in series {
        let colour = parse_colour(s.colour)?;
        let drawn = if s.dots {
            let dot = |p| Circle::new(p, 3, colour.filled());
            chart.draw_series(s.points.iter().copied().map(dot))?
        } else {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?
        };
        // The legend's sample: a dot or a short stretch of line, as in the plot.
        let dots = s.dots;
        drawn.label(s.label).legend(move |(x, y)| {
            let (from, to) = if dots { (7, 7) } else { (0, 16) };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(from, 0), (to, 0)], colour.stroke_width(2))
                + Circle::new((7, 0), if dots { 3 } else { 0 }, colour.filled())
        });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `#rrggbb` as plotters' colour.
fn parse_colour(text: &str) -> Result<RGBColor, String> {
    let hex = text.strip_prefix('#').filter(|hex| hex.len() == 6);
    let channel = |i: usize| hex.and_then(|hex| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok());
    match (channel(0), channel(2), channel(4)) {
        (Some(r), Some(g), Some(b)) => Ok(RGBColor(r, g, b)),
        _ => Err(format!("colour `{text}` is not #rrggbb")),
    }
}

/// The range of `values`, padded so that a flat series still gets a visible band.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}
