"""Run a command on its own free GPU slot(s) of this machine: ``gpu_slot.py --gpus-per-job N -- CMD...``.

Snakemake's ``--resources gpu=K`` only caps how many GPU jobs run at once; it does not say
which GPU a job gets (snakemake/snakemake#281), so K jobs would all land on GPU 0. This
launcher claims free slots with an exclusive ``flock`` on one lock file per slot, sets
``CUDA_VISIBLE_DEVICES`` to their GPUs and ``exec``s the command, which inherits the locked
file descriptors: the slots stay claimed until the command exits, however it exits (flock
locks die with the process, even on SIGKILL).

Each GPU has ``--cells-per-gpu`` slots (lock files ``gpuI-slotJ.lock``): with k slots per GPU,
G GPUs take G·k one-GPU jobs at once. Slots are filled spread-first (slot 0 of every GPU,
then slot 1 of every GPU, ...), so fewer jobs than slots never share a GPU while another one
is idle. A job of several GPUs (N > 1) takes one slot on each of N distinct GPUs, and is
only allowed with one slot per GPU.

The lock folder is per user: ``$ASKNLEARN_GPU_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/asknlearn-gpu``,
else ``<tempdir>/asknlearn-gpu-<uid>``; it is created 0700 and refused (exit 2, one line) when
it is a symlink or owned by another user, since a folder someone else controls could block
every job. A job that waits for a slot says which slots are busy and by whom (the lock files
hold the holder's PID and host), and gives up after ``--wait-timeout`` seconds (default
``$ASKNLEARN_GPU_WAIT_TIMEOUT``, else 3600; 0 waits forever) with exit 2.

It runs the command unchanged when N is 0, when a scheduler already set
``CUDA_VISIBLE_DEVICES`` (SLURM does), or when the machine has no GPU (CPU fallback).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_WAIT_TIMEOUT_S = 3600.0
REPORT_EVERY_S = 300.0  # while waiting, repeat the "waiting for" line this often (logs)


class SlotError(Exception):
    """A request that can never be met, or a lock folder that is not safe to use: exit 2."""


def gpu_count() -> int:
    """Number of CUDA devices on this machine (0 without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def default_lock_dir(env: dict[str, str] | None = None) -> Path:
    """This user's lock folder (see the module docstring for the order)."""
    env = os.environ if env is None else env
    if env.get("ASKNLEARN_GPU_LOCK_DIR"):
        return Path(env["ASKNLEARN_GPU_LOCK_DIR"])
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and os.access(runtime, os.W_OK | os.X_OK):
        return Path(runtime) / "asknlearn-gpu"
    return Path(tempfile.gettempdir()) / f"asknlearn-gpu-{os.getuid()}"


def ensure_lock_dir(path: Path) -> Path:
    """Create ``path`` (0700) or check that the existing one is a real folder of this user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise SlotError(f"GPU lock folder {str(path)!r} cannot be created ({exc.strerror}); valid: "
                        "a writable folder of yours (--lock-dir or ASKNLEARN_GPU_LOCK_DIR)") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise SlotError(f"GPU lock folder {str(path)!r} is not a folder (a symlink or a file); "
                        "valid: a folder of yours (--lock-dir or ASKNLEARN_GPU_LOCK_DIR)")
    if st.st_uid != os.getuid():
        try:
            import pwd

            owner = pwd.getpwuid(st.st_uid).pw_name
        except (ImportError, KeyError):
            owner = f"uid {st.st_uid}"
        raise SlotError(f"GPU lock folder {str(path)!r} belongs to {owner}, not to you (uid "
                        f"{os.getuid()}); its locks could block every job. valid: a folder of "
                        "yours (--lock-dir or ASKNLEARN_GPU_LOCK_DIR)")
    return path


def slot_order(total: int, per_gpu: int) -> list[tuple[int, int]]:
    """(gpu, slot) pairs in the order they are tried: every GPU's slot 0, then slot 1, ..."""
    return [(g, s) for s in range(per_gpu) for g in range(total)]


def check_request(n: int, total: int, per_gpu: int) -> None:
    """A request that can never be met is an error at once, not an endless wait."""
    if per_gpu < 1:
        raise SlotError(f"--cells-per-gpu {per_gpu}; valid: an integer >= 1")
    if n > total:
        raise SlotError(f"a job asks for {n} GPUs but this machine has {total}; "
                        f"valid: resources.al.gpu <= {total}")
    if n > 1 and per_gpu > 1:
        raise SlotError(f"a job of {n} GPUs cannot share them (cells_per_gpu={per_gpu}); "
                        "valid: resources.al.gpu 1 with cells_per_gpu > 1, or cells_per_gpu 1")


def lock_path(lock_dir: Path, gpu: int, slot: int) -> Path:
    return lock_dir / f"gpu{gpu}-slot{slot}.lock"


def _holder(path: Path) -> str:
    """Who holds a lock file: the 'PID HOST' its holder wrote, or 'unknown'."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"pid {text.replace(' ', ' on ', 1)}" if text else "unknown"


def _open_lock(path: Path) -> int:
    # O_NOFOLLOW: a symlink planted in the folder must not redirect the open
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def try_claim(n: int, total: int, per_gpu: int, lock_dir: Path) -> list[tuple[int, int]] | None:
    """One pass: lock one free slot on each of ``n`` distinct GPUs, spread-first; returns
    [(gpu, fd)] with the locks held, or None (and nothing held) when not enough are free."""
    held: list[tuple[int, int]] = []
    gpus_held: set[int] = set()
    for gpu, slot in slot_order(total, per_gpu):
        if gpu in gpus_held:
            continue
        try:
            fd = _open_lock(lock_path(lock_dir, gpu, slot))
        except OSError as exc:
            for _, f in held:
                os.close(f)
            raise SlotError(f"GPU lock file {str(lock_path(lock_dir, gpu, slot))!r} cannot be "
                            f"opened ({exc.strerror}); valid: a lock folder of yours") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
        gpus_held.add(gpu)
        if len(held) == n:
            return held
    for _, f in held:  # not enough free: release and wait, so two jobs cannot deadlock
        os.close(f)
    return None


def _mark(fd: int) -> None:
    """Write 'PID HOST' into a held lock file, so a waiting job can say whom it waits for."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def claim(n: int, total: int, lock_dir: Path, per_gpu: int = 1, poll_s: float = 2.0,
          timeout_s: float = DEFAULT_WAIT_TIMEOUT_S, log=None) -> list[int]:
    """Block until ``n`` GPUs have a free slot; return their ids, locks held (the descriptors
    are left open and inheritable, so they pass to the exec'd command). Raises SlotError for
    an impossible request, an unsafe lock folder, or after ``timeout_s`` (0: never)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    check_request(n, total, per_gpu)
    ensure_lock_dir(lock_dir)
    start = last_report = time.monotonic()
    reported = False
    while True:
        held = try_claim(n, total, per_gpu, lock_dir)
        if held is not None:
            for _, fd in held:
                _mark(fd)
                os.set_inheritable(fd, True)
            return [g for g, _ in held]
        now = time.monotonic()
        busy = "; ".join(f"gpu{g}-slot{s} held by {_holder(lock_path(lock_dir, g, s))}"
                         for g, s in slot_order(total, per_gpu))
        if timeout_s and now - start >= timeout_s:
            raise SlotError(f"no free GPU slot for {n} GPU(s) after {now - start:.0f} s in "
                            f"{lock_dir} ({busy}); valid: free a slot, raise --wait-timeout / "
                            "ASKNLEARN_GPU_WAIT_TIMEOUT (0 waits forever), or pass a --resources "
                            "gpu=K that matches GPUs x cells_per_gpu")
        if not reported or now - last_report >= REPORT_EVERY_S:
            log(f"gpu_slot: waiting for {n} free GPU slot(s) of {total} GPU(s) x {per_gpu} in "
                f"{lock_dir}: {busy}")
            reported, last_report = True, now
        time.sleep(poll_s)


def _env_timeout() -> float:
    raw = os.environ.get("ASKNLEARN_GPU_WAIT_TIMEOUT")
    if raw is None or raw == "":
        return DEFAULT_WAIT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        print(f"gpu_slot: error: ASKNLEARN_GPU_WAIT_TIMEOUT={raw!r}; valid: seconds >= 0 "
              "(0 waits forever)", file=sys.stderr)
        sys.exit(2)
    return value


def _nonneg(value: str) -> float:
    v = float(value)
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}; valid: seconds >= 0 (0 waits forever)")
    return v


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus-per-job", type=int, default=1)
    p.add_argument("--cells-per-gpu", type=int, default=1,
                   help="slots per GPU: jobs that may share one GPU (default 1)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs on this machine (default: as many as torch sees)")
    p.add_argument("--lock-dir", default=None,
                   help="lock folder (default: $ASKNLEARN_GPU_LOCK_DIR, $XDG_RUNTIME_DIR/asknlearn-gpu, "
                        "or <tempdir>/asknlearn-gpu-<uid>)")
    p.add_argument("--wait-timeout", type=_nonneg, default=None,
                   help="seconds to wait for a slot before failing (default: "
                        f"$ASKNLEARN_GPU_WAIT_TIMEOUT, else {DEFAULT_WAIT_TIMEOUT_S:.0f}; 0: forever)")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given; usage: gpu_slot.py --gpus-per-job N -- CMD...")
    env = dict(os.environ)
    if args.gpus_per_job > 0 and "CUDA_VISIBLE_DEVICES" not in env:
        total = args.gpus if args.gpus is not None else gpu_count()
        if total > 0:
            timeout = args.wait_timeout if args.wait_timeout is not None else _env_timeout()
            lock_dir = Path(args.lock_dir) if args.lock_dir else default_lock_dir()
            try:
                ids = claim(args.gpus_per_job, total, lock_dir, args.cells_per_gpu, args.poll, timeout)
            except SlotError as exc:
                print(f"gpu_slot: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(2)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
            print(f"gpu_slot: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr,
                  flush=True)
        else:
            print("gpu_slot: no GPU on this machine; running on the CPU", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
