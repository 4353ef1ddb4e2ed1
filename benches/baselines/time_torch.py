#!/usr/bin/env python3
"""Times PyTorch's CPU nn.RNN / nn.LSTM / nn.GRU (and, optionally, the same model in
onnxruntime) for given (cell, H, N, T): the baselines the scaling report compares against.

    python time_torch.py --cell lstm --hidden 64 --batch 1 --lengths 16,128,1024 [--ort]
    python time_torch.py --serve [--ort]      # what `scaling --torch PYTHON` runs

Every model is nn.<CELL>(H, H): one layer, unidirectional, bias, tanh for the RNN, eval(),
torch.no_grad(), float32, input (T, N, H) seq-first, zero initial state (hx = None).
torch.set_num_threads(--threads) (default 2). onnxruntime (--ort) runs a one-node ONNX
graph (RNN, LSTM or GRU, opset 14) holding the same weights, intra_op_num_threads=--threads,
inter_op_num_threads=1, sequential; its output is checked against PyTorch's
(max_abs_diff_vs_torch).

Method, per point: warm-up forwards until at least 2 ran and 0.1 s passed (at most 20), then
timed forwards until at least --min-runs ran and --target-s seconds passed, at most
--max-runs; the median is reported, with the min and max. On start the process warms up for
--startup-s seconds (default 1) on a small model, so the first point does not pay for thread
pools and allocator growth.

Output: CSV, one row per point and backend:
    backend,cell,H,I,N,T,threads,median_ms,min_ms,max_ms,runs,max_abs_diff_vs_torch

--serve: reads requests from stdin, one per line, `cell,H,N,T,min_runs,target_s,max_runs`;
answers each with its CSV rows (torch, then ort with --ort) and a line `end`, or a line
`error,<message>` and `end`. The first line it prints is
`ready,torch=<version>,ort=<version or none>,threads=<n>`. Diagnostics go to stderr.
Exit status 3: torch cannot be imported.
"""
import argparse
import statistics
import sys
import time

FIELDS = ["backend", "cell", "H", "I", "N", "T", "threads", "median_ms", "min_ms", "max_ms",
          "runs", "max_abs_diff_vs_torch"]
CELLS = ("rnn", "lstm", "gru")
SEED = 0


def import_torch():
    try:
        import torch
    except Exception as error:  # ImportError, or a broken install's OSError
        print(f"time_torch.py: cannot import torch with {sys.executable}: {error}",
              file=sys.stderr)
        sys.exit(3)
    return torch


def import_ort():
    """(onnxruntime, onnx) or None, with the reason on stderr."""
    try:
        import onnx
        import onnxruntime
    except Exception as error:
        print(f"time_torch.py: no onnxruntime: {error}", file=sys.stderr)
        return None
    return onnxruntime, onnx


def make_torch_model(torch, cell, hidden):
    torch.manual_seed(SEED)
    if cell == "rnn":
        model = torch.nn.RNN(hidden, hidden, num_layers=1, nonlinearity="tanh")
    elif cell == "lstm":
        model = torch.nn.LSTM(hidden, hidden, num_layers=1)
    else:
        model = torch.nn.GRU(hidden, hidden, num_layers=1)
    return model.eval()


def reorder_gates(array, hidden, order):
    """Stacks the `hidden`-row blocks of `array` (gates along axis 0) in `order`."""
    import numpy as np
    return np.concatenate([array[g * hidden:(g + 1) * hidden] for g in order], axis=0)


def make_ort_session(ort_modules, torch_model, cell, hidden, threads):
    """A one-node ONNX model computing what `torch_model` computes, in an InferenceSession."""
    import numpy as np
    ort, onnx = ort_modules
    from onnx import TensorProto, helper, numpy_helper

    def weight(name):
        return getattr(torch_model, name).detach().numpy()

    w, r = weight("weight_ih_l0"), weight("weight_hh_l0")
    wb, rb = weight("bias_ih_l0"), weight("bias_hh_l0")
    attributes = {"hidden_size": hidden}
    if cell == "lstm":
        # PyTorch stacks the gates i, f, g, o; ONNX i, o, f, c (c is PyTorch's g).
        order = (0, 3, 1, 2)
    elif cell == "gru":
        # PyTorch r, z, n; ONNX z, r, h. PyTorch applies r after the recurrent product.
        order = (1, 0, 2)
        attributes["linear_before_reset"] = 1
    else:
        order = (0,)
    w, r, wb, rb = (reorder_gates(a, hidden, order) for a in (w, r, wb, rb))
    bias = np.concatenate([wb, rb])[None]
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y", "Y_h"], **attributes)
    graph = helper.make_graph(
        [node], cell,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "N", hidden])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), name)
                     for a, name in ((w[None], "W"), (r[None], "R"), (bias, "B"))])
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def time_forwards(forward, min_runs, target_s, max_runs):
    """Warm-up, then the timed runs' durations in seconds."""
    warm_start = time.perf_counter()
    warm_runs = 0
    while warm_runs < 2 or (time.perf_counter() - warm_start < 0.1 and warm_runs < 20):
        forward()
        warm_runs += 1
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs
                                     or time.perf_counter() - start < target_s):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    return times


