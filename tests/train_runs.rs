//! The tutorials' training runs, replayed: `tests/fixtures/torch_train/runs` (README beside
//! them) from their `init.*` on the same data, on the CPU and the GPU, within the README's
//! bounds: the parameters after 1..10 steps (≤ lr/100 for Adam, ≤ 1e-5 for SGD), the first 100
//! losses within 1e-4 relative, the first 1000 within 1e-3, the mean of the last 100 within 10 %.
//! The replay itself is `support/replay.rs` (the parity tool runs it too).

#[path = "support/replay.rs"]
mod replay;

use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::testing::gpu;

fn run_case(name: &str, gpu_iterations: usize) {
    let path = format!("tests/fixtures/torch_train/runs/{name}.safetensors");
    let case = ReferenceCase::load(path).unwrap();
    let ctx = gpu(name);
    match replay::replay_train_run(name, &case, ctx.as_ref(), gpu_iterations) {
        Ok(lines) => lines.iter().for_each(|l| eprintln!("{name} {l}")),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn sine_rnn_adam() {
    run_case("sine_rnn_adam", 6000);
}

#[test]
fn sine_lstm_adam() {
    run_case("sine_lstm_adam", 600);
}

#[test]
fn charlm_rnn_sgd_clip() {
    run_case("charlm_rnn_sgd_clip", 300);
}

#[test]
fn charlm_gru_adam_clip() {
    run_case("charlm_gru_adam_clip", 300);
}

#[test]
fn classify_gru_bidir_packed() {
    run_case("classify_gru_bidir_packed", 200);
}
