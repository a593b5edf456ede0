"""VWCC's T stochastic inferences: one batched forward vs a Python loop over T forwards.

The VWCC loss (eq. 2) needs T predictions per sample under different dropout masks (or
stochastic depths) in every hidden layer. ``SplitNet.stochastic_logits`` runs them as one
forward pass over a T·B batch (asknlearn.losses.VWCC). The alternative runs the whole network
T times in a Python loop over B-batches, as MC-dropout code usually does. Both losses are the same formula
on the (T, N, K) logits; one training epoch of each (train_model, batch 64) is timed, for
the MLP on Fashion-MNIST-shaped data and ResNet-18 on CIFAR-10-shaped data (random tensors).
Target: the batched form is not slower (ratio ≥ 1).

    python benchmarks/bench_vwcc.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn.catalogue import MODELS  # noqa: E402
from asknlearn.losses import VWCC, CrossEntropy, kl_uniform, vwcc_alpha  # noqa: E402
from asknlearn.models import build_model  # noqa: E402
from asknlearn.train import train_model  # noqa: E402


@dataclass(frozen=True)
class LoopVWCC:
    """VWCC with its T inferences as T full forward passes in a Python loop."""

    samples: int = 5

    def __call__(self, model, x, y):
        logits_t = torch.stack([model(x) for _ in range(self.samples)])  # (T, N, K)
        log_p = F.log_softmax(logits_t, dim=-1)
        alpha = vwcc_alpha(log_p.detach().exp())
        ce = -log_p.gather(-1, y.expand(self.samples, -1).unsqueeze(-1)).squeeze(-1)
        return ((1.0 - alpha) * ce + alpha * kl_uniform(log_p)).mean(), logits_t.mean(dim=0)


def epoch_seconds(model_name, shape, n, loss_fn, seed, device) -> float:
    """One epoch of train_model over n random samples, fixed init and batch order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    torch.manual_seed(seed)
    model = build_model(model_name, shape, 10, dropout=MODELS[model_name].dropout).to(device)
    t, res = C.timed(lambda: train_model(model, loss_fn, x, y, batch_size=64, target_accuracy=2.0,
                                         max_epochs=1, generator=torch.Generator().manual_seed(seed)),
                     device)
    return t


def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5, help="T stochastic inferences")
    args = ap.parse_args()
    device = C.setup(args)
    env = C.environment(device, args.threads)
    q = args.quick
    cases = [("mlp", (1, 28, 28), 512 if q else 10000), ("resnet18", (3, 32, 32), 4 if q else 256)]
    T = args.samples
    print(f"VWCC stochastic inferences: T={T}, one epoch, batch 64, threads={args.threads}, "
          f"load {env['loadavg_start']}", flush=True)
    res: dict = {}
    targets = []
    for name, shape, n in cases:
        epoch_seconds(name, shape, min(n, 32), VWCC(T), 0, device)  # warm-up: allocator, kernels
        t_ce = epoch_seconds(name, shape, n, CrossEntropy(), 0, device)
        t_b = epoch_seconds(name, shape, n, VWCC(T), 0, device)
        t_l = epoch_seconds(name, shape, n, LoopVWCC(T), 0, device)
        ratio = t_l / t_b
        res[name] = {"n": n, "shape": list(shape), "ce_epoch_seconds": t_ce,
                     "batched_epoch_seconds": t_b, "loop_epoch_seconds": t_l,
                     "loop_over_batched": ratio, "batched_over_ce": t_b / t_ce}
        print(f"  {name:<9} N={n:>6}: CE {t_ce:7.2f} s | VWCC batched {t_b:7.2f} s | loop over T "
              f"{t_l:7.2f} s | loop/batched ×{ratio:.2f}, batched/CE ×{t_b / t_ce:.2f}", flush=True)
        targets.append(C.target(
            f"VWCC batched vs loop ({name})", "batched not slower (loop/batched ≥ 1)", ratio,
            ratio >= 1, limit="on a CPU both forms run T whole-network passes; one T·B batch saves only "
                  "per-call overhead, which a CPU barely has, and its larger activations leave "
                  "cache; the launch-bound case it is for is a GPU's"))
    C.write_result(args, "vwcc", env, {"samples": T, "batch_size": 64,
                    "dropout": {m: MODELS[m].dropout for m in ("mlp", "resnet18")}},
                   res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
