//! The report's text table, the fits table and the two CSV files.

use std::fmt::Write as _;
use std::path::Path as FilePath;

use crate::baselines::BaselineTimes;
use crate::fit::LinearFit;
use crate::measure::{Path, Timing, Workload};
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
    /// `--backward`: bytes of GPU memory the training workspace of (T, N) takes.
    pub workspace: Option<u64>,
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

/// The legend of `--backward`'s table.
pub const TRAINING_LEGEND: &str = "\
Times in ms. gpu ms: median wall time of a GpuTrainer training step: forward_train (upload,
the forward keeping what the backward needs, readback of output and h_n), then backward
(upload of d output = ones, the backward, readback of d input and d h0; the parameters'
gradients accumulate on the GPU); fwd ms, bwd ms: the medians of those two parts; workspace:
GPU memory of the training workspace of (T, N), GpuTrainer::workspace_bytes (one time
chunk's where the sequence trains in chunks: see the notes); cpu ms: the CpuTrainer
reference (plain f64-accumulating loops); speedup = cpu ms / gpu ms.";

/// Added to `--backward`'s legend with `--torch`.
pub const TRAINING_LIVE_LEGEND: &str = "\
torch ms: PyTorch's forward + y.sum().backward() of the same model, this run; torch/gpu =
torch ms / gpu ms: above 1×, the GPU path is faster.";

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

/// `--backward`'s columns.
const TRAINING_COLUMNS: [(&str, usize); 11] = [
    ("config", 14),
    ("T", 6),
    ("gpu ms", 10),
    ("fwd ms", 10),
    ("bwd ms", 10),
    ("µs/step", 9),
    ("workspace", 12),
    ("cpu ms", 10),
    ("speedup", 9),
    // Only with `--torch` (`live`): the stored baselines are forwards.
    ("torch ms", 10),
    ("torch/gpu", 10),
];

/// The columns shown: the ratios only with `--torch`; `--backward`'s torch columns only with
/// `--torch`.
fn columns(live: bool, workload: Workload) -> &'static [(&'static str, usize)] {
    match workload {
        Workload::Forward => &COLUMNS[..if live { 13 } else { 11 }],
        Workload::Training => &TRAINING_COLUMNS[..if live { 11 } else { 9 }],
    }
}

pub fn header(live: bool, workload: Workload) -> String {
    let mut line = String::new();
    for (i, (name, width)) in columns(live, workload).iter().enumerate() {
        push_cell(&mut line, i, name, *width);
    }
    line
}

/// One row of the table; `live`: the torch and ort columns are this run's (`--torch`).
pub fn format_row(row: &Row, live: bool, workload: Workload) -> String {
    let cells = match workload {
        Workload::Forward => forward_cells(row, live),
        Workload::Training => training_cells(row),
    };
    let mut line = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(columns(live, workload)).enumerate() {
        push_cell(&mut line, i, cell, *width);
    }
    line
}

fn forward_cells(row: &Row, live: bool) -> Vec<String> {
    let gpu_ms = row.gpu.map(|t| millis(t.median));
    let exec_ms = row.gpu.and_then(|t| t.gpu).map(millis);
    let cpu_ms = row.cpu.map(|t| millis(t.median));
    vec![
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
    ]
}

/// `--backward`'s cells; the torch ones are dropped by `columns` without `--torch`.
fn training_cells(row: &Row) -> Vec<String> {
    let gpu_ms = row.gpu.map(|t| millis(t.median));
    let parts = row.gpu.and_then(|t| t.parts);
    let cpu_ms = row.cpu.map(|t| millis(t.median));
    let torch_ms = row.torch.map(|t| millis(t.median));
    vec![
        row.shape.label(),
        row.seq_len.to_string(),
        optional(gpu_ms),
        optional(parts.map(|(forward, _)| millis(forward))),
        optional(parts.map(|(_, backward)| millis(backward))),
        optional(gpu_ms.map(|ms| ms * 1e3 / row.seq_len as f64)),
        row.workspace.map_or("-".into(), bytes),
        optional(cpu_ms),
        ratio(cpu_ms, gpu_ms),
        optional(torch_ms),
        ratio(torch_ms, gpu_ms),
    ]
}

/// `60.8 KiB`, `12.3 MiB`, `1.50 GiB`.
pub fn bytes(bytes: u64) -> String {
    let (scale, unit) = match bytes {
        ..0x10_0000 => (1u64 << 10, "KiB"),
        0x10_0000..0x4000_0000 => (1 << 20, "MiB"),
        _ => (1 << 30, "GiB"),
    };
    format!("{} {unit}", significant(bytes as f64 / scale as f64))
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

/// `--backward`'s rows: one line per configuration, length and path measured (gpu, cpu, and
/// torch with `--torch`); `median_ms` is a training step's, `forward_ms` and `backward_ms`
/// its parts (ours), `workspace_bytes` the GPU training workspace's size (gpu lines).
pub fn write_training_csv(file: &FilePath, rows: &[Row]) -> std::io::Result<()> {
    let mut csv = String::from(
        "path,hidden,input,batch,layers,directions,seq_len,median_ms,forward_ms,backward_ms,\
         us_per_step,workspace_bytes,runs,cell\n",
    );
    let cell = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.6}"));
    for row in rows {
        let shape = row.shape;
        for path in Path::ALL {
            let Some(timing) = row.timing(path) else {
                continue;
            };
            let ms = millis(timing.median);
            let parts = timing.parts;
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{ms:.6},{},{},{:.4},{},{},{}",
                path.name(),
                shape.hidden,
                shape.input(),
                shape.batch,
                Shape::LAYERS,
                Shape::DIRECTIONS,
                row.seq_len,
                cell(parts.map(|(forward, _)| millis(forward))),
                cell(parts.map(|(_, backward)| millis(backward))),
                ms * 1e3 / row.seq_len as f64,
                match (path, row.workspace) {
                    (Path::Gpu, Some(bytes)) => bytes.to_string(),
                    _ => String::new(),
                },
                timing.runs,
                shape.cell.name(),
            );
        }
    }
    std::fs::write(file, csv)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shape::Cell;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(62_240), "60.8 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn training_rows_line_up_with_their_header() {
        let timing = |ms: u64, parts| Timing {
            median: Duration::from_millis(ms),
            gpu: None,
            parts,
            runs: 5,
            warm_up: None,
        };
        let ms = Duration::from_millis;
        let row = Row {
            shape: Shape {
                cell: Cell::Lstm,
                hidden: 256,
                batch: 16,
            },
            seq_len: 1024,
            gpu: Some(timing(900, Some((ms(300), ms(600))))),
            cpu: None,
            torch: Some(timing(450, None)),
            ort: None,
            baseline: BaselineTimes::default(),
            workspace: Some(200 << 20),
        };
        for live in [false, true] {
            let line = format_row(&row, live, Workload::Training);
            let header = header(live, Workload::Training);
            assert_eq!(
                line.chars().count(),
                header.chars().count(),
                "{header}\n{line}"
            );
            assert!(line.contains(" 300 ") && line.contains(" 600 "), "{line}");
            assert!(line.contains("200 MiB"), "{line}");
            assert_eq!(line.contains("0.500×"), live, "{line}");
        }
    }
}
