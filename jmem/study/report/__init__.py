"""``jmem report RUN_DIR``: a Markdown report with PNG plots, from the run directory alone.

Writes, in the run directory (names in :mod:`jmem.study.rundir`):

- ``report.md``: the verdict of the removal experiment (or how to run it), the run summary,
  selections, score distributions, trained-on vs held-out accuracy, scores against the rate,
  canary ROC, the reliability of the estimates (split halves, stability, models needed),
  the removal curve, the ablation, and the most memorized examples with their test partners;
- ``figures/*.png``: the plots ``report.md`` links (relative links: copy both together);
- ``reliability.json``: the reliability numbers (:mod:`jmem.scores.reliability`);
- ``fz_layout.npz``: the scores in Feldman & Zhang's released layout (:mod:`jmem.study.export`).

Inputs are the documented run-directory files only: ``config.json``, ``keep.npy``,
``margins_train.npy``, ``model_rates.npy``, ``canaries.npy``, ``models.csv``,
``scores.csv``, ``thresholds.json``, ``pairs.csv``, ``duplicates.csv`` and, when present,
``retrain/retrain.json`` and ``retrain/ablation.json`` (or both in the run directory). Sections whose inputs
are absent say so and how to produce them. The example images are the only thing not in the
run directory: they are re-loaded from the dataset named in ``config.json``.

One job a file: :mod:`.view` (reading the run directory), :mod:`.markdown` (numbers and
tables), :mod:`.sections` (the report's sections), :mod:`.reliability` (split halves,
stability, models needed), :mod:`.examples` (the example images) and :mod:`.stage`
(:func:`jmem.study.report.stage.build_report`: the files).
"""
