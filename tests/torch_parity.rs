//! Every `nn.RNN` and `nn.RNNCell` case made by PyTorch (tests/fixtures, see
//! README.torch_rnn.md), variable-length (packed) ones included, must match: output and h_n
//! (h after every step for cells) within 1e-5 max abs error on the CPU path, 1e-4 on the GPU.

use std::path::PathBuf;

use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{CpuRnn, GpuRnn, Rnn, RnnCell, testing};

const CPU_TOLERANCE: f64 = 1e-5;
const GPU_TOLERANCE: f64 = 1e-4;

/// Every fixture of one of `kinds`, by file name.
fn cases(kinds: &[&str]) -> Vec<(String, ReferenceCase)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, ReferenceCase::load(&path).unwrap())
        })
        .filter(|(_, case)| kinds.contains(&case.kind()))
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// The nn.RNN cases: the fixture README lists 14 plain (one unbatched) and 3 packed ones.
fn rnn_cases() -> Vec<(String, ReferenceCase)> {
    let found = cases(&["rnn", "rnn_packed"]);
    assert_eq!(found.len(), 17, "rnn fixtures went missing");
    found
}

/// Runs every case through the model `build` makes and fails listing every case off tolerance.
fn check_all<M: Rnn>(path: &str, tolerance: f64, build: impl Fn(&ReferenceCase) -> M) {
    let mut failures = Vec::new();
    let (mut worst_output, mut worst_h_n) = (0.0f64, 0.0f64);
    for (name, case) in rnn_cases() {
        let check = case.check_rnn(&build(&case), tolerance).unwrap();
        println!(
            "{path} {name:<28} output {:.2e}  h_n {:.2e}",
            check.output.max_abs, check.h_n.max_abs
        );
        worst_output = worst_output.max(check.output.max_abs);
        worst_h_n = worst_h_n.max(check.h_n.max_abs);
        if !check.passed() {
            failures.push(format!(
                "{name}: output {}; h_n {}",
                check.output, check.h_n
            ));
        }
    }
    println!(
        "{path} worst: output {worst_output:.2e}, h_n {worst_h_n:.2e} (tolerance {tolerance:e})"
    );
    assert!(
        failures.is_empty(),
        "{path} cases off tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn cpu_path_matches_pytorch() {
    check_all("cpu", CPU_TOLERANCE, |case| {
        let config = case.rnn_config().unwrap();
        let weights = case.rnn_weights(&config).unwrap();
        CpuRnn::new(config, weights).unwrap()
    });
}

#[test]
fn gpu_path_matches_pytorch() {
    let Some(ctx) = testing::gpu("gpu_path_matches_pytorch") else {
        return;
    };
    check_all("gpu", GPU_TOLERANCE, |case| {
        let config = case.rnn_config().unwrap();
        let weights = case.rnn_weights(&config).unwrap();
        GpuRnn::new(&ctx, config, &weights).unwrap()
    });
}

#[test]
fn cpu_cell_matches_pytorch() {
    let cells = cases(&["rnn_cell"]);
    assert!(!cells.is_empty(), "no rnn_cell fixture");
    for (name, case) in cells {
        let config = case.rnn_cell_config().unwrap();
        let cell = RnnCell::cpu(config.clone(), case.rnn_cell_weights(&config).unwrap()).unwrap();
        let check = case.check_rnn_cell(&cell, CPU_TOLERANCE).unwrap();
        println!("cpu {name}: h_steps {check}");
        assert!(check.passed(), "{name}: {check}");
    }
}

#[test]
fn gpu_cell_matches_pytorch() {
    let Some(ctx) = testing::gpu("gpu_cell_matches_pytorch") else {
        return;
    };
    let cells = cases(&["rnn_cell"]);
    assert!(!cells.is_empty(), "no rnn_cell fixture");
    for (name, case) in cells {
        let config = case.rnn_cell_config().unwrap();
        let weights = case.rnn_cell_weights(&config).unwrap();
        let cell = RnnCell::gpu(&ctx, config, weights).unwrap();
        let check = case.check_rnn_cell(&cell, GPU_TOLERANCE).unwrap();
        println!("gpu {name}: h_steps {check}");
        assert!(check.passed(), "{name}: {check}");
    }
}

#[test]
fn gpu_streams_match_pytorch() {
    let Some(ctx) = testing::gpu("gpu_streams_match_pytorch") else {
        return;
    };
    let mut streamed = 0;
    for (name, case) in rnn_cases() {
        let config = case.rnn_config().unwrap();
        if config.bidirectional || case.lengths().unwrap().is_some() {
            continue;
        }
        let weights = case.rnn_weights(&config).unwrap();
        let model = GpuRnn::new(&ctx, config, &weights).unwrap();
        for chunk in [1, 2, 7] {
            let check = case
                .check_rnn_streamed(&model, chunk, GPU_TOLERANCE)
                .unwrap();
            println!(
                "stream {name:<28} chunk {chunk}: output {:.2e}  h_n {:.2e}",
                check.output.max_abs, check.h_n.max_abs
            );
            assert!(
                check.passed(),
                "{name}, chunks of {chunk}: output {}; h_n {}",
                check.output,
                check.h_n
            );
        }
        streamed += 1;
    }
    assert!(
        streamed >= 10,
        "only {streamed} unidirectional cases streamed"
    );
}
