"""Whole-job benchmark: asknlearn against the BADGE reference (JordanAsh/badge ``run.py``).

The job (issue 26): Fashion-MNIST, BADGE, the MLP, 100 -> 2,100 labels (|S| = 100, b = 1000),
CPU, 2 threads. Each side runs as a whole fresh process, so start-up, imports, data loading,
every round's training, inference and selection, and the final evaluation are all charged.
The runs are interleaved in pairs (the order alternates from pair to pair, so a drift in the
machine's load does not always favour the same side); each pair's ratio is the reference's
wall time over ours, and the target is on the median ratio.

    python benchmarks/bench_reference.py PATH/TO/badge-checkout [--pairs 3] [--threads 2]

The reference runs unchanged from its checkout, with the shims of
``benchmarks/reference_shims/sitecustomize.py`` (CPU ``.cuda()``, one ``x.numpy()`` on a numpy
array, an unused ``torchfile`` import) applied from outside its files. Both sides read the
same local Fashion-MNIST files (``--data``, default ``./data``: ``FashionMNIST/raw``); the
reference gets them linked into a temporary folder in the layout its torchvision loader
expects, and nothing is downloaded. Without a checkout path the script says so and exits 0.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SHIMS = C.HERE / "reference_shims"
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TARGET = 20.0
# the job: |S|, b, labels at the end
SEED, QUERY, END = 100, 1000, 2100
QUICK_END = 1100
REF_ACC = re.compile(r"^(\d+)\ttesting accuracy ([0-9.]+)\s*$", re.M)
OURS_ACC = re.compile(r"round\s+\d+/\d+ labels\s+(\d+) acc ([0-9.]+)")


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "")


def _procs_running() -> int | None:
    """Runnable tasks right now (/proc/stat), a sharper view of contention than the load average."""
    try:
        with open("/proc/stat") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith("procs_running")), None)
    except OSError:
        return None


def _bad(msg: str) -> int:
    print(f"bench_reference: error: {msg}", file=sys.stderr)
    return 2


def commands(ref: Path, data_root: Path, ref_data: Path, out: Path, threads: int,
             end: int) -> dict[str, tuple[list[str], Path, dict[str, str]]]:
    """(argv, cwd, extra environment) of each side's whole job."""
    thread_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ref_cmd = [sys.executable, "run.py", "--alg", "badge", "--model", "mlp",
               "--nQuery", str(QUERY), "--nStart", str(SEED), "--nEnd", str(end),
               "--data", "FashionMNIST", "--lr", "0.001", "--path", str(ref_data)]
    ours_cmd = [sys.executable, "-m", "asknlearn", "run", "--dataset", "fashion_mnist",
                "--strategy", "badge", "--seed-size", str(SEED), "--query-size", str(QUERY),
                "--budget", str(end - SEED), "--threads", str(threads), "--tracking", "false",
                "--data-root", str(data_root), "--download", "false", "--out", str(out)]
    return {"reference": (ref_cmd, ref, {**thread_env, "PYTHONPATH": str(SHIMS)}),
            "ours": (ours_cmd, C.REPO, {**thread_env, "PYTHONPATH": str(C.REPO)})}


