"""The benchmark's plain-text and markdown output."""

from __future__ import annotations

import datetime
import platform
import shlex
import subprocess
import sys

import jax

from jmem.engine.host_devices import default_cpu_devices
from jmem.bench.baselines import torch_or_none

def machine_info() -> dict:
    """Date, machine and software versions for the results file."""
    cpu = platform.processor() or ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                    if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    torch = torch_or_none()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": default_cpu_devices(),
        "cpu": cpu, "python": platform.python_version(), "jax": jax.__version__,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "torch": getattr(torch, "__version__", None),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "jmem.bench"] + sys.argv[1:]),
    }

def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)

def _memory_cell(row: dict) -> str:
    """'peak RSS (+growth)' in MB, device peak appended when the backend reports one."""
    cell = f"{_fmt(row.get('host_peak_rss_bytes'), '.0f', 2 ** 20)} (+{_fmt(row['host_peak_bytes'], '.0f', 2 ** 20)})"
    if row.get("device_peak_bytes") is not None:
        cell += f", dev {row['device_peak_bytes'] / 2 ** 20:.0f}"
    return cell

def format_table(rows: list) -> str:
    """A markdown table of the main rows (one line per workload, R and configuration)."""
    head = ("| workload | R | config | models/s | examples/s | compile s | steady s | RSS MB (+grow) "
            "| GFLOP/s | % fp32 peak | % bf16 peak | auto x |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['workload']} | {r['R']} | {r['config']} | skipped: {r['reason']} "
                         "| | | | | | | | |")
            continue
        label = r["config"] + (" (auto)" if r.get("auto") else "")
        if r["models_timed"] != r["R"]:
            label += f" [{r['models_timed']} timed]"
        lines.append(
            f"| {r['workload']} | {r['R']} | {label} | {_fmt(r['models_per_s'], '.2f')} "
            f"| {_fmt(r['examples_per_s'], '.3g')} | {_fmt(r['compile_s'], '.1f')} "
            f"| {_fmt(r['median_s'], '.2f')} | {_memory_cell(r)} "
            f"| {_fmt(r['flops_per_s'], '.1f', 1e9)} "
            f"| {_fmt(r.get('fraction_of_float32_peak', r['fraction_of_peak']), '.1%')} "
            f"| {_fmt(r.get('fraction_of_bfloat16_peak'), '.1%')} "
            f"| {_fmt(r['auto_speedup'], '.2f')} |")
    return "\n".join(lines)

def format_scaling(result: dict) -> str:
    lines = []
    for workload, rs in result.get("scaling_r", {}).items():
        lines += [f"Scaling in R ({workload}, auto): cost per model relative to R={rs[0]['R'] if rs else '-'}",
                  "| R | steady s | s/model | relative |", "|---|---|---|---|"]
        lines += [f"| {r['R']} | {r['median_s']:.2f} | {r['s_per_model']:.4f} | {r['relative_cost_per_model']:.2f} |"
                  for r in rs]
    ns = result.get("scaling_n") or []
    if ns:
        lines += ["", f"Scaling in N (digits MLP replicated/subsampled, R={ns[0]['R']}, {ns[0]['epochs']} epochs, auto)",
                  "| N | steady s | us/example | relative |", "|---|---|---|---|"]
        lines += [f"| {r['N']} | {r['median_s']:.2f} | {1e6 * r['s_per_example']:.1f} "
                  f"| {r['relative_cost_per_example']:.2f} |" for r in ns]
    return "\n".join(lines)

def format_auto_vs_best(result: dict) -> str:
    """auto's choice against the fastest jmem configuration of each workload and R."""
    rows = result.get("auto_vs_best") or []
    if not rows:
        return ""
    lines = ["auto vs the measured best (jmem configurations; overall includes baselines)",
             "| workload | R | auto | models/s | best jmem | models/s | auto / best | best overall | auto / overall |",
             "|" + "---|" * 9]
    lines += [f"| {r['workload']} | {r['R']} | {r['auto']} | {r['auto_models_per_s']:.2f} | {r['best']} "
              f"| {r['best_models_per_s']:.2f} | {r['auto_of_best']:.2f} | {r['best_overall']} "
              f"| {r['auto_of_best_overall']:.2f} |" for r in rows]
    return "\n".join(lines)

def format_report(result: dict) -> str:
    """The terminal report: header, notes, scaling, then the main table last."""
    meta = result["meta"]
    lines = [f"jmem bench  {meta['date']}  {meta['nproc']} cores ({meta['cpu']})  jax {meta['jax']} "
             f"{meta['backend']} x{len(meta['devices'])}  torch {meta['torch'] or '-'}",
             f"peak {result['peak_dtype']} matmul: {result['peak_flops'] / 1e9:.1f} GFLOP/s "
             f"(median of {len(result['peak_samples'])} samples, max {max(result['peak_samples']) / 1e9:.1f}); "
             f"load average {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after"]
    for w in result["workloads"]:
        lines.append(f"- {w['name']}: {w['dataset']} N={w['N']}, {w['epochs']} epochs, subsets of "
                     f"{w['subset_size']}, {w['forward_macs']:,} MACs/example forward "
                     f"(XLA: {_fmt(w['xla_forward_flops'], ',.0f')} FLOPs), "
                     f"{w['train_flops_per_model'] / 1e9:.2f} GFLOP per model trained. {w['note']}".rstrip())
        lines += [f"    note: {n}" for n in w["notes"]]
    if result.get("peaks"):
        lines.append("peaks: " + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in result["peaks"].items()))
    scaling = format_scaling(result)
    if scaling:
        lines += ["", scaling]
    versus = format_auto_vs_best(result)
    if versus:
        lines += ["", versus]
    lines += ["", format_table(result["rows"])]
    return "\n".join(lines)
