//! One model, many threads: the public types are `Send + Sync` (checked at compile time), and
//! forwards of different shapes racing on one shared `GpuRnn` (and its workspace cache, and
//! one device and queue) each get their own right answer; for every mode, an LSTM's c0 and
//! c_n (and its streams' cell state) included.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Rng, State, check_output, input_shape, mode_name, random_state};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuRnn, GruCell, Hx, LstmCell, Rnn, RnnCell, RnnConfig, RnnMode, RnnOutput,
    RnnStream, RnnWeights, StreamOptions, Tensor, testing,
};

/// Compile-time: sharing a context or a model across threads is part of the API (the docs of
/// `GpuContext` and `GpuRnn` promise it). A type that loses `Send` or `Sync` fails the build.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<GpuContext>();
    send_sync::<GpuRnn>();
    send_sync::<CpuRnn>();
    send_sync::<RnnWeights>();
    send_sync::<RnnCell<GpuRnn>>();
    send_sync::<RnnCell<CpuRnn>>();
    send_sync::<LstmCell<GpuRnn>>();
    send_sync::<LstmCell<CpuRnn>>();
    send_sync::<GruCell<GpuRnn>>();
    send_sync::<GruCell<CpuRnn>>();
    send_sync::<RnnOutput>();
    send_sync::<Tensor>();
    // A forward's initial state may be built on one thread and lent to another.
    send_sync::<Hx<'static>>();
    // A stream may be handed to a worker thread (it borrows the model, which is Sync).
    send::<RnnStream<'static>>();
};

const THREADS: usize = 8;
const FORWARDS_PER_THREAD: usize = 200;

fn shared_config(mode: RnnMode) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 7, 19)
    }
}

/// The shared test context of the test `test` running `mode`, named as `for_each_mode!`
/// names it.
fn gpu(test: &str, mode: RnnMode) -> Option<GpuContext> {
    testing::gpu(&format!("{test}::{}", mode_name(mode)))
}

/// One forward call a thread makes: the input, maybe an initial state (h0, and c0 for an
/// LSTM), maybe lengths; all from `seed`.
#[derive(Clone, Debug)]
struct Call {
    seed: u64,
    seq_len: usize,
    batch: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
}

impl Call {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let seq_len = rng.range(1, 20);
        let batch = rng.range(1, 4);
        let with_state = rng.chance(2);
        let lengths = rng
            .chance(3)
            .then(|| (0..batch).map(|_| rng.range(1, seq_len)).collect());
        Call {
            seed,
            seq_len,
            batch,
            with_state,
            lengths,
        }
    }

    fn tensors(&self, config: &RnnConfig) -> (Tensor, Option<State>) {
        // Offset the seed so that the data differ from the draws that chose the shape.
        let mut rng = Rng(self.seed ^ 0xDA7A);
        let input = rng.tensor(&input_shape(config, self.seq_len, self.batch));
        let state = self
            .with_state
            .then(|| random_state(&mut rng, config, self.batch));
        (input, state)
    }

    fn run(&self, model: &dyn Rnn) -> wgpu_rnn::Result<RnnOutput> {
        let (input, state) = self.tensors(model.config());
        let hx = state.as_ref().map(State::hx);
        match &self.lengths {
            Some(lengths) => model.forward_with_lengths(&input, lengths, hx),
            None => model.forward(&input, hx),
        }
    }
}

/// One round: `THREADS` threads, `FORWARDS_PER_THREAD` forwards each, all on `gpu`, each
/// checked against `cpu`. Returns the failures and every 25th result of each thread.
fn round(
    gpu: &Arc<GpuRnn>,
    cpu: &Arc<CpuRnn>,
    round: usize,
) -> (Vec<String>, Vec<(Call, RnnOutput)>) {
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (gpu, cpu) = (Arc::clone(gpu), Arc::clone(cpu));
            std::thread::spawn(move || {
                let (mut failures, mut samples) = (Vec::new(), Vec::new());
                for i in 0..FORWARDS_PER_THREAD {
                    let call = Call::new(((round * THREADS + thread) * 1_000_000 + i) as u64);
                    let want = call.run(cpu.as_ref()).expect("the CPU path accepts it");
                    match call.run(gpu.as_ref()) {
                        Ok(got) => {
                            if let Err(e) = check_output(&got, &want) {
                                failures.push(format!("thread {thread}, {call:?}: {e}"));
                            }
                            if i % 25 == 0 {
                                samples.push((call, got));
                            }
                        }
                        Err(e) => failures.push(format!("thread {thread}, {call:?}: {e}")),
                    }
                }
                (failures, samples)
            })
        })
        .collect();
    let (mut failures, mut samples) = (Vec::new(), Vec::new());
    for (thread, worker) in workers.into_iter().enumerate() {
        match worker.join() {
            Ok((f, s)) => {
                failures.extend(f);
                samples.extend(s);
            }
            Err(_) => failures.push(format!("thread {thread} panicked (see its output above)")),
        }
    }
    (failures, samples)
}

