"""The :class:`Dataset` value every stage of jmem passes around (arrays on the host)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.errors import JmemError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification dataset as plain numpy arrays, already normalised.

    Attributes:
      name: the dataset's name as given (``digits``, ``mnist1d``, ``cifar10``, a ``.npz`` path).
      x_train: float32[N, *example_shape]. Images are NHWC (``[N, H, W, C]``); 1-D sequences
        are ``[N, L, C]``. Normalised per channel with the training set's mean and std.
      y_train: int32[N], labels in ``[0, num_classes)``.
      x_test: float32[T, *example_shape], normalised with the *training* statistics.
      y_test: int32[T].
      num_classes: number of classes (>= 2).
      extra_tests: name -> (x float32[T_k, *example_shape], y int32[T_k]); additional test sets
        such as a leakage-free test set or CIFAR-10.1. Trainer and scores report each.
      channel_mean, channel_std: float32[C], the normalisation statistics (so raw data can be
        mapped into the same space, e.g. by a leakage detector).
      train_source_ids, test_source_ids: int64[N] / int64[T] or None: each example's index in
        the dataset's original file order (TFDS ``id`` fields such as ``train_01234``), so
        published per-index lists (CIFAR duplicates) can be mapped; None means ``arange``.
      source: where the arrays were read from, for people (e.g. "IDX files in DIR"); "" when
        the name says it all.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    extra_tests: dict = dataclasses.field(default_factory=dict)
    channel_mean: np.ndarray | None = None
    channel_std: np.ndarray | None = None
    train_source_ids: np.ndarray | None = None
    test_source_ids: np.ndarray | None = None
    source: str = ""

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def with_extra_test(self, name: str, x: np.ndarray, y: np.ndarray) -> "Dataset":
        """A copy with one more extra test set (validated like the main test set)."""
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int32)
        _check_split(f"extra_tests[{name!r}]", x, y, self.num_classes, self.example_shape)
        extras = dict(self.extra_tests)
        extras[name] = (x, y)
        return dataclasses.replace(self, extra_tests=extras)

    def validate(self) -> "Dataset":
        """Raise :class:`JmemError` naming the field if any array is malformed; else self."""
        if self.num_classes < 2:
            raise JmemError(f"dataset {self.name!r}: num_classes={self.num_classes}; need at least 2 classes")
        _check_split("train", self.x_train, self.y_train, self.num_classes, None)
        _check_split("test", self.x_test, self.y_test, self.num_classes, self.example_shape)
        for name, (x, y) in self.extra_tests.items():
            _check_split(f"extra_tests[{name!r}]", x, y, self.num_classes, self.example_shape)
        return self


def _check_split(split, x, y, num_classes, example_shape):
    if x.ndim < 2:
        raise JmemError(f"x_{split} has shape {x.shape}; need [examples, features...]")
    if y.ndim != 1:
        raise JmemError(f"y_{split} has shape {y.shape}; need a 1-D label vector")
    if x.shape[0] != y.shape[0]:
        raise JmemError(f"x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}")
    if x.shape[0] < 1:
        raise JmemError(f"x_{split} is empty")
    if example_shape is not None and tuple(x.shape[1:]) != tuple(example_shape):
        raise JmemError(f"x_{split} examples have shape {tuple(x.shape[1:])}, but x_train has {tuple(example_shape)}")
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere((~np.isfinite(x.reshape(x.shape[0], -1))).any(axis=1))[0, 0])
        raise JmemError(f"x_{split} has non-finite values (first at example {bad})")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(np.argwhere((y < 0) | (y >= num_classes))[0, 0])
        raise JmemError(f"y_{split}[{bad}]={int(y[bad])} is outside [0, {num_classes})")
