"""Run a command on its own free GPU(s) of this machine: ``gpu_slot.py --gpus-per-job N -- CMD...``.

Snakemake's ``--resources gpu=K`` only caps how many GPU jobs run at once; it does not say
which GPU a job gets (snakemake/snakemake#281), so K jobs would all land on GPU 0. This
launcher claims N free GPUs with an exclusive ``flock`` on one lock file per GPU, sets
``CUDA_VISIBLE_DEVICES`` to them and ``exec``s the command, which inherits the locked file
descriptors: the GPUs stay claimed until the command exits, however it exits.

It runs the command unchanged when N is 0, when a scheduler already set
``CUDA_VISIBLE_DEVICES`` (SLURM does), or when the machine has no GPU (CPU fallback).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path


def gpu_count() -> int:
    """Number of CUDA devices on this machine (0 without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def claim(n: int, total: int, lock_dir: Path, poll_s: float = 2.0) -> list[int]:
    """Block until ``n`` of the ``total`` GPUs are free; return their ids, locks held (the
    descriptors are left open and inheritable, so they pass to the exec'd command)."""
    if n > total:
        sys.exit(f"gpu_slot: a job asks for {n} GPUs but this machine has {total}; "
                 f"valid: resources.al.gpu <= {total}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        held: list[tuple[int, int]] = []
        for gpu in range(total):
            fd = os.open(lock_dir / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((gpu, fd))
            if len(held) == n:
                for _, f in held:
                    os.set_inheritable(f, True)
                return [g for g, _ in held]
        for _, f in held:  # not enough free: release and wait, so two jobs cannot deadlock
            os.close(f)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus-per-job", type=int, default=1)
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs on this machine (default: as many as torch sees)")
    p.add_argument("--lock-dir", default=os.environ.get(
        "ASKNLEARN_GPU_LOCK_DIR", str(Path(tempfile.gettempdir()) / f"asknlearn-gpu-locks-{os.getuid()}")))
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given; usage: gpu_slot.py --gpus-per-job N -- CMD...")
    env = dict(os.environ)
    if args.gpus_per_job > 0 and "CUDA_VISIBLE_DEVICES" not in env:
        total = args.gpus if args.gpus is not None else gpu_count()
        if total > 0:
            ids = claim(args.gpus_per_job, total, Path(args.lock_dir))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
            print(f"gpu_slot: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr,
                  flush=True)
        else:
            print("gpu_slot: no GPU on this machine; running on the CPU", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
