//! The fuzz driver shared by the hostile-input suites (`hostile_files`, `hostile_driver`,
//! `hostile_limits`, `hostile_entry_points`): a time-budgeted proptest loop that shrinks each
//! distinct failure and reports it with its smallest input, and a global allocator that
//! watches the largest single allocation, so that an input talking the library into an absurd
//! allocation is a failure rather than an abort.
//!
//! Included with `#[path = "support/hostile.rs"] mod hostile;` by those binaries only: the
//! global allocator must not reach the other test binaries that share `support`.
//!
//! `FUZZ_SEED=n` replays a run; `FUZZ_SCALE=k` multiplies every time budget.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use wgpu_rnn::{
    CellConfig, DirectionWeights, GpuContext, GruCell, LstmCell, RnnCell, RnnError, RnnMode,
};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::support::{NamedTensor, Rng, no_panic};

// ---------------------------------------------------------------------------------------------
// Allocation watch: the largest single allocation on the current thread.

struct Tracking;

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// No input in these suites is bigger than a few KiB: a single allocation beyond this is
/// something the input's claims (a header, a shape, a delay) talked the library into.
pub const ABSURD_ALLOCATION: usize = 256 << 20;

/// Runs `f` and returns its value with the largest single allocation it made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LARGEST.with(|l| l.replace(0));
    let value = f();
    let largest = LARGEST.with(|l| l.replace(before.max(l.get())));
    (value, largest)
}

// ---------------------------------------------------------------------------------------------
// Failures.

/// Why one fuzz case failed. `kind` groups failures with one cause (a panic site, a wrong
/// error variant) so that each is shrunk and reported once; `detail` says what happened.
#[derive(Debug)]
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

pub fn fail(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.into(),
        detail: detail.into(),
    }
}

pub type Outcome = Result<(), Failure>;

/// Calls one library entry point: a panic, or an absurd allocation, becomes a `Failure`
/// named after `what` and the panic's location.
pub fn call<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, Failure> {
    let (outcome, largest) = largest_allocation(|| no_panic(f));
    // The panic's site (not its message, which may hold sizes) says which bug it is.
    let value = outcome.map_err(|panic| {
        let site = panic.rsplit(" at ").next().unwrap_or_default();
        fail(format!("{what} panicked at {site}"), panic.clone())
    })?;
    if largest > ABSURD_ALLOCATION {
        return Err(fail(
            format!("{what} allocated absurdly"),
            format!("a single allocation of {largest} bytes"),
        ));
    }
    Ok(value)
}

