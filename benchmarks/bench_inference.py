"""Inference over the pool, and refined pseudo-labels for its low-confidence subset.

  predict      asknlearn.inference.predict: softmax probabilities and penultimate features
               of the whole pool in batches of 4096 (MLP on Fashion-MNIST, the real files when
               available; ResNet-18 on CIFAR-10-shaped random tensors)
  refine       asknlearn.pseudolabels.RefinedPseudoLabels (Algorithm 1): only points with
               max p < τ are augmented, k copies as batched tensor ops (asknlearn.augment)
  refine_pil   the same refinement with the usual per-image torchvision pipeline: each
               low-confidence image to PIL, RandomCrop(padding) [+ flip], ToTensor, Normalize,
               k times, then the same batched prediction
The MLP is first trained for one epoch so that its confidences, and hence the low-confidence
subset, look like an AL round's. Reports samples per second.

    python benchmarks/bench_inference.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn.augment import Augment  # noqa: E402
from asknlearn.data import dataset_info, load_dataset  # noqa: E402
from asknlearn.inference import predict  # noqa: E402
from asknlearn.losses import CrossEntropy  # noqa: E402
from asknlearn.models import build_model  # noqa: E402
from asknlearn.pseudolabels import RefinedPseudoLabels  # noqa: E402
from asknlearn.train import train_model  # noqa: E402


def to_uint8(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the dataset normalization: the uint8 images a torchvision pipeline starts from."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.cpu() * s + m).mul(255).round().clamp(0, 255).to(torch.uint8)


def pil_pipeline(shape, shift: int, flip: bool, mean, std):
    import torchvision.transforms as T

    steps = [T.RandomCrop(shape[-1], padding=shift)]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def pil_augment(images_u8: torch.Tensor, k: int, tf) -> torch.Tensor:
    """k augmented copies of each image, one PIL image at a time; layout (k·n, C, H, W) with
    copy j of image i at j·n + i, as RefinedPseudoLabels lays out its batch."""
    from PIL import Image

    pil = [Image.fromarray(im[0].numpy(), mode="L") if im.shape[0] == 1
           else Image.fromarray(im.permute(1, 2, 0).numpy(), mode="RGB") for im in images_u8]
    return torch.stack([tf(p) for _ in range(k) for p in pil])


def refine_pil(model, x, probs, tau, k, tf, mean, std, device, batch=4096):
    """RefinedPseudoLabels with per-image PIL augmentations instead of batched tensors."""
    conf, labels = probs.max(dim=1)
    low = torch.nonzero(conf < tau).squeeze(1)
    labels = labels.clone()
    per = max(1, batch // k)
    for s in range(0, len(low), per):
        idx = low[s : s + per]
        xa = pil_augment(to_uint8(x[idx], mean, std), k, tf).to(device)
        p, _ = predict(model, xa, batch)
        labels[idx] = p.view(k, len(idx), -1).mean(0).argmax(1)
    return labels


def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10, help="augmentations per low-confidence point")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--pil-max", type=int, default=None,
                    help="low-confidence points refined through PIL (default 2000; rate reported)")
    args = ap.parse_args()
    device = C.setup(args)
    env = C.environment(device, args.threads)
    q = args.quick
    k, tau = args.k, args.tau
    pil_max = args.pil_max or (64 if q else 2000)
    res: dict = {}
    targets = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        root, real = C.fashion_mnist_root(Path(tmp), q, n_train=1500 if q else 60000,
                                          n_test=100 if q else 10000)
        data = load_dataset("fashion_mnist", root, device)
    info = dataset_info("fashion_mnist")
    x = data.x_train
    n = len(x)
    print(f"pool inference: MLP, {'real' if real else 'synthetic'} Fashion-MNIST pool N={n}, "
          f"k={k}, τ={tau}, threads={args.threads}, load {env['loadavg_start']}", flush=True)
    torch.manual_seed(0)
    model = build_model("mlp", info.shape, 10, 0.0).to(device)
    n_fit = 500 if q else 10000
    train_model(model, CrossEntropy(), x[:n_fit], data.y_train[:n_fit], target_accuracy=2.0,
                max_epochs=1, generator=torch.Generator().manual_seed(0))
    predict(model, x[:4096], 4096, features=True)  # warm-up
    t, (probs, feats) = C.best_of(lambda: predict(model, x, 4096, features=True), device, 3)[::2]
    res["mlp_predict"] = {"n": n, "seconds": t, "samples_per_s": n / t, "feature_dim": feats.shape[1]}
    print(f"  predict (probs + features)  {t:7.3f} s  {n / t:10.0f} samples/s", flush=True)

    low = int((probs.max(1).values < tau).sum())
    labeler = RefinedPseudoLabels(tau, k, Augment(2, False))
    t_ref, _ = C.timed(lambda: labeler(model, x, probs, torch.Generator().manual_seed(0)), device)
    res["mlp_refine"] = {"low_confidence": low, "low_fraction": low / n, "seconds": t_ref,
                         "pool_samples_per_s": n / t_ref, "low_samples_per_s": low / t_ref,
                         "augmented_samples_per_s": low * k / t_ref}
    print(f"  refine, batched tensors      {t_ref:7.3f} s  {low} low-confidence points "
          f"({low / n:.1%}): {low / t_ref:8.0f} points/s, {low * k / t_ref:9.0f} augmented samples/s",
          flush=True)
    # the PIL pipeline on (up to) pil_max of the low-confidence points
    conf = probs.max(1).values
    sub = torch.nonzero(conf < tau).squeeze(1)[:pil_max]
    tf = pil_pipeline(info.shape, 2, False, info.mean, info.std)
    sub_probs = torch.full_like(probs, 1.0 / probs.shape[1])  # all of `sub` below τ
    t_pil, _ = C.timed(lambda: refine_pil(model, x[sub], sub_probs[: len(sub)], tau, k, tf,
                                          info.mean, info.std, device), device)
    rate_pil = len(sub) / t_pil
    ratio = (low / t_ref) / rate_pil if low else float("nan")
    res["mlp_refine_pil"] = {"points": len(sub), "seconds": t_pil, "low_samples_per_s": rate_pil,
                             "augmented_samples_per_s": len(sub) * k / t_pil,
                             "batched_over_pil": ratio}
    print(f"  refine, per-image PIL        {t_pil:7.3f} s  {len(sub)} points: {rate_pil:8.0f} points/s "
          f"→ batched ×{ratio:.1f}", flush=True)
    targets.append(C.target("refine: batched tensors vs per-image PIL (MLP)",
                            "batched augmentation faster (≥ 1×)", ratio, ratio >= 1,
                            limit="tensor gathers cost more than PIL crops at this size"))
    # augmentation alone, same images
    for name, shape, shift, flip, m_ in (("fashion_mnist", info.shape, 2, False, info),
                                         ("cifar10", (3, 32, 32), 4, True, dataset_info("cifar10"))):
        na = 256 if q else 4096
        xs = torch.randn(na, *shape, generator=torch.Generator().manual_seed(1)).to(device)
        aug = Augment(shift, flip)
        t_a, _ = C.best_of(lambda: aug(xs, torch.Generator().manual_seed(0)), device, 3)[:2]  # noqa: B023
        tfp = pil_pipeline(shape, shift, flip, m_.mean, m_.std)
        u8 = to_uint8(xs, m_.mean, m_.std)
        t_p, _ = C.timed(lambda: pil_augment(u8, 1, tfp), device)  # noqa: B023
        res[f"augment_{name}"] = {"images": na, "batched_images_per_s": na / t_a,
                                  "pil_images_per_s": na / t_p, "batched_over_pil": t_p / t_a}
        print(f"  augment {name:<13} batched {na / t_a:10.0f} images/s, PIL {na / t_p:8.0f} images/s "
              f"(×{t_p / t_a:.0f})", flush=True)
        targets.append(C.target(f"augmentation batched vs PIL ({name})", "faster (≥ 1×)",
                                t_p / t_a, t_p / t_a >= 1, limit="per-op overhead at tiny batch"))
    # ResNet-18 on CIFAR-10-shaped tensors
    nr = 32 if q else 1024
    xr = torch.randn(nr, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    torch.manual_seed(0)
    rn = build_model("resnet18", (3, 32, 32), 10, 0.0).to(device)
    predict(rn, xr[:8], 4096, features=True)
    t_r, _ = C.timed(lambda: predict(rn, xr, 512, features=True), device)
    res["resnet18_predict"] = {"n": nr, "seconds": t_r, "samples_per_s": nr / t_r,
                               "pool_50k_seconds_estimate": 50000 / (nr / t_r)}
    print(f"  predict ResNet-18 (CIFAR-10 shape) {nr / t_r:8.0f} samples/s "
          f"(a 50,000 pool: ≈{50000 / (nr / t_r):.0f} s)", flush=True)
    C.write_result(args, "inference", env,
                   {"k": k, "tau": tau, "batch_size": 4096, "real_data": real, "pil_max": pil_max},
                   res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
