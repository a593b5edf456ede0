"""The benchmark scripts (smoke runs with --quick), the README table generator, and the
exactness the k-means++ benchmark relies on (pruned and full-pass seeding pick the same
points, and consume exactly one uniform per centre). No timing is asserted anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asknlearn.kmeanspp import (
    embedding_factors,
    gradient_embedding,
    kmeanspp_dense,
    kmeanspp_factored,
)

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))


def run_bench(script: str, out: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--threads", "1", "--out", str(out), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    name = script.removeprefix("bench_").removesuffix(".py")
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["benchmark"] == name and doc["quick"] is True
    assert {"environment", "params", "results", "targets", "command"} <= set(doc)
    assert doc["environment"]["threads"] == 1 and "loadavg_start" in doc["environment"]
    for t in doc["targets"]:
        assert {"name", "goal", "measured", "unit", "met", "limit"} <= set(t)
        assert isinstance(t["met"], bool)
        # a verdict is printed for every target, with MISSED and the limit when missed
        assert f"target {t['name']}:" in proc.stdout
    return doc


# ---------------------------------------------------------------------------- smoke runs
@pytest.mark.slow
def test_bench_kmeanspp_quick(tmp_path):
    doc = run_bench("bench_kmeanspp.py", tmp_path)
    r = doc["results"]
    for key in ("ours", "badge_ref", "badge_ref_np", "dense_torch", "dense_orig"):
        assert r[key]["seconds"] > 0 and "peak_mib" in r[key]
    assert r["dense_orig"]["extrapolated"] is True
    assert r["streaming_bound_seconds"] > 0 and r["bandwidth_gb_s"] > 0
    # fed the same uniforms, the current BADGE reference picks exactly what ours picks
    assert r["badge_ref"]["identical_leading_picks"] == doc["params"]["b"]
    assert r["ours"]["first_picks"] == r["badge_ref"]["first_picks"]
    assert len(r["scaling"]) == 4
    assert {"ours_seconds", "badge_ref_seconds_extrapolated"} <= set(r["scaling"][0])
    assert {"chi2_p_ours", "chi2_p_badge_ref"} <= set(r["d2_check"])
    assert r["d2_check"]["first_centre_drawn_again"] == 0
    names = {t["name"] for t in doc["targets"]}
    assert {"kmeans++ vs current BADGE ref", "kmeans++ peak memory vs dense",
            "kmeans++ vs streaming bound"} <= names


@pytest.mark.slow
def test_bench_training_quick(tmp_path):
    doc = run_bench("bench_training.py", tmp_path)
    r = doc["results"]
    assert r["real_data"] is False  # --quick always uses synthetic images
    for w in (0, 2):
        d = r[f"dataloader_w{w}"]
        assert d["samples_per_s"] > 0 and d["batches"] == -(-r["n"] // 64)
        # same init, same batch order, same preprocessing: the same loss curve
        assert d["loss_curve_max_abs_diff"] <= 1e-5


@pytest.mark.slow
def test_bench_vwcc_quick(tmp_path):
    doc = run_bench("bench_vwcc.py", tmp_path)
    for model in ("mlp", "resnet18"):
        m = doc["results"][model]
        assert m["batched_epoch_seconds"] > 0 and m["loop_epoch_seconds"] > 0
        assert m["loop_over_batched"] == pytest.approx(m["loop_epoch_seconds"] / m["batched_epoch_seconds"])


@pytest.mark.slow
def test_bench_inference_quick(tmp_path):
    doc = run_bench("bench_inference.py", tmp_path)
    r = doc["results"]
    assert r["mlp_predict"]["samples_per_s"] > 0 and r["mlp_predict"]["feature_dim"] == 256
    assert 0 <= r["mlp_refine"]["low_confidence"] <= r["mlp_predict"]["n"]
    assert {"augment_fashion_mnist", "augment_cifar10", "resnet18_predict", "mlp_refine_pil"} <= set(r)


@pytest.mark.slow
def test_bench_cell_quick(tmp_path):
    doc = run_bench("bench_cell.py", tmp_path, "--strategies", "badge")
    cells = doc["results"]["cells"]
    badge = cells["badge"]
    assert [r["round"] for r in badge["rounds"]] == [0, 1, 2]
    for r in badge["rounds"][1:]:
        assert r["selection_seconds"] > 0 and 0 < r["selection_fraction"] < 1
    assert badge["peak_rss_mib"] > doc["results"]["baseline_rss_mib"] * 0.5
    assert cells["cifar10_scale_badge"]["peak_rss_mib"] > 0
    assert len(cells["cifar10_scale_badge"]["rounds"]) == 2


def test_bench_rejects_bad_threads(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_vwcc.py"), "--threads", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "--threads 0" in proc.stderr
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- make_table
def _doc(name: str, quick: bool, met: bool) -> dict:
    return {"benchmark": name, "quick": quick, "params": {}, "results": {},
            "environment": {"device_name": "CPU X", "threads": 2, "loadavg_start": [0.5, 0.4, 0.3],
                            "started": "2026-01-01T00:00:00+00:00"},
            "targets": [{"name": f"{name} speed", "goal": "≥ 3× faster", "measured": 4.25 if met else 1.5,
                         "unit": "×", "met": met, "limit": "the model step | dominates"}]}


def _readme(tmp: Path) -> Path:
    p = tmp / "README.md"
    p.write_text("# x\n\nbefore\n<!-- perf:start -->\nold table\n<!-- perf:end -->\nafter\n")
    return p


def test_make_table_splices_only_between_markers(tmp_path):
    import make_table

    res = tmp_path / "results"
    res.mkdir()
    (res / "training.json").write_text(json.dumps(_doc("training", False, True)))
    (res / "vwcc.json").write_text(json.dumps(_doc("vwcc", False, False)))
    (res / "inference.json").write_text(json.dumps(_doc("inference", True, True)))  # quick: skipped
    readme = _readme(tmp_path)
    assert make_table.main(["--results", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- perf:start -->\n")
    assert text.endswith("<!-- perf:end -->\nafter\n")
    assert "old table" not in text
    assert "| training speed | ≥ 3× faster | 4.2× | met |" in text
    # a miss is shown as measured, with its limit (pipes escaped for the table)
    assert "| vwcc speed | ≥ 3× faster | 1.50× | **missed** (the model step \\| dominates) |" in text
    assert "inference" not in text
    assert make_table.main(["--results", str(res), "--readme", str(readme), "--check"]) == 0
    (res / "training.json").write_text(json.dumps(_doc("training", False, False)))
    assert make_table.main(["--results", str(res), "--readme", str(readme), "--check"]) == 1


def test_make_table_without_markers_fails_and_writes_nothing(tmp_path, capsys):
    import make_table

    res = tmp_path / "results"
    res.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert make_table.main(["--results", str(res), "--readme", str(readme)]) == 2
    assert "perf:start" in capsys.readouterr().err
    assert readme.read_text() == "no markers here\n"


def test_committed_readme_block_matches_committed_results():
    import make_table

    if not any(not json.loads(p.read_text()).get("quick") for p in (BENCH / "results").glob("*.json")):
        pytest.skip("no benchmark results committed yet")
    assert make_table.main(["--check"]) == 0


# ---------------------------------------------------------------------------- k-means++ exactness
def _pool(n: int, k: int, d: int, seed: int, scale: float = 2.0, shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, k, generator=g) * scale, 1)
    z = torch.relu(torch.randn(n, d, generator=g)) - shift
    return embedding_factors(probs, probs.argmax(1)), z, probs


@pytest.mark.parametrize("seed,scale,shift,dtype", [
    (0, 2.0, 0.0, torch.float32), (1, 0.5, 0.0, torch.float32),
    (2, 2.0, 0.3, torch.float32),  # features with negative entries: the |a| bound
    (3, 4.0, 0.0, torch.float64)])
def test_pruned_seeding_picks_what_the_full_pass_picks(seed, scale, shift, dtype):
    u, z, _ = _pool(3000, 10, 48, seed, scale, shift)
    u, z = u.to(dtype), z.to(dtype)
    st: dict = {}
    a = kmeanspp_factored(u, z, 300, torch.Generator().manual_seed(seed), prune=True, stats=st)
    b = kmeanspp_factored(u, z, 300, torch.Generator().manual_seed(seed), prune=False)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 300
    # pruning really skipped feature rows (else this test would not exercise it)
    assert st["feature_rows_read"] < 0.5 * 3000 * 299


def test_pruned_seeding_matches_dense_reference_on_structured_pool():
    u, z, probs = _pool(800, 6, 12, 7, scale=3.0)
    dense = gradient_embedding(probs.double(), z.double(), probs.argmax(1))
    a = kmeanspp_factored(u.double(), z.double(), 120, torch.Generator().manual_seed(5))
    b = kmeanspp_dense(dense, 120, torch.Generator().manual_seed(5))
    assert a.tolist() == b.tolist()


def test_seeding_consumes_exactly_one_uniform_per_centre():
    u, z, _ = _pool(500, 4, 8, 1)
    g1 = torch.Generator().manual_seed(9)
    kmeanspp_factored(u, z, 40, g1)
    g2 = torch.Generator().manual_seed(9)
    for _ in range(39):
        torch.rand((), generator=g2, dtype=torch.float64)
    assert torch.rand(3, generator=g1).tolist() == torch.rand(3, generator=g2).tolist()


def test_pruned_seeding_with_duplicates_still_returns_distinct_points():
    u = torch.ones(300, 3) * torch.tensor([0.5, -0.5, 0.0])
    z = torch.ones(300, 5)
    u[:4] *= torch.arange(1, 5).view(4, 1)  # four distinct points, the rest identical
    for prune in (True, False):
        picks = kmeanspp_factored(u, z, 30, torch.Generator().manual_seed(0), prune=prune)
        assert len(set(picks.tolist())) == 30


def test_prune_needs_cpu_tensors():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU to pass GPU tensors")
    u, z, _ = _pool(100, 3, 4, 0)
    with pytest.raises(ValueError, match="prune=True needs CPU tensors"):
        kmeanspp_factored(u.cuda(), z.cuda(), 5, torch.Generator(), prune=True)


def test_peak_memory_sees_a_torch_allocation():
    import _common as C

    with C.PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)
        x += 1
        del x
    if mem.peak_bytes is None:
        pytest.skip("no /proc on this system")
    assert mem.peak_bytes >= 48 * 2**20


def test_device_draw_agrees_with_host_draw():
    # the GPU path's synchronization-free draw is the same function of (D², uniform) as the
    # CPU one; checked here on CPU tensors, edge uniforms and zero-mass blocks included
    from asknlearn.kmeanspp import DRAW_BLOCK, _draw_np, _draw_torch

    g = torch.Generator().manual_seed(3)
    d2 = torch.rand(5 * DRAW_BLOCK, generator=g, dtype=torch.float64)
    d2[DRAW_BLOCK : 3 * DRAW_BLOCK] = 0.0  # two empty blocks
    d2[-DRAW_BLOCK // 2 :] = 0.0  # an empty tail
    for r in [0.0, 1e-12, 0.2, 0.4, 0.5, 0.9, 1.0 - 1e-16, *torch.rand(200, generator=g).tolist()]:
        i_np = _draw_np(d2.numpy(), r)
        i_t, total = _draw_torch(d2, torch.tensor([r], dtype=torch.float64))
        assert int(i_t) == i_np and d2[i_np] > 0
        assert float(total) == pytest.approx(float(d2.sum()))


# ---------------------------------------------------------------------------- bench_reference
def _idx(path: Path, arr) -> None:
    import struct

    import numpy as np

    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(np.asarray(arr, dtype=np.uint8).tobytes())


def _bench_reference(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "bench_reference.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_bench_reference_without_a_checkout_says_so_and_exits_0():
    proc = _bench_reference()
    assert proc.returncode == 0 and "needs a checkout of the BADGE reference" in proc.stdout
    assert "nothing run" in proc.stdout


def test_bench_reference_refuses_a_folder_that_is_not_the_reference(tmp_path):
    proc = _bench_reference(str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "holds no run.py and dataset.py" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bench_reference_pairs_a_stand_in_reference_with_ours(tmp_path):
    """A stand-in checkout (its run.py prints the reference's accuracy lines) and tiny
    Fashion-MNIST IDX files: the script runs both sides as whole processes, parses each side's
    final accuracy at the job's last label count and records the pair's ratio."""
    import numpy as np

    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 1300), ("t10k", 60)):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "dataset.py").write_text("")
    (ref / "run.py").write_text(
        "import sys\nend = int(sys.argv[sys.argv.index('--nEnd') + 1])\n"
        "for n in range(100, end + 1, 1000):\n    print(f'{n}\\ttesting accuracy 0.25')\n")
    out = tmp_path / "out"
    proc = _bench_reference(str(ref), "--quick", "--threads", "1", "--data",
                            str(tmp_path / "data"), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((out / "reference.json").read_text())
    (pair,) = doc["results"]["pairs"]
    assert pair["reference"]["test_accuracy"] == 0.25 and pair["reference"]["labels"] == 1100
    assert pair["ours"]["labels"] == 1100 and 0 <= pair["ours"]["test_accuracy"] <= 1
    assert pair["ratio"] == pytest.approx(pair["reference"]["wall_seconds"]
                                          / pair["ours"]["wall_seconds"])
    assert "pair 1 ratio" in proc.stdout