def run_once(side: str, argv: list[str], cwd: Path, extra: dict[str, str], end: int) -> dict:
    """One whole process: wall and CPU seconds, the load before it, its final test accuracy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(extra)
    load = list(os.getloadavg())
    running = _procs_running()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"{side} exited with {rc}; last lines:\n{tail}")
    hits = (REF_ACC if side == "reference" else OURS_ACC).findall(text)
    if not hits or int(hits[-1][0]) != end:
        raise RuntimeError(f"{side}: no final test accuracy at {end} labels in its output")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024, "loadavg_before": load,
            "procs_running_before": running, "labels": int(hits[-1][0]),
            "test_accuracy": float(hits[-1][1]),
            "accuracy_by_labels": {int(n): float(a) for n, a in hits}}


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("reference", nargs="?", help="path of a JordanAsh/badge checkout")
    p.add_argument("--pairs", type=int, default=3, help="interleaved pairs of runs (default 3)")
    p.add_argument("--data", default=str(C.REPO / "data"),
                   help="data root holding FashionMNIST/raw (default ./data)")
    args = p.parse_args(argv)
    if args.reference is None:
        print("bench_reference: needs a checkout of the BADGE reference "
              "(git clone https://github.com/JordanAsh/badge PATH), then: "
              "python benchmarks/bench_reference.py PATH; nothing run")
        return 0
    ref = Path(args.reference).resolve()
    if not (ref / "run.py").is_file() or not (ref / "dataset.py").is_file():
        return _bad(f"reference {args.reference!r} holds no run.py and dataset.py; "
                    "valid: a checkout of JordanAsh/badge")
    if args.pairs < 1:
        return _bad(f"--pairs {args.pairs}; valid: an integer >= 1")
    if args.device != "cpu":
        return _bad(f"--device {args.device}; valid: cpu (the job's comparison is a CPU one)")
    raw = Path(args.data) / "FashionMNIST" / "raw"
    missing = [f for f in RAW_FILES if not (raw / f).is_file()]
    if missing:
        return _bad(f"--data {args.data!r}: {raw} lacks {', '.join(missing)}; valid: a folder "
                    "whose FashionMNIST/raw holds the four uncompressed IDX files")
    C.setup(args)
    end = QUICK_END if args.quick else END
    pairs = 1 if args.quick else args.pairs
    env = C.environment(C.torch.device("cpu"), args.threads)
    env["reference_commit"] = _git_commit(ref)
    env["commit_full"] = _git_commit(C.REPO)
    import numpy
    import torchvision

    env["torchvision"], env["numpy"] = torchvision.__version__, numpy.__version__
    print(f"bench_reference: ours {env['commit']} vs reference {env['reference_commit']}, "
          f"torch {env['torch']}, {args.threads} threads, {pairs} pair(s), load average "
          f"{env['loadavg_start'][0]:.2f}", flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_reference.") as tmp:
        ref_data = Path(tmp) / "ref_data"
        # torchvision's FashionMNIST(root) reads root/FashionMNIST/raw; run.py passes
        # root = --path + '/FashionMNIST'
        ref_raw = ref_data / "FashionMNIST" / "FashionMNIST" / "raw"
        ref_raw.mkdir(parents=True)
        for f in RAW_FILES:
            os.symlink((raw / f).resolve(), ref_raw / f)
        for i in range(pairs):
            order = ("reference", "ours") if i % 2 == 0 else ("ours", "reference")
            pair = {"pair": i + 1, "order": list(order)}
            for side in order:
                cmds = commands(ref, Path(args.data).resolve(), ref_data,
                                Path(tmp) / f"ours{i}", args.threads, end)
                argv_, cwd, extra = cmds[side]
                try:
                    pair[side] = run_once(side, argv_, cwd, extra, end)
                except RuntimeError as exc:
                    print(f"bench_reference: error: {exc}", file=sys.stderr)
                    return 1
                r = pair[side]
                print(f"  pair {i + 1} {side:9s} {r['wall_seconds']:7.2f} s wall, "
                      f"{r['cpu_seconds']:7.2f} s CPU, test accuracy {r['test_accuracy']:.4f} "
                      f"(load average before {r['loadavg_before'][0]:.2f})", flush=True)
            pair["ratio"] = pair["reference"]["wall_seconds"] / pair["ours"]["wall_seconds"]
            print(f"  pair {i + 1} ratio {pair['ratio']:.2f}×", flush=True)
            runs.append(pair)
            if i + 1 < pairs:  # a long run stopped early keeps its finished pairs
                _write(args, env, ref, end, pairs, runs, verbose=False)
    _write(args, env, ref, end, pairs, runs, verbose=True)
    return 0


def _write(args, env: dict, ref: Path, end: int, pairs: int, runs: list[dict],
           verbose: bool) -> None:
    """The result file of the pairs finished so far (``pairs_done`` < ``pairs`` while running)."""
    ratios = [r["ratio"] for r in runs]
    median = statistics.median(ratios)
    if verbose:
        print(f"ratios {' '.join(f'{r:.2f}×' for r in ratios)}; median {median:.2f}×", flush=True)
    loads = [r[s]["loadavg_before"][0] for r in runs for s in ("reference", "ours")]
    target = C.target if verbose else _quiet_target
    targets = [target(
        "whole job vs BADGE reference (Fashion-MNIST, MLP, 100→2,100 labels)",
        f"≥ {TARGET:g}× faster (median of {len(runs)} interleaved pair(s), {args.threads} threads)",
        median,
        median >= TARGET,
        limit=(f"pairs {', '.join(f'{r:.1f}×' for r in ratios)}; load average "
               f"{min(loads):.1f}–{max(loads):.1f} before the runs on {os.cpu_count()} cores"))]
    params = {"seed_size": SEED, "query_size": QUERY, "end_labels": end, "pairs": pairs,
              "threads": args.threads,
              "commands": {side: " ".join(c[0]) for side, c in commands(
                  ref, Path("DATA"), Path("REFDATA"), Path("OUT"), args.threads, end).items()},
              "shims": str(SHIMS.relative_to(C.REPO))}
    results = {"pairs_done": len(runs), "pairs": runs, "ratios": ratios, "median_ratio": median}
    if verbose:
        C.write_result(args, "reference", env, params, results, targets)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            C.write_result(args, "reference", env, params, results, targets)


def _quiet_target(*a, **kw) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        return C.target(*a, **kw)


if __name__ == "__main__":
    sys.exit(main())
