//! PyTorch and onnxruntime CPU timings of the same `nn.RNN` forwards, measured once on the
//! reference machine (see `benches/baselines/`), built into the program so that the report can
//! put them next to the GPU's numbers on any machine.

use crate::shape::Cell;

/// Where and how the baselines were measured, printed with them.
pub const PROVENANCE: &str = "\
torch / ort: PyTorch 2.15 and onnxruntime 1.32 nn.RNN on the CPU, 2 threads, from
benches/baselines/: measured in an earlier run on a 2-vCPU AMD EPYC (Zen 4) KVM machine of
the type this crate is developed on, not by this program (and not on your machine).";

/// Printed instead of [`PROVENANCE`] for the cells the stored files have no rows for.
pub fn missing(cell: Cell) -> String {
    format!(
        "torch / ort: benches/baselines/ holds nn.RNN timings only, none for {}: \
         --torch PYTHON times PyTorch in this run.",
        cell.torch_name()
    )
}

const TORCH_CSV: &str = include_str!("../../benches/baselines/torch_cpu_rnn.csv");
const ORT_CSV: &str = include_str!("../../benches/baselines/onnxruntime_cpu_rnn.csv");

/// The baseline threads count the report compares against (the requested configuration;
/// 1-thread rows are also in the files).
const THREADS: u32 = 2;

/// A baseline's median for one (H, I, N, T).
#[derive(Clone, Copy, Debug, Default)]
pub struct BaselineTimes {
    pub torch_ms: Option<f64>,
    pub ort_ms: Option<f64>,
}

#[derive(Debug)]
struct Row {
    hidden: usize,
    input: usize,
    batch: usize,
    seq_len: usize,
    threads: u32,
    median_ms: f64,
}

/// Both tables, parsed.
pub struct Baselines {
    torch: Vec<Row>,
    ort: Vec<Row>,
}

impl Baselines {
    pub fn load() -> Self {
        Baselines {
            torch: parse(TORCH_CSV),
            ort: parse(ORT_CSV),
        }
    }

    /// The stored times of one point; none for LSTM and GRU (the files are nn.RNN's).
    pub fn lookup(
        &self,
        cell: Cell,
        hidden: usize,
        input: usize,
        batch: usize,
        seq_len: usize,
    ) -> BaselineTimes {
        if cell != Cell::Rnn {
            return BaselineTimes::default();
        }
        let find = |rows: &[Row]| {
            rows.iter()
                .find(|r| {
                    (r.hidden, r.input, r.batch, r.seq_len, r.threads)
                        == (hidden, input, batch, seq_len, THREADS)
                })
                .map(|r| r.median_ms)
        };
        BaselineTimes {
            torch_ms: find(&self.torch),
            ort_ms: find(&self.ort),
        }
    }
}

/// The rows of a baseline CSV, columns found by their header names. The files are this
/// repository's own, so a malformed one is a bug: it panics with the line.
fn parse(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("baseline CSV has no column `{name}`"))
    };
    let [h, i, b, t, threads, median] = ["H", "I", "B", "T", "threads", "median_ms"].map(column);
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let number = |index: usize| -> f64 {
                fields[index]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad number in baseline row `{line}`"))
            };
            Row {
                hidden: number(h) as usize,
                input: number(i) as usize,
                batch: number(b) as usize,
                seq_len: number(t) as usize,
                threads: number(threads) as u32,
                median_ms: number(median),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_two_thread_rows() {
        let times = Baselines::load().lookup(Cell::Rnn, 256, 256, 16, 1024);
        assert_eq!(times.torch_ms, Some(56.9866));
        assert_eq!(times.ort_ms, Some(93.8926));
        assert!(
            Baselines::load()
                .lookup(Cell::Rnn, 256, 256, 16, 4096)
                .torch_ms
                .is_none()
        );
        // The stored rows are nn.RNN's: an LSTM or GRU of the same sizes has none.
        for cell in [Cell::Lstm, Cell::Gru] {
            let times = Baselines::load().lookup(cell, 256, 256, 16, 1024);
            assert_eq!((times.torch_ms, times.ort_ms), (None, None));
        }
    }
}
