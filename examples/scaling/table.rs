//! The report's text table, the fits table and the two CSV files.

use std::fmt::Write as _;
use std::path::Path as FilePath;

use crate::baselines::BaselineTimes;
use crate::fit::LinearFit;
use crate::measure::{Path, Timing};
use crate::shape::Shape;

/// Everything measured (or looked up) for one configuration and length.
pub struct Row {
    pub shape: Shape,
    pub seq_len: usize,
    pub gpu: Option<Timing>,
    pub cpu: Option<Timing>,
    /// PyTorch and onnxruntime timed in this run (`--torch`).
    pub torch: Option<Timing>,
    pub ort: Option<Timing>,
    /// The stored baselines (`benches/baselines/`), used without `--torch`.
    pub baseline: BaselineTimes,
}

impl Row {
    pub fn timing(&self, path: Path) -> Option<&Timing> {
        match path {
            Path::Gpu => self.gpu.as_ref(),
            Path::Cpu => self.cpu.as_ref(),
            Path::Torch => self.torch.as_ref(),
            Path::Ort => self.ort.as_ref(),
        }
    }

    /// PyTorch's time: this run's with `--torch`, the stored baseline's otherwise.
    fn torch_ms(&self, live: bool) -> Option<f64> {
        match live {
            true => self.torch.map(|t| millis(t.median)),
            false => self.baseline.torch_ms,
        }
    }

    fn ort_ms(&self, live: bool) -> Option<f64> {
        match live {
            true => self.ort.map(|t| millis(t.median)),
            false => self.baseline.ort_ms,
        }
    }
}

/// The fit of one configuration and path.
pub struct FitRow {
    pub shape: Shape,
    pub path: Path,
    pub fit: LinearFit,
}

pub const LEGEND: &str = "\
Times in ms. gpu ms: median wall time of a GPU forward (upload, GPU work, readback);
gpu exec: the GPU's own time, from timestamp queries in profiled forwards run alternately
with the timed ones; overhead = gpu ms - gpu exec (host and submit); GFLOP/s of the GPU forward; cpu ms: the CPU reference path (plain f64-accumulating
loops, not a tuned CPU implementation); speedup = cpu ms / gpu ms; torch, ort: see below.";

/// Added to the legend with `--torch`.
pub const LIVE_LEGEND: &str = "\
torch/gpu, ort/gpu = torch ms / gpu ms and ort ms / gpu ms: above 1×, the GPU path is faster.";

const COLUMNS: [(&str, usize); 13] = [
    ("config", 14),
    ("T", 6),
    ("gpu ms", 10),
    ("µs/step", 9),
    ("GFLOP/s", 9),
    ("gpu exec", 10),
    ("overhead", 9),
    ("cpu ms", 10),
    ("speedup", 9),
    ("torch ms", 10),
    ("ort ms", 9),
    // Only with `--torch` (`live`).
    ("torch/gpu", 10),
    ("ort/gpu", 9),
];

/// The columns shown: the ratios only with `--torch`.
fn columns(live: bool) -> &'static [(&'static str, usize)] {
    &COLUMNS[..if live { 13 } else { 11 }]
}

pub fn header(live: bool) -> String {
    let mut line = String::new();
    for (i, (name, width)) in columns(live).iter().enumerate() {
        push_cell(&mut line, i, name, *width);
    }
    line
}

/// One row of the table; `live`: the torch and ort columns are this run's (`--torch`).
pub fn format_row(row: &Row, live: bool) -> String {
    let gpu_ms = row.gpu.map(|t| millis(t.median));
    let exec_ms = row.gpu.and_then(|t| t.gpu).map(millis);
    let cpu_ms = row.cpu.map(|t| millis(t.median));
    let cells = [
        row.shape.label(),
        row.seq_len.to_string(),
        optional(gpu_ms),
        optional(gpu_ms.map(|ms| ms * 1e3 / row.seq_len as f64)),
        optional(gpu_ms.map(|ms| gflops(row.shape, row.seq_len, ms))),
        optional(exec_ms),
        optional(gpu_ms.zip(exec_ms).map(|(wall, exec)| wall - exec)),
        optional(cpu_ms),
        ratio(cpu_ms, gpu_ms),
        optional(row.torch_ms(live)),
        optional(row.ort_ms(live)),
        ratio(row.torch_ms(live), gpu_ms),
        ratio(row.ort_ms(live), gpu_ms),
    ];
    let mut line = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(columns(live)).enumerate() {
        push_cell(&mut line, i, cell, *width);
    }
    line
}

