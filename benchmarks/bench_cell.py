"""One whole active-learning cell: where a round's time goes, and peak memory.

Runs asknlearn.loop.Cell end to end in a child process per cell (so its peak resident set
size is its own, read from the kernel's rusage of that child):
  * Fashion-MNIST (the real files when available), seed set 100, b = 1000, 10 rounds, for
    BADGE and Ask-n-Learn-VWCC: per round the wall time of training, pool inference and
    selection (rounds.csv's train_seconds, inference_seconds, selection_seconds) and
    selection's share of the round (target: < 5 % at every round);
  * CIFAR-10 scale: random tensors of CIFAR-10's shape (50,000 training images) with
    ResNet-18, BADGE, one round with a small budget, for peak memory.

    python benchmarks/bench_cell.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


# ---------------------------------------------------------------------------- child side
def child(spec: dict) -> None:
    """Run one cell as described by ``spec`` (see :func:`cell_specs`)."""
    from asknlearn.config import ExperimentConfig
    from asknlearn.loop import Cell

    torch.set_num_threads(spec["threads"])
    data = None
    if spec.get("random_tensors"):
        from asknlearn.data import TensorData, dataset_info

        info = dataset_info(spec["config"]["dataset"])
        g = torch.Generator().manual_seed(0)
        n, nt = spec["random_tensors"]
        data = TensorData(info, torch.randn(n, *info.shape, generator=g),
                          torch.randint(0, info.num_classes, (n,), generator=g),
                          torch.randn(nt, *info.shape, generator=g),
                          torch.randint(0, info.num_classes, (nt,), generator=g))
    cfg = ExperimentConfig(**spec["config"])
    Cell(cfg, spec["out"], log=lambda s: print(s, flush=True), data=data).run()


# ---------------------------------------------------------------------------- parent side
def run_child(spec: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one cell in a fresh interpreter."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_cell: the {spec['label']} cell failed (exit {proc.returncode})")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024  # Linux reports KiB


def baseline_rss() -> int | None:
    """Resident memory of an interpreter that has imported torch and asknlearn's loop (this
    one, before any work): what every cell pays before it holds data."""
    import asknlearn.loop  # noqa: F401

    return C._proc_status("VmRSS")


def rounds_table(path: Path) -> list[dict]:
    import pandas as pd

    df = pd.read_csv(path)
    cols = ["round", "labels", "accuracy", "train_epochs", "train_seconds", "inference_seconds",
            "selection_seconds", "round_seconds"]
    rows = df[cols].to_dict("records")
    for r in rows:
        r["selection_fraction"] = r["selection_seconds"] / r["round_seconds"]
        r["inference_fraction"] = r["inference_seconds"] / r["round_seconds"]
        r["train_fraction"] = r["train_seconds"] / r["round_seconds"]
    return rows


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return 0
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="badge,ask-n-learn-vwcc")
    ap.add_argument("--cifar-n", type=int, default=None,
                    help="training images of the CIFAR-10-scale cell (default 50000)")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--synthetic", action="store_true", help="random images even if real data exist")
    args = ap.parse_args()
    device = C.setup(args)
    env = C.environment(device, args.threads)
    q = args.quick
    res: dict = {"cells": {}}
    targets = []
    with tempfile.TemporaryDirectory(prefix="bench_cell_") as tmp:
        tmp = Path(tmp)
        root, real = C.fashion_mnist_root(tmp / "data", q or args.synthetic,
                                          n_train=1200 if q else 60000, n_test=200 if q else 10000)
        proto = dict(seed_size=20, query_size=20, budget=40, max_epochs=3) if q else dict(
            seed_size=100, query_size=1000, budget=10000)
        if not real and not q:
            proto["max_epochs"] = 20  # random labels never reach 99 % train accuracy
        res["real_data"] = real
        res["baseline_rss_mib"] = C.mib(baseline_rss())
        print(f"AL cell: Fashion-MNIST ({'real' if real else 'synthetic'}), {proto}, "
              f"threads={args.threads}, device={device}, load {env['loadavg_start']}", flush=True)
        for strategy in args.strategies.split(","):
            out = tmp / strategy
            spec = {"label": f"fashion_mnist/{strategy}", "threads": args.threads, "out": str(out),
                    "config": {"dataset": "fashion_mnist", "strategy": strategy, "seed": 0,
                               "study": "bench", "threads": args.threads, "tracking": False,
                               "device": args.device, "data_root": str(root), **proto}}
            wall, rss = run_child(spec)
            rows = rounds_table(out / "rounds.csv")
            later = [r for r in rows if r["round"] > 0]
            worst = max(later, key=lambda r: r["selection_fraction"])
            res["cells"][strategy] = {
                "dataset": "fashion_mnist", "wall_seconds": wall, "peak_rss_mib": C.mib(rss),
                "rounds": rows, "max_selection_fraction": worst["selection_fraction"],
                "worst_round": worst["round"],
                "totals": {k: sum(r[k] for r in rows) for k in
                           ("train_seconds", "inference_seconds", "selection_seconds", "round_seconds")}}
            print(f"  {strategy}: {wall:.0f} s wall, peak RSS {C.mib(rss):.0f} MiB", flush=True)
            print("    round labels   acc  epochs  train s  infer s  select s  round s  select %", flush=True)
            for r in rows:
                print(f"    {r['round']:>5} {r['labels']:>6} {r['accuracy']:.3f} {r['train_epochs']:>6} "
                      f"{r['train_seconds']:8.2f} {r['inference_seconds']:8.2f} "
                      f"{r['selection_seconds']:9.3f} {r['round_seconds']:8.2f} "
                      f"{100 * r['selection_fraction']:8.2f}", flush=True)
            targets.append(C.target(
                f"selection share of a round ({strategy})", "< 5 % at every round",
                100 * worst["selection_fraction"], worst["selection_fraction"] < 0.05, unit=" % (worst)",
                limit=f"round {worst['round']}: selection {worst['selection_seconds']:.2f} s of "
                      f"{worst['round_seconds']:.2f} s; early rounds train on few labels, so any "
                      f"O(pool) selection weighs more there"))
        if not args.skip_cifar:
            n = args.cifar_n or (120 if q else 50000)
            out = tmp / "cifar"
            spec = {"label": "cifar10-scale/badge", "threads": args.threads, "out": str(out),
                    "random_tensors": [n, 20 if q else 1000],
                    "config": {"dataset": "cifar10", "strategy": "badge", "seed": 0, "study": "bench",
                               "threads": args.threads, "tracking": False, "device": args.device,
                               "seed_size": 20 if q else 100, "query_size": 10 if q else 100,
                               "budget": 10 if q else 100, "max_epochs": 1}}
            print(f"CIFAR-10 scale: {n} random images 3×32×32, ResNet-18, BADGE, 1 round", flush=True)
            wall, rss = run_child(spec)
            res["cells"]["cifar10_scale_badge"] = {
                "dataset": "cifar10 (random tensors)", "n_train": n, "wall_seconds": wall,
                "peak_rss_mib": C.mib(rss), "rounds": rounds_table(out / "rounds.csv"),
                "config": spec["config"]}
            print(f"  peak RSS {C.mib(rss):.0f} MiB (an interpreter with torch: "
                  f"{res['baseline_rss_mib']:.0f} MiB), {wall:.0f} s", flush=True)
    C.write_result(args, "cell", env, {"threads": args.threads, **proto}, res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
