"""Training throughput: whole-dataset tensors + index batching vs a torchvision DataLoader.

One epoch of the paper's MLP on Fashion-MNIST (the real files when available, else random
images of the same shape), batch size 64, the same initial weights and the same batch order:
  ours          asknlearn.train.train_model on the tensors of asknlearn.data.load_dataset
  dataloader_wN torch.utils.data.DataLoader over torchvision's FashionMNIST with
                ToTensor + Normalize, a sampler holding the same permutation, N workers
                (worker start-up included: an AL loop builds a loader per training)
Prints samples/s, the ratio (target ≥ 3×) and whether the per-batch loss curves agree.

    python benchmarks/bench_training.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn.data import dataset_info, load_dataset  # noqa: E402
from asknlearn.losses import CrossEntropy  # noqa: E402
from asknlearn.models import build_model  # noqa: E402
from asknlearn.train import train_model  # noqa: E402


class RecordingLoss:
    """Wraps a loss and keeps every batch's value (detached): the loss curve."""

    def __init__(self, inner):
        self.inner = inner
        self.losses: list[torch.Tensor] = []

    def __call__(self, model, x, y):
        loss, logits = self.inner(model, x, y)
        self.losses.append(loss.detach())
        return loss, logits


def fresh_model(seed: int, device: torch.device):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 28, 28), 10, dropout=0.0).to(device)


def run_ours(x, y, epochs: int, seed: int, lr: float, batch: int, device) -> tuple[float, torch.Tensor]:
    model = fresh_model(seed, device)
    loss = RecordingLoss(CrossEntropy())
    t, _ = C.timed(lambda: train_model(
        model, loss, x, y, lr=lr, batch_size=batch, target_accuracy=2.0, max_epochs=epochs,
        generator=torch.Generator().manual_seed(seed)), device)
    return t, torch.stack(loss.losses).cpu()


def run_dataloader(ds, n: int, epochs: int, seed: int, lr: float, batch: int, workers: int,
                   device) -> tuple[float, torch.Tensor]:
    """The same loop as train_model, batches from a DataLoader in the same order."""
    from torch.utils.data import DataLoader

    model = fresh_model(seed, device)
    loss_fn = RecordingLoss(CrossEntropy())
    gen = torch.Generator().manual_seed(seed)

    def train() -> None:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).tolist()  # train_model's permutation
            loader = DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers)
            correct = torch.zeros((), device=device)
            for xb, yb in loader:
                if len(yb) == 1 and n > 1:
                    continue
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss, logits = loss_fn(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += (logits.detach().argmax(1) == yb).sum()
            correct.item()

    t, _ = C.timed(train, device)
    return t, torch.stack(loss_fn.losses).cpu()


def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--synthetic", action="store_true", help="random images even if real data exist")
    args = ap.parse_args()
    device = C.setup(args)
    env = C.environment(device, args.threads)
    seed, lr, batch = 0, 1e-3, args.batch_size
    workers_list = (0, 2)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        root, real = C.fashion_mnist_root(Path(tmp), args.synthetic or args.quick,
                                          n_train=1500 if args.quick else 60000,
                                          n_test=100 if args.quick else 10000)
        t_load, data = C.timed(lambda: load_dataset("fashion_mnist", root, device), device)
        x, y = data.x_train, data.y_train
        n = len(y)
        print(f"training throughput: MLP, {'real' if real else 'synthetic'} Fashion-MNIST, "
              f"N={n}, batch {batch}, {args.epochs} epoch(s), threads={args.threads}, "
              f"load {env['loadavg_start']}", flush=True)
        import torchvision.datasets as tvd
        import torchvision.transforms as T

        info = dataset_info("fashion_mnist")
        tf = T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)])
        t_ds, ds = C.timed(lambda: tvd.FashionMNIST(str(root), train=True, transform=tf,
                                                    download=False), device)
        samples = n * args.epochs
        res: dict = {"real_data": real, "n": n, "one_time_load_seconds": {
            "ours_load_dataset": t_load, "torchvision_dataset": t_ds}}
        t, curve = run_ours(x, y, args.epochs, seed, lr, batch, device)
        res["ours"] = {"seconds": t, "samples_per_s": samples / t}
        print(f"  ours            {t:8.2f} s  {samples / t:10.0f} samples/s", flush=True)
        for w in workers_list:
            tw, cw = run_dataloader(ds, n, args.epochs, seed, lr, batch, w, device)
            diff = float((cw - curve).abs().max()) if len(cw) == len(curve) else float("inf")
            res[f"dataloader_w{w}"] = {
                "seconds": tw, "samples_per_s": samples / tw, "speedup_of_ours": tw / t,
                "batches": len(cw), "loss_curve_max_abs_diff": diff,
                "loss_curve_identical": bool(len(cw) == len(curve) and torch.equal(cw, curve))}
            print(f"  dataloader w={w}  {tw:8.2f} s  {samples / tw:10.0f} samples/s  ours ×{tw / t:.2f}; "
                  f"loss curves over {len(cw)} batches: max |diff| {diff:.2e}"
                  f"{' (identical)' if res[f'dataloader_w{w}']['loss_curve_identical'] else ''}",
                  flush=True)
        res["loss_curve_first_last"] = [float(curve[0]), float(curve[-1])]
    targets = []
    for w in workers_list:
        r = res[f"dataloader_w{w}"]
        targets.append(C.target(
            f"training vs DataLoader (workers={w})", "≥ 3× samples/s", r["speedup_of_ours"],
            r["speedup_of_ours"] >= 3,
            limit=f"ours {res['ours']['samples_per_s']:.0f} samples/s is bound by the MLP's "
                  f"forward/backward and Adam step per batch of {batch}, not by data"))
        targets.append(C.target(
            f"same loss curve (workers={w})", "max |Δloss| per batch ≤ 1e-5",
            r["loss_curve_max_abs_diff"], r["loss_curve_max_abs_diff"] <= 1e-5, unit="",
            limit="batch order or preprocessing differ"))
    C.write_result(args, "training", env,
                   {"model": "mlp", "batch_size": batch, "epochs": args.epochs, "lr": lr,
                    "seed": seed, "workers": list(workers_list)}, res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
