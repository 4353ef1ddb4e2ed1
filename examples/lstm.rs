//! An `nn.LSTM` made by PyTorch, loaded from its `state_dict` and run on the default adapter,
//! whole and as a live stream.
//!
//!     cargo run --release --example lstm
//!
//! `tests/fixtures/torch_gated/lstm_proj_h0.safetensors` holds a two-layer
//! `nn.LSTM(4, 8, num_layers=2, proj_size=3)`'s parameters (PyTorch's names), an input with
//! `h0` and `c0`, and PyTorch's `output`, `h_n` and `c_n`. The example runs the input through
//! the GPU in one forward, then streams it frame by frame with the state kept on the GPU, and
//! compares both with PyTorch's results.

use std::path::PathBuf;

use wgpu_rnn::compare::compare;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{GpuContext, GpuRnn, Hx, Result, Rnn, RnnConfig, RnnWeights, StreamOptions, Tensor};

fn main() -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_gated/lstm_proj_h0.safetensors");
    // torch.nn.LSTM(4, 8, num_layers=2, proj_size=3); the tensors are named weight_ih_l0, ...
    let config = RnnConfig {
        num_layers: 2,
        proj_size: 3,
        ..RnnConfig::lstm(4, 8)
    };
    // The file also holds PyTorch's inputs and outputs beside the state_dict: a strict load
    // would refuse those extra tensors, so load non-strictly.
    let weights = RnnWeights::load_non_strict(&config, &path, "")?;
    let case = ReferenceCase::load(&path)?;
    let (input, h0, c0) = (
        case.tensor("input")?,
        case.tensor("h0")?,
        case.tensor("c0")?,
    );

    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.describe());
    let lstm = GpuRnn::new(&ctx, config.clone(), &weights)?;
    println!("recurrence: {:?}", lstm.recurrence());

    // One forward over the whole sequence: output, (h_n, c_n) = lstm(input, (h0, c0)).
    let out = lstm.forward(&input, Some(Hx::lstm(&h0, &c0)))?;
    let c_n = out.c_n.expect("an LSTM returns c_n");
    println!(
        "input {:?} -> output {:?}, h_n {:?}, c_n {:?}",
        input.shape(),
        out.output.shape(),
        out.h_n.shape(),
        c_n.shape()
    );
    let mut passed = true;
    for (what, got, want) in [
        ("output", out.output.data(), case.tensor("output")?),
        ("h_n", out.h_n.data(), case.tensor("h_n")?),
        ("c_n", c_n.data(), case.tensor("c_n")?),
    ] {
        let c = compare(got, want.data(), 1e-4);
        println!("forward {what:<6} against PyTorch: {c}");
        passed &= c.passed();
    }

    // The same sequence as a live stream, one frame at a time, from the same (h0, c0): the
    // state of both layers stays on the GPU between pushes.
    let (steps, batch) = (input.shape()[0], input.shape()[1]);
    let mut stream = lstm.stream(StreamOptions { batch, delay: 0 })?;
    let per_layer = |t: &Tensor, features| Tensor::new(t.data().to_vec(), &[2, batch, features]);
    stream.reset_to(Hx::lstm(&per_layer(&h0, 3)?, &per_layer(&c0, 8)?))?;
    let frame = input.data().len() / steps;
    let mut streamed = Vec::new();
    for t in 0..steps {
        let x = Tensor::new(
            input.data()[t * frame..(t + 1) * frame].to_vec(),
            &[1, batch, 4],
        )?;
        streamed.extend_from_slice(stream.push(&x)?.data());
    }
    let c = compare(&streamed, case.tensor("output")?.data(), 1e-4);
    println!("stream  output against PyTorch: {c}");
    passed &= c.passed();
    let c = compare(
        stream.cell_state()?.expect("an LSTM stream has c").data(),
        case.tensor("c_n")?.data(),
        1e-4,
    );
    println!("stream  c      against PyTorch: {c}");
    passed &= c.passed();

    if passed {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        std::process::exit(1)
    }
}
