//! The report's log–log chart of time against sequence length, drawn by plotters into an SVG.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Error = Box<dyn std::error::Error>;

/// How a line is drawn: one style per path, so that paths stay apart within a colour.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
    Dotted,
    DashDotted,
}

impl Stroke {
    /// Dash and gap lengths in pixels; the dash-dotted line adds a dot in each gap.
    fn pattern(self) -> (u32, u32) {
        match self {
            // One dash longer than any legend sample: a solid line there.
            Stroke::Solid => (1000, 1),
            Stroke::Dashed => (7, 5),
            Stroke::Dotted => (2, 4),
            Stroke::DashDotted => (9, 7),
        }
    }
}

/// One line of the chart.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// Solid series get filled markers, the others hollow ones, so that they stay apart where
    /// the lines cross.
    pub stroke: Stroke,
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
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

const SIZE: (u32, u32) = (960, 600);
/// The header (title and subtitle) above the plot, and the legend right of it.
const HEADER_HEIGHT: u32 = 70;
const LEGEND_WIDTH: u32 = 220;
const FONT: &str = "sans-serif";

/// The chart as an SVG document.
pub fn render(chart: &Chart) -> Result<String, Error> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (header, body) = root.split_vertically(HEADER_HEIGHT);
        let middle = SIZE.0 as i32 / 2;
        header.draw(&Text::new(chart.title.as_str(), (middle, 24), centred(22)))?;
        header.draw(&Text::new(
            chart.subtitle.as_str(),
            (middle, 52),
            centred(15),
        ))?;
        let points: Vec<(f64, f64)> = chart
            .series
            .iter()
            .flat_map(|s| positive(&s.points))
            .collect();
        if points.is_empty() {
            body.draw(&Text::new("no data", (middle, 250), centred(18)))?;
        } else {
            // plotters clips a chart's legend to its plot: the legend gets its own area.
            let (plot, legend) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
            draw_plot(&plot, chart, &points)?;
            draw_legend(&legend, &chart.series)?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn centred(size: u32) -> TextStyle<'static> {
    (FONT, size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

fn draw_plot(
    area: &DrawingArea<SVGBackend, Shift>,
    chart: &Chart,
    points: &[(f64, f64)],
) -> Result<(), Error> {
    // The x axis spans the data with a margin and has a tick at every measured length; the y
    // axis spans whole decades around the data, labelled, with faint lines at 2–9 times each.
    let (x_min, x_max) = extent(points.iter().map(|p| p.0));
    let margin = 10f64.powf(((x_max / x_min).log10() * 0.05).max(0.1));
    let mut lengths: Vec<f64> = points.iter().map(|p| p.0).collect();
    lengths.sort_by(f64::total_cmp);
    lengths.dedup();
    let (y_min, y_max) = extent(points.iter().map(|p| p.1));
    let lo = y_min.log10().floor() as i32;
    let hi = (y_max.log10().ceil() as i32).max(lo + 1);
    let decades: Vec<f64> = (lo..=hi).map(|d| 10f64.powi(d)).collect();
    let multiples: Vec<f64> = decades[..decades.len() - 1]
        .iter()
        .flat_map(|&decade| (2..=9).map(move |m| decade * f64::from(m)))
        .collect();

    let mut plot = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x_min / margin..x_max * margin)
                .log_scale()
                .with_key_points(lengths),
            (decades[0]..decades[decades.len() - 1])
                .log_scale()
                .with_key_points(decades.clone())
                .with_light_points(multiples),
        )?;
    plot.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&|x| number(*x))
        .y_label_formatter(&|y| number(*y))
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 15))
        .draw()?;

    for series in &chart.series {
        let points = positive(&series.points);
        let (color, stroke) = (series.color, series.stroke);
        let style = color.stroke_width(2);
        let (dash, gap) = stroke.pattern();
        match stroke {
            Stroke::Solid => plot.draw_series(LineSeries::new(points.clone(), style))?,
            _ => plot.draw_series(DashedLineSeries::new(points.clone(), dash, gap, style))?,
        };
        if stroke == Stroke::DashDotted {
            // A dot in the middle of each gap.
            let dot = move |at| Circle::new(at, 1, color.filled());
            let first = dash + gap / 2;
            plot.draw_series(DottedLineSeries::new(
                points.clone(),
                first,
                dash + gap,
                dot,
            ))?;
        }
        let fill = series.marker_fill();
        plot.draw_series(points.into_iter().map(|p| {
            EmptyElement::at(p)
                + Circle::new((0, 0), 4, fill.filled())
                + Circle::new((0, 0), 4, style)
        }))?;
    }
    Ok(())
}

