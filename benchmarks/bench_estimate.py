"""How far ``asknlearn estimate`` is from real training time: the Fashion-MNIST ablation.

The truth is the committed ``docs/reproduction/ablation_fashion_mnist_rounds.csv`` (10
strategies × 3 seeds × 11 rounds, |L| = 100 … 10,100, run with 1 thread a cell on a 2-core
machine): each strategy's real training seconds of one cell (Σ_r train_seconds, mean over its
seeds) and its real sample-epochs (Σ_r train_epochs·|L_r|). Each estimate of that cell's
training seconds is divided by the real one (estimate/real, 1 = exact):

  assumed       E = 30 every round (the fallback), rate timed here by the estimate's meter
  learned-E     E_r learned from another study's finished cells (``--study``, default the
                noisy-oracle ablation: rounds up to 3,100 labels, so E at 4,100 … 10,100 is
                extrapolated), rate timed here
  learned-E+s   the same cells' epochs and seconds per sample-epoch (no timing)
  held-out      E_r and seconds learned from the same study's other seeds (the committed CSV;
                always runnable), pooled over its strategies of the same network and loss as
                the estimate pools them: the error when the study folder already has cells

The ``epochs`` column is the same ratio for sample-epochs alone (Σ E_r·|L_r|), which separates
the error in E from the error in the rate; the rest is the machine: the real seconds were
measured with other cells beside them, and the rate here is timed on a possibly loaded machine.

    python benchmarks/bench_estimate.py [--study PATH] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asknlearn.estimate import (  # noqa: E402
    RateMeter,
    cell_key,
    learn_from_results,
    load_workflow_config,
    schedule,
    study_cells,
    summarise,
)

TRUTH = REPO / "docs" / "reproduction" / "ablation_fashion_mnist_rounds.csv"
CONFIG = REPO / "config" / "paper" / "ablation_fashion_mnist.yaml"
NOISY = Path("/work/study/src/results/ablation_fashion_mnist_noise")


def read_truth(path: Path) -> dict[str, dict[int, list[tuple[int, float, float]]]]:
    """strategy -> seed -> [(|L|, train_epochs, train_seconds)] of the committed rounds."""
    out: dict[str, dict[int, list]] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["strategy"], {}).setdefault(int(r["seed"]), []).append(
                (int(r["labels"]), float(r["train_epochs"]), float(r["train_seconds"])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=NOISY,
                    help="a results or study folder whose finished cells the estimate learns from")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()

    cfg = load_workflow_config([CONFIG])
    threads = cfg["resources"]["al"]["threads"]
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    meter = RateMeter(device)
    truth = read_truth(TRUTH)
    other = learn_from_results(args.study) if args.study.is_dir() else {}
    unit = "CPU" if device.type == "cpu" else "GPU"
    print(f"device {device} ({threads} thread(s), as the study ran): estimates are {unit} seconds; "
          f"learned-E from {str(args.study)!r}" + ("" if other else " (absent: columns '-')"))
    head = (f"{'strategy':<18} {'real s':>7} {'epochs':>7} {'assumed':>8} {'learned-E':>9} "
            f"{'learned-E+s':>11} {'held-out':>8}")
    print(head + "\n" + "-" * len(head))
    cols: dict[str, list[float]] = {k: [] for k in ("assumed", "learned-E", "learned-E+s", "held-out")}
    cells = [cell for cell, _ in study_cells(cfg)]
    keys = {c.strategy: cell_key(c.dataset, c.model, c.dropout, c.spec.loss) for c in cells}
    for cell in cells:
        seeds = truth.get(cell.strategy)
        if not seeds:
            continue
        sizes = schedule(cell.seed_size, cell.query_size, cell.budget)
        real_s = statistics.mean(sum(s for *_, s in rows) for rows in seeds.values())
        real_se = statistics.mean(sum(n * e for n, e, _ in rows) for rows in seeds.values())
        rate = meter.train_rate(cell)  # sample-epochs per second, timed here

        def secs(epochs: list[float], per_sample_epoch: float, sizes: list[int] = sizes,
                 cap: float = cell.max_epochs) -> float:
            return sum(min(e, cap) * n for e, n in zip(epochs, sizes, strict=True)) * per_sample_epoch

        ratios = {"assumed": secs([30.0] * len(sizes), 1 / rate) / real_s}
        hit = other.get(cell_key(cell.dataset, cell.model, cell.dropout, cell.spec.loss))
        if hit is not None:
            e = [hit.epochs_at(n) for n in sizes]
            ratios["learned-E"] = secs(e, 1 / rate) / real_s
            if hit.seconds_per_sample_epoch is not None:
                ratios["learned-E+s"] = secs(e, hit.seconds_per_sample_epoch) / real_s
        # leave one seed out: learn, as the estimate does, from every cell of the same dataset,
        # network and loss (other strategies included) except this seed's, predict this seed
        key = cell_key(cell.dataset, cell.model, cell.dropout, cell.spec.loss)
        held = []
        for seed, rows in seeds.items():
            rest = summarise([(r, (), 0.0) for strat, by_seed in truth.items() if keys.get(strat) == key
                              for s, r in by_seed.items() if s != seed])
            e = [rest.epochs_at(n) for n in sizes]
            held.append(secs(e, rest.seconds_per_sample_epoch) / sum(s for *_, s in rows))
        ratios["held-out"] = statistics.mean(held)
        epoch_ratio = (sum(min(hit.epochs_at(n), cell.max_epochs) * n for n in sizes) / real_se
                       if hit is not None else math.nan)
        for k, v in ratios.items():
            cols[k].append(v)
        cell_text = " ".join(f"{ratios.get(k, math.nan):>{w}.2f}" for k, w in
                             (("assumed", 8), ("learned-E", 9), ("learned-E+s", 11), ("held-out", 8)))
        print(f"{cell.strategy:<18} {real_s:>7.0f} {epoch_ratio:>7.2f} {cell_text}".replace("nan", "  -"))
    print("-" * len(head))
    for k, v in cols.items():
        if v:
            g = math.exp(statistics.mean(math.log(x) for x in v))
            print(f"{k:<12} estimate/real: geometric mean {g:.2f}, range {min(v):.2f}-{max(v):.2f} "
                  f"over {len(v)} strategies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
