"""Baseline selectors (issue 15): core-set k-center greedy and BALD, side by side.

Core-set (N = 60,000, D = 256, M = 1,100 labeled centres, b = 1,000), contenders on the same
pool and labeled set:
  ours         asknlearn.selectors.baselines.k_center_greedy: blocked N × M start, then per centre a
               triangle-inequality bound that skips the points that cannot move (CPU default)
  full_pass    the same without pruning: one matrix-vector product over the pool per centre
  distil       DISTIL's CoreSet (decile-team/distil, ``furthest_first``), rewritten: the whole
               N × M ``torch.cdist`` at once, then ``torch.cdist(X, X[[idx]])`` per centre;
               timed on ``--distil-steps`` centres and extrapolated linearly to b (each centre
               costs the same), labelled
  recompute    the plainest k-center greedy: ``torch.cdist`` of the pool to all centres so far
               recomputed every step; estimated as b × one step at the mean centre count
               M + b/2 (a step's cost is linear in the centre count), labelled
Two pools: "clustered" (10 classes, each a 16-dimensional latent Gaussian mapped into D
dimensions, ReLU: penultimate features have class structure and low intrinsic dimension) and
"isotropic" (ReLU of N(0, I): every distance about the same, the worst case for pruning).

BALD (T = 20 MC-dropout passes, N = 60,000, K = 10), from one (T, N, K) tensor:
  ours         asknlearn.selectors.baselines.bald_scores (float64 row chunks, all T at once) + top-b
  loop_over_T  a Python loop over the T passes accumulating the mean and the mean entropy in
               float64 (the same precision as ours)
  whole_f32    the DeepAL+/baal formula on the whole array in float32: mean over T, entropy of
               the mean minus mean entropy (whole (T, N, K) temporaries)

    python benchmarks/bench_selectors.py [--quick] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from asknlearn.selectors.baselines import bald_scores, k_center_greedy  # noqa: E402


# ---------------------------------------------------------------------------- pools
def clustered_features(n: int, d: int, seed: int, classes: int = 10, latent: int = 16) -> torch.Tensor:
    """Seeded stand-in for a trained network's penultimate features: per class a mean and a
    low-rank spread (a ``latent``-dimensional Gaussian mapped to D dimensions), a little
    isotropic noise, ReLU (float32)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, d, generator=g)
    maps = torch.randn(classes, latent, d, generator=g) * (0.6 / latent**0.5)
    y = torch.randint(classes, (n,), generator=g)
    s = torch.randn(n, latent, generator=g)
    z = means[y] + torch.einsum("nl,nld->nd", s, maps[y]) + 0.05 * torch.randn(n, d, generator=g)
    return torch.relu(z)


def isotropic_features(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.relu(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)))


