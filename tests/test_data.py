"""Data sources: deterministic splits, pairs, IDX reading, npz, Fashion-MNIST."""

import gzip
import re
import struct

import numpy as np
import pytest

from multiloss.run import data


def test_digits_split_is_deterministic_disjoint_and_complete():
    a, b = data.get_source("digits")(seed=3), data.get_source("digits")(seed=3)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    c = data.get_source("digits")(seed=4)
    assert not np.array_equal(a.train.y["class"], c.train.y["class"])
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sum(sizes) == 1797 and sizes[2] == round(0.2 * 1797) and sizes[1] == round(0.1 * 1797)
    rows = {p.x[i].tobytes() for p in (a.train, a.val, a.test) for i in range(len(p))}
    assert len(rows) >= 1797 - 20  # digits has a few exact duplicate images, nothing more
    assert a.train.x.shape[1:] == (8, 8, 1) and 0 <= a.train.x.min() and a.train.x.max() <= 1
    np.testing.assert_array_equal(a.train.y["parity"], a.train.y["class"] % 2)


def test_split_indices_partition():
    parts = data.split_indices(100, 0, (0.1, 0.25))
    assert [len(p) for p in parts] == [65, 10, 25]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))


@pytest.mark.parametrize("source", ["digits", "digits_pairs"])
@pytest.mark.parametrize("val, test, refused", [(0.9, 0.2, "val_fraction + test_fraction must be below 1, got 0.9 + 0.2"),
                                                (0.6, 0.6, "val_fraction + test_fraction must be below 1"),
                                                (1.5, 0.1, "val_fraction: must be a number in [0, 1), got 1.5"),
                                                (0.1, -0.1, "test_fraction: must be a number in [0, 1), got -0.1")])
def test_fractions_that_would_overlap_are_refused(source, val, test, refused):
    """0.6 + 0.6 drew overlapping index sets: 719 of digits' 1078 test images were also trained on,
    and the validation split was empty, silently."""
    with pytest.raises(ValueError, match=re.escape(refused)):
        data.get_source(source)(seed=0, val_fraction=val, test_fraction=test)


def test_split_indices_are_disjoint_for_every_valid_pair_of_fractions():
    for val in (0.0, 0.3, 0.49, 0.7):
        for test in (0.0, 0.2, 0.29, 0.5):
            if val + test >= 1:
                with pytest.raises(ValueError):
                    data.split_indices(101, 0, (val, test))
                continue
            parts = data.split_indices(101, 0, (val, test))
            assert sorted(np.concatenate(parts).tolist()) == list(range(101)), (val, test)


def test_pairs_labels_and_balance():
    s = data.get_source("digits_pairs")(seed=0, pairs_per_image=2.0, same_fraction=0.3)
    y = s.train.y
    np.testing.assert_array_equal(y["same"], (y["class_a"] == y["class_b"]).astype(int))
    assert abs(y["same"].mean() - 0.3) < 0.05
    assert len(s.train) == round(2.0 * len(data.get_source("digits")(seed=0).train))
    # The pair images are the images of the named classes: re-derive class by lookup.
    base = data.get_source("digits")(seed=0).train
    lookup = {base.x[i].tobytes(): base.y["class"][i] for i in range(len(base))}
    for i in range(0, len(s.train), 97):
        assert lookup[s.train.x["image_a"][i].tobytes()] == y["class_a"][i]
        assert lookup[s.train.x["image_b"][i].tobytes()] == y["class_b"][i]


def _write_idx(path, array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_read_idx_hand_made_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", images, 0x08)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "b.gz", ints, 0x0C)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b.gz"), ints)


def test_fashion_mnist_from_path_and_missing_files(tmp_path):
    rng = np.random.default_rng(0)
    for kind, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{kind}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), 8)
        _write_idx(tmp_path / f"{kind}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8), 8)
    s = data.get_source("fashion_mnist")(seed=0, path=str(tmp_path), val_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20)
    np.testing.assert_array_equal(s.test.y["group"], [0, 1, 0, 1, 0, 2, 0, 2, 3, 2] * 2)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.get_source("fashion_mnist")(seed=0, path=str(tmp_path / "nowhere"))


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_real_fashion_mnist():
    s = data.get_source("fashion_mnist")(seed=0)
    assert (len(s.train) + len(s.val), len(s.test)) == (60000, 10000)
    assert s.train.x.shape[1:] == (28, 28, 1) and s.train.x.dtype == np.float32
    assert np.bincount(s.test.y["class"]).tolist() == [1000] * 10
    np.testing.assert_array_equal(s.test.y["group"], data.FASHION_GROUP_OF_CLASS[s.test.y["class"]])


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", pixels=rng.random((30, 4)), label=np.arange(30) % 3, score=rng.random(30))
    s = data.get_source("npz")(seed=0, path=str(tmp_path / "d.npz"), inputs=["pixels"])
    assert sorted(s.train.y) == ["label", "score"] and s.train.x.shape[1] == 4
    assert len(s.train) + len(s.val) + len(s.test) == 30
    with pytest.raises(ValueError, match="missing"):
        data.get_source("npz")(seed=0, path=str(tmp_path / "d.npz"), inputs=["image"])


def test_unknown_source_suggests():
    with pytest.raises(LookupError, match="did you mean 'digits'"):
        data.get_source("digit")
