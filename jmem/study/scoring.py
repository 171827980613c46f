"""Score a run directory: per-example scores, selections, canary metrics, influence pairs.

:func:`score_run` reads the trainer's arrays (file names in :mod:`jmem.study.rundir`):
``keep.npy`` bool[R, N], ``margins_train.npy`` float[R, N], ``labels_train.npy`` int[N],
``margins_test.npy`` float[R, T], ``labels_test.npy`` int[T], and if present
``model_rates.npy`` float[R], ``canaries.npy`` bool[N] and extra test sets
``margins_<name>.npy`` / ``labels_<name>.npy``. It writes three files:

``scores.csv``: one row per training example, columns

============================ ==================================================================
``index``                    position of the example in the training set (0-based)
``label``                    the label the models were trained on (canaries: the new label)
``is_canary``                1 if the label was re-drawn (``canaries.npy``), else 0
``n_in`` / ``n_out``         number of models that did / did not train on the example
``correct_in`` / ``_out``    how many of those classify it correctly (margin > 0)
``acc_in`` / ``acc_out``     ``correct_in / n_in``, ``correct_out / n_out``
``mem``                      Feldman & Zhang memorization ``acc_in - acc_out``, in [-1, 1]
``mem_ci_low`` / ``_high``   Newcombe hybrid score interval for ``mem`` (``score.confidence``)
``cscore``                   C-score (Jiang et al. 2021): held-out accuracy ``acc_out``; when
                             the run holds several rates and ``score.rate`` is unset, its mean
                             over the rates
``fractional``               ``(acc_in - acc_out) / (acc_in + acc_out)``; 0 when
                             ``acc_in < score.fractional_floor``
``margin_in`` / ``_out``     mean margin of the in / out models
``lira``                     ``(margin_in - margin_out) / std(out margins)``: LiRA's offline
                             Gaussian statistic on margins, averaged over the in models
``p_value``                  one-sided Fisher exact p-value, H1: ``acc_in > acc_out``
``q_value``                  Benjamini-Hochberg adjusted p-value over all testable examples
``selected_<method>``        1 if the method selects the example: ``fixed``, ``top_k``, ``fdr``,
                             ``null`` and, with canaries, ``canary`` (see thresholds.json)
``mem_rate_<r>``             (runs with several rates) ``mem`` from the models of rate ``r``
``acc_out_rate_<r>``         (runs with several rates) held-out accuracy at rate ``r``
============================ ==================================================================

Scores are ``nan`` for examples with no model in or no model out (``lira`` also with fewer
than two out models); such examples are never selected and are counted in thresholds.json.

``thresholds.json``: for each method its result (threshold, number selected, the numbers
behind it, and with canaries its TPR/FPR/precision on them), canary ROC metrics per score,
the curve over the inclusion rate, undefined-example counts, the options used.

``pairs.csv``: high-influence pairs (Feldman & Zhang 2020): ``test_set`` (``test`` or the
extra set's name), ``train_index``, ``test_index``, ``mem``, ``infl``, ``label`` (the shared
class; with ``score.pair_same_class=False`` the training label), one row per pair with
``mem >= score.pair_mem_threshold`` and ``infl >= score.influence_threshold``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem import rng
from jmem.study import integrity
from jmem.study import rundir as artifacts
from jmem.scores import estimators as scoring
from jmem.scores import thresholds
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable

CANARY_SCORES = ("mem", "fractional", "lira", "neg_log10_p", "one_minus_cscore")


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """Settings of :func:`score_run` (the ``score`` section of a config).

    fixed_threshold: F&Z's hand-chosen cut, ``mem >= 0.25``.
    fdr_q, min_effect: Benjamini-Hochberg level and the minimum ``mem`` of a discovery.
    top_k: how many examples the top-k method selects.
    influence_threshold, pair_mem_threshold, pair_same_class: F&Z high-influence pairs
      (``infl >= 0.15``, ``mem >= 0.25``, same class).
    influencers_k: top influencers kept per test example (in the returned summary only).
    null_fpr: false-positive level of the placebo-null threshold; placebo_seed: its seed
      ("placebo" stream); placebo_match_variance: rescale placebo scores to the real split's
      variance (see :func:`jmem.scores.thresholds.placebo_scores`).
    canary_tpr: TPR at which FPR is reported and the canary threshold is set.
    confidence: level of the ``mem`` intervals. fractional_floor: see :mod:`jmem.scores.estimators`.
    rate: score only the models of this inclusion rate (needs model_rates.npy); None = all
      models (pooled if the run has several rates; per-rate columns are written anyway).
    chunk_size: training examples per chunk for per-example statistics;
    influence_chunk_size: training examples per influence matrix product.
    max_pairs: refuse (error) rather than write more pairs than this.
    """

    fixed_threshold: float = 0.25
    fdr_q: float = 0.1
    min_effect: float = 0.1
    top_k: int = 1000
    influence_threshold: float = 0.15
    pair_mem_threshold: float = 0.25
    pair_same_class: bool = True
    influencers_k: int = 10
    null_fpr: float = 0.05
    placebo_seed: int = 0
    placebo_match_variance: bool = True
    canary_tpr: float = 0.95
    confidence: float = 0.95
    fractional_floor: float = 0.1
    rate: float | None = None
    chunk_size: int = scoring.DEFAULT_CHUNK
    influence_chunk_size: int = scoring.DEFAULT_CHUNK
    max_pairs: int = 10_000_000

    def __post_init__(self):
        def need(ok, field, rule):
            if not ok:
                raise JmemError(f"score.{field}={getattr(self, field)!r} {rule}")

        for f in ("fixed_threshold", "min_effect", "influence_threshold", "pair_mem_threshold"):
            v = getattr(self, f)
            need(_is_real(v) and -1 <= v <= 1, f, "must be a number in [-1, 1]")
        for f in ("fdr_q", "null_fpr", "confidence"):
            v = getattr(self, f)
            need(_is_real(v) and 0 < v < 1, f, "must be in (0, 1)")
        for f in ("canary_tpr", "fractional_floor"):
            v = getattr(self, f)
            need(_is_real(v) and 0 < v <= 1, f, "must be in (0, 1]")
        for f in ("top_k", "influencers_k", "placebo_seed"):
            v = getattr(self, f)
            need(_is_int(v) and v >= 0, f, "must be an integer >= 0")
        for f in ("chunk_size", "influence_chunk_size", "max_pairs"):
            v = getattr(self, f)
            need(_is_int(v) and v >= 1, f, "must be an integer >= 1")
        for f in ("pair_same_class", "placebo_match_variance"):
            need(isinstance(getattr(self, f), bool), f, "must be true or false")
        need(self.rate is None or (_is_real(self.rate) and 0 < self.rate < 1), "rate",
             "must be null or in (0, 1)")


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and bool(np.isfinite(v))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# Reading the run directory
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunArrays:
    """The arrays :func:`score_run` needs, shape-checked (arrays may be memory maps).

    test_sets: name -> (margins float[R, T_k], labels int[T_k]); "test" first.
    diverged: bool[R] from models.csv (None without one): models whose training loss became
      non-finite; they are left out of every statistic.
    """

    keep: np.ndarray
    margins_train: np.ndarray
    labels_train: np.ndarray
    test_sets: dict
    model_rates: np.ndarray | None
    canaries: np.ndarray | None
    diverged: np.ndarray | None = None


def _labels(arr, n: int, name: str) -> np.ndarray:
    if arr.shape != (n,):
        raise JmemError(f"{name} has shape {arr.shape}; expected ({n},)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise JmemError(f"{name} has dtype {arr.dtype}; expected integers")
    return np.asarray(arr)


def load_run(run_dir) -> RunArrays:
    """Read and shape-check the arrays of a run directory; JmemError names a bad file."""
    d = Path(run_dir)
    if not d.is_dir():
        raise JmemError(f"run directory {str(d)!r} does not exist")
    keep = scoring.as_keep(artifacts.load_array(d / artifacts.KEEP, mmap=True), "keep.npy")
    num_models, num_examples = keep.shape
    margins = scoring.check_margins(artifacts.load_array(d / artifacts.MARGINS_TRAIN, mmap=True),
                                    num_models, num_examples, "margins_train.npy")
    labels = _labels(artifacts.load_array(d / artifacts.LABELS_TRAIN), num_examples,
                     "labels_train.npy")
    names = [("test", artifacts.MARGINS_TEST, artifacts.LABELS_TEST)]
    reserved = {artifacts.MARGINS_TRAIN, artifacts.MARGINS_TEST}
    for path in sorted(d.glob("margins_*.npy")):
        if path.name not in reserved:
            name = path.stem[len("margins_"):]
            names.append((name, path.name, artifacts.labels_extra_name(name)))
    test_sets = {}
    for name, m_file, l_file in names:
        m = scoring.check_margins(artifacts.load_array(d / m_file, mmap=True), num_models,
                                  None, m_file)
        test_sets[name] = (m, _labels(artifacts.load_array(d / l_file), m.shape[1], l_file))
    rates = None
    if (d / artifacts.MODEL_RATES).exists():
        rates = np.asarray(artifacts.load_array(d / artifacts.MODEL_RATES), np.float64)
        scoring.group_rates(rates, num_models)  # validates shape and range
    canary = None
    if (d / artifacts.CANARIES).exists():
        c = np.asarray(artifacts.load_array(d / artifacts.CANARIES))
        if c.shape != (num_examples,) or c.dtype != np.bool_:
            raise JmemError(f"canaries.npy has shape {c.shape} dtype {c.dtype}; "
                            f"expected bool[{num_examples}]")
        canary = c
    return RunArrays(keep, margins, labels, test_sets, rates, canary,
                     _diverged(d / artifacts.MODEL_METRICS, num_models))


def _diverged(path: Path, num_models: int) -> np.ndarray | None:
    """bool[R], the ``diverged`` column of models.csv; None without models.csv or column."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    header = lines[0].split(",") if lines else []
    if "diverged" not in header:
        return None
    if len(lines) - 1 != num_models:
        raise JmemError(f"{path} has {len(lines) - 1} rows; expected one per model ({num_models})")
    column = header.index("diverged")
    try:
        return np.array([int(line.split(",")[column]) for line in lines[1:]], bool)
    except (ValueError, IndexError):
        raise JmemError(f"{path} is damaged: its 'diverged' column is not 0/1") from None