/// One row per drawn series: a short stretch of its line with a marker on it, and its label.
fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, series: &[Series]) -> Result<(), Error> {
    let drawn = series.iter().filter(|s| !positive(&s.points).is_empty());
    for (row, series) in drawn.enumerate() {
        let y = 20 + 24 * row as i32;
        let style = series.color.stroke_width(2);
        let (dash, gap) = series.stroke.pattern();
        area.draw(&DashedPathElement::new([(5, y), (41, y)], dash, gap, style))?;
        if series.stroke == Stroke::DashDotted {
            let dot = (5 + (dash + gap / 2) as i32, y);
            area.draw(&Circle::new(dot, 1, series.color.filled()))?;
        }
        area.draw(&Circle::new((23, y), 4, series.marker_fill().filled()))?;
        area.draw(&Circle::new((23, y), 4, style))?;
        let label = (FONT, 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(series.label.as_str(), (50, y), label))?;
    }
    Ok(())
}

impl Series {
    /// Solid series get filled markers, the others hollow ones (white inside).
    fn marker_fill(&self) -> RGBColor {
        match self.stroke {
            Stroke::Solid => self.color,
            _ => WHITE,
        }
    }
}

/// The points both log axes can show.
fn positive(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x > 0.0 && y > 0.0)
        .collect()
}

fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, color: RGBColor, stroke: Stroke, scale: f64) -> Series {
        Series {
            label: label.into(),
            color,
            stroke,
            points: [16.0, 64.0, 256.0, 1024.0]
                .into_iter()
                .map(|t| (t, scale * t / 16.0))
                .collect(),
        }
    }

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "nn.GRU forward".into(),
            subtitle: "some adapter; gpu solid".into(),
            x_label: "sequence length T (log scale)".into(),
            y_label: "ms (log scale)".into(),
            series,
        }
    }

    #[test]
    fn every_path_and_label_is_drawn() {
        let svg = render(&chart(vec![
            series("gpu H=64 N=1", PALETTE[0], Stroke::Solid, 0.05),
            series("cpu H=64 N=1", PALETTE[0], Stroke::Dashed, 0.5),
            series("torch H=64 N=1", PALETTE[1], Stroke::Dotted, 0.2),
            series("ort H=64 N=1", PALETTE[1], Stroke::DashDotted, 0.1),
            // Nothing a log axis can show: left out of the plot and the legend.
            Series {
                label: "empty".into(),
                color: PALETTE[2],
                stroke: Stroke::Solid,
                points: vec![(0.0, 1.0)],
            },
        ]))
        .expect("rendered");
        for text in [
            "nn.GRU forward",
            "some adapter; gpu solid",
            "sequence length T (log scale)",
            "ms (log scale)",
            "gpu H=64 N=1",
            "ort H=64 N=1",
            ">\n1024\n<",
            ">\n0.01\n<",
        ] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(!svg.contains("empty"));
    }

    #[test]
    fn no_points_no_plot() {
        let svg = render(&chart(Vec::new())).expect("rendered");
        assert!(svg.contains("no data") && svg.contains("nn.GRU forward"));
    }

    #[test]
    fn axis_numbers() {
        assert_eq!(number(4096.0), "4096");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(0.002), "0.002");
    }
}
