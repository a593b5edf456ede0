"""Shared plumbing of the benchmark scripts: arguments, timing, peak memory, bandwidth, the
result file, and the target verdicts that ``make_table.py`` turns into the README table.

Every script runs its contenders in one process on the same inputs, prints each measured
ratio next to its target, and writes ``results/<name>.json`` (or ``--out``). A missed target
is reported as missed, with the measured ratio and what limits it; targets are never adjusted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a clone without `pip install -e .`
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run (tests); results are flagged quick")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", default=str(RESULTS), help="folder of the result JSON")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and check --device; exits 2 with a clear message on bad input."""
    prog = Path(sys.argv[0]).name
    if args.threads < 1:
        print(f"{prog}: error: --threads {args.threads}; valid: an integer >= 1", file=sys.stderr)
        sys.exit(2)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: error: --device cuda but CUDA is not available; valid: cpu", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    try:  # numpy's BLAS (the reference implementations) gets the same number of threads
        import threadpoolctl

        global _BLAS_LIMIT
        _BLAS_LIMIT = threadpoolctl.threadpool_limits(args.threads, user_api="blas")
    except ImportError:
        pass
    return torch.device(args.device)


_BLAS_LIMIT = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def best_of(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, list[float], Any]:
    """Fastest of ``repeats`` calls (the least disturbed by other load), all times, last result."""
    times, out = [], None
    for _ in range(repeats):
        t, out = timed(fn, device)
        times.append(t)
    return min(times), times, out


# ---------------------------------------------------------------------------- memory
def _proc_status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _trim() -> None:
    """Return freed heap pages to the OS so that reused memory shows up as new resident pages."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    """Reset VmHWM (peak RSS) to the current RSS; Linux ≥ 4.0. False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory a block adds above the level at its start.

    CPU: peak resident set size (VmHWM, reset through /proc/self/clear_refs) minus the RSS at
    entry, after returning freed heap to the OS. It counts numpy, torch and Python alike, at
    page granularity. Where VmHWM cannot be reset, a thread samples RSS every millisecond
    (``method`` says which). CUDA: ``torch.cuda.max_memory_allocated`` above the entry level.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self.method = ""

    def __enter__(self) -> PeakMemory:
        _trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated delta"
            return self
        self._base = _proc_status("VmRSS")
        self._sampler = None
        if self._base is not None and _reset_hwm():
            self.method = "peak RSS delta (VmHWM reset via /proc/self/clear_refs)"
        elif self._base is not None:
            self.method = "peak RSS delta (1 ms sampling)"
            self._peak, self._stop = self._base, threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.001):
                    self._peak = max(self._peak, _proc_status("VmRSS") or 0)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
        else:
            self.method = "unavailable (no /proc)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = max(self._peak, _proc_status("VmRSS") or 0) - self._base
        elif self._base is not None:
            self.peak_bytes = (_proc_status("VmHWM") or 0) - self._base


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (VmHWM), bytes."""
    return _proc_status("VmHWM")


# ---------------------------------------------------------------------------- bandwidth
def streaming_bandwidth(device: torch.device, mib: int = 1024, repeats: int = 7) -> float:
    """Bytes/s of a streaming read: the sum of a ``mib`` MiB float32 tensor, fastest of
    ``repeats`` (a memory-bound kernel on the torch threads the benchmark itself uses)."""
    x = torch.ones(mib * 1024 * 1024 // 4, device=device)
    x.sum()
    best, _, _ = best_of(x.sum, device, repeats)
    return x.numel() * 4 / best


# ---------------------------------------------------------------------------- results
def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """Where and under which load the numbers were taken."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
    }
    return env


def _commit() -> str | None:
    """The short git commit the benchmark measured (with '+dirty' for uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, check=True)
        commit = run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                     "--", "asknlearn", "benchmarks"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def target(name: str, goal: str, measured: float, met: bool, unit: str = "×",
           limit: str = "") -> dict[str, Any]:
    """One target verdict; printed at once, and a row of the README table."""
    verdict = "MET" if met else "MISSED"
    shown = f"{int(measured)}" if float(measured).is_integer() else f"{measured:.3g}"
    print(f"  target {name}: {goal} — measured {shown}{unit} — {verdict}"
          + (f" ({limit})" if limit and not met else ""), flush=True)
    return {"name": name, "goal": goal, "measured": measured, "unit": unit, "met": bool(met),
            "limit": limit}


def write_result(args: argparse.Namespace, name: str, env: dict[str, Any], params: dict[str, Any],
                 results: dict[str, Any], targets: list[dict[str, Any]]) -> Path:
    """Write ``<out>/<name>.json`` atomically and return its path."""
    from asknlearn.records import atomic_write

    env = dict(env)
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc = {"benchmark": name, "quick": bool(args.quick), "environment": env, "params": params,
           "results": results, "targets": targets,
           "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:])}
    path = Path(args.out) / f"{name}.json"
    text = json.dumps(doc, indent=2, default=float, allow_nan=True)
    atomic_write(path, lambda p: Path(p).write_text(text + "\n"))
    print(f"wrote {path}", flush=True)
    return path


def mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


# ---------------------------------------------------------------------------- data
FMNIST_RAW_CANDIDATES = ("$ASKNLEARN_DATA/FashionMNIST/raw", "/work/shared/data/FashionMNIST/raw")
_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def real_fashion_mnist_raw() -> Path | None:
    """A folder holding the four canonical Fashion-MNIST .gz files, if one is known."""
    for cand in FMNIST_RAW_CANDIDATES:
        path = Path(os.path.expandvars(cand))
        if "$" not in str(path) and all((path / f"{f}.gz").is_file() for f in _FMNIST_FILES):
            return path
    return None


def _write_idx(path: Path, array) -> None:
    """Write a uint8 array in the IDX format torchvision's MNIST readers parse."""
    import numpy as np

    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + a.tobytes())


def fashion_mnist_root(tmp: Path, synthetic: bool, n_train: int = 60000, n_test: int = 10000,
                       seed: int = 0) -> tuple[Path, bool]:
    """A torchvision data root under ``tmp`` with Fashion-MNIST: the real .gz files linked in
    (torchvision extracts them there) unless ``synthetic`` or none are found, else random
    images of the same shape written as IDX files. Returns (root, real)."""
    import numpy as np

    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    src = None if synthetic else real_fashion_mnist_raw()
    if src is not None:
        for f in _FMNIST_FILES:
            dst = raw / f"{f}.gz"
            if not dst.exists():
                os.symlink(src / f"{f}.gz", dst)
        return tmp, True
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return tmp, False
