"""benchmarks/gpu.sh in its CPU dry-run mode (JMEM_GPU_TINY=1): every section runs, rows
reach $OUT/rows.jsonl while the script is still running, and a global deadline cuts the run
short without losing what was measured."""

import json
import subprocess
import sys
import time

from child_env import REPO, child_env


def _rows(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_watching(out, **env_extra):
    """Run gpu.sh, polling rows.jsonl: (completed process, row counts seen while it ran)."""
    env = child_env(JMEM_GPU_TINY="1", OUT=str(out), PYTHON=sys.executable, **env_extra)
    proc = subprocess.Popen(["bash", "benchmarks/gpu.sh"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = set()
    while proc.poll() is None:
        seen.add(len(_rows(out / "rows.jsonl")))
        time.sleep(0.05)
    stdout = proc.stdout.read()
    return proc.returncode, stdout, seen


def test_tiny_run_writes_rows_as_it_measures(tmp_path):
    code, stdout, seen = _run_watching(tmp_path)
    assert code == 0, stdout[-3000:]
    rows = _rows(tmp_path / "rows.jsonl")
    # Rows arrived one by one while the script ran, not all at the end.
    assert len({n for n in seen if 0 < n < len(rows)}) >= 5, (sorted(seen), len(rows))
    ok = {(r["section"], r["name"], r.get("dtype"), r.get("R")) for r in rows if r["status"] == "ok"}
    bad = [r for r in rows if r["status"] != "ok"]
    assert not bad, bad
    assert {("ceilings", n) for n in ("matmul_bfloat16", "matmul_float32", "copy")} <= {k[:2] for k in ok}
    for dtype in ("bfloat16", "float32"):
        for name in ("jmem", "lean_einsum", "one_at_a_time"):
            assert any(k[:3] == ("mlp", name, dtype) for k in ok), (name, dtype)
    resnet = {(k[1], k[3]) for k in ok if k[0] == "resnet"}
    assert {("patches", 2), ("vmap", 2), ("patches", 4), ("vmap", 4), ("sequential", 2),
            ("single_model_ceiling", 2), ("single_model_ceiling", 4)} <= resnet
    assert any(name.startswith("patches/c") for name, _ in resnet)
    assert {("margins", "margins_mlp"), ("margins", "margins_resnet")} <= {k[:2] for k in ok}
    for r in rows:
        if r["section"] == "mlp":
            assert r["steady_s"] > 0 and r["pct_peak"] > 0 and r["pct_hbm_model"] > 0
            assert r["proj_fz_2000x10_s"] > 0
        if r["section"] == "resnet":
            assert r["images_per_s"] > 0 and r["proj_preset_h"] > 0
    jmem_mlp = next(r for r in rows if r["name"] == "jmem")
    assert jmem_mlp["params"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    # The table comes last and fits in 40 lines; env.txt names the versions.
    table = (tmp_path / "table.txt").read_text().strip().splitlines()
    assert 5 <= len(table) <= 40 and stdout.rstrip().endswith(table[-1])
    assert "jax " in (tmp_path / "env.txt").read_text()


def test_global_deadline_keeps_measured_rows(tmp_path):
    code, stdout, _ = _run_watching(tmp_path, JMEM_GPU_BUDGET="24")
    assert code == 0, stdout[-3000:]
    rows = _rows(tmp_path / "rows.jsonl")
    assert any(r["section"] == "ceilings" and r["name"] == "copy" and r["status"] == "ok" for r in rows)
    cut = {r["section"] for r in rows if r["status"] in ("skipped", "timeout")}
    assert {"resnet", "margins"} <= cut, rows
    assert "device " in (tmp_path / "table.txt").read_text()