/// `seconds`, times `FUZZ_SCALE` when it is set.
pub fn scaled(seconds: f64) -> Duration {
    let scale = std::env::var("FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(seconds * scale)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Runs `check` on values of `strategy` until `budget` is spent (or `max_cases`). Each new
/// kind of failure is shrunk, keeping its kind (another kind is another bug), and reported
/// with its smallest input; the run goes on looking for others.
pub fn fuzz<S: Strategy>(
    name: &str,
    budget: Duration,
    max_cases: usize,
    strategy: S,
    check: impl Fn(&S::Value) -> Outcome,
) where
    S::Value: Debug,
{
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    let mut rng = Rng(seed);
    for chunk in seed_bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let start = Instant::now();
    let mut found: Vec<(String, String, String)> = Vec::new();
    let mut cases = 0;
    while cases < max_cases && start.elapsed() < budget {
        cases += 1;
        let mut tree = strategy.new_tree(&mut runner).expect("strategy");
        let Err(first) = check(&tree.current()) else {
            continue;
        };
        if found.iter().any(|(kind, ..)| *kind == first.kind) {
            continue;
        }
        let mut smallest = (format!("{:?}", tree.current()), first.detail);
        // proptest's shrinking walk: simplify while it still fails, complicate when not.
        let mut steps = 0;
        if tree.simplify() {
            while steps < 300 {
                steps += 1;
                match check(&tree.current()) {
                    Err(f) if f.kind == first.kind => {
                        smallest = (format!("{:?}", tree.current()), f.detail);
                        if !tree.simplify() {
                            break;
                        }
                    }
                    _ => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        found.push((first.kind, smallest.0, smallest.1));
    }
    println!(
        "[{name}] {cases} cases in {:.1?} (FUZZ_SEED={seed}), {} distinct failure(s)",
        start.elapsed(),
        found.len()
    );
    let report: Vec<String> = found
        .iter()
        .map(|(kind, input, detail)| format!("* {kind}\n  input: {input}\n  {detail}"))
        .collect();
    assert!(
        found.is_empty(),
        "[{name}] {} distinct failure(s) (FUZZ_SEED={seed}):\n{}",
        found.len(),
        report.join("\n")
    );
}

/// The error's variant, for failure kinds (the message may hold sizes that differ per case).
pub fn variant(e: &RnnError) -> &'static str {
    match e {
        RnnError::NoAdapter(_) => "NoAdapter",
        RnnError::RequestDevice(_) => "RequestDevice",
        RnnError::InvalidConfig(_) => "InvalidConfig",
        RnnError::ShapeMismatch { .. } => "ShapeMismatch",
        RnnError::InvalidLength { .. } => "InvalidLength",
        RnnError::Weights { .. } => "Weights",
        RnnError::SafeTensors(_) => "SafeTensors",
        RnnError::Io { .. } => "Io",
        RnnError::ExceedsLimits { .. } => "ExceedsLimits",
        RnnError::DeviceLost(_) => "DeviceLost",
        RnnError::Gpu(_) => "Gpu",
        RnnError::Timeout(_) => "Timeout",
        _ => "another variant",
    }
}

/// A file on disk (for `load`, `ReferenceCase::load`), removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(bytes: &[u8]) -> Self {
        let file = Self::path("safetensors");
        std::fs::write(&file.0, bytes).unwrap();
        file
    }

    /// A fresh path with extension `ext`, nothing written yet (removed when dropped, if made).
    pub fn path(ext: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        TempFile(std::env::temp_dir().join(format!(
            "wgpu-rnn-hostile-{}-{}.{ext}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One tensor of a file: name, dtype, shape, little-endian bytes.
pub type StoredTensor = (String, Dtype, Vec<usize>, Vec<u8>);

pub fn stored(tensors: &[NamedTensor]) -> Vec<StoredTensor> {
    tensors
        .iter()
        .map(|(name, shape, values)| f32_tensor(name, shape, values))
        .collect()
}

pub fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> StoredTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name.into(), Dtype::F32, shape.to_vec(), bytes)
}

pub fn serialize(tensors: &[StoredTensor], metadata: &[(&str, String)]) -> Vec<u8> {
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (
            name.clone(),
            TensorView::new(*dtype, shape.clone(), data).unwrap(),
        )
    });
    let metadata: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize(views, (!metadata.is_empty()).then_some(metadata)).unwrap()
}

/// The cell of the model's mode: (3 → 4).
pub fn cell_config(mode: RnnMode) -> CellConfig {
    CellConfig {
        mode,
        ..CellConfig::rnn(3, 4)
    }
}

/// The cell of `config.mode` on the CPU, from `weights`.
pub fn cpu_cell(config: CellConfig, weights: &DirectionWeights) -> wgpu_rnn::Result<()> {
    match config.mode {
        RnnMode::Rnn(_) => RnnCell::cpu(config, weights).map(|_| ()),
        RnnMode::Lstm => LstmCell::cpu(config, weights).map(|_| ()),
        RnnMode::Gru => GruCell::cpu(config, weights).map(|_| ()),
    }
}

/// The cell of `config.mode` on the GPU of `ctx`, from `weights`.
pub fn gpu_cell(
    ctx: &GpuContext,
    config: CellConfig,
    weights: &DirectionWeights,
) -> wgpu_rnn::Result<()> {
    match config.mode {
        RnnMode::Rnn(_) => RnnCell::gpu(ctx, config, weights).map(|_| ()),
        RnnMode::Lstm => LstmCell::gpu(ctx, config, weights).map(|_| ()),
        RnnMode::Gru => GruCell::gpu(ctx, config, weights).map(|_| ()),
    }
}
