//! Every entry point with the arguments that once crashed the library (found by the fuzz
//! driver, or by reading the code), pinned for every mode: each must get a typed error (any
//! variant but `Gpu`, which means invalid work reached wgpu), none may panic.

mod support;

use support::{mode_name, no_panic};
use wgpu_rnn::{
    GpuRnn, Rnn, RnnConfig, RnnError, RnnMode, RnnWeights, StreamOptions, Tensor, testing,
};

fn pinned_crashing_calls_get_typed_errors(mode: RnnMode) {
    let Some(ctx) = testing::gpu("pinned_crashing_calls_get_typed_errors") else {
        return;
    };
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 7, 19)
    };
    let model = GpuRnn::new(&ctx, config.clone(), &RnnWeights::init(&config, 1).unwrap()).unwrap();
    let deep = RnnConfig {
        num_layers: 21,
        ..RnnConfig::new(mode, 1, 400)
    };
    let deep = GpuRnn::new(&ctx, deep.clone(), &RnnWeights::init(&deep, 1).unwrap()).unwrap();
    type Call<'a> = Box<dyn Fn() -> wgpu_rnn::Result<()> + 'a>;
    let cases: Vec<(&str, Call<'_>)> = vec![
        (
            // 2 · 2^26 · 19 floats (twice that for an LSTM's h and c): the stream's state
            // buffer is 10 GB, beyond any max_buffer_size; it was created outside an error
            // scope, so wgpu's handler panicked.
            "stream(batch: 2^26)",
            Box::new(|| {
                model
                    .stream(StreamOptions {
                        batch: 1 << 26,
                        delay: 0,
                    })
                    .map(|_| ())
            }),
        ),
        (
            // Under a budget, sizing the chunk asks which layers fuse their input: of a shape
            // within the limits, not of T = usize::MAX, whose frame offsets overflow.
            "time_chunk(usize::MAX, 2) under a budget of 0",
            Box::new(|| {
                model.set_workspace_budget(Some(0));
                let chunk = model.time_chunk(usize::MAX, 2);
                model.set_workspace_budget(None);
                chunk.map(|_| ())
            }),
        ),
        (
            // The state's element count overflows usize.
            "stream(batch: usize::MAX / 2)",
            Box::new(|| {
                model
                    .stream(StreamOptions {
                        batch: usize::MAX / 2,
                        delay: 0,
                    })
                    .map(|_| ())
            }),
        ),
        (
            // finish() makes a (delay, N, I) tensor of zeros: its size overflows.
            "finish() with delay usize::MAX",
            Box::new(|| {
                let mut stream = model.stream(StreamOptions {
                    batch: 1,
                    delay: usize::MAX,
                })?;
                stream.finish().map(|_| ())
            }),
        ),
        (
            // The zeros' byte size overflows. (A delay of 2^40 would make finish() attempt a
            // multi-terabyte allocation instead: an abort, which no test can catch, so only
            // delays whose size computation overflows are pinned.)
            "finish() with delay 2^61",
            Box::new(|| {
                let mut stream = model.stream(StreamOptions {
                    batch: 1,
                    delay: 1 << 61,
                })?;
                stream.finish().map(|_| ())
            }),
        ),
        (
            // chunk_len divides by the batch.
            "time_chunk(10, 0)",
            Box::new(|| model.time_chunk(10, 0).map(|_| ())),
        ),
        (
            "time_chunk(usize::MAX, usize::MAX)",
            Box::new(|| model.time_chunk(usize::MAX, usize::MAX).map(|_| ())),
        ),
        (
            // 65535 sequences of 400 units fill the 128 MiB binding with one frame, so the
            // forward runs in chunks; the chunks' carried state (21 · 65535 · 400 floats,
            // 2.2 GB, more for an LSTM) was created before any limit check and outside an
            // error scope.
            "forward of (2, 65535, 1) through 21 layers of 400",
            Box::new(|| {
                deep.forward(&Tensor::zeros(&[2, 65535, 1])?, None)
                    .map(|_| ())
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, run) in &cases {
        match no_panic(run) {
            Ok(Err(RnnError::Gpu(e))) => wrong.push(format!("{name}: Gpu error {e}")),
            Ok(Err(e)) => println!("{:<8} {name:<50} -> {e}", mode_name(mode)),
            Ok(Ok(())) => wrong.push(format!("{name}: succeeded")),
            Err(panic) => wrong.push(format!("{name}: {panic}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {}",
        mode_name(mode),
        wrong.join("\n")
    );
}
for_each_mode!(
    pinned_crashing_calls,
    pinned_crashing_calls_get_typed_errors
);
