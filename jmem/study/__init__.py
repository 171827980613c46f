"""The study: stages that turn a config into a run directory and act on it.

Stages: :mod:`.training` (``jmem train``), :mod:`.leakage`, :mod:`.scoring` (``jmem score``),
:mod:`.retrain` (``jmem retrain``, a package), :mod:`.report` (``jmem report``, a package) and
:mod:`.pipeline` (``jmem run``, all of them). Shared by the stages: :mod:`.waves` (the one
wave runner both training stages use), :mod:`.faults` (the kill tests' hook), :mod:`.rundir`
(the run-directory format) and :mod:`.integrity` (its manifest). Only the command line
imports this folder.
"""
