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
    pub baseline: BaselineTimes,
}

impl Row {
    pub fn timing(&self, path: Path) -> Option<&Timing> {
        match path {
            Path::Gpu => self.gpu.as_ref(),
            Path::Cpu => self.cpu.as_ref(),
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
gpu exec: the GPU's own time (timestamp queries); overhead = gpu ms - gpu exec (host and
submit); GFLOP/s of the GPU forward; cpu ms: the CPU reference path (plain f64-accumulating
loops, not a tuned CPU implementation); speedup = cpu ms / gpu ms; torch, ort: see below.";

const COLUMNS: [(&str, usize); 11] = [
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
];

pub fn header() -> String {
    let mut line = String::new();
    for (i, (name, width)) in COLUMNS.iter().enumerate() {
        push_cell(&mut line, i, name, *width);
    }
    line
}

pub fn format_row(row: &Row) -> String {
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
        cpu_ms.zip(gpu_ms).map_or("-".into(), |(cpu, gpu)| {
            format!("{}×", significant(cpu / gpu))
        }),
        optional(row.baseline.torch_ms),
        optional(row.baseline.ort_ms),
    ];
    let mut line = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        push_cell(&mut line, i, cell, width);
    }
    line
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

pub fn write_scaling_csv(file: &FilePath, rows: &[Row]) -> std::io::Result<()> {
    let mut csv = String::from(
        "path,hidden,input,batch,layers,directions,seq_len,median_ms,us_per_step,gflops,\
         gpu_ms,runs,torch_ms,ort_ms\n",
    );
    for row in rows {
        for path in [Path::Gpu, Path::Cpu] {
            if let Some(timing) = row.timing(path) {
                push_csv_row(&mut csv, row, path, timing);
            }
        }
    }
    std::fs::write(file, csv)
}

fn push_csv_row(csv: &mut String, row: &Row, path: Path, timing: &Timing) {
    let config = row.shape.config();
    let ms = millis(timing.median);
    let cell = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.6}"));
    let _ = writeln!(
        csv,
        "{},{},{},{},{},{},{},{ms:.6},{:.4},{:.4},{},{},{},{}",
        path.name(),
        config.hidden_size,
        config.input_size,
        row.shape.batch,
        config.num_layers,
        config.num_directions(),
        row.seq_len,
        ms * 1e3 / row.seq_len as f64,
        gflops(row.shape, row.seq_len, ms),
        cell(timing.gpu.map(millis)),
        timing.runs,
        cell(row.baseline.torch_ms),
        cell(row.baseline.ort_ms),
    );
}

pub fn write_fit_csv(file: &FilePath, fits: &[FitRow]) -> std::io::Result<()> {
    let mut csv = String::from("path,hidden,batch,us_per_step,overhead_ms,r2,points\n");
    for row in fits {
        let _ = writeln!(
            csv,
            "{},{},{},{:.4},{:.6},{},{}",
            row.path.name(),
            row.shape.hidden,
            row.shape.batch,
            row.fit.slope * 1e3,
            row.fit.intercept,
            row.fit.r2.map_or(String::new(), |r2| format!("{r2:.6}")),
            row.fit.points,
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