/// `3.92×`: how many times longer `other` takes than the GPU path.
fn ratio(other_ms: Option<f64>, gpu_ms: Option<f64>) -> String {
    other_ms.zip(gpu_ms).map_or("-".into(), |(other, gpu)| {
        format!("{}×", significant(other / gpu))
    })
}

/// The first column is left-aligned, the numbers right-aligned.
fn push_cell(line: &mut String, index: usize, cell: &str, width: usize) {
    let _ = if index == 0 {
        write!(line, "{cell:<width$}")
    } else {
        write!(line, "{cell:>width$}")
    };
}

pub fn format_fits(fits: &[FitRow]) -> String {
    let mut text = format!(
        "{:<14}{:>5}{:>12}{:>14}{:>8}{:>8}\n",
        "config", "path", "µs/step", "overhead ms", "R²", "points"
    );
    for row in fits {
        let _ = writeln!(
            text,
            "{:<14}{:>5}{:>12}{:>14}{:>8}{:>8}",
            row.shape.label(),
            row.path.name(),
            significant(row.fit.slope * 1e3),
            significant(row.fit.intercept),
            row.fit.r2.map_or("-".into(), |r2| format!("{r2:.4}")),
            row.fit.points,
        );
    }
    text
}

/// One line per configuration, length and path measured (gpu, cpu, and torch and ort with
/// `--torch`). `torch_ms` and `ort_ms` repeat the baselines on every line: this run's with
/// `--torch` (`baselines` = `this run`), else the stored ones (`stored`).
pub fn write_scaling_csv(file: &FilePath, rows: &[Row], live: bool) -> std::io::Result<()> {
    let mut csv = String::from(
        "path,hidden,input,batch,layers,directions,seq_len,median_ms,us_per_step,gflops,\
         gpu_ms,runs,torch_ms,ort_ms,cell,baselines\n",
    );
    for row in rows {
        for path in Path::ALL {
            if let Some(timing) = row.timing(path) {
                push_csv_row(&mut csv, row, path, timing, live);
            }
        }
    }
    std::fs::write(file, csv)
}

fn push_csv_row(csv: &mut String, row: &Row, path: Path, timing: &Timing, live: bool) {
    let shape = row.shape;
    let ms = millis(timing.median);
    let cell = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.6}"));
    let _ = writeln!(
        csv,
        "{},{},{},{},{},{},{},{ms:.6},{:.4},{:.4},{},{},{},{},{},{}",
        path.name(),
        shape.hidden,
        shape.input(),
        shape.batch,
        Shape::LAYERS,
        Shape::DIRECTIONS,
        row.seq_len,
        ms * 1e3 / row.seq_len as f64,
        gflops(shape, row.seq_len, ms),
        cell(timing.gpu.map(millis)),
        timing.runs,
        cell(row.torch_ms(live)),
        cell(row.ort_ms(live)),
        shape.cell.name(),
        if live { "this run" } else { "stored" },
    );
}

pub fn write_fit_csv(file: &FilePath, fits: &[FitRow]) -> std::io::Result<()> {
    let mut csv = String::from("path,hidden,batch,us_per_step,overhead_ms,r2,points,cell\n");
    for row in fits {
        let _ = writeln!(
            csv,
            "{},{},{},{:.4},{:.6},{},{},{}",
            row.path.name(),
            row.shape.hidden,
            row.shape.batch,
            row.fit.slope * 1e3,
            row.fit.intercept,
            row.fit.r2.map_or(String::new(), |r2| format!("{r2:.6}")),
            row.fit.points,
            row.shape.cell.name(),
        );
    }
    std::fs::write(file, csv)
}

pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub fn gflops(shape: Shape, seq_len: usize, ms: f64) -> f64 {
    shape.flops(seq_len) / (ms * 1e-3) / 1e9
}

fn optional(value: Option<f64>) -> String {
    value.map_or("-".into(), significant)
}

/// Three significant digits without an exponent: 0.0213, 1.23, 12.3, 123, 12345.
pub fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}
