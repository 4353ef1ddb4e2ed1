//! Limits: forwards on a device with small buffer limits (as a renderer's device, or a small
//! GPU, might have) must run in time chunks or say they cannot, never fail otherwise; and a
//! forward that outlives the context's timeout fails with `Timeout` and leaves the model
//! usable. Every mode.
//!
//! `FUZZ_SEED=n` replays the fuzz run; `FUZZ_SCALE=k` multiplies its time budget.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use std::time::Duration;

use hostile::{call, fail, fuzz, scaled, variant};
use proptest::prelude::*;
use support::{MODES, Rng, check_output, input_shape, mode_name, no_panic, small_buffer_context};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Recurrence, Rnn, RnnConfig, RnnError, RnnMode,
    RnnWeights, StreamOptions, testing,
};

/// The models of the small-buffer run, in every mode: stacked, and bidirectional batch-first;
/// and a stacked LSTM that projects.
fn small_buffer_models() -> Vec<RnnConfig> {
    let mut configs = Vec::new();
    for mode in MODES {
        configs.extend([
            RnnConfig {
                num_layers: 2,
                ..RnnConfig::new(mode, 3, 8)
            },
            RnnConfig {
                bidirectional: true,
                batch_first: true,
                ..RnnConfig::new(mode, 3, 8)
            },
        ]);
    }
    configs.push(RnnConfig {
        num_layers: 2,
        proj_size: 5,
        ..RnnConfig::lstm(3, 8)
    });
    configs
}

#[test]
fn forwards_on_a_small_buffer_device_chunk_or_refuse() {
    if testing::gpu("forwards_on_a_small_buffer_device_chunk_or_refuse").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    let configs = small_buffer_models();
    let models: Vec<_> = configs
        .iter()
        .map(|c| {
            let w = RnnWeights::init(c, 1).unwrap();
            (
                CpuRnn::new(c.clone(), &w).unwrap(),
                GpuRnn::new(&ctx, c.clone(), &w).unwrap(),
            )
        })
        .collect();
    let cases = (
        0..configs.len(),
        1..=300usize,
        1..=8usize,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    );
    // Half the old single binary's 10 s: this binary runs alone.
    fuzz(
        "small buffers",
        scaled(5.0),
        1_000_000,
        cases,
        |&(m, t, n, packed, with_state, seed)| {
            let (cpu, gpu) = &models[m];
            let mut rng = Rng(seed);
            let input = rng.tensor(&input_shape(&configs[m], t, n));
            let lengths: Vec<usize> = (0..n).map(|_| rng.range(1, t)).collect();
            let state = with_state.then(|| support::random_state(&mut rng, &configs[m], n));
            let hx = state.as_ref().map(support::State::hx);
            let run = |model: &dyn Rnn| {
                if packed {
                    model.forward_with_lengths(&input, &lengths, hx)
                } else {
                    model.forward(&input, hx)
                }
            };
            let want = run(cpu).unwrap();
            match call("GPU forward (small buffers)", || run(gpu))? {
                Ok(got) => check_output(&got, &want)
                    .map_err(|e| fail("GPU forward (small buffers): differs from the CPU", e)),
                // A bidirectional sequence that does not fit cannot be chunked: a fair refusal.
                Err(RnnError::ExceedsLimits { .. }) if configs[m].bidirectional => Ok(()),
                Err(e) => Err(fail(
                    format!("GPU forward (small buffers): failed with {}", variant(&e)),
                    e.to_string(),
                )),
            }
        },
    );
}

/// The smallest input the small-buffer fuzzing found failing (for an RNN): one chunk's output
/// fills a 64 KiB buffer exactly, and the readback buffer (output and state together) is then
/// larger than the device allows; the limit checks did not count it. Pinned for every mode
/// (an LSTM's readback holds c too).
fn pinned_small_buffer_forward_chunks(mode: RnnMode) {
    if testing::gpu("pinned_small_buffer_forward_chunks").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    let config = RnnConfig::new(mode, 3, 8);
    let weights = RnnWeights::init(&config, 1).unwrap();
    let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
    let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let input = Rng(3).tensor(&[256, 8, 3]);
    let want = cpu.forward(&input, None).unwrap();
    match gpu.forward(&input, None) {
        Ok(got) => check_output(&got, &want).unwrap(),
        Err(e) => panic!(
            "time_chunk says {:?}; forward failed: {e}",
            gpu.time_chunk(256, 8)
        ),
    }
}
for_each_mode!(small_buffer_chunks, pinned_small_buffer_forward_chunks);

/// A zero timeout makes a forward's wait fail with `Timeout` (stream pushes and state
/// readbacks too, unless already done), and the model is fine afterwards: the abandoned
/// readback map was cancelled and the next forward, with a sane timeout, is right. A context
/// of its own: the timeout is context-wide and the shared test context serves other tests.
fn a_timeout_leaves_the_model_usable(mode: RnnMode) {
    if testing::gpu("a_timeout_leaves_the_model_usable").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 16, 64)
    };
    let weights = RnnWeights::init(&config, 1).unwrap();
    let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
    // Per step: 2000 dispatches, which no adapter finishes the instant they are submitted
    // (the persistent kernels would make it two, which lavapipe sometimes did).
    let options = GpuOptions::recurrence(Recurrence::PerStep);
    let gpu = GpuRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
    let mut rng = Rng(1);
    let input = rng.tensor(&[1000, 8, 16]);
    let state = support::random_state(&mut rng, &config, 8);
    let want = cpu.forward(&input, Some(state.hx())).unwrap();
    // Two rounds where the RNN-only suite had three: four modes now share the time.
    for round in 0..2 {
        let what = format!("{}, round {round}", mode_name(mode));
        ctx.set_timeout(Duration::ZERO);
        let forward = no_panic(|| gpu.forward(&input, Some(state.hx())).map(|_| ()));
        let mut stream = gpu.stream(StreamOptions::default()).unwrap();
        let push = no_panic(|| stream.push(&Rng(2).tensor(&[50, 1, 16])).map(|_| ()));
        let state_read = no_panic(|| stream.state().map(|_| ()));
        let cell_read = no_panic(|| stream.cell_state().map(|_| ()));
        // A short push or a state readback might be done at once, on a fast device, so those
        // may also succeed.
        assert!(
            matches!(forward, Ok(Err(RnnError::Timeout(_)))),
            "{what}, forward with a zero timeout: {forward:?}"
        );
        for (call, outcome) in [
            ("push", push),
            ("state", state_read),
            ("cell_state", cell_read),
        ] {
            assert!(
                matches!(outcome, Ok(Ok(()) | Err(RnnError::Timeout(_)))),
                "{what}, {call} with a zero timeout: {outcome:?}"
            );
        }
        ctx.set_timeout(Duration::from_secs(60));
        let got = gpu.forward(&input, Some(state.hx())).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{what}, after: {e}"));
    }
}
for_each_mode!(timeout, a_timeout_leaves_the_model_usable);
