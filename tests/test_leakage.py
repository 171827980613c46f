"""Tests of jmem.data.leakage: detection on planted duplicates, known lists, mapping, clean test sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from jmem.data import leakage
from jmem.study import leakage as study_leakage
from jmem.data.tfds_source import parse_source_ids
from jmem.data.dataset import Dataset
from jmem.errors import JmemError

SIZE = 32
KINDS = ("exact", "noisy", "shifted", "brightness")
N_PLANTED = 40


def smooth_images(rng, n, size=SIZE, sigma=2.0):
    """float64[n, size, size, 3] in [0, 1]: Gaussian-smoothed noise with CIFAR-like contrast
    (per-image std ~0.22) and brightness; distinct images are far apart in pixel space."""
    field = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, sigma, sigma, 0.8), mode="wrap")
    field = (field - field.mean(axis=(1, 2, 3), keepdims=True)) / field.std(axis=(1, 2, 3), keepdims=True)
    contrast = 0.22 * rng.uniform(0.6, 1.4, (n, 1, 1, 1))
    return np.clip(0.5 + rng.uniform(-0.15, 0.15, (n, 1, 1, 1)) + contrast * field, 0, 1)


def perturb(rng, img, kind, j):
    if kind == "exact":
        return img.copy()
    if kind == "noisy":
        return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    if kind == "shifted":
        dy, dx = [(0, 1), (1, 0), (-1, 0), (0, -1), (1, -1)][j % 5]
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        return padded[1 + dy : 1 + dy + img.shape[0], 1 + dx : 1 + dx + img.shape[1]]
    return np.clip(0.7 * img + 0.1, 0, 1)  # brightness/contrast


def make_dataset(name, train, test, num_classes=4, seed=0):
    """Normalise raw [0, 1] images per channel with the training statistics, as the loader does."""
    rng = np.random.default_rng(seed)
    mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
    return Dataset(
        name,
        ((train - mean) / std).astype(np.float32),
        rng.integers(0, num_classes, len(train)).astype(np.int32),
        ((test - mean) / std).astype(np.float32),
        rng.integers(0, num_classes, len(test)).astype(np.int32),
        num_classes,
        channel_mean=mean.astype(np.float32),
        channel_std=std.astype(np.float32),
    )


@pytest.fixture(scope="module")
def planted():
    """500 train / 200 test smooth images; test[:40] are perturbed copies of train[source]."""
    rng = np.random.default_rng(0)
    train, test = smooth_images(rng, 500), smooth_images(rng, 200)
    source = rng.choice(500, N_PLANTED, replace=False)
    kinds = np.array([KINDS[j % 4] for j in range(N_PLANTED)])
    for j, s in enumerate(source):
        test[j] = perturb(rng, train[s], kinds[j], j)
    # A within-test duplicate: test[150] is a shifted copy of test[120] (neither planted).
    test[150] = perturb(rng, test[120], "shifted", 0)
    return make_dataset("synthetic", train, test), source, kinds


@pytest.fixture(scope="module")
def planted_result(planted):
    ds, _, _ = planted
    return leakage.find_leakage(ds, chunk_size=64, train_chunk_size=128)


def recall_precision(result, source, detector="pixel"):
    flagged = result.leaked_by(detector)
    found = flagged[:N_PLANTED] & (result.nearest[detector].index[:N_PLANTED] == source)
    false_pos = int(flagged[N_PLANTED:].sum())
    recall = found.mean()
    precision = found.sum() / max(found.sum() + false_pos, 1)
    return recall, precision


# ---------------------------------------------------------------------------- detection


def test_planted_duplicates_found_at_default_threshold(planted, planted_result):
    _, source, kinds = planted
    recall, precision = recall_precision(planted_result, source)
    assert recall >= 0.99 and precision >= 0.95, (recall, precision)
    d = planted_result.nearest["pixel"].distance
    for kind in KINDS:  # every perturbation, not just on average
        assert d[:N_PLANTED][kinds == kind].max() <= leakage.DEFAULT_THRESHOLDS["cosine"], kind
    # A margin, so the threshold is not fitted to this draw: distinct images are far.
    assert d[:N_PLANTED].max() < 0.25 * d[N_PLANTED:].min()


def test_pairs_table_and_per_class_counts(planted, planted_result):
    ds, source, _ = planted
    pairs = planted_result.pairs
    assert pairs.dtype == leakage.PAIRS_DTYPE
    np.testing.assert_array_equal(pairs["test_index"], np.arange(N_PLANTED))
    np.testing.assert_array_equal(pairs["train_index"], source)
    assert set(pairs["detector"]) == {"pixel"}
    per_class = planted_result.leaked_per_class()
    np.testing.assert_array_equal(per_class, np.bincount(ds.y_test[:N_PLANTED], minlength=ds.num_classes))
    assert planted_result.test_per_class().sum() == ds.num_test


def test_distinct_smooth_images_are_not_flagged():
    rng = np.random.default_rng(1)
    # Very smooth fields (few degrees of freedom) are the hardest case for false positives.
    ds = make_dataset("smooth", smooth_images(rng, 300, sigma=4.0), smooth_images(rng, 100, sigma=4.0))
    result = leakage.find_leakage(ds, chunk_size=64, train_chunk_size=128)
    assert not result.leaked.any(), np.sort(result.nearest["pixel"].distance)[:3]
    assert len(result.within_test_pairs) == 0


def test_shift_tolerance_is_what_finds_shifted_copies(planted):
    ds, source, kinds = planted
    no_shift = leakage.find_leakage(ds, max_shift=0, within_test=False, chunk_size=64, train_chunk_size=128)
    shifted = kinds == "shifted"
    assert not no_shift.leaked[:N_PLANTED][shifted].any()
    assert no_shift.leaked[:N_PLANTED][~shifted].all()


def test_l2_metric_finds_all_but_contrast_changes(planted):
    ds, source, kinds = planted
    result = leakage.find_leakage(ds, metric="l2", chunk_size=64, train_chunk_size=128)
    assert result.thresholds == {"pixel": leakage.DEFAULT_THRESHOLDS["l2"]}
    flagged = result.leaked[:N_PLANTED]
    idx = result.nearest["pixel"].index[:N_PLANTED]
    keep = kinds != "brightness"  # l2 is not contrast invariant (documented)
    assert flagged[keep].all() and (idx[keep] == source[keep]).all()
    assert not result.leaked[N_PLANTED:].any()
    # Unrelated pairs are ~sqrt(2) on average; low-contrast ones come closer, still far off.
    assert result.nearest["pixel"].distance[N_PLANTED:].min() > 2 * leakage.DEFAULT_THRESHOLDS["l2"]


def test_chunking_does_not_change_results(planted):
    ds, _, _ = planted
    rng = np.random.default_rng(3)
    feats = (rng.normal(size=(ds.num_train, 24)), rng.normal(size=(ds.num_test, 24)))
    runs = [
        leakage.find_leakage(ds, features=feats, chunk_size=c, train_chunk_size=n)
        for c, n in ((7, 33), (200, 500), (64, 128))
    ]
    for other in runs[1:]:
        for key in ("pixel", "features"):
            np.testing.assert_array_equal(runs[0].nearest[key].index, other.nearest[key].index)
            np.testing.assert_array_equal(runs[0].nearest[key].distance, other.nearest[key].distance)
        np.testing.assert_array_equal(runs[0].within_test.index, other.within_test.index)


def test_within_test_duplicates(planted_result):
    wp = planted_result.within_test_pairs
    assert (120, 150) in {(int(a), int(b)) for a, b, _ in wp}
    assert all(a < b for a, b, _ in wp)
    # Neither is a train duplicate.
    assert not planted_result.leaked[[120, 150]].any()


def test_pixel_nearest_matches_brute_force_without_shortcuts():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(30, 6, 5, 2)).astype(np.float32)
    r = rng.normal(size=(70, 6, 5, 2)).astype(np.float32)
    # All candidates re-ranked, no shifts: exactly centred cosine/l2 nearest neighbours.
    idx, dist = leakage.pixel_nearest(q, r, candidates=70, max_shift=0, chunk_size=8, ref_chunk_size=16)
    qc = q - q.mean(axis=(1, 2), keepdims=True)
    rc = r - r.mean(axis=(1, 2), keepdims=True)
    qf, rf = qc.reshape(30, -1), rc.reshape(70, -1)
    cos = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (rf / np.linalg.norm(rf, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, cos.argmax(1))
    np.testing.assert_allclose(dist, 1 - cos.max(1), atol=1e-5)
    idx2, dist2 = leakage.pixel_nearest(q, r, metric="l2", candidates=70, max_shift=0, chunk_size=8)
    sq = ((qf[:, None] - rf[None]) ** 2).mean(-1)
    np.testing.assert_array_equal(idx2, sq.argmin(1))
    np.testing.assert_allclose(dist2, np.sqrt(sq.min(1)) / np.sqrt((rf**2).mean()), rtol=1e-4)


def test_sequences_and_flat_vectors():
    rng = np.random.default_rng(11)
    # [N, L, C] sequences (MNIST-1D's layout): shifts and blur along the one spatial axis.
    seq = gaussian_filter(rng.normal(size=(120, 40, 1)), sigma=(0, 2, 0))
    q = gaussian_filter(rng.normal(size=(30, 40, 1)), sigma=(0, 2, 0))
    q[0] = np.concatenate([seq[5, 1:], seq[5, -1:]])  # shifted by one step
    q[1] = 2.0 * seq[9] + 0.5
    idx, dist = leakage.pixel_nearest(q.astype(np.float32), seq.astype(np.float32), chunk_size=16)
    np.testing.assert_array_equal(idx[:2], [5, 9])
    assert dist[:2].max() < 1e-4 and dist[2:].min() > leakage.DEFAULT_THRESHOLDS["cosine"]
    # [N, D] vectors: no spatial structure, plain centred cosine.
    flat = rng.normal(size=(50, 20)).astype(np.float32)
    idx, dist = leakage.pixel_nearest(flat[:10] * 3.0, flat, max_shift=1)
    np.testing.assert_array_equal(idx, np.arange(10))


def test_vector_nearest_metrics_and_self_exclusion():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(90, 12)).astype(np.float32)
    q = rng.normal(size=(25, 12)).astype(np.float32)
    q[:5] = 3.0 * r[[10, 20, 30, 40, 50]]  # scaled copies: cosine 0, l2 not
    idx, dist = leakage.vector_nearest(q, r, chunk_size=4, ref_chunk_size=32)
    np.testing.assert_array_equal(idx[:5], [10, 20, 30, 40, 50])
    np.testing.assert_allclose(dist[:5], 0, atol=1e-6)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, cos.argmax(1))
    idx_l2, dist_l2 = leakage.vector_nearest(q, r, metric="l2", chunk_size=4, ref_chunk_size=32)
    d2 = ((q[:, None] - r[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx_l2, d2.argmin(1))
    np.testing.assert_allclose(dist_l2, np.sqrt(d2.min(1)) / np.sqrt((r**2).sum(1).mean()), rtol=1e-4)
    self_idx, _ = leakage.vector_nearest(r, r, exclude_self=True, chunk_size=16, ref_chunk_size=32)
    assert not (self_idx == np.arange(90)).any()


def test_features_detector_adds_its_own_pairs(planted):
    ds, source, _ = planted
    rng = np.random.default_rng(6)
    f_train = rng.normal(size=(ds.num_train, 32))
    f_test = rng.normal(size=(ds.num_test, 32))
    f_test[100:110] = f_train[:10] + rng.normal(0, 0.01, (10, 32))  # feature-only duplicates
    result = leakage.find_leakage(ds, features=(f_train, f_test), threshold={"features": 0.01},
                            within_test=False, chunk_size=64, train_chunk_size=128)
    assert result.thresholds == {"pixel": leakage.DEFAULT_THRESHOLDS["cosine"], "features": 0.01}
    np.testing.assert_array_equal(np.flatnonzero(result.leaked_by("features")), np.arange(100, 110))
    assert result.leaked.sum() == N_PLANTED + 10
    assert set(result.pairs["detector"]) == {"pixel", "features"}


def test_bad_inputs_raise_one_line_errors(planted):
    ds, _, _ = planted
    with pytest.raises(JmemError, match="metric='euclid'"):
        leakage.find_leakage(ds, metric="euclid")
    with pytest.raises(JmemError, match=r"features_test has shape \(3, 4\)"):
        leakage.find_leakage(ds, features=(np.zeros((ds.num_train, 4)), np.zeros((3, 4))))
    with pytest.raises(JmemError, match="threshold detector='pixels'"):
        leakage.find_leakage(ds, threshold={"pixels": 0.1})
    with pytest.raises(JmemError, match="chunk_size=0"):
        leakage.find_leakage(ds, chunk_size=0)


# ---------------------------------------------------------------------------- thresholds, csv


def test_calibration_against_planted_list(planted_result):
    d = planted_result.nearest["pixel"].distance
    cal = leakage.calibrate_threshold(d, np.arange(N_PLANTED))
    assert cal.num_known == N_PLANTED
    assert np.all(np.diff(cal.thresholds) > 0)
    recall, precision = cal.at(cal.suggested)
    assert recall == 1.0 and precision == 1.0
    assert d[:N_PLANTED].max() <= cal.suggested < d[N_PLANTED:].min()
    assert cal.at(leakage.DEFAULT_THRESHOLDS["cosine"]) == (1.0, 1.0)
    assert cal.at(-1.0)[0] == 0.0
    # With a precision floor the suggestion is the largest threshold that keeps it.
    loose = leakage.calibrate_threshold(d, np.arange(N_PLANTED), min_precision=0.5)
    assert loose.suggested > cal.suggested and loose.at(loose.suggested)[1] >= 0.5


def test_duplicates_csv_round_trip(tmp_path, planted_result):
    path = tmp_path / "run" / "duplicates.csv"
    study_leakage.write_duplicates_csv(path, planted_result)
    lines = path.read_text().splitlines()
    assert lines[0] == "test_index,train_index,distance,detector"
    assert len(lines) == 1 + N_PLANTED
    table = study_leakage.read_duplicates_csv(path)
    np.testing.assert_array_equal(table["test_index"], planted_result.pairs["test_index"])
    np.testing.assert_array_equal(table["train_index"], planted_result.pairs["train_index"])
    assert list(path.parent.iterdir()) == [path]  # atomic write leaves no temporary file


def test_summary_reports_share_and_classes(planted, planted_result):
    ds, _, _ = planted
    text = leakage.format_leakage_summary(planted_result, ds)
    assert "40 of 200 test examples (20.00%)" in text
    assert "pixel" in text and "cosine, threshold 0.02" in text
    assert "Within the test set: 1 pair of" in text
    assert len([ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]) == ds.num_classes


# ---------------------------------------------------------------------------- known lists


@pytest.mark.parametrize("name,rows", [("cifar10", 286), ("cifar100", 891)])
def test_known_lists_load_and_validate(name, rows):
    known = leakage.load_known_duplicates(name)
    assert len(known) == rows and known.order == "source"
    assert known.test_id.dtype == np.int64 and known.train_id.dtype == np.int64
    assert known.judgment.dtype == np.int8 and known.distance.dtype == np.float64
    assert known.test_id.min() >= 0 and known.test_id.max() < 10_000
    assert known.train_id.min() >= 0 and known.train_id.max() < 50_000
    assert np.unique(known.test_id).size == rows
    assert set(np.unique(known.judgment)) <= {0, 1, 2}


def test_known_list_parser_rejects_bad_files():
    good = "TestID,TrainID,Distance,Judgment\n1,2,0.1,1\n"
    assert len(leakage.parse_known_duplicates("custom", good)) == 1
    with pytest.raises(JmemError, match="rows=1; expected 286"):
        leakage.parse_known_duplicates("cifar10", good)
    with pytest.raises(JmemError, match="TrainID=50000"):
        leakage.parse_known_duplicates("custom", "TestID,TrainID,Distance,Judgment\n1,50000,0.1,1\n")
    with pytest.raises(JmemError, match="TestID=10000"):
        leakage.parse_known_duplicates("custom", "TestID,TrainID,Distance,Judgment\n10000,5,0.1,1\n")
    with pytest.raises(JmemError, match="header"):
        leakage.parse_known_duplicates("custom", "a,b,c,d\n1,2,0.1,1\n")
    with pytest.raises(JmemError, match="Judgment=7"):
        leakage.parse_known_duplicates("custom", "TestID,TrainID,Distance,Judgment\n1,2,0.1,7\n")
    with pytest.raises(JmemError, match="name='mnist'"):
        leakage.load_known_duplicates("mnist")


def cifar_shaped_dataset(name, rng, n_train=50_000, n_test=10_000):
    """A CIFAR-sized dataset in a shuffled ('TFDS') order whose single feature is the source id,
    so a mapped position can be checked by reading the example back."""
    train_src, test_src = rng.permutation(n_train), rng.permutation(n_test)
    return Dataset(
        name,
        train_src[:, None].astype(np.float32),
        np.zeros(n_train, np.int32),
        test_src[:, None].astype(np.float32),
        (test_src % 10).astype(np.int32),
        10,
        train_source_ids=train_src.astype(np.int64),
        test_source_ids=test_src.astype(np.int64),
    )


def test_map_to_dataset_order_through_permuted_source_ids():
    ds = cifar_shaped_dataset("cifar10", np.random.default_rng(7))
    known = leakage.load_known_duplicates("cifar10")
    mapped = leakage.map_to_dataset_order(known, ds)
    assert mapped.order == "dataset" and len(mapped) == len(known)
    np.testing.assert_array_equal(ds.x_test[mapped.test_id, 0], known.test_id)
    np.testing.assert_array_equal(ds.x_train[mapped.train_id, 0], known.train_id)
    # Without source ids the dataset is in file order: positions are the listed ids.
    plain = dataclasses.replace(ds, train_source_ids=None, test_source_ids=None)
    np.testing.assert_array_equal(leakage.map_to_dataset_order(known, plain).test_id, known.test_id)
    with pytest.raises(JmemError, match="map_to_dataset_order first"):
        leakage.clean_test_mask(ds, dataclasses.replace(known, order="bogus"))
    with pytest.raises(JmemError, match="needs 'source'"):
        leakage.map_to_dataset_order(mapped, ds)


def test_map_to_dataset_order_missing_ids():
    rng = np.random.default_rng(8)
    ds = cifar_shaped_dataset("cifar10", rng, n_train=50_000, n_test=5_000)  # a test subset
    known = leakage.load_known_duplicates("cifar10")
    with pytest.raises(JmemError, match="not in dataset 'cifar10' test_source_ids"):
        leakage.map_to_dataset_order(known, ds)
    mapped = leakage.map_to_dataset_order(known, ds, missing="drop")
    expected = np.isin(known.test_id, ds.test_source_ids)
    assert len(mapped) == expected.sum() > 0
    np.testing.assert_array_equal(ds.x_test[mapped.test_id, 0], known.test_id[expected])
    repeated = dataclasses.replace(ds, train_source_ids=np.zeros(50_000, np.int64))
    with pytest.raises(JmemError, match="train_source_ids repeats id 0"):
        leakage.map_to_dataset_order(known, repeated)


def test_tfds_mock_ids_are_random_text():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        source = tfds.data_source("cifar10", split="train")
        ids = [source[i]["id"] for i in range(len(source))]  # one at a time: __getitems__ raises
    assert all(isinstance(i, (str, bytes)) for i in ids)
    # The mock fills Text features with random letters, which are not file positions:
    # the loader then records no source ids rather than a wrong mapping.
    assert parse_source_ids(ids, "train") is None


def test_mapping_through_tfds_data_source_ids():
    """Records served by tfds.data_source in a shuffled order with real-format ids
    ("train_01234"); the mapping must find each listed file position."""
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(9)
    n_train, n_test = 300, 120
    perms = {"train": rng.permutation(n_train), "test": rng.permutation(n_test)}

    def image_of(split, file_index):  # each file position gets a recognisable image
        seed = file_index + (0 if split == "train" else 10_000)
        return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    def as_data_source(self, split, *args, **kwargs):
        return [
            {"id": f"{split}_{f:05d}", "image": image_of(split, int(f)), "label": np.int64(f % 10)}
            for f in perms[split]
        ]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        splits = {s: tfds.data_source("cifar10", split=s) for s in ("train", "test")}
        recs = {s: [splits[s][i] for i in range(len(splits[s]))] for s in splits}
    x = {s: np.stack([r["image"] for r in recs[s]]).astype(np.float32) / 255.0 for s in recs}
    y = {s: np.array([r["label"] for r in recs[s]], np.int32) for s in recs}
    ids = {s: parse_source_ids([r["id"] for r in recs[s]], s) for s in recs}
    ds = Dataset("cifar10", x["train"], y["train"], x["test"], y["test"], 10,
                 train_source_ids=ids["train"], test_source_ids=ids["test"])
    listed = "TestID,TrainID,Distance,Judgment\n" + "".join(
        f"{t},{n},0.1,1\n" for t, n in [(0, 5), (7, 299), (119, 0), (42, 42)]
    )
    known = leakage.parse_known_duplicates("mock", listed)
    mapped = leakage.map_to_dataset_order(known, ds)
    for row in range(len(known)):
        np.testing.assert_array_equal(ds.x_test[mapped.test_id[row]] * 255, image_of("test", known.test_id[row]))
        np.testing.assert_array_equal(ds.x_train[mapped.train_id[row]] * 255, image_of("train", known.train_id[row]))
    # The file order really differs from the served order, so ids were necessary.
    assert not np.array_equal(mapped.test_id, known.test_id)


# ---------------------------------------------------------------------------- clean test sets


def test_leakage_free_test_for_cifar_uses_known_list():
    ds = cifar_shaped_dataset("cifar10", np.random.default_rng(10))
    known = leakage.load_known_duplicates("cifar10")
    out = leakage.leakage_free_test(ds)
    x, y = out.extra_tests[leakage.CLEAN_TEST_NAME]
    assert len(x) == 10_000 - 286
    kept_src = x[:, 0].astype(np.int64)
    assert not np.isin(kept_src, known.test_id).any()
    # Order of the kept examples is the dataset's order.
    keep = leakage.clean_test_mask(ds)
    np.testing.assert_array_equal(x, ds.x_test[keep])
    np.testing.assert_array_equal(y, ds.y_test[keep])
    # Giving the mapped list, or the dataset-order list, gives the same set.
    np.testing.assert_array_equal(leakage.clean_test_mask(ds, leakage.map_to_dataset_order(known, ds)), keep)


def test_leakage_free_test_detects_for_other_datasets(planted, planted_result):
    ds, _, _ = planted
    out = leakage.leakage_free_test(ds)  # detection with defaults
    x, _ = out.extra_tests["test_clean"]
    np.testing.assert_array_equal(x, ds.x_test[N_PLANTED:])
    same = leakage.leakage_free_test(ds, planted_result)
    np.testing.assert_array_equal(same.extra_tests["test_clean"][0], x)
    with pytest.raises(JmemError, match="would be empty"):
        leakage.leakage_free_test(ds, np.ones(ds.num_test, bool))
    with pytest.raises(JmemError, match="position=200"):
        leakage.leakage_free_test(ds, np.array([3, 200]))


# ---------------------------------------------------------------------------- real data


def test_digits_runs_and_finds_few_pairs():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    mean, std = x_tr.mean(), x_tr.std()
    ds = Dataset("digits", (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, 10)
    result = leakage.find_leakage(ds)
    n = int(result.leaked.sum())
    # A measurement (10 of 450 at the time of writing): no exact copies, a few very close
    # same-class digits; a jump would mean the detector or the threshold changed.
    assert 0 < n <= 0.05 * ds.num_test
    labels_agree = y_tr[result.nearest["pixel"].index[result.leaked]] == y_te[result.leaked]
    assert labels_agree.all()
