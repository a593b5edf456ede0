"""GPU use: the package's fp32 batch-64 training path against each improvement of asknlearn.accel.

In one process, on the same synthetic CIFAR-shaped tensors (no data needed) and the same
initial weights, for ResNet-18 and VGG-16-BN at the protocol's batch size 64:
  current        asknlearn.train.train_model as it is (fp32, eager, torch's default flags)
  eager          asknlearn.accel.TrainStep, mode off (must match the current path)
  bf16           + bf16 autocast (optimizer state fp32)
  channels_last  + NHWC weights and batches
  bf16+cl        both
  graph          the whole step (forward, backward, Adam) as one replayed CUDA graph, fp32
  graph+bf16+cl  graph capture with bf16 and channels_last
  compile        torch.compile(mode="reduce-overhead") with bf16 and channels_last
  deterministic  the best path with the deterministic switch on vs off (its cost)
  batch 256      bf16+cl at batch 256, for reference only (not the protocol)
then pool inference (50,000 images, fp32 vs bf16 + channels_last), and packing: K processes
each running MLP "rounds" (train on 1,000 labels for 5 epochs, infer a 59,000-image pool) on
one GPU at once, aggregate rounds/s against one process alone.

Prints every ratio next to its target and writes results/gpu.json. Without CUDA it says so
and exits 0, writing nothing; ``--device cpu`` runs the same code on the CPU as a smoke test
(capture modes fall back to eager, bf16 is skipped; the numbers mean nothing for a GPU).

    python benchmarks/bench_gpu.py [--quick] [--device cpu]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn import accel  # noqa: E402
from asknlearn.errors import ConfigError  # noqa: E402
from asknlearn.inference import predict  # noqa: E402
from asknlearn.losses import CrossEntropy  # noqa: E402
from asknlearn.models import build_model  # noqa: E402
from asknlearn.train import train_model  # noqa: E402

LR = 1e-3


def fresh(name: str, shape: tuple[int, int, int], device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, shape, 10, dropout=0.0).to(device)


def data(n: int, shape: tuple[int, int, int], device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g).to(device),
            torch.randint(0, 10, (n,), generator=g).to(device))


def run_current(name, x, y, epochs, batch, device) -> float:
    """Seconds of ``epochs`` epochs of the package's own train_model."""
    model = fresh(name, tuple(x.shape[1:]), device)
    t, _ = C.timed(lambda: train_model(model, CrossEntropy(), x, y, lr=LR, batch_size=batch,
                                       target_accuracy=2.0, max_epochs=epochs,
                                       generator=torch.Generator().manual_seed(0)), device)
    return t


def run_step(name, x, y, epochs, batch, device, precision="fp32", channels_last=False,
             mode="off") -> tuple[float, torch.Tensor, str]:
    """Seconds of ``epochs`` epochs of train_model's loop with accel.TrainStep; also the final
    weights (flattened) and the mode actually used."""
    model = fresh(name, tuple(x.shape[1:]), device)
    cl = accel.to_channels_last(model, device, channels_last)
    xs = accel.batch_layout(x, cl)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    step = accel.TrainStep(model, opt, CrossEntropy(), batch_size=batch, device=device,
                           precision=precision, mode=mode)
    gen = torch.Generator().manual_seed(0)
    n = len(y)

    def train() -> None:
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            correct = torch.zeros((), device=device)
            for s in range(0, n, batch):
                idx = perm[s:s + batch]
                if len(idx) == 1 and n > 1:
                    continue
                yb = y.index_select(0, idx)
                _, logits = step(xs.index_select(0, idx), yb)
                correct += (logits.detach().argmax(1) == yb).sum()
            correct.item()

    t, _ = C.timed(train, device)
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()]).cpu()
    return t, flat, step.mode


# ---------------------------------------------------------------------------- packing workers
def mlp_rounds(rounds: int, device: torch.device, mode: str, pool_size: int = 59000) -> None:
    """One process's share of the packing test: MLP 'rounds' as a cell runs them."""
    x, y = data(1000, (1, 28, 28), device)
    pool, _ = data(pool_size, (1, 28, 28), device, seed=1)
    for r in range(rounds):
        model = fresh("mlp", (1, 28, 28), device, seed=r)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        step = accel.TrainStep(model, opt, CrossEntropy(), batch_size=64, device=device, mode=mode)
        gen = torch.Generator().manual_seed(r)
        model.train()
        for _ in range(5):
            perm = torch.randperm(len(y), generator=gen).to(device)
            for s in range(0, len(y), 64):
                idx = perm[s:s + 64]
                step(x.index_select(0, idx), y.index_select(0, idx))
        predict(model, pool, 4096, features=True)
        C.sync(device)


