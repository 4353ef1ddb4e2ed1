"""Times PyTorch's CPU training step of nn.RNN / nn.LSTM / nn.GRU for given (cell, H, N, T):
the baseline of `scaling --backward --torch PYTHON`.

    python examples/scaling/time_torch_train.py --cell gru --hidden 64 --batch 1 --lengths 1024
    python examples/scaling/time_torch_train.py --serve    # what `scaling --backward` runs

One timed run is `y, _ = model(x); y.sum().backward()`: the forward with autograd recording,
then the backward of loss = y.sum() (so d loss / d y is all ones and h_n reaches no loss).
The model is benches/baselines/time_torch.py's (nn.<CELL>(H, H), one layer, unidirectional,
bias, tanh for the RNN, seed 0), in train() mode, float32, input (T, N, H) seq-first (seed 1,
no requires_grad), zero initial state. Parameter gradients accumulate in .grad from run to run,
as the report's GpuTrainer accumulates its own. Warm-up, runs, threads, the CSV rows and the
--serve protocol are time_torch.py's (its `time_forwards`, `Timer` and `serve`); there is no
onnxruntime column.

The report runs this file appended to time_torch.py, with `__name__` set so that
time_torch.py's own main does not run; run on its own, it imports time_torch.py from
benches/baselines/.
"""
import argparse
import os
import sys

if "Timer" not in globals():  # run on its own, not appended to time_torch.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "benches", "baselines"))
    from time_torch import Timer, serve, time_forwards  # noqa: E402


class TrainTimer(Timer):
    """time_torch.py's Timer, timing a forward and backward instead of a no_grad forward."""

    def __init__(self, threads):
        super().__init__(threads, with_ort=False)

    def rows(self, cell, hidden, batch, seq_len, min_runs, target_s, max_runs):
        torch = self.torch
        model, _ = self.model(cell, hidden)
        model.train()
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(seq_len, batch, hidden, generator=generator)

        def step():
            y, _ = model(x)
            y.sum().backward()

        times = time_forwards(step, min_runs, target_s, max_runs)
        return [self.row("torch", cell, hidden, batch, seq_len, times, "")]


def train_main():
    # Not __doc__: appended to time_torch.py, this file's docstring is not the module's.
    parser = argparse.ArgumentParser(
        description="Times PyTorch's CPU forward + y.sum().backward() of nn.RNN/LSTM/GRU.")
    parser.add_argument("--serve", action="store_true", help="answer requests from stdin")
    parser.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn")
    parser.add_argument("--hidden", type=int, default=64, help="H (= input size)")
    parser.add_argument("--batch", type=int, default=1, help="N")
    parser.add_argument("--lengths", default="1024", help="T values, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--target-s", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=50)
    parser.add_argument("--startup-s", type=float, default=1.0)
    args = parser.parse_args()

    timer = TrainTimer(args.threads)
    timer.startup_warmup(args.startup_s)
    if args.serve:
        serve(timer)
        return
    print(f"# {timer.versions()}")
    print("backend,cell,H,I,N,T,threads,median_ms,min_ms,max_ms,runs,max_abs_diff_vs_torch")
    for seq_len in (int(t) for t in args.lengths.split(",")):
        for row in timer.rows(args.cell, args.hidden, args.batch, seq_len, args.min_runs,
                              args.target_s, args.max_runs):
            print(row, flush=True)


train_main()
