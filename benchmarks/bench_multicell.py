"""Cells of a study trained together in one process (asknlearn.multicell) vs one after another.

    python benchmarks/bench_multicell.py [--dataset fashion_mnist] [--cells 6] [--budget 2000]

Runs the same cells (BADGE, BADGE-LWCC and random on the MLP, seeds 0..) twice in this
process: each alone through ``run_cell``, then all together through ``run_cells``, on the same
threads. Prints both wall times, their ratio, and the paired Δ (together − alone) of every
round's test accuracy with its 95 % t-interval and n, which should be zero within it
(floating-point reassociation only). Fashion-MNIST needs ``data/FashionMNIST/raw``; digits is
the offline default. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asknlearn.config import from_mapping  # noqa: E402
from asknlearn.loop import run_cell  # noqa: E402
from asknlearn.multicell import run_cells  # noqa: E402
from asknlearn.stats import t_interval  # noqa: E402

STRATEGIES = ("badge", "badge-lwcc", "random")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=("digits", "fashion_mnist"))
    p.add_argument("--cells", type=int, default=6)
    p.add_argument("--budget", type=int, default=None,
                   help="labels bought (default: 160 digits, 2000 Fashion-MNIST)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1] / "data"))
    a = p.parse_args(argv)
    if a.cells < 2:
        print(f"bench_multicell: error: --cells {a.cells}; valid: an integer >= 2", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    small = a.dataset == "digits"
    base = dict(dataset=a.dataset, seed_size=20 if small else 100, query_size=20 if small else 1000,
                budget=a.budget or (160 if small else 2000), tracking=False, threads=a.threads,
                data_root=a.data_root, download=False)
    cfgs = [from_mapping({**base, "strategy": STRATEGIES[i % 3], "seed": i // 3}) for i in range(a.cells)]
    quiet = lambda s: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench_multicell.") as tmp:
        t0 = time.perf_counter()
        alone = [run_cell(c, Path(tmp, "alone", str(i)), log=quiet) for i, c in enumerate(cfgs)]
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = run_cells(cfgs, [Path(tmp, "together", str(i)) for i in range(len(cfgs))], log=quiet)
        t_together = time.perf_counter() - t0
    bad = [r for r in together if isinstance(r, BaseException)]
    if bad:
        print(f"bench_multicell: error: {bad[0]!r}", file=sys.stderr)
        return 1
    d = np.concatenate([(b["accuracy"] - a_["accuracy"]).to_numpy() * 100
                        for a_, b in zip(alone, together, strict=True)])
    half, _, pval = t_interval(np.array(len(d)), np.array(d.mean()), np.array(d.std(ddof=1)))
    print(f"{a.dataset}, {a.cells} MLP cells ({', '.join(STRATEGIES)}), {a.threads} thread(s), "
          f"load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print(f"  one after another {t_alone:7.1f} s wall")
    print(f"  together          {t_together:7.1f} s wall   speed-up {t_alone / t_together:.2f}×")
    print(f"  Δ accuracy (together − alone, every round, points): {d.mean():+.4f} "
          f"[{d.mean() - float(half):+.4f}, {d.mean() + float(half):+.4f}] 95 % t-interval, n = {len(d)}, "
          f"max |Δ| {np.abs(d).max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
