"""The validation-split study behind the mechanisms' defaults (docs/hyperparameters.md).

Run as ``asknlearn tune --dataset fashion_mnist --out results/tuning``. Nothing here
reads the test set: ``val_size`` points are held out of the pool with the same split as a cell
(:func:`asknlearn.loop.split_pool`), and every score is computed on them.

Two questions, each on models trained on random labeled sets of the sizes of the AL rounds
(|S| plus random pool points, a stand-in for the rounds' labeled sets):

1. the rate of the stochastic network's dropout for VWCC (eq. 2): validation NLL, ECE and
   accuracy, and α on the labeled set, per rate;
2. pseudo-label refinement (Algorithm 1): for each choice of the augmented views (shift, the
   un-augmented view counted or not, the model trained with the same augmentation or not), τ
   and k, the accuracy of argmax and of the refined labels on the refined (low-confidence)
   subset of the validation split, and the net gain over the whole split,
   (#correct refined − #correct argmax) / |val|, which is what the selector sees.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

from asknlearn.augment import Augment
from asknlearn.config import ExperimentConfig
from asknlearn.data import load_dataset
from asknlearn.inference import predict
from asknlearn.loop import derive_seed, generator, split_pool
from asknlearn.losses import build_loss, vwcc_alpha
from asknlearn.metrics import all_metrics
from asknlearn.models import build_model
from asknlearn.pseudolabels import RefinedPseudoLabels
from asknlearn.query import stochastic_probs
from asknlearn.records import atomic_write

DROPOUT_RATES = (0.1, 0.2, 0.3, 0.5)
TAUS = (0.5, 0.7, 0.9)
KS = (5, 10)


def _train(data, cfg: ExperimentConfig, labeled, loss: str, dropout: float, augment, seed: int):
    torch.manual_seed(derive_seed(seed, "init", 1))
    info = data.info
    model = build_model(cfg.model, info.shape, info.num_classes, dropout)
    torch.manual_seed(derive_seed(seed, "dropout", 1))
    from asknlearn.train import train_model

    res = train_model(model, build_loss(loss, cfg.lwcc_lambda, cfg.vwcc_samples),
                      data.x_train[labeled], data.y_train[labeled], lr=cfg.lr,
                      batch_size=cfg.train_batch_size, target_accuracy=cfg.target_train_accuracy,
                      max_epochs=cfg.max_epochs, generator=generator(seed, "batches", 1),
                      augment=augment)
    return model, res


def _alpha(model, x, t: int) -> float:
    if not model.stochastic:
        return float("nan")
    # chunks of 512 images, T passes each (query.stochastic_probs)
    return vwcc_alpha(stochastic_probs(model, x, t, 512 * t)).mean().item()


def study(dataset: str, data_root: str | None, labels: list[int], seeds: list[int], val_size: int,
          log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dropout rows, refinement rows) of the study; see the module docstring."""
    data = load_dataset(dataset, data_root, "cpu", download=True)
    info = data.info
    # candidates: the milder 1 px, the paper-era 2 px and the dataset's default, whatever it is now
    shifts = sorted({1, 2, info.aug_shift})
    drop_rows, ref_rows = [], []
    for seed, n in itertools.product(seeds, labels):
        cfg = ExperimentConfig(dataset=dataset, seed=seed, val_size=val_size, tracking=False).resolve()
        seed_set, pool, val = split_pool(cfg, len(data.y_train))
        extra = pool[torch.randperm(len(pool), generator=generator(seed, "tune", n))[: n - len(seed_set)]]
        labeled = torch.cat([seed_set, extra])
        xv, yv = data.x_train[val], data.y_train[val]
        xl = data.x_train[labeled]
        models, epochs = {}, {}
        # 1. dropout rate of the stochastic network, judged on VWCC (and CE on the plain network)
        for loss, p in [("ce", 0.0), *(("vwcc", r) for r in DROPOUT_RATES), ("ce", 0.3)]:
            t0 = time.perf_counter()
            model, res = _train(data, cfg, labeled, loss, p, None, seed)
            probs, _ = predict(model, xv)
            m = all_metrics(probs, yv)
            drop_rows.append({"seed": seed, "labels": n, "loss": loss, "dropout": p,
                              "epochs": res.epochs, **{f"val_{k}": v for k, v in m.items()},
                              "alpha_mean": _alpha(model, xl, cfg.vwcc_samples)})
            models[(loss, p, False)], epochs[(loss, p, False)] = model, res.epochs
            log(f"[tune] seed {seed} labels {n} {loss} p={p}: val acc {m['accuracy']:.4f} "
                f"nll {m['nll']:.3f} ece {m['ece']:.4f} epochs {res.epochs} "
                f"({time.perf_counter() - t0:.1f}s)")
        # 2. refinement: models of the three losses, trained with or without the augmentation
        for loss, p, train_aug in [("ce", 0.0, False), ("lwcc", 0.0, False), ("vwcc", 0.3, False),
                                   ("ce", 0.0, True), ("lwcc", 0.0, True)]:
            key = (loss, p, train_aug)
            if key not in models:
                aug = Augment(info.aug_shift, info.aug_flip) if train_aug else None
                models[key], res = _train(data, cfg, labeled, loss, p, aug, seed)
                epochs[key] = res.epochs
            model = models[key]
            probs, _ = predict(model, xv)
            argmax = probs.argmax(1)
            for shift, orig, tau, k in itertools.product(shifts, (False, True), TAUS, KS):
                lab = RefinedPseudoLabels(tau, k, Augment(shift, info.aug_flip), orig)
                lbl, ref = lab(model, xv, probs, generator(seed, "tune-augment", n))
                nref = int(ref.sum())
                ref_rows.append({
                    "seed": seed, "labels": n, "loss": loss, "train_augment": train_aug,
                    "epochs": epochs[key],
                    "shift": shift, "include_original": orig, "tau": tau, "k": k,
                    "refined_fraction": nref / len(yv),
                    "refined_argmax_accuracy": (argmax[ref] == yv[ref]).double().mean().item()
                    if nref else float("nan"),
                    "refined_accuracy": (lbl[ref] == yv[ref]).double().mean().item()
                    if nref else float("nan"),
                    "net_gain": ((lbl == yv).double().sum() - (argmax == yv).double().sum()).item()
                    / len(yv),
                    "argmax_accuracy": (argmax == yv).double().mean().item(),
                })
            log(f"[tune] seed {seed} labels {n} refine on {loss} train_aug={train_aug}: "
                f"best net gain {max(r['net_gain'] for r in ref_rows[-len(shifts) * 12:]):+.4f}")
    return pd.DataFrame(drop_rows), pd.DataFrame(ref_rows)