/// Races are caught by chance: rounds of 8 × 200 forwards repeat until this much time has
/// passed (at least one round). Reverting the fix of commit 01614de (a map callback fired in
/// another thread's poll) made about half of 8-second runs of one model fail on lavapipe.
/// Per mode 4 seconds: the test harness runs two of the four modes' tests side by side (two
/// cores), racing each other on the one device too, so the suite races for about the 8
/// seconds of wall time it did with one model, with about as many forwards in all.
const STRESS_TIME: Duration = Duration::from_secs(4);

fn threads_share_one_model_and_each_get_their_own_results(mode: RnnMode) {
    let test = "threads_share_one_model_and_each_get_their_own_results";
    let Some(ctx) = gpu(test, mode) else {
        return;
    };
    let config = shared_config(mode);
    let weights = RnnWeights::init(&config, 11).unwrap();
    let gpu = Arc::new(GpuRnn::new(&ctx, config.clone(), &weights).unwrap());
    let cpu = Arc::new(CpuRnn::new(config, &weights).unwrap());
    let start = Instant::now();
    let (mut failures, mut samples) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    while rounds == 0 || start.elapsed() < STRESS_TIME {
        let (f, s) = round(&gpu, &cpu, rounds);
        failures.extend(f);
        samples.extend(s);
        rounds += 1;
    }
    let forwards = rounds * THREADS * FORWARDS_PER_THREAD;
    println!(
        "{mode:?}: {rounds} rounds: {forwards} forwards on {THREADS} threads in {:.1?}",
        start.elapsed()
    );

    // The same call alone must give the same bits as it did in the crowd: nothing of another
    // thread's work (its input, its state, its lengths) may leak into a result.
    for (call, crowded) in &samples {
        let alone = call.run(gpu.as_ref()).unwrap();
        if alone != *crowded {
            failures.push(format!(
                "{call:?}: differs from the same call run alone (not deterministic)"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{mode:?}: {} of {forwards} forwards failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
for_each_mode!(
    threads_share_one_model_and_each_get_their_own_results,
    threads_share_one_model_and_each_get_their_own_results
);

/// Streams of one shared model on several threads at once: each thread's stream keeps its own
/// state (h, and an LSTM's c) on the GPU, so pushing its sequence in chunks equals one CPU
/// forward over it; every other sequence starts from a given state through `reset_to`.
fn streams_on_threads_keep_their_own_state(mode: RnnMode) {
    let Some(ctx) = gpu("streams_on_threads_keep_their_own_state", mode) else {
        return;
    };
    let config = shared_config(mode);
    let weights = RnnWeights::init(&config, 12).unwrap();
    let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config.clone(), &weights).unwrap();

    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|thread| {
                let (gpu, cpu, config) = (&gpu, &cpu, &config);
                scope.spawn(move || -> Result<(), String> {
                    let mut rng = Rng(1000 + thread as u64);
                    let batch = 1 + thread % 3;
                    let mut stream = gpu
                        .stream(StreamOptions { batch, delay: 0 })
                        .map_err(|e| e.to_string())?;
                    for sequence in 0..5 {
                        let seq_len = rng.range(1, 30);
                        let input = rng.tensor(&input_shape(config, seq_len, batch));
                        let state =
                            (sequence % 2 == 1).then(|| random_state(&mut rng, config, batch));
                        let hx = state.as_ref().map(State::hx);
                        if let Some(hx) = hx {
                            stream.reset_to(hx).map_err(|e| e.to_string())?;
                        }
                        let want = cpu.forward(&input, hx).unwrap();
                        // Chunks of random lengths, in (T, N, I) order: a contiguous range.
                        let frame = batch * config.input_size;
                        let mut outputs = Vec::new();
                        let mut t = 0;
                        while t < seq_len {
                            let len = rng.range(1, seq_len - t);
                            let chunk = Tensor::new(
                                input.data()[t * frame..(t + len) * frame].to_vec(),
                                &input_shape(config, len, batch),
                            )
                            .unwrap();
                            let out = stream.push(&chunk).map_err(|e| e.to_string())?;
                            outputs.extend_from_slice(out.data());
                            t += len;
                        }
                        let what = format!("{mode:?}: thread {thread}, sequence {sequence}");
                        let output = Tensor::new(outputs, want.output.shape()).unwrap();
                        support::check_values(&format!("{what}: output"), &output, &want.output)?;
                        let state = stream.state().map_err(|e| e.to_string())?;
                        let state = Tensor::new(state.into_data(), want.h_n.shape()).unwrap();
                        support::check_values(&format!("{what}: state"), &state, &want.h_n)?;
                        let cell = stream.cell_state().map_err(|e| e.to_string())?;
                        match (cell, &want.c_n) {
                            (Some(cell), Some(c_n)) => {
                                let cell = Tensor::new(cell.into_data(), c_n.shape()).unwrap();
                                support::check_values(&format!("{what}: cell state"), &cell, c_n)?;
                            }
                            (None, None) => {}
                            (cell, c_n) => {
                                return Err(format!("{what}: cell state {cell:?}, c_n {c_n:?}"));
                            }
                        }
                        stream.finish().map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .enumerate()
            .filter_map(|(thread, w)| match w.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("thread {thread} panicked")),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
for_each_mode!(
    streams_on_threads_keep_their_own_state,
    streams_on_threads_keep_their_own_state
);
