"""Train/test leakage: near-duplicate detection, the known CIFAR lists, leakage-free test sets.

Point 4 of the critique of Feldman & Zhang (see BACKGROUND section 3): when a test image has a
near-duplicate in the training set, removing that training image also removes the test image's
"answer", so the removal experiment must also be scored on a test set without such twins.

One job per file:

* :mod:`.known`: the Barz & Denzler lists (CIFAR-10/100) and their mapping to dataset order;
* :mod:`.nearest`: the streaming nearest-neighbour search (pixel and feature space, jax);
* :mod:`.detect`: :func:`find_leakage` and its :class:`LeakageResult`;
* :mod:`.calibrate`: recall and precision of a threshold against a known list;
* :mod:`.clean`: leakage-free test sets;
* :mod:`.summary`: the plain-text summaries (one line, or the per-class table).

The names below are re-exported so ``from jmem.data import leakage`` gives the whole API.
"""

from jmem.data.leakage.calibrate import Calibration, calibrate_threshold
from jmem.data.leakage.clean import CLEAN_TEST_NAME, clean_test_mask, leakage_free_test
from jmem.data.leakage.detect import (DEFAULT_THRESHOLDS, DETECTORS, PAIRS_DTYPE, WITHIN_TEST_DTYPE,
                                      LeakageResult, Neighbours, find_leakage)
from jmem.data.leakage.known import (CIFAR_NUM_TEST, CIFAR_NUM_TRAIN, KNOWN_LIST_ROWS, KnownDuplicates,
                                     load_known_duplicates, map_to_dataset_order, parse_known_duplicates)
from jmem.data.leakage.nearest import METRICS, pixel_nearest, vector_nearest
from jmem.data.leakage.summary import format_leakage_summary, leakage_line

__all__ = [
    "CIFAR_NUM_TEST", "CIFAR_NUM_TRAIN", "CLEAN_TEST_NAME", "Calibration", "DEFAULT_THRESHOLDS", "DETECTORS",
    "KNOWN_LIST_ROWS", "KnownDuplicates", "LeakageResult", "METRICS", "Neighbours", "PAIRS_DTYPE",
    "WITHIN_TEST_DTYPE", "calibrate_threshold", "clean_test_mask", "find_leakage", "format_leakage_summary", "leakage_line",
    "leakage_free_test", "load_known_duplicates", "map_to_dataset_order", "parse_known_duplicates",
    "pixel_nearest", "vector_nearest",
]
