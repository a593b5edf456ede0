"""Several cells' MLPs trained together (asknlearn.batched) vs one after another (train_model).

Fashion-MNIST (the real files when available, else random images of the same shape), the MLP,
cross-entropy (``--loss``: LWCC, or VWCC on the dropout MLP with T = 5), Adam 1e-3, batch 64,
trained to 99 % training accuracy or ``--max-epochs``. Cell c is set up as the loop sets up
round 1 of seed c: its own labeled set of ``--labels`` points, fresh init from derive_seed(c,
"init", 1), batch order from generator(c, "batches", 1), dropout masks from derive_seed(c,
"dropout", 1). For M = 1, 4, 8, 16 and each thread count, the same process times
  sequential  M cells one after another with train_model (cell c timed alone once; the time
              of M cells is the sum over the first M)
  batched     the same M cells in one asknlearn.batched.train_batched call
and prints the speed-up, the epochs per cell and the largest weight difference between the
two modes (floating-point reassociation only). Measurements alternate between the modes so
that a background load hits both; the load average is recorded with every measurement.

    python benchmarks/bench_batched.py [--labels 1100 3100] [--max-epochs 200] [--quick]
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn.batched import train_batched  # noqa: E402
from asknlearn.data import load_dataset  # noqa: E402
from asknlearn.loop import derive_seed, generator  # noqa: E402
from asknlearn.losses import build_loss  # noqa: E402
from asknlearn.models import build_model  # noqa: E402
from asknlearn.train import train_model  # noqa: E402


def _model(seed: int, dropout: float):
    torch.manual_seed(derive_seed(seed, "init", 1))
    return build_model("mlp", (1, 28, 28), 10, dropout)


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result): under a background load the CPU time this
    process spent is the steadier measure of its cost (with 2 threads it also counts the
    threads' spinning), the wall time what a user waits."""
    c0 = time.process_time()
    t, out = C.timed(fn, torch.device("cpu"))
    return t, time.process_time() - c0, out


def _labeled(n_train: int, labels: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_train, generator=generator(seed, "bench-labels"))[:labels]


