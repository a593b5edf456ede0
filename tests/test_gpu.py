"""GPU plumbing, tested on the CPU: precision and determinism flags (accel), the slot
arithmetic and lock-folder safety of workflow/scripts/gpu_slot.py with fake GPU counts, the
cost-estimate formula, and bench_gpu.py's behaviour without a GPU. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asknlearn import accel
from asknlearn.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SLOT_SCRIPT = REPO / "workflow" / "scripts" / "gpu_slot.py"


def _load_gpu_slot():
    spec = importlib.util.spec_from_file_location("gpu_slot", SLOT_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_slot = _load_gpu_slot()


# ---------------------------------------------------------------------------- accel
def test_precision_values_and_bf16_refused_on_cpu():
    assert accel.check_precision("fp32", "cpu") == "fp32"
    assert accel.check_precision("bf16", "cuda") == "bf16"  # validation only, no CUDA needed
    with pytest.raises(ConfigError, match=r"precision='fp16' is not valid; valid: fp32, bf16"):
        accel.check_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match=r"needs a CUDA device .* valid on the CPU: fp32"):
        accel.check_precision("bf16", "cpu")
    with pytest.raises(ConfigError, match=r"compile='jit' is not valid; valid: off, graph, compile"):
        accel.check_compile("jit")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_a_no_op_on_cpu():
    with accel.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with accel.autocast("bf16", "cpu"):  # unreachable through check_precision; still inert
        assert not torch.is_autocast_enabled("cpu")
    assert isinstance(accel.autocast("bf16", "cuda"), torch.autocast)
    assert not isinstance(accel.autocast("fp32", "cuda"), torch.autocast)


@pytest.fixture
def restore_flags(monkeypatch):
    """Put torch's global determinism flags back after a test that sets them."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def test_configure_leaves_the_cpu_path_alone(restore_flags):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    for det in (True, False):
        info = accel.configure("cpu", deterministic=det)
        assert info["applied"] is False
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_configure_sets_the_cuda_flags(restore_flags):
    """The CUDA branch only sets flags and an environment variable: testable without a GPU."""
    info = accel.configure("cuda", deterministic=True)
    assert info["applied"] is True
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    accel.configure("cuda", deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark


def test_cublas_workspace_keeps_a_user_setting(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert accel.set_cublas_workspace() is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_channels_last_only_for_cnns_on_cuda():
    from asknlearn.models import build_model

    cnn = build_model("resnet18", (3, 32, 32), 10, 0.0)
    mlp = build_model("mlp", (1, 8, 8), 10, 0.0)
    assert accel.use_channels_last(cnn, "cuda") and not accel.use_channels_last(cnn, "cuda", False)
    assert not accel.use_channels_last(cnn, "cpu") and not accel.use_channels_last(mlp, "cuda")
    assert accel.to_channels_last(cnn, "cpu") is False
    assert cnn.trunk.stem[0].weight.is_contiguous()  # untouched on the CPU
    x = torch.zeros(2, 3, 4, 4)
    assert accel.batch_layout(x, True).is_contiguous(memory_format=torch.channels_last)
    assert accel.batch_layout(x, False) is x


@pytest.mark.parametrize("mode", ["off", "graph", "compile"])
def test_train_step_on_cpu_is_the_eager_fp32_step_bit_for_bit(mode):
    """On the CPU every capture mode falls back to eager, and the step equals train_model's
    own (zero_grad, forward, backward, Adam): the CPU path stays bit-identical."""
    from asknlearn.losses import LWCC
    from asknlearn.models import build_model

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 1, 8, 8, generator=g), torch.randint(0, 10, (100,), generator=g)
    loss_fn = LWCC(1.0)

    def model_opt():
        torch.manual_seed(3)
        m = build_model("mlp", (1, 8, 8), 10, 0.2)
        return m, torch.optim.Adam(m.parameters(), lr=1e-3)

    ref, ref_opt = model_opt()
    ours, opt = model_opt()
    step = accel.TrainStep(ours, opt, loss_fn, batch_size=64, device="cpu", mode=mode)
    assert step.mode == "off"
    for s in (0, 64, 0, 64):  # a full batch and the last, smaller one, twice
        xb, yb = x[s:s + 64], y[s:s + 64]
        torch.manual_seed(s)
        loss_r, logits_r = loss_fn(ref, xb, yb)
        ref_opt.zero_grad(set_to_none=True)
        loss_r.backward()
        ref_opt.step()
        torch.manual_seed(s)
        loss_o, logits_o = step(xb, yb)
        assert torch.equal(loss_o, loss_r) and torch.equal(logits_o, logits_r)
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------- gpu_slot.py
def test_slot_order_spreads_jobs_over_gpus_first():
    assert gpu_slot.slot_order(2, 3) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert gpu_slot.slot_order(3, 1) == [(0, 0), (1, 0), (2, 0)]


def test_packing_claims_k_slots_per_gpu(tmp_path):
    """2 fake GPUs x 3 cells each: six one-GPU jobs fit, spread 0,1,0,1,0,1; a seventh does
    not; a freed slot is taken again."""
    held = []
    for _ in range(6):
        got = gpu_slot.try_claim(1, 2, 3, tmp_path)
        assert got is not None
        held.append(got[0])
    assert [g for g, _ in held] == [0, 1, 0, 1, 0, 1]
    assert gpu_slot.try_claim(1, 2, 3, tmp_path) is None
    gpu, fd = held.pop(3)  # GPU 1's second slot frees up
    os.close(fd)
    again = gpu_slot.try_claim(1, 2, 3, tmp_path)
    assert again is not None and again[0][0] == gpu
    for _, f in held + again:
        os.close(f)


def test_multi_gpu_jobs_take_distinct_gpus(tmp_path):
    got = gpu_slot.try_claim(2, 3, 1, tmp_path)
    assert sorted(g for g, _ in got) == [0, 1]
    assert gpu_slot.try_claim(2, 3, 1, tmp_path) is None  # only GPU 2 is left
    for _, f in got:
        os.close(f)


@pytest.mark.parametrize("n, total, per_gpu, message", [
    (3, 2, 1, "asks for 3 GPUs but this machine has 2"),
    (2, 4, 2, "a job of 2 GPUs cannot share them (cells_per_gpu=2)"),
    (1, 2, 0, "--cells-per-gpu 0; valid: an integer >= 1"),
])
def test_impossible_requests_fail_at_once(tmp_path, n, total, per_gpu, message):
    with pytest.raises(gpu_slot.SlotError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gpu_slot.claim(n, total, tmp_path, per_gpu, timeout_s=0)


def test_default_lock_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("ASKNLEARN_GPU_LOCK_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert gpu_slot.default_lock_dir() == tmp_path / "asknlearn-gpu"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert gpu_slot.default_lock_dir().name == f"asknlearn-gpu-{os.getuid()}"
    monkeypatch.setenv("ASKNLEARN_GPU_LOCK_DIR", str(tmp_path / "mine"))
    assert gpu_slot.default_lock_dir() == tmp_path / "mine"


def test_lock_dir_of_another_user_is_refused(monkeypatch, tmp_path):
    """Issue 12 item 9: a lock folder someone else owns is refused with one line, not used."""
    d = tmp_path / "locks"
    d.mkdir()
    real = os.getuid()
    monkeypatch.setattr(gpu_slot.os, "getuid", lambda: real + 1)
    with pytest.raises(gpu_slot.SlotError,
                       match=r"belongs to .*not to you .*--lock-dir or ASKNLEARN_GPU_LOCK_DIR"):
        gpu_slot.ensure_lock_dir(d)


def test_lock_dir_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(gpu_slot.SlotError, match="is not a folder"):
        gpu_slot.ensure_lock_dir(tmp_path / "link")
    made = gpu_slot.ensure_lock_dir(tmp_path / "new" / "locks")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700


def test_waiting_job_says_whom_it_waits_for_and_times_out(tmp_path):
    """A held slot makes the next job print what it waits for, then fail after the timeout
    with exit 2 and one line naming the holder; nothing blocks forever."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    base = [sys.executable, str(SLOT_SCRIPT), "--gpus", "1", "--lock-dir", str(tmp_path), "--poll", "0.1"]
    holder = subprocess.Popen([*base, "--", sys.executable, "-c", "import time; time.sleep(30)"],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stderr.readline()
        assert "CUDA_VISIBLE_DEVICES=0" in line
        waiter = subprocess.run([*base, "--wait-timeout", "1", "--", sys.executable, "-c", "print('ran')"],
                                env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 2 and "ran" not in waiter.stdout
    assert f"waiting for 1 free GPU slot(s) of 1 GPU(s) x 1 in {tmp_path}" in waiter.stderr
    assert f"gpu0-slot0 held by pid {holder.pid} on " in waiter.stderr
    last = waiter.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu_slot: error: no free GPU slot for 1 GPU(s) after ")
    # the holder was SIGKILLed: flock released it, the slot is free again
    ok = subprocess.run([*base, "--wait-timeout", "5", "--", sys.executable, "-c",
                         "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "0"


@pytest.mark.parametrize("args, message", [
    (["--wait-timeout", "-1"], "valid: seconds >= 0"),
    (["--wait-timeout", "inf"], "valid: seconds >= 0"),
])
def test_bad_wait_timeout_is_one_line(tmp_path, args, message):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run([sys.executable, str(SLOT_SCRIPT), "--gpus", "1", "--lock-dir", str(tmp_path),
                           *args, "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr


def test_bad_wait_timeout_env_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["ASKNLEARN_GPU_WAIT_TIMEOUT"] = "soon"
    proc = subprocess.run([sys.executable, str(SLOT_SCRIPT), "--gpus", "1", "--lock-dir", str(tmp_path),
                           "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gpu_slot: error: ASKNLEARN_GPU_WAIT_TIMEOUT='soon'; valid: "
                                   "seconds >= 0 (0 waits forever)")


# ---------------------------------------------------------------------------- estimate
def _cfg(**kw):
    from asknlearn.config import ExperimentConfig

    base = dict(dataset="digits", strategy="random", seed_size=20, query_size=20, budget=60,
                max_epochs=50, tracking=False)
    return ExperimentConfig(**{**base, **kw}).resolve()


def test_estimate_formula_by_hand():
    from asknlearn.estimate import Rates, cell_seconds, schedule

    assert schedule(20, 20, 60) == [20, 40, 60, 80]
    rates = Rates(train_samples_per_s=100.0, infer_samples_per_s=1000.0, select_seconds=2.0,
                  select_pool=1000)
    # random: no inference over the pool, no selection cost
    r = cell_seconds(_cfg(), 1300, 497, rates, epochs_per_round=10)
    assert r["train"] == pytest.approx(10 * (20 + 40 + 60 + 80) / 100)
    assert r["evaluate"] == pytest.approx(4 * 497 / 1000)
    assert r["inference"] == 0 and r["select"] == pytest.approx(2.0 * (1280 + 1260 + 1240) / 1000)
    assert r["total"] == pytest.approx(r["train"] + r["evaluate"] + r["inference"] + r["select"])
    # E is capped at max_epochs
    assert cell_seconds(_cfg(max_epochs=5), 1300, 497, rates, 10)["train"] == pytest.approx(
        5 * 200 / 100)
    # BADGE reads the pool once per round; Ask-n-Learn's refinement adds k_aug passes (bound)
    pools = 1280 + 1260 + 1240
    assert cell_seconds(_cfg(strategy="badge"), 1300, 497, rates, 10)["inference"] == pytest.approx(
        pools / 1000)
    anl = _cfg(strategy="ask-n-learn-lwcc", k_aug=4, val_size=100)
    r = cell_seconds(anl, 1300, 497, rates, 10)
    assert r["inference"] == pytest.approx(5 * (1180 + 1160 + 1140) / 1000)
    assert r["evaluate"] == pytest.approx(4 * (497 + 100) / 1000)


def test_makespan_longest_first():
    from asknlearn.estimate import makespan

    assert makespan([3, 3, 2, 2, 2], 2) == 7  # LPT: {3,2,2} and {3,2}
    assert makespan([5, 1, 1], 4) == 5
    assert makespan([1.0] * 8, 1) == 8
    with pytest.raises(ConfigError, match="valid: an integer >= 1"):
        makespan([1.0], 0)


def test_estimate_study_with_fixed_rates(tmp_path):
    """The study sum and the wall time come from the cells, with a meter that returns known rates."""
    from asknlearn.estimate import Rates, estimate_study, load_workflow_config

    f = tmp_path / "s.yaml"
    f.write_text("study: s\nstrategies: [random, badge]\nseeds: [0, 1, 2]\nnoise: [0.0, 0.1]\n"
                 "experiment: {seed_size: 20, query_size: 20, budget: 60, model: mlp, max_epochs: 200}\n"
                 "resources: {al: {estimate_epochs: 10}}\n")
    cfg = load_workflow_config([f])
    assert cfg["resources"]["al"]["cells_per_gpu"] == 1  # schema default filled in

    class Meter:
        device = torch.device("cpu")

        def rates(self, cell, n_pool):
            return Rates(100.0, 1e12, 0.0, 1)

    est = estimate_study(cfg, Meter(), slots=4)
    per_cell = 10 * (20 + 40 + 60 + 80) / 100
    assert est.cells == 12 and est.rounds == 3
    assert est.seconds["train"] == pytest.approx(12 * per_cell)
    assert est.device_hours == pytest.approx(12 * per_cell / 3600, rel=1e-6)
    assert est.wall_hours == pytest.approx(3 * per_cell / 3600, rel=1e-6)


def test_estimate_config_errors(tmp_path):
    from asknlearn.estimate import load_workflow_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: {al: {cells_per_gpu: 0}}\n")
    with pytest.raises(ConfigError, match="config does not match config.schema.yaml"):
        load_workflow_config([bad])
    with pytest.raises(ConfigError, match="does not exist"):
        load_workflow_config([tmp_path / "missing.yaml"])


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "asknlearn", "estimate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flag, value, message", [
    ("--gpus", "0", "--gpus='0' is not valid; valid: an integer >= 1"),
    ("--epochs-per-round", "nan", "--epochs-per-round='nan' is not valid; valid: a number > 0"),
    ("--steps", "x", "--steps='x' is not valid; valid: an integer >= 1"),
])
def test_estimate_bad_flags_one_line(tmp_path, flag, value, message):
    out = tmp_path / "e.json"
    proc = _cli("--configfile", "config/config.yaml", flag, value, "--json", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"asknlearn: error: {message}"
    assert not out.exists()


def test_estimate_command_on_cpu(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text("study: tiny\nstrategies: [random, badge]\nseeds: [0]\n"
                 "experiment: {seed_size: 20, query_size: 20, budget: 40, model: mlp, max_epochs: 60}\n")
    out = tmp_path / "e.json"
    proc = _cli("--configfile", str(f), "--gpus", "2", "--steps", "2", "--epochs-per-round", "7",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "these are CPU hours" in proc.stdout and "CPU-h" in proc.stdout
    assert "E = tiny: 7" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["unit"] == "CPU" and doc["gpus"] == 2
    (study,) = doc["studies"]
    assert study["cells"] == 2 and study["rounds"] == 2
    assert study["seconds"]["train"] > 0 and study["seconds"]["select"] > 0  # BADGE selects


# ---------------------------------------------------------------------------- bench_gpu.py
def test_bench_gpu_without_a_gpu_says_so_and_exits_0(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "no CUDA GPU on this machine; nothing measured, nothing written" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_gpu_cpu_smoke(tmp_path):
    """Every path of the benchmark runs (capture modes fall back to eager on the CPU)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--device", "cpu",
                           "--quick", "--threads", "1", "--models", "resnet18", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["quick"] is True and doc["benchmark"] == "gpu"
    for name in ("resnet18",):
        rows = doc["results"]["cnn"][name]
        assert rows["graph"]["mode"] == "off" and rows["graph"]["max_abs_weight_diff_vs_eager"] == 0
        assert rows["deterministic"]["on"]["repeat_identical"] is True
    assert set(doc["results"]["packing_rounds_per_s"]) == {"1", "2"}
    assert len(doc["targets"]) == 2


# ---------------------------------------------------------------------------- wiring (config, train, loop)
@pytest.mark.parametrize("key, value, valid", [
    ("precision", "fp16", "valid: fp32, bf16"),
    ("compile", "jit", "valid: off, graph, compile"),
    ("deterministic", "maybe", "valid: a value of type bool"),
])
def test_gpu_config_keys_are_validated(key, value, valid):
    from asknlearn.config import from_mapping

    with pytest.raises(ConfigError, match=valid):
        from_mapping({key: value}).resolve()


def test_bf16_cell_on_cpu_is_refused_before_anything_is_written(tmp_path):
    from asknlearn.config import ExperimentConfig
    from asknlearn.loop import Cell

    cfg = ExperimentConfig(dataset="digits", device="cpu", precision="bf16", tracking=False)
    with pytest.raises(ConfigError, match="precision='bf16' needs a CUDA device"):
        Cell(cfg, tmp_path / "cell")
    assert not (tmp_path / "cell").exists()


def test_train_model_capture_modes_are_bit_identical_on_cpu():
    from asknlearn.losses import CrossEntropy
    from asknlearn.models import build_model
    from asknlearn.train import train_model

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(150, 1, 8, 8, generator=g), torch.randint(0, 10, (150,), generator=g)
    out = []
    for mode in ("off", "graph", "compile"):
        torch.manual_seed(1)
        m = build_model("mlp", (1, 8, 8), 10, 0.0)
        res = train_model(m, CrossEntropy(), x, y, max_epochs=3, target_accuracy=2.0,
                          generator=torch.Generator().manual_seed(2), compile=mode)
        out.append((res.epochs, res.train_accuracy, [p.detach().clone() for p in m.parameters()]))
    for epochs, acc, params in out[1:]:
        assert (epochs, acc) == out[0][:2]
        assert all(torch.equal(a, b) for a, b in zip(params, out[0][2], strict=True))
