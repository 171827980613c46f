"""jmem.bench: end to end on tiny shapes, FLOP counting, ratios, optional torch.

No timing thresholds: throughput is the benchmark's output, not a test condition.
"""

import argparse
import json

import jax
import numpy as np
import pytest

from jmem.bench import baselines, command, harness, measure, workloads
from jmem.engine.hparams import ModelConfig


def _args(*argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def cheap_peak(monkeypatch):
    """A constant matmul peak: the real one is measured in the end-to-end test only."""
    monkeypatch.setattr(harness, "matmul_peak", lambda *a, **k: 1e11)


def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = _args("--quick", "--R", "1,2", "--epochs", "1", "--strategies", "auto",
                 "--baselines", "jax_scan", "--out", str(out))
    assert command.run(args) == 0
    result = json.loads(out.read_text())
    for key in ("date", "nproc", "cpu", "jax", "backend", "command", "load_average_before"):
        assert key in result["meta"]
    assert result["peak_flops"] > 0 and result["peak_dtype"] == "float32"
    (work,) = result["workloads"]
    assert work["name"] == "mlp" and work["forward_macs"] == 64 * 256 + 256 * 10
    assert work["epochs"] == 1
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    assert {r["R"] for r in rows} == {1, 2}
    assert {r["config"] for r in rows} >= {"jax_scan"}
    for row in rows:
        for key in ("models_per_s", "examples_per_s", "compile_s", "median_s", "flops_per_s",
                    "fraction_of_peak", "host_peak_bytes", "device_peak_bytes", "auto_speedup"):
            assert key in row
        assert row["models_per_s"] > 0 and row["compile_s"] >= 0
        assert row["examples_per_s"] == pytest.approx(row["models_per_s"] * work["subset_size"])
    autos = [r for r in rows if r["auto"]]
    assert len(autos) == 2 and all(r["auto_speedup"] == pytest.approx(1.0) for r in autos)
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1].startswith("| mlp | 2 |")  # the table comes last


def test_forward_macs_mlp_hand_count():
    assert workloads.forward_macs(ModelConfig(kind="mlp", width=256, depth=1), 10, (8, 8, 1)) == 64 * 256 + 256 * 10
    deeper = ModelConfig(kind="mlp", width=32, depth=2)
    assert workloads.forward_macs(deeper, 10, (64,)) == 64 * 32 + 32 * 32 + 32 * 10
    assert workloads.training_flops(18944, 100) == 6 * 18944 * 100


def test_forward_macs_cnn_hand_count():
    # MNIST-1D CNN: three stride-2 convs (kernel 5, width 32) on length 40 -> 20, 10, 5.
    cfg = ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5)
    expected = 20 * 5 * 1 * 32 + 10 * 5 * 32 * 32 + 5 * 5 * 32 * 32 + (5 * 32) * 10
    assert workloads.forward_macs(cfg, 10, (40, 1)) == expected


def test_xla_cost_analysis_agrees_with_hand_count():
    flops = workloads.xla_forward_flops(ModelConfig(kind="mlp", width=256, depth=1), 10, (8, 8, 1))
    if flops is None:
        pytest.skip("this backend has no cost analysis")
    # XLA also counts bias adds, ReLU and the like: a few percent more than 2 x MACs.
    assert 2 * 18944 <= flops <= 1.05 * 2 * 18944


def test_auto_speedups():
    rows = [
        {"workload": "mlp", "R": 8, "config": "vmap", "auto": True, "models_per_s": 30.0},
        {"workload": "mlp", "R": 8, "config": "fz_loop", "auto": False, "models_per_s": 10.0},
        {"workload": "mlp", "R": 8, "config": "torch_bmm", "auto": False, "models_per_s": None},
        {"workload": "mlp", "R": 32, "config": "fz_loop", "auto": False, "models_per_s": 10.0},
    ]
    out = harness.auto_speedups(rows)
    assert [r["auto_speedup"] for r in out] == [1.0, 3.0, None, None]  # no auto at R=32


def test_rotated_and_padded_batches():
    assert measure.rotated([1, 2, 3], 4) == [2, 3, 1] and measure.rotated([], 1) == []
    order = np.array([[5, 1, 4], [2, 0, 3]])
    idx, w = baselines.padded_batches(order, 2)
    assert idx.tolist() == [[5, 1], [4, 0], [2, 0], [3, 0]]
    assert w.tolist() == [[1, 1], [1, 0], [1, 1], [1, 0]]


def test_resize_train_replicates_and_cuts():
    ds = workloads.synthetic_images(10, num_test=4, shape=(4, 4, 3))
    big = workloads.resize_train(ds, 25)
    assert big.num_train == 25 and np.array_equal(big.x_train[20], ds.x_train[0])
    assert workloads.resize_train(ds, 3).num_train == 3


def test_plan_strategies_marks_auto():
    work = workloads.Workload("mlp", workloads.synthetic_images(8, 4, (4, 4, 3)), ModelConfig(kind="mlp"),
                          workloads.TrainConfig(), (1,))
    one = jax.devices()[:1]
    rows, notes = harness.plan_strategies(work, list(harness.STRATEGIES), one)
    assert [(r.label, r.is_auto) for r in rows] == [("vmap", True), ("sequential", False)]
    assert any("patches" in n for n in notes) and any("sharded" in n for n in notes)
    two = [one[0], one[0]]  # stands in for two devices: only the plan is inspected
    rows, _ = harness.plan_strategies(work, ["auto", "vmap"], two)
    assert [(r.label, r.strategy, len(r.devices), r.is_auto) for r in rows] == [
        ("sharded", "vmap", 2, True), ("vmap", "vmap", 1, False)]


def test_host_memory_probe_sees_an_allocation():
    probe = measure.HostMemoryProbe()
    block = np.ones(64 * 2 ** 20 // 8)  # 64 MB, touched
    peak = probe.peak_bytes()
    del block
    assert peak >= 0
    if probe.method == "VmHWM reset":
        assert peak >= 48 * 2 ** 20


def test_torch_baselines_skip_cleanly_without_torch(monkeypatch, tmp_path, capsys, cheap_peak):
    real_import = baselines.importlib.import_module

    def import_without_torch(name, *args):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args)

    # Only jmem.bench's own import fails: a None in sys.modules["torch"] would break
    # libraries (scipy's array-API helpers) that look torch up there.
    monkeypatch.setattr(baselines.importlib, "import_module", import_without_torch)
    assert baselines.torch_or_none() is None
    out = tmp_path / "b.json"
    args = _args("--quick", "--R", "1", "--strategies", "auto",
                 "--baselines", "torch_loop,torch_vmap,torch_bmm", "--out", str(out))
    assert command.run(args) == 0
    rows = json.loads(out.read_text())["rows"]
    skipped = [r for r in rows if r["config"].startswith("torch")]
    assert len(skipped) == 3
    assert all(r["status"] == "skipped" and r["reason"] == baselines.TORCH_MISSING for r in skipped)
    assert "torch is not installed" in capsys.readouterr().out


def test_bad_flags_are_rejected():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    for argv in (["--R", "0"], ["--R", "a,b"], ["--strategies", "fast"], ["--model", "vit"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert _args("--baselines", "none").baselines == []