def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[1100, 3100])
    ap.add_argument("--cells", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--loss", choices=("ce", "lwcc", "vwcc"), default="ce",
                    help="vwcc: the dropout MLP (rate 0.5), T = 5 stochastic passes a step")
    ap.add_argument("--synthetic", action="store_true", help="random images even if real data exist")
    args = ap.parse_args()
    prog = Path(sys.argv[0]).name
    for name, vals in (("--labels", args.labels), ("--cells", args.cells),
                       ("--thread-counts", args.thread_counts), ("--max-epochs", [args.max_epochs])):
        if min(vals) < 1:
            print(f"{prog}: error: {name} {min(vals)}; valid: integers >= 1", file=sys.stderr)
            return 2
    if args.quick:
        args.labels, args.cells, args.thread_counts, args.max_epochs = [200], [1, 2], [args.threads], 2
    device = C.setup(args)
    if device.type != "cpu":
        print(f"{prog}: error: --device {args.device}; valid: cpu (this measures CPU overhead)",
              file=sys.stderr)
        return 2
    loss = build_loss(args.loss, 1.0, 5)
    dropout = 0.5 if args.loss == "vwcc" else 0.0
    env = C.environment(device, args.threads)
    env["thread_counts"] = args.thread_counts
    with tempfile.TemporaryDirectory(prefix="bench_batched_") as tmp:
        root, real = C.fashion_mnist_root(Path(tmp), args.synthetic or args.quick,
                                          n_train=1500 if args.quick else 60000,
                                          n_test=100 if args.quick else 10000)
        data = load_dataset("fashion_mnist", root, device)
    x_all, y_all = data.x_train, data.y_train
    m_max = max(args.cells)
    print(f"batched cells: MLP, {'real' if real else 'synthetic'} Fashion-MNIST, {args.loss}, "
          f"dropout {dropout}, batch 64, "
          f"target {args.target}, max_epochs {args.max_epochs}, {os.cpu_count()} cores, "
          f"load {env['loadavg_start']}", flush=True)
    res: dict = {"real_data": real, "runs": []}
    speedups: dict[str, float] = {}
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        for labels in args.labels:
            rows = [_labeled(len(y_all), labels, c) for c in range(m_max)]
            xs, ys = [x_all[r] for r in rows], [y_all[r] for r in rows]
            alone: list[tuple] = []

            for m in args.cells:
                # interleave: the sequential cells this M needs first, then the batched run
                while len(alone) < m:
                    c, mod = len(alone), _model(len(alone), dropout)
                    load = list(os.getloadavg())
                    torch.manual_seed(derive_seed(c, "dropout", 1))  # as the loop seeds a round
                    t, cpu, r = _timed(functools.partial(
                        train_model, mod, loss, xs[c], ys[c],
                        target_accuracy=args.target, max_epochs=args.max_epochs,
                        generator=generator(c, "batches", 1)))
                    alone.append((t, r, mod, load, cpu))
                mods = [_model(c, dropout) for c in range(m)]
                load = list(os.getloadavg())
                tb, cpub, rb = _timed(functools.partial(
                    train_batched, mods, [loss] * m, xs[:m], ys[:m],
                    [generator(c, "batches", 1) for c in range(m)],
                    dropout_generators=[generator(c, "dropout", 1) for c in range(m)],
                    target_accuracy=args.target,
                    max_epochs=args.max_epochs))
                ts = sum(a[0] for a in alone[:m])
                cpus = sum(a[4] for a in alone[:m])
                dw = max(float((p - q).detach().abs().max()) for c in range(m) for p, q in
                         zip(mods[c].parameters(), alone[c][2].parameters(), strict=True))
                ep_b = [r.epochs for r in rb]
                ep_s = [a[1].epochs for a in alone[:m]]
                run = {"threads": threads, "labels": labels, "cells": m,
                       "sequential_seconds": ts, "batched_seconds": tb, "speedup": ts / tb,
                       "sequential_cpu_seconds": cpus, "batched_cpu_seconds": cpub,
                       "cpu_speedup": cpus / cpub,
                       "epochs_sequential": ep_s, "epochs_batched": ep_b,
                       "same_epochs": ep_b == ep_s, "max_abs_weight_diff": dw,
                       "loadavg_batched": load, "loadavg_sequential": [a[3] for a in alone[:m]]}
                res["runs"].append(run)
                speedups[f"t{threads}_L{labels}_M{m}"] = ts / tb
                print(f"  threads {threads} labels {labels:>5} M {m:>2}: sequential {ts:7.2f} s "
                      f"batched {tb:7.2f} s  speed-up ×{ts / tb:.2f} (CPU time "
                      f"{cpus:.1f} / {cpub:.1f} s ×{cpus / cpub:.2f})  epochs "
                      f"{'same' if ep_b == ep_s else f'DIFFER {ep_s} vs {ep_b}'} "
                      f"(max {max(ep_s)})  max |Δw| {dw:.1e}  load {load[0]:.1f}", flush=True)
    res["speedups"] = speedups
    targets = []
    per_core = [r for r in res["runs"] if r["cells"] == max(args.cells)]
    for r in per_core:
        targets.append(C.target(
            f"{r['cells']} MLP cells batched vs sequential ({r['labels']} labels, "
            f"{r['threads']} thread{'s' if r['threads'] > 1 else ''})", "> 1× (no target set)",
            r["speedup"], r["speedup"] > 1,
            limit="per-cell batch gathering and the longest cell's epochs bound it"))
    targets.append(C.target("batched = sequential epochs per cell", "all runs", float(
        all(r["same_epochs"] for r in res["runs"])), all(r["same_epochs"] for r in res["runs"]),
        unit="", limit="a cell crossed its target accuracy in another epoch (reassociation)"))
    C.write_result(args, "batched", env,
                   {"model": "mlp", "loss": args.loss, "dropout": dropout, "batch_size": 64, "lr": 1e-3,
                    "target_accuracy": args.target, "max_epochs": args.max_epochs,
                    "labels": args.labels, "cells": args.cells,
                    "thread_counts": args.thread_counts}, res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