class Timer:
    """Builds models once per (cell, H) and times points on them."""

    def __init__(self, threads, with_ort):
        self.torch = import_torch()
        self.torch.set_num_threads(threads)
        self.threads = threads
        self.ort = import_ort() if with_ort else None
        self.models = {}

    def versions(self):
        ort_version = self.ort[0].__version__ if self.ort else "none"
        return f"torch={self.torch.__version__},ort={ort_version},threads={self.threads}"

    def startup_warmup(self, seconds):
        model = make_torch_model(self.torch, "lstm", 64)
        x = self.torch.zeros(16, 4, 64)
        end = time.perf_counter() + seconds
        with self.torch.no_grad():
            while time.perf_counter() < end:
                model(x)

    def model(self, cell, hidden):
        key = (cell, hidden)
        if key not in self.models:
            model = make_torch_model(self.torch, cell, hidden)
            session = (make_ort_session(self.ort, model, cell, hidden, self.threads)
                       if self.ort else None)
            self.models = {key: (model, session)}  # keep one: large models are big
        return self.models[key]

    def rows(self, cell, hidden, batch, seq_len, min_runs, target_s, max_runs):
        torch = self.torch
        model, session = self.model(cell, hidden)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(seq_len, batch, hidden, generator=generator)

        def torch_forward():
            with torch.no_grad():
                return model(x)

        out = []
        times = time_forwards(torch_forward, min_runs, target_s, max_runs)
        out.append(self.row("torch", cell, hidden, batch, seq_len, times, ""))
        if session is not None:
            x_np = x.numpy()
            expected = torch_forward()[0].numpy()
            got = session.run(["Y"], {"X": x_np})[0][:, 0]
            diff = float(abs(got - expected).max())
            times = time_forwards(lambda: session.run(None, {"X": x_np}),
                                  min_runs, target_s, max_runs)
            out.append(self.row("ort", cell, hidden, batch, seq_len, times, f"{diff:.3g}"))
        return out

    def row(self, backend, cell, hidden, batch, seq_len, times, diff):
        ms = [t * 1e3 for t in times]
        return ",".join([backend, cell, str(hidden), str(hidden), str(batch), str(seq_len),
                         str(self.threads), f"{statistics.median(ms):.4f}", f"{min(ms):.4f}",
                         f"{max(ms):.4f}", str(len(ms)), diff])


def parse_request(line):
    fields = line.strip().split(",")
    if len(fields) != 7:
        raise ValueError(f"expected cell,H,N,T,min_runs,target_s,max_runs, got `{line.strip()}`")
    cell = fields[0]
    if cell not in CELLS:
        raise ValueError(f"unknown cell `{cell}`")
    hidden, batch, seq_len, min_runs = (int(f) for f in fields[1:5])
    target_s, max_runs = float(fields[5]), int(fields[6])
    if min(hidden, batch, seq_len, min_runs, max_runs) < 1 or target_s < 0:
        raise ValueError(f"sizes and runs must be positive: `{line.strip()}`")
    return cell, hidden, batch, seq_len, min_runs, target_s, max_runs


def serve(timer):
    print(f"ready,{timer.versions()}", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = parse_request(line)
            for row in timer.rows(*request):
                print(row)
        except Exception as error:  # report, and go on with the next request
            message = str(error).replace("\n", " ")
            print(f"error,{type(error).__name__}: {message}")
        print("end", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="answer requests from stdin")
    parser.add_argument("--cell", choices=CELLS, default="rnn")
    parser.add_argument("--hidden", type=int, default=64, help="H (= input size)")
    parser.add_argument("--batch", type=int, default=1, help="N")
    parser.add_argument("--lengths", default="16,128,1024", help="T values, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ort", action="store_true", help="also time onnxruntime")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--target-s", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=50)
    parser.add_argument("--startup-s", type=float, default=1.0)
    args = parser.parse_args()

    timer = Timer(args.threads, args.ort)
    timer.startup_warmup(args.startup_s)
    if args.serve:
        serve(timer)
        return
    print(f"# {timer.versions()}")
    print(",".join(FIELDS))
    for seq_len in (int(t) for t in args.lengths.split(",")):
        for row in timer.rows(args.cell, args.hidden, args.batch, seq_len, args.min_runs,
                              args.target_s, args.max_runs):
            print(row, flush=True)


if __name__ == "__main__":
    main()