# ---------------------------------------------------------------------------------------------
# Pieces of score_run
# ---------------------------------------------------------------------------------------------

def _healthy_rows(run: RunArrays) -> np.ndarray | None:
    """Rows of the models that did not diverge; None = all of them (no copy)."""
    if run.diverged is None or not run.diverged.any():
        return None
    if run.diverged.all():
        raise JmemError(f"every one of the {run.diverged.size} models of the run diverged "
                        "(models.csv); there is nothing to score: lower train.learning_rate")
    return np.flatnonzero(~run.diverged)


def _without_diverged(run: RunArrays) -> RunArrays:
    """``run`` restricted to the models that did not diverge."""
    rows = _healthy_rows(run)
    if rows is None:
        return run
    tests = {k: (m[rows], labels) for k, (m, labels) in run.test_sets.items()}
    rates = run.model_rates[rows] if run.model_rates is not None else None
    return dataclasses.replace(run, keep=run.keep[rows], margins_train=run.margins_train[rows],
                               test_sets=tests, model_rates=rates,
                               diverged=np.zeros(rows.size, bool))


def _primary_rows(run: RunArrays, rate: float | None) -> np.ndarray | None:
    """Rows of the models scored in the main columns; None = all models (no copy)."""
    if rate is None:
        return None
    if run.model_rates is None:
        raise JmemError(f"score.rate={rate} needs {artifacts.MODEL_RATES}, which the run lacks")
    rows = np.flatnonzero(np.round(run.model_rates, scoring.RATE_DECIMALS)
                          == round(rate, scoring.RATE_DECIMALS))
    if rows.size == 0:
        raise JmemError(f"score.rate={rate} matches no model; run rates: "
                        f"{sorted(set(np.round(run.model_rates, 6).tolist()))}")
    return rows