def summarize(drop: pd.DataFrame, ref: pd.DataFrame) -> str:
    """Markdown tables: mean ± sd over seeds, per label count."""
    lines = ["## Dropout rate of the stochastic network (VWCC), validation split", ""]
    g = drop.groupby(["loss", "dropout", "labels"])[["val_accuracy", "val_nll", "val_ece",
                                                     "alpha_mean", "epochs"]]
    t = g.mean().round(4).astype(str) + " ± " + g.std().round(4).astype(str)
    lines += [t.reset_index().to_markdown(index=False), ""]
    lines += ["## Refinement, validation split (mean over seeds)", ""]
    keys = ["loss", "train_augment", "shift", "include_original", "tau", "k"]
    r = ref.groupby(keys)[["refined_fraction", "refined_argmax_accuracy", "refined_accuracy",
                           "net_gain"]].mean().round(4).reset_index()
    best = r.sort_values("net_gain", ascending=False).groupby(["loss", "train_augment"]).head(3)
    lines += ["Top 3 choices per model (by net gain over the whole validation split):", "",
              best.to_markdown(index=False), ""]
    overall = ref[~ref.train_augment].groupby(["shift", "include_original", "tau", "k"])[
        ["net_gain", "refined_fraction", "refined_argmax_accuracy", "refined_accuracy"]
    ].mean().round(4).sort_values("net_gain", ascending=False).reset_index()
    lines += ["Every choice on models trained without augmentation (the protocol's), averaged over "
              "CE, LWCC and VWCC models, seeds and label counts, best first:", "",
              overall.to_markdown(index=False), ""]
    return "\n".join(lines)


def run(a: argparse.Namespace) -> int:
    """``asknlearn tune``: run (or merge) the validation-split study and write its tables."""
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.merge:
        drop = pd.concat([pd.read_csv(Path(d) / "dropout.csv") for d in a.merge], ignore_index=True)
        ref = pd.concat([pd.read_csv(Path(d) / "refine.csv") for d in a.merge], ignore_index=True)
    else:
        drop, ref = study(a.dataset, a.data_root, a.labels, a.seeds, a.val_size)
    out = Path(a.out)
    atomic_write(out / "dropout.csv", lambda p: drop.to_csv(p, index=False))
    atomic_write(out / "refine.csv", lambda p: ref.to_csv(p, index=False))
    md = summarize(drop, ref)
    atomic_write(out / "summary.md", lambda p: Path(p).write_text(md))
    print(md)
    return 0



def main(argv: list[str] | None = None) -> int:
    """``python -m asknlearn.tune``, kept for one release: use ``asknlearn tune``."""
    from asknlearn.cli import main as cli_main

    return cli_main(["tune", *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
