"""Scoring at Feldman & Zhang's CIFAR-100 scale: wall time and peak memory (a benchmark).

    python benchmarks/bench_scoring.py            # R=4,000 models, N=50,000, T=10,000
    python benchmarks/bench_scoring.py --small    # R=400, N=5,000, T=1,000 (seconds)

Random keep masks (rate 0.7) and margins, with a few planted memorized training examples
and test examples that depend on them, so the high-influence pairs are not empty. Times
every stage of scoring (counts and scores, Newcombe intervals, Fisher p-values, BH,
placebo null, top-k influencers and high-influence pairs) without materialising the
N x T influence matrix, and reports the peak resident memory (``getrusage`` maxrss).
Target on a 2-core CPU: under 3 minutes and 4 GiB at full scale.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from jmem.scores import estimators
from jmem.scores import thresholds


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_data(R: int, N: int, T: int, seed: int = 0, planted: int = 50, block: int = 250):
    """keep bool[R, N] (rate 0.7), margins float32[R, N], margins_test float32[R, T], labels.

    Generated in row blocks so generation itself does not set the memory peak.
    Training examples 0..planted-1 are memorized (margin +2 in, -2 out); test example j <
    planted is right exactly when training example j was in the model's subset.
    """
    rng = np.random.default_rng(seed)
    keep = np.empty((R, N), bool)
    margins = np.empty((R, N), np.float32)
    margins_test = np.empty((R, T), np.float32)
    for start in range(0, R, block):
        rows = slice(start, min(start + block, R))
        n = rows.stop - rows.start
        keep[rows] = rng.random((n, N), dtype=np.float32) < 0.7
        margins[rows] = rng.standard_normal((n, N), dtype=np.float32)
        margins[rows] += 0.5
        margins_test[rows] = rng.standard_normal((n, T), dtype=np.float32)
    margins[:, :planted] = np.where(keep[:, :planted], 2.0, -2.0)
    margins_test[:, :planted] = np.where(keep[:, :planted], 1.0, -1.0)
    labels_train = rng.integers(0, 100, N).astype(np.int32)
    labels_test = rng.integers(0, 100, T).astype(np.int32)
    labels_test[:planted] = labels_train[:planted]
    return keep, margins, margins_test, labels_train, labels_test


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="R=400, N=5,000, T=1,000")
    p.add_argument("--models", type=int, default=4000)
    p.add_argument("--examples", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=estimators.DEFAULT_CHUNK,
                   help="training examples per chunk (scores and influence)")
    p.add_argument("--k", type=int, default=10, help="top influencers per test example")
    p.add_argument("--skip-placebo", action="store_true")
    p.add_argument("--score-run", metavar="DIR", default=None,
                   help="also write the arrays to DIR as a run directory and time "
                        "jmem.study.scoring.score_run end to end (files, CSV, every method)")
    args = p.parse_args(argv)
    R, N, T = (400, 5000, 1000) if args.small else (args.models, args.examples, args.test)

    timings = {}
    t0 = time.perf_counter()
    keep, margins, margins_test, lt, lte = make_data(R, N, T)
    timings["generate_data"] = time.perf_counter() - t0
    rss_inputs = peak_rss_gib()
    print(f"R={R} N={N} T={T}: inputs {(keep.nbytes + margins.nbytes + margins_test.nbytes) / 2**30:.2f} GiB, "
          f"generated in {timings['generate_data']:.1f} s, peak RSS {rss_inputs:.2f} GiB", flush=True)

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        print(f"  {name:<28} {timings[name]:7.1f} s   peak RSS {peak_rss_gib():.2f} GiB", flush=True)
        return out

    counts = stage("counts + margin moments", lambda: estimators.example_counts(
        keep, margins, chunk_size=args.chunk))
    s = stage("scores, intervals, p-values", lambda: estimators.scores_from_counts(counts))
    stage("BH q-values + FDR selection", lambda: thresholds.fdr_threshold(s.p_value, s.mem))
    if not args.skip_placebo:
        pl = stage("placebo null", lambda: thresholds.placebo_scores(keep, margins, seed=0))
        stage("null threshold", lambda: thresholds.null_threshold(s.mem, pl.scores))
    inf = stage("influence top-k + pairs", lambda: estimators.influence_summary(
        keep, margins_test, s.mem, lt, lte, k=args.k, chunk_size=args.chunk))
    scoring_time = sum(v for k, v in timings.items() if k != "generate_data")
    flops = 2.0 * R * N * T
    result = {
        "R": R, "N": N, "T": T, "chunk": args.chunk,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "scoring_total_s": round(scoring_time, 1),
        "influence_gflops_per_s": round(flops / timings["influence top-k + pairs"] / 1e9, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "input_peak_rss_gib": round(rss_inputs, 2),
        "n_pairs": int(inf.pair_train.size),
        "planted_pairs_found": int(np.sum(inf.pair_train == inf.pair_test)),
        "mem_ge_0.25": int(np.sum(s.mem >= 0.25)),
    }
    print(f"total scoring time {scoring_time:.1f} s (excluding data generation), "
          f"peak RSS {result['peak_rss_gib']:.2f} GiB, influence at "
          f"{result['influence_gflops_per_s']} GFLOP/s, {result['n_pairs']} pairs "
          f"({result['planted_pairs_found']} of 50 planted found)")
    if args.score_run:
        result.update(time_score_run(args.score_run, keep, margins, margins_test, lt, lte,
                                     args.chunk))
    print(json.dumps(result))
    return result


def time_score_run(run_dir, keep, margins, margins_test, lt, lte, chunk) -> dict:
    """Write a run directory from the arrays and time ``score_run`` on it in a child process.

    A child process so its peak memory (``RUSAGE_CHILDREN``) is score_run's alone: it reads
    the arrays memory-mapped, as the CLI would.
    """
    import subprocess
    from pathlib import Path

    from jmem.study import rundir

    d = Path(run_dir)
    for name, arr in [(rundir.KEEP, keep), (rundir.MARGINS_TRAIN, margins),
                      (rundir.MARGINS_TEST, margins_test), (rundir.LABELS_TRAIN, lt),
                      (rundir.LABELS_TEST, lte)]:
        rundir.save_array(d / name, arr)
    canary = np.zeros(keep.shape[1], bool)
    canary[:50] = True  # the planted memorized examples stand in for canaries
    rundir.save_array(d / rundir.CANARIES, canary)
    code = ("import sys; from jmem.config import ScoreConfig; from jmem.study.scoring import format_summary, score_run; "
            f"s = score_run(sys.argv[1], ScoreConfig(chunk_size={chunk}, "
            f"influence_chunk_size={chunk})); print(format_summary(s))")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(d)], check=True)
    elapsed = time.perf_counter() - t
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"score_run end to end (child process, incl. interpreter start): {elapsed:.1f} s, "
          f"peak RSS {child_rss:.2f} GiB")
    return {"score_run_s": round(elapsed, 1), "score_run_peak_rss_gib": round(child_rss, 2)}


if __name__ == "__main__":
    main(sys.argv[1:])
