"""``jmem retrain``: the removal experiment. Does removing memorized examples hurt?

One job a file:

* :mod:`.selection`: the removal hypotheses from the scored estimation run (each method's
  selection, the sweep points, the user's set, the ablation's cells) and the influenced
  test pairs, cross-fitted over two halves of the estimation models;
* :mod:`.design`: which arms and which removal set each arm removes at each seed (pure numpy);
* :mod:`.measurement`: what every retrained model got right on every test set (pure numpy);
* :mod:`.statistics`: accuracies per arm, paired comparisons, shares, the factorial
  ablation (pure numpy);
* :mod:`.verdict`: the verdict in words;
* :mod:`.stage`: the files of ``RUN_DIR/retrain/`` and the orchestration
  (:func:`jmem.study.retrain.stage.run_retrain`); training is the wave runner's
  (:mod:`jmem.study.waves`).
"""