def worker(args) -> int:
    """``--worker ROUNDS``: warm up, wait for the go file, run, print the seconds as JSON."""
    device = torch.device(args.device)
    pool = 5000 if args.quick else 59000
    mlp_rounds(1, device, args.mode, pool)  # CUDA context, kernels, allocator: not part of the timing
    go = Path(args.go)
    Path(f"{go}.ready.{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    t0 = time.perf_counter()
    mlp_rounds(args.worker, device, args.mode, pool)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rounds": args.worker}), flush=True)
    return 0


def packing(k: int, rounds: int, device: torch.device, mode: str, tmp: Path, quick: bool) -> float:
    """Aggregate rounds/s of ``k`` worker processes sharing the GPU."""
    go = tmp / f"go-{k}"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(rounds), "--go", str(go),
                               "--device", device.type, "--mode", mode, "--threads", "1",
                               *(["--quick"] if quick else [])],
                              stdout=subprocess.PIPE, text=True) for _ in range(k)]
    # start the clock once every worker has its CUDA context and kernels warm
    deadline = time.monotonic() + 300
    while len(list(tmp.glob(f"{go.name}.ready.*"))) < k:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise RuntimeError(f"packing workers did not get ready (k={k})")
        time.sleep(0.05)
    t0 = time.perf_counter()
    go.touch()
    outs = [p.communicate(timeout=600)[0] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a packing worker failed: {outs}")
    return k * rounds / wall


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.set_defaults(device="cuda")
    ap.add_argument("--worker", type=int, default=0, help=argparse_suppress())
    ap.add_argument("--go", default="", help=argparse_suppress())
    ap.add_argument("--mode", default="graph", help=argparse_suppress())
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pack", default="1,2,4,8,12", help="process counts of the packing test")
    ap.add_argument("--models", default="resnet18,vgg16", help="CNNs of the training comparison")
    args = ap.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine; nothing measured, nothing written "
              "(run it where `torch.cuda.is_available()`; --device cpu runs a CPU smoke test)")
        return 0
    device = C.setup(args)
    env = C.environment(device, args.threads)
    cuda = device.type == "cuda"
    n = (512 if cuda else 64) if args.quick else 4096
    warm = min(256, n // 2)  # rows of the untimed warm-up epoch
    epochs = 1 if args.quick else args.epochs
    res: dict = {"cnn": {}, "notes": []}
    targets = []
    print(f"bench_gpu on {env['device_name']}: CNN training, N={n} CIFAR-shaped, {epochs} epoch(s)",
          flush=True)
    for name in args.models.split(","):
        x, y = data(n, (3, 32, 32), device)
        torch_defaults()  # the current path runs on torch's default flags
        run_current(name, x[:warm], y[:warm], 1, 64, device)  # warm-up: kernels, allocator
        samples = n * epochs
        base = run_current(name, x, y, epochs, 64, device)
        accel.configure(device, deterministic=False)  # improvements: cudnn.benchmark on CUDA
        rows = {"current": {"seconds": base, "samples_per_s": samples / base, "mode": "eager"}}
        print(f"  {name:<9} {'current':<24} {samples / base:10.0f} samples/s", flush=True)
        paths = [("eager", "fp32", False, "off"), ("bf16", "bf16", False, "off"),
                 ("channels_last", "fp32", True, "off"), ("bf16+cl", "bf16", True, "off"),
                 ("graph", "fp32", False, "graph"), ("graph+bf16+cl", "bf16", True, "graph"),
                 ("compile+bf16+cl", "bf16", True, "compile")]
        if not cuda:  # a CPU smoke run: bf16 is refused and compile would only run eagerly
            paths = [p for p in paths if p[1] == "fp32" and p[3] != "compile"]
        weights = {}
        for label, prec, cl, mode in paths:
            try:
                run_step(name, x[:warm], y[:warm], 1, 64, device, prec, cl, mode)  # warm-up/compile
                t, w, used = run_step(name, x, y, epochs, 64, device, prec, cl, mode)
            except ConfigError as exc:  # bf16 on the CPU
                rows[label] = {"skipped": str(exc)}
                print(f"  {name:<9} {label:<24} skipped: {exc}", flush=True)
                continue
            except Exception as exc:  # a capture mode this torch/GPU cannot do: report it
                rows[label] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"  {name:<9} {label:<24} failed: {rows[label]['failed']}", flush=True)
                continue
            weights[label] = w
            rows[label] = {"seconds": t, "samples_per_s": samples / t, "speedup": base / t, "mode": used}
            print(f"  {name:<9} {label:<24} {samples / t:10.0f} samples/s  ×{base / t:.2f}"
                  f"{'' if used == mode else f' (ran as {used})'}", flush=True)
        if "graph" in weights:
            diff = (weights["graph"] - weights["eager"]).abs().max()
            rows["graph"]["max_abs_weight_diff_vs_eager"] = float(diff)
        timed = {k: v for k, v in rows.items() if "speedup" in v}
        best = max(timed, key=lambda k: timed[k]["speedup"]) if timed else "current"
        # the deterministic switch's cost on the best path
        prec, cl, mode = next(((p, c, m) for lb, p, c, m in paths if lb == best), ("fp32", False, "off"))
        det = {}
        for on in (False, True):
            accel.configure(device, deterministic=on)
            try:
                t1, w1, _ = run_step(name, x, y, epochs, 64, device, prec, cl, mode)
                _, w2, _ = run_step(name, x, y, epochs, 64, device, prec, cl, mode)
                det[on] = {"seconds": t1, "repeat_identical": bool(torch.equal(w1, w2))}
            except Exception as exc:
                det[on] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
        accel.configure(device, deterministic=False)
        rows["deterministic"] = {"path": best, "off": det[False], "on": det[True]}
        if "seconds" in det[False] and "seconds" in det[True]:
            rows["deterministic"]["cost"] = det[True]["seconds"] / det[False]["seconds"]
            print(f"  {name:<9} deterministic on {best}: ×{rows['deterministic']['cost']:.2f} time; "
                  f"same weights twice: off {det[False]['repeat_identical']}, "
                  f"on {det[True]['repeat_identical']}", flush=True)
        if cuda:
            try:
                t256, _, _ = run_step(name, x, y, epochs, 256, device, "bf16", True, "off")
                rows["batch256_bf16_cl"] = {"samples_per_s": samples / t256, "speedup": base / t256}
            except Exception as exc:
                rows["batch256_bf16_cl"] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
        res["cnn"][name] = rows
        sp = timed[best]["speedup"] if timed else 1.0
        targets.append(C.target(f"{name} training at batch 64 ({best})", "≥ 3× samples/s of the current path",
                                sp, sp >= 3, limit="batch 64 leaves a large GPU launch- and occupancy-bound; "
                                "see the per-path rows in gpu.json"))

    # pool inference
    # the CPU smoke run (tests) only checks the path runs: a small pool keeps it to seconds
    npool = (2048 if cuda else 128) if args.quick else 50000
    xp, _ = data(npool, (3, 32, 32), device)
    model = fresh("resnet18", (3, 32, 32), device)
    predict(model, xp[:4096], 4096, features=True)
    t32, _, _ = C.best_of(lambda: predict(model, xp, 4096, features=True), device, 3)
    inf = {"n": npool, "fp32_seconds": t32}
    if cuda:
        accel.to_channels_last(model, device)
        xc = accel.batch_layout(xp, True)
        with accel.autocast("bf16", device):
            predict(model, xc[:4096], 4096, features=True)
            tb, _, _ = C.best_of(lambda: predict(model, xc, 4096, features=True), device, 3)
        inf.update(bf16_cl_seconds=tb, speedup=t32 / tb)
        print(f"  pool inference N={npool}: fp32 {t32:.3f} s, bf16+cl {tb:.3f} s, ×{t32 / tb:.2f}",
              flush=True)
    res["inference"] = inf
    xp = xc = None  # free the pool before the packing workers start

    # packing MLP cells onto one GPU
    import tempfile

    counts = [int(k) for k in args.pack.split(",")] if cuda else [1, 2]
    rounds = 1 if args.quick else 3
    pack = {}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        for k in counts:
            try:
                pack[k] = packing(k, rounds, device, "graph" if cuda else "off", Path(tmp), args.quick)
            except Exception as exc:
                pack[k] = float("nan")
                res["notes"].append(f"packing k={k} failed: {exc}"[:300])
            print(f"  packing {k:>2} MLP cell(s): {pack[k]:.3f} rounds/s aggregate", flush=True)
    res["packing_rounds_per_s"] = {str(k): v for k, v in pack.items()}
    one = pack.get(1, float("nan"))
    k8 = max((k for k in pack if k >= 8 and pack[k] == pack[k]), default=None)
    ratio = pack[k8] / one if k8 else float("nan")
    targets.append(C.target("MLP cells per GPU (8+ processes)", "≥ 5× one cell's rounds/s",
                            ratio, bool(ratio >= 5), limit="processes time-slice the GPU; "
                            "see packing_rounds_per_s"))
    C.write_result(args, "gpu", env, {"n": n, "epochs": epochs, "batch_size": 64, "lr": LR,
                                      "pack": counts, "pack_rounds": rounds}, res, targets)
    return 0


def torch_defaults() -> None:
    """The flags a fresh process has: what the package's current path runs with."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