def stochastic_probs(t: int, n: int, k: int, seed: int) -> torch.Tensor:
    """(T, N, K) softmax of per-point logits plus per-pass noise of per-point scale: some
    points' passes agree, others' disagree (float32)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, k, generator=g) * 3.0
    spread = torch.rand(n, 1, generator=g) * 3.0
    return torch.softmax(base + spread * torch.randn(t, n, k, generator=g), dim=2)


# ---------------------------------------------------------------------------- contenders
def distil_furthest_first(x: torch.Tensor, x_set: torch.Tensor, n: int) -> tuple[list[int], float]:
    """DISTIL's ``furthest_first`` (CoreSet strategy), rewritten; returns the picks and the
    seconds of its start (the N × M ``cdist`` and its minimum)."""
    import time

    t0 = time.perf_counter()
    min_dist = torch.cdist(x, x_set, p=2).min(dim=1)[0]
    start = time.perf_counter() - t0
    idxs = []
    for _ in range(n):
        idx = torch.argmax(min_dist)
        idxs.append(idx.item())
        dist_new_ctr = torch.cdist(x, x[[idx], :])
        min_dist = torch.minimum(min_dist, dist_new_ctr[:, 0])
    return idxs, start


def recompute_step(x: torch.Tensor, centres: torch.Tensor) -> int:
    """One step of the plainest k-center greedy: distances to every centre, recomputed."""
    return int(torch.cdist(x, centres).min(dim=1)[0].argmax())


def bald_loop_over_t(sp: torch.Tensor) -> torch.Tensor:
    t = len(sp)
    mean = torch.zeros(sp.shape[1:], dtype=torch.float64)
    mean_entropy = torch.zeros(sp.shape[1], dtype=torch.float64)
    for i in range(t):
        p = sp[i].double()
        mean += p
        mean_entropy += torch.special.entr(p).sum(1)
    mean /= t
    return (torch.special.entr(mean).sum(1) - mean_entropy / t).clamp_min(0)


def bald_whole_f32(sp: torch.Tensor) -> torch.Tensor:
    pb = sp.mean(0)
    entropy1 = (-pb * torch.log(pb)).sum(1)
    entropy2 = (-sp * torch.log(sp)).sum(2).mean(0)
    return entropy1 - entropy2


def same_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run(label: str, fn, device, repeats: int = 1) -> tuple[dict, object]:
    best, times, out = C.best_of(fn, device, repeats)
    print(f"  {label:<22} {best:9.3f} s   (runs: {', '.join(f'{x:.3f}' for x in times)})", flush=True)
    return {"seconds": best, "all_seconds": times}, out


# ---------------------------------------------------------------------------- parts
def bench_coreset(kind: str, x: torch.Tensor, lab: torch.Tensor, b: int, distil_steps: int,
                  repeats: int, device) -> dict:
    n, d = x.shape
    m = len(lab)
    print(f"core-set, {kind} pool: N={n} D={d} M={m} b={b}", flush=True)
    res: dict = {}
    st: dict = {}
    res["ours"], ours = run("ours (pruned)", lambda: k_center_greedy(
        x, lab, b, torch.Generator(), prune=True, stats=st), device, repeats)
    res["ours"]["rows_read_fraction"] = st["rows_read"] / (n * (b - 1))
    print(f"    feature rows read: {res['ours']['rows_read_fraction']:.1%} of a full pass per centre",
          flush=True)
    ours = ours.tolist()
    res["full_pass"], full = run("full_pass", lambda: k_center_greedy(
        x, lab, b, torch.Generator(), prune=False), device, repeats)
    res["full_pass"]["identical_leading_picks"] = same_prefix(ours, full.tolist())
    steps = min(b, distil_steps)
    res["distil"], (dpicks, dstart) = run(f"distil@{steps}", lambda: distil_furthest_first(
        x, lab, steps), device)
    loop = res["distil"]["seconds"] - dstart
    res["distil"].update(measured_steps=steps, measured_seconds=res["distil"]["seconds"],
                         start_seconds=dstart, seconds=dstart + loop * b / steps,
                         extrapolated=steps < b,
                         identical_leading_picks=same_prefix(ours, dpicks))
    print(f"    distil extrapolated to b={b}: {res['distil']['seconds']:.1f} s "
          f"(start {dstart:.2f} s + {loop / steps * 1e3:.1f} ms per centre)", flush=True)
    mid = torch.cat([lab, x[: b // 2]])
    step, _ = run(f"recompute step@{len(mid)}", lambda: recompute_step(x, mid), device)
    res["recompute"] = {"step_seconds": step["seconds"], "centres_in_step": len(mid),
                        "seconds": step["seconds"] * b, "extrapolated": True}
    print(f"    recompute estimated for b={b}: {res['recompute']['seconds']:.0f} s", flush=True)
    res["full_pass"]["same_picks"] = res["full_pass"]["identical_leading_picks"] == b
    res["distil"]["same_picks"] = res["distil"]["identical_leading_picks"] == steps
    for other in ("full_pass", "distil", "recompute"):
        res[f"speedup_vs_{other}"] = res[other]["seconds"] / res["ours"]["seconds"]
    print(f"    ours vs full_pass {res['speedup_vs_full_pass']:.1f}×, vs distil "
          f"{res['speedup_vs_distil']:.1f}×, vs recompute {res['speedup_vs_recompute']:.0f}×; "
          f"identical picks: full_pass {res['full_pass']['identical_leading_picks']}/{b}, "
          f"distil {res['distil']['identical_leading_picks']}/{steps}", flush=True)
    res["first_picks"] = ours[:10]
    return res


def bench_bald(t: int, n: int, k: int, b: int, repeats: int, device) -> dict:
    print(f"BALD: T={t} N={n} K={k} b={b}", flush=True)
    sp = stochastic_probs(t, n, k, seed=2)
    res: dict = {}
    res["ours"], s_ours = run("ours", lambda: bald_scores(sp), device, repeats)
    res["loop_over_T"], s_loop = run("loop_over_T", lambda: bald_loop_over_t(sp), device, repeats)
    res["whole_f32"], s_f32 = run("whole_f32", lambda: bald_whole_f32(sp), device, repeats)
    res["loop_over_T"]["max_abs_diff"] = float((s_ours - s_loop).abs().max())
    res["whole_f32"]["max_abs_diff"] = float((s_ours - s_f32.double()).abs().max())
    top = set(torch.topk(s_ours, b).indices.tolist())
    res["whole_f32"]["top_b_overlap"] = len(top & set(torch.topk(s_f32, b).indices.tolist())) / b
    for other in ("loop_over_T", "whole_f32"):
        res[f"speedup_vs_{other}"] = res[other]["seconds"] / res["ours"]["seconds"]
    print(f"    ours vs loop_over_T {res['speedup_vs_loop_over_T']:.2f}× (max |Δ| "
          f"{res['loop_over_T']['max_abs_diff']:.1e}), vs whole_f32 "
          f"{res['speedup_vs_whole_f32']:.2f}× (max |Δ| {res['whole_f32']['max_abs_diff']:.1e}, "
          f"top-b overlap {res['whole_f32']['top_b_overlap']:.1%})", flush=True)
    return res


def main() -> int:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs of ours and full_pass (fastest kept)")
    ap.add_argument("--distil-steps", type=int, default=None,
                    help="centres DISTIL's loop is timed on (default 100; all in --quick)")
    args = ap.parse_args()
    device = C.setup(args)
    if device.type != "cpu":
        print("bench_selectors.py: error: --device cuda is not supported; valid: cpu", file=sys.stderr)
        return 2
    env = C.environment(device, args.threads)
    q = args.quick
    n, d, m, b = (3000, 32, 110, 60) if q else (60000, 256, 1100, 1000)
    t, k = (5, 10) if q else (20, 10)
    distil_steps = args.distil_steps or (b if q else 100)
    params = {"n": n, "d": d, "m": m, "b": b, "bald_t": t, "k": k, "distil_steps": distil_steps,
              "repeats": args.repeats}
    print(f"selectors: threads={args.threads} load {env['loadavg_start']}", flush=True)
    # warm-up: lazy initializations are not charged to the first measured call
    wx = clustered_features(300, 8, 99)
    k_center_greedy(wx, wx[:5], 5, torch.Generator())
    distil_furthest_first(wx, wx[:5], 5)
    bald_scores(stochastic_probs(3, 50, 4, 99))

    res: dict = {"coreset": {}}
    for kind, make in (("clustered", clustered_features), ("isotropic", isotropic_features)):
        x = make(n + m, d, seed=0)
        res["coreset"][kind] = bench_coreset(kind, x[:n], x[n:], b, distil_steps, args.repeats,
                                             device)
    res["bald"] = bench_bald(t, n, k, b, args.repeats, device)

    cl, iso, bd = res["coreset"]["clustered"], res["coreset"]["isotropic"], res["bald"]
    size = f"N={n}, D={d}, M={m}, b={b}"
    targets = [
        C.target("coreset vs DISTIL furthest_first", f"≥ 5× faster ({size}, clustered pool)",
                 cl["speedup_vs_distil"], cl["speedup_vs_distil"] >= 5,
                 limit=f"ours {cl['ours']['seconds']:.2f} s vs {cl['distil']['seconds']:.1f} s"),
        C.target("coreset pruning never slower than the full pass",
                 "≥ 0.8× of the full pass on the isotropic pool (no structure to prune)",
                 iso["speedup_vs_full_pass"], iso["speedup_vs_full_pass"] >= 0.8,
                 limit=f"rows read {iso['ours']['rows_read_fraction']:.0%}; the bound costs "
                       f"a few passes over N per centre"),
        C.target("coreset same picks as the plain versions",
                 "identical picks to the full pass (b) and to DISTIL (its measured steps)",
                 float(cl["full_pass"]["identical_leading_picks"]),
                 all(r[c]["same_picks"] for r in (cl, iso) for c in ("full_pass", "distil")),
                 unit=f"/{b} picks",
                 limit="picks differ where two distances tie within float32 rounding"),
        C.target("bald vs loop over T", f"not slower (T={t}, N={n}, K={k}, both float64)",
                 bd["speedup_vs_loop_over_T"], bd["speedup_vs_loop_over_T"] >= 1.0,
                 limit=f"ours {bd['ours']['seconds']:.3f} s vs {bd['loop_over_T']['seconds']:.3f} s; "
                       f"both are memory-bound passes over (T, N, K)"),
    ]
    C.write_result(args, "selectors", env, params, res, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
