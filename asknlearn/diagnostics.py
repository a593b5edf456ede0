"""What a round records besides the test metrics, and the line it prints.

The mechanism diagnostics read how Ask-n-Learn's two parts act: α of eq. 2 on the labeled set
(the stochastic network's VWCC weights), the pseudo-label refinement of Algorithm 1 (on the
validation split, usable for choices, and on the pool's true labels, for reading only), and
what the model does with a noisy oracle's wrong labels. :func:`round_text` prints each
mechanism's numbers only for strategies that have that mechanism.
"""

from __future__ import annotations

from typing import Any

import torch

from asknlearn.catalogue import METRICS
from asknlearn.inference import predict
from asknlearn.losses import vwcc_alpha
from asknlearn.query import stochastic_probs


def alpha(model, x_labeled: torch.Tensor, samples: int, batch_size: int) -> dict[str, float]:
    """α of eq. 2 on the labeled set after training: shows whether VWCC's weights are doing
    anything (α ≈ 0 everywhere means VWCC is plain cross-entropy). Stochastic networks only."""
    if not model.stochastic:
        return {}
    a = vwcc_alpha(stochastic_probs(model, x_labeled, samples, batch_size))
    q = torch.quantile(a.double().cpu(), torch.tensor([0.5, 0.9], dtype=torch.float64))
    return {"alpha_mean": a.double().mean().item(), "alpha_median": q[0].item(),
            "alpha_p90": q[1].item()}


def refinement(y: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, refined: torch.Tensor,
               prefix: str) -> dict[str, float]:
    """Accuracy of argmax and of the refined pseudo-labels on the refined subset, and of all
    pseudo-labels: whether refinement helps where it acts."""
    argmax = probs.argmax(dim=1)
    out = {f"{prefix}pseudo_label_accuracy": (labels == y).double().mean().item(),
           f"{prefix}refined_fraction": refined.double().mean().item()}
    if refined.any():
        out[f"{prefix}refined_argmax_accuracy"] = (argmax[refined] == y[refined]).double().mean().item()
        out[f"{prefix}refined_accuracy"] = (labels[refined] == y[refined]).double().mean().item()
    return out


def wrong_labels(model, x_wrong: torch.Tensor, given: torch.Tensor, true: torch.Tensor,
                 batch_size: int) -> dict[str, float]:
    """What the trained model does with the oracle's wrong labels in L: the fraction it
    predicts as given (memorised) and as the true class (corrected). The oracle corrupts
    exactly round(r·b) labels of every batch whatever the strategy picks, so robustness to
    label noise (the paper's Fig. 6) shows here, not in how many wrong labels are bought."""
    if not len(given):
        return {}
    pred = predict(model, x_wrong, batch_size)[0].argmax(dim=1).cpu()
    return {"oracle_wrong_memorised": (pred == given.cpu()).double().mean().item(),
            "oracle_wrong_corrected": (pred == true.cpu()).double().mean().item()}


# ---------------------------------------------------------------------------- the round line
def hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"


def eta_text(rows: list[dict[str, Any]], rounds: int, query_size: int) -> str:
    """Elapsed time and an ETA for the cell: seconds per label so far (training cost grows
    with |L|) times the labels of the rounds still to come."""
    done = sum(r["round_seconds"] for r in rows)
    per_label = done / max(sum(r["labels"] for r in rows), 1)
    last = rows[-1]["labels"]
    todo = sum(last + query_size * i for i in range(1, rounds - rows[-1]["round"] + 1))
    return f" elapsed {hms(done)}" + (f" eta {hms(per_label * todo)}" if todo else " done")


def cap_text(row: dict[str, Any], cfg) -> str:
    """Say so when training stopped at max_epochs short of its target: every round is meant to
    train to the same training accuracy (Ash et al. 2019), and a network that no longer gets
    there (e.g. cross-entropy on the dropout network past ~4,000 Fashion-MNIST labels) is
    under-fitted, which changes its accuracy and calibration."""
    if row["train_epochs"] >= cfg.max_epochs and row["train_accuracy"] < cfg.target_train_accuracy:
        return (f" (max_epochs reached: train acc {row['train_accuracy']:.3f}"
                f" < {cfg.target_train_accuracy:g})")
    return ""


def mechanism_text(row: dict[str, Any], spec, noise: float, stochastic: bool) -> str:
    """Each mechanism's diagnostics, for a strategy that has it: α on a stochastic network,
    the refinement for a refining pseudo-labeller (after round 0), the wrong labels' fate
    for a noisy oracle."""
    out = ""
    if stochastic:
        out += f" alpha {_fmt(row['alpha_mean'])}"
    if spec.refines and row["round"] > 0:
        out += f" refined {_fmt(row['oracle_refined_fraction'])}"
        if "val_accuracy" in row:
            out += (f" val-refined acc {_fmt(row['val_refined_accuracy'])}"
                    f" vs argmax {_fmt(row['val_refined_argmax_accuracy'])}")
    if noise > 0 and row["oracle_wrong_memorised"] == row["oracle_wrong_memorised"]:
        out += (f" wrong labels memorised {_fmt(row['oracle_wrong_memorised'])}"
                f" corrected {_fmt(row['oracle_wrong_corrected'])}")
    return out


def round_text(row: dict[str, Any], rows: list[dict[str, Any]], cfg, stochastic: bool) -> str:
    """The line a finished round prints: its metrics (units and digits from the catalogue),
    epochs, the strategy's own diagnostics, timings and the ETA."""
    metrics = " ".join(f"{'acc' if m == 'accuracy' else m} {row[m]:.{4 if m != 'nll' else 3}f}"
                       for m in METRICS)
    sel_s = row["inference_seconds"] + row["selection_seconds"]
    return (f"[{cfg.cell_id()}] round {row['round']:>3}/{cfg.rounds} labels {row['labels']:>6} "
            f"{metrics} epochs {row['train_epochs']:>3}{cap_text(row, cfg)}"
            f"{mechanism_text(row, cfg.spec, cfg.noise, stochastic)} "
            f"train {row['train_seconds']:6.1f}s select {sel_s:5.1f}s "
            f"total {row['round_seconds']:6.1f}s{eta_text(rows, cfg.rounds, cfg.query_size)}")