def _take(arr: np.ndarray, rows):
    return arr if rows is None else arr[rows]


def canary_score_arrays(s: scoring.ExampleScores, cscore: np.ndarray) -> dict:
    """Scores oriented so that higher = more memorized, for ROC against canaries.

    p-values enter as ``-log10 p`` (``1 - p`` would tie the tiny p-values of strong canaries)
    and the C-score as ``1 - cscore`` (hard, held-out-misclassified examples score high).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mem": s.mem, "fractional": s.fractional, "lira": s.lira,
                "neg_log10_p": -np.log10(s.p_value), "one_minus_cscore": 1 - cscore}


def select_all(s: scoring.ExampleScores, placebo: thresholds.PlaceboNull,
               canary: np.ndarray | None, opt: ScoreOptions) -> dict:
    """Run every threshold method on the main scores: name -> ThresholdResult."""
    methods = {
        "fixed": thresholds.fixed_threshold(s.mem, opt.fixed_threshold),
        "top_k": thresholds.top_k_threshold(s.mem, opt.top_k),
        "fdr": thresholds.fdr_threshold(s.p_value, s.mem, opt.fdr_q, opt.min_effect),
        "null": thresholds.null_threshold(s.mem, placebo.scores, opt.null_fpr),
    }
    if canary is not None and canary.any():
        methods["canary"] = thresholds.canary_threshold(s.mem, canary, opt.canary_tpr)
    return methods


def _format_column(values: np.ndarray) -> list:
    if values.dtype.kind in "OUS":
        return values.astype(str).tolist()
    if values.dtype == np.bool_:
        return values.astype(np.int8).astype(str).tolist()
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(str).tolist()
    return np.char.mod("%.6g", values.astype(np.float64)).tolist()


def csv_text(columns: dict) -> str:
    """A CSV table from equal-length 1-D arrays (floats as %.6g, NaN as ``nan``, bools 0/1)."""
    header = ",".join(columns)
    cols = [_format_column(np.asarray(v)) for v in columns.values()]
    rows = [",".join(r) for r in zip(*cols)]
    return "\n".join([header, *rows]) + "\n"


def _rate_tag(rate: float) -> str:
    return f"{rate:g}"


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------

def score_run(run_dir, options: ScoreOptions | None = None) -> dict:
    """Score the run in ``run_dir``; write scores.csv, thresholds.json, pairs.csv.

    Returns the summary dict: what thresholds.json holds, plus ``files`` (the written paths)
    and ``top_influencers`` (test set -> {"index": int64[T, k], "value": float32[T, k]}, the
    k most influential training examples of each test example; not written to disk).
    :func:`format_summary` turns it into terminal text. See the module docstring for files.
    """
    opt = options if options is not None else ScoreOptions()
    if not isinstance(opt, ScoreOptions):
        raise JmemError(f"score options must be a ScoreOptions, got {type(opt).__name__}")
    d = Path(run_dir)
    integrity.verify_run(d)  # a missing or damaged file: one line naming it
    loaded = load_run(d)
    run = _without_diverged(loaded)
    diverged_ids = (np.flatnonzero(loaded.diverged).tolist() if loaded.diverged is not None
                    else [])
    rows = _primary_rows(run, opt.rate)
    keep, margins = _take(run.keep, rows), _take(run.margins_train, rows)
    kw = dict(confidence=opt.confidence, fractional_floor=opt.fractional_floor,
              chunk_size=opt.chunk_size, name="margins_train.npy")
    s = scoring.compute_scores(keep, margins, **kw)

    by_rate, rates = None, None
    if run.model_rates is not None:
        rates = scoring.group_rates(run.model_rates, run.keep.shape[0])[0]
        if rates.size > 1:
            by_rate = scoring.scores_by_rate(run.keep, run.margins_train, run.model_rates, **kw)
    pooled = opt.rate is None and by_rate is not None
    cscore = scoring.cscore_over_rates(by_rate) if pooled else s.cscore

    q_values = thresholds.bh_adjust(s.p_value)
    placebo = thresholds.placebo_scores(keep, margins, seed=rng.stream_words(opt.placebo_seed, "placebo"),
                                        match_variance=opt.placebo_match_variance,
                                        name="margins_train.npy")
    canary = run.canaries
    methods = select_all(s, placebo, canary, opt)

    method_dicts = {}
    for name, res in methods.items():
        entry = res.to_dict()
        if canary is not None and canary.any():
            entry["canary_metrics"] = thresholds.selection_metrics(res.selected, canary)
        method_dicts[name] = entry

    canary_block = None
    if canary is not None:
        evals = {name: thresholds.evaluate_canaries(arr, canary, opt.canary_tpr, name).to_dict()
                 for name, arr in canary_score_arrays(s, cscore).items()} if canary.any() else {}
        canary_block = {"n_canaries": int(canary.sum()), "scores": evals}

    curve = None
    if by_rate is not None:
        curve = scoring.rate_curve(by_rate, opt.fixed_threshold)
        if canary is not None and canary.any():
            for point, rs in zip(curve, by_rate.values()):
                ev = thresholds.evaluate_canaries(rs.mem, canary, opt.canary_tpr)
                point["canary_auroc_mem"] = ev.auroc if not np.isnan(ev.auroc) else None
                point["canary_fpr_at_tpr_mem"] = (ev.fpr_at_tpr if not np.isnan(ev.fpr_at_tpr)
                                                  else None)

    # Influence and pairs for every test set, from the same models as the main scores.
    pair_cols = {k: [] for k in ("test_set", "train_index", "test_index", "mem", "infl", "label")}
    influence = {}
    for name, (m_test, l_test) in run.test_sets.items():
        inf = scoring.influence_summary(
            keep, _take(m_test, rows), s.mem, run.labels_train, l_test, k=opt.influencers_k,
            mem_threshold=opt.pair_mem_threshold, infl_threshold=opt.influence_threshold,
            same_class=opt.pair_same_class, chunk_size=opt.influence_chunk_size,
            max_pairs=opt.max_pairs, name=f"margins_{name}.npy")
        n = inf.pair_train.size
        pair_cols["test_set"].append(np.full(n, name, dtype=object))
        pair_cols["train_index"].append(inf.pair_train)
        pair_cols["test_index"].append(inf.pair_test)
        pair_cols["mem"].append(s.mem[inf.pair_train])
        pair_cols["infl"].append(inf.pair_infl.astype(np.float64))
        pair_cols["label"].append(run.labels_train[inf.pair_train].astype(np.int64))
        top1 = inf.top_value[:, 0] if inf.top_value.shape[1] else np.empty(0)
        influence[name] = {
            "num_test": int(l_test.shape[0]), "n_pairs": int(n),
            "n_train_in_pairs": int(np.unique(inf.pair_train).size),
            "n_test_in_pairs": int(np.unique(inf.pair_test).size),
            "median_top1_influence": (float(np.nanmedian(top1))
                                      if top1.size and not np.isnan(top1).all() else None),
            "top_influencers": {"index": inf.top_index, "value": inf.top_value},
        }

    # scores.csv
    n = s.mem.shape[0]
    columns = {"index": np.arange(n), "label": run.labels_train.astype(np.int64),
               "is_canary": canary if canary is not None else np.zeros(n, bool)}
    for f in ("n_in", "n_out", "correct_in", "correct_out", "acc_in", "acc_out", "mem",
              "mem_ci_low", "mem_ci_high"):
        columns[f] = getattr(s, f)
    columns["cscore"] = cscore
    for f in ("fractional", "margin_in", "margin_out", "lira", "p_value"):
        columns[f] = getattr(s, f)
    columns["q_value"] = q_values
    for name, res in methods.items():
        columns[f"selected_{name}"] = res.selected
    if by_rate is not None:
        for rate, rs in by_rate.items():
            columns[f"mem_rate_{_rate_tag(rate)}"] = rs.mem
        for rate, rs in by_rate.items():
            columns[f"acc_out_rate_{_rate_tag(rate)}"] = rs.acc_out

    record = {
        "num_models": int(keep.shape[0]), "num_examples": int(n),
        "excluded_diverged": {"count": len(diverged_ids), "ids": diverged_ids},
        "rate": opt.rate, "rates": rates.tolist() if rates is not None else None,
        "pooled_over_rates": pooled,
        "nan_counts": {**s.nan_counts(),
                       "lira_nan": int(np.isnan(s.lira).sum()),
                       "placebo_nan": int(np.isnan(placebo.scores).sum())},
        "methods": method_dicts,
        "canaries": canary_block,
        "rate_curve": curve,
        "pairs": {k: v["n_pairs"] for k, v in influence.items()},
        "influence": {k: {kk: vv for kk, vv in v.items() if kk != "top_influencers"}
                      for k, v in influence.items()},
        "placebo": {"n_defined": int((~np.isnan(placebo.scores)).sum()),
                    "std": _nan_none(np.nanstd(placebo.scores))
                    if (~np.isnan(placebo.scores)).any() else None,
                    "variance_matched": placebo.variance_matched},
        "options": dataclasses.asdict(opt),
    }
    record = to_jsonable(record)
    artifacts.save_text(d / artifacts.SCORES, csv_text(columns))
    artifacts.save_json(d / artifacts.THRESHOLDS, record)
    pairs = {k: np.concatenate(v) if v else np.empty(0) for k, v in pair_cols.items()}
    artifacts.save_text(d / artifacts.PAIRS, csv_text(pairs))
    return {**record, "files": {"scores": str(d / artifacts.SCORES),
                                "thresholds": str(d / artifacts.THRESHOLDS),
                                "pairs": str(d / artifacts.PAIRS)},
            "top_influencers": {k: v["top_influencers"] for k, v in influence.items()}}


def _nan_none(x):
    x = float(x)
    return None if np.isnan(x) else x


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_summary(summary: dict) -> str:
    """Terminal text for a :func:`score_run` summary: selections, canary recovery, NaN counts."""
    lines = []
    rate = summary.get("rate")
    rate_txt = (f"rate {rate:g}" if rate is not None else
                "rates pooled: " + ", ".join(f"{r:g}" for r in summary["rates"])
                if summary.get("pooled_over_rates") else
                f"rate {summary['rates'][0]:g}" if summary.get("rates") else "rate not recorded")
    nan = summary["nan_counts"]
    lines.append(f"scored {summary['num_examples']} examples with {summary['num_models']} "
                 f"models ({rate_txt})")
    excluded = summary.get("excluded_diverged") or {"count": 0}
    if excluded["count"]:
        ids = excluded["ids"]
        lines.append(f"excluded {excluded['count']} diverged model(s): ids "
                     + ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else ""))
    lines.append(f"undefined (NaN) scores: {nan['undefined']} examples "
                 f"({nan['zero_in']} with no model in, {nan['zero_out']} with no model out); "
                 f"lira NaN: {nan['lira_nan']}")
    lines.append("selected by method:")
    for name, m in summary["methods"].items():
        extra = {
            "fixed": lambda m: f"mem >= {m['threshold']:g}",
            "top_k": lambda m: f"k = {m['k']}, mem >= {_fmt(m['threshold'], '.3g')}",
            "fdr": lambda m: (f"BH q = {m['q']:g} and mem >= {m['min_effect']:g}; "
                              f"<= {m['expected_false_discoveries_bound']:.1f} expected false "
                              f"among {m['n_bh_rejected']} BH rejections"),
            "null": lambda m: (f"placebo null at FPR {m['fpr']:g}: mem > "
                               f"{_fmt(m['threshold'], '.3g')}, "
                               f"est. FDR {_fmt(m['estimated_fdr'], '.2f')}"),
            "canary": lambda m: (f"{m['tpr_target']:.0%} of canaries: mem >= "
                                 f"{_fmt(m['threshold'], '.3g')}"),
        }.get(name, lambda m: "")(m)
        canary_txt = ""
        if "canary_metrics" in m:
            cm = m["canary_metrics"]
            canary_txt = (f"  [canaries: TPR {_fmt(cm['tpr'], '.2f')}, "
                          f"FPR {_fmt(cm['fpr'], '.4f')}, precision {_fmt(cm['precision'], '.2f')}]")
        lines.append(f"  {name:<7} {m['n_selected']:>8}  ({extra}){canary_txt}")
    c = summary.get("canaries")
    if c and c["scores"]:
        lines.append(f"canary recovery ({c['n_canaries']} canaries): AUROC, FPR@TPR")
        for name, ev in c["scores"].items():
            fpr_key = next(k for k in ev if k.startswith("fpr_at_"))
            lines.append(f"  {name:<17} AUROC {_fmt(ev['auroc'])}  {fpr_key} "
                         f"{_fmt(ev[fpr_key], '.4f')}  (NaN: {ev['n_nan']})")
    elif c is not None:
        lines.append("canaries.npy present but it marks no example")
    if summary.get("rate_curve"):
        lines.append("over the inclusion rate: rate, models, mean mem, mean C-score, "
                     "share mem >= threshold, canary AUROC")
        for p in summary["rate_curve"]:
            lines.append(f"  {p['rate']:g}  {p['num_models']:>6}  {_fmt(p['mean_mem'])}  "
                         f"{_fmt(p['mean_cscore'])}  {_fmt(p['frac_mem_above_threshold'])}  "
                         f"{_fmt(p.get('canary_auroc_mem'))}")
    lines.append("high-influence pairs: " + ", ".join(
        f"{k} {v}" for k, v in summary["pairs"].items()))
    return "\n".join(lines)
