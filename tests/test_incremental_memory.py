"""Exemplar memory: herding order by hand, budget invariants, saving and loading."""

import math

import numpy as np
import pytest

from multiloss.incremental import ExemplarMemory, herding_order
from multiloss.incremental.memory import budget_quotas


def test_herding_order_by_hand():
    # Points 0, 4, 5, 11 (mean 5).  k=1: 5 itself.  k=2: the partner whose pair mean is closest
    # to 5: 4 (4.5).  k=3: (9 + x)/3 closest to 5: 11 (6.67) beats 0 (3).  k=4: 0.
    f = np.array([[0.0], [4.0], [5.0], [11.0]])
    assert herding_order(f, 4).tolist() == [2, 1, 3, 0]
    assert herding_order(f, 2).tolist() == [2, 1]  # a prefix: trimming keeps the best
    assert herding_order(f, 9).tolist() == [2, 1, 3, 0]  # never more than there are


def test_herding_order_2d_by_hand():
    # The four corners of a square and its centre (the mean).  k=1: the centre.  k=2: every
    # corner is equally far (ties go to the lowest index): (0, 0).  k=3: the opposite corner
    # (2, 2) brings the mean back to the centre exactly.  k=4: (2, 0) and (0, 2) tie: (2, 0).
    f = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0]])
    assert herding_order(f, 5).tolist() == [4, 0, 3, 1, 2]


def test_herding_running_mean_tracks_the_class_mean():
    """Herding's defining property, against a brute-force check of every candidate at every step."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 5))
    order = herding_order(f, 12)
    mu = f.mean(0)
    for k in range(1, 13):
        chosen = list(order[: k - 1])
        rest = [i for i in range(40) if i not in chosen]
        dists = {i: np.linalg.norm(mu - f[chosen + [i]].mean(0)) for i in rest}
        assert order[k - 1] == min(dists, key=dists.get)
    assert len(set(order.tolist())) == 12


def test_budget_quotas_invariants():
    for budget in range(1, 80):
        previous = None
        for n in range(1, 25):
            q = budget_quotas(budget, n)
            assert sum(q) == budget  # the whole budget is shared out
            assert max(q) <= math.ceil(budget / n) and min(q) >= budget // n
            if previous is not None:  # a class's share never grows
                assert all(a <= b for a, b in zip(q, previous))
            previous = q
    assert budget_quotas(200, 6) == [34, 34, 33, 33, 33, 33]


def _class_data(num_classes, per_class=60, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), per_class)
    x = rng.normal(size=(len(y), dim)).astype("float32") + y[:, None]
    return x, y


def test_fixed_budget_is_shared_and_trimmed_as_classes_arrive():
    x, y = _class_data(10)
    memory = ExemplarMemory(50, selection="herding")
    first = None
    for step in range(5):
        classes = [2 * step, 2 * step + 1]
        memory.add(x, y, classes, features=lambda v: v)
        n = 2 * (step + 1)
        counts = memory.counts()
        assert list(counts) == list(range(n))
        assert len(memory) == 50
        assert max(counts.values()) <= math.ceil(50 / n)
        if step == 0:
            first = memory.exemplars(0).copy()
        else:  # trimming keeps a prefix of the herding order
            np.testing.assert_array_equal(memory.exemplars(0), first[: counts[0]])
    assert list(memory.counts().values()) == [5] * 10
    mx, my = memory.data()
    assert mx.shape == (50, 3) and np.bincount(my).tolist() == [5] * 10
    # Each exemplar is a training sample of its class.
    for row, c in zip(mx, my):
        assert any(np.array_equal(row, r) for r in x[y == c])


def test_herding_selects_from_normalised_features():
    x, y = _class_data(1, per_class=30, dim=4)
    memory = ExemplarMemory(5)
    memory.add(x, y, [0], features=lambda v: v * 100.0)  # scale must not matter
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(memory.exemplars(0), x[herding_order(f, 5)])


def test_per_class_regime_and_random_selection():
    x, y = _class_data(4, per_class=20)
    memory = ExemplarMemory(per_class=7, selection="random", seed=3)
    memory.add(x, y, [0, 1])
    memory.add(x, y, [2, 3])
    assert list(memory.counts().values()) == [7, 7, 7, 7]
    again = ExemplarMemory(per_class=7, selection="random", seed=3)
    again.add(x, y, [0, 1])
    np.testing.assert_array_equal(again.exemplars(1), memory.exemplars(1))  # seeded
    other = ExemplarMemory(per_class=7, selection="random", seed=4)
    other.add(x, y, [0, 1])
    assert not np.array_equal(other.exemplars(1), memory.exemplars(1))


def test_fewer_samples_than_the_share():
    x, y = _class_data(2, per_class=3)
    memory = ExemplarMemory(100)
    memory.add(x, y, [0, 1], features=lambda v: v)
    assert memory.counts() == {0: 3, 1: 3}


def test_save_and_load_round_trip(tmp_path):
    x, y = _class_data(3)
    memory = ExemplarMemory(20, seed=5)
    memory.add(x, y, [0, 1, 2], features=lambda v: v)
    path = tmp_path / "memory.npz"
    memory.save(path)
    loaded = ExemplarMemory.load(path)
    assert loaded.config() == memory.config() and loaded.counts() == memory.counts() == {0: 7, 1: 7, 2: 6}
    for c in memory.classes:
        np.testing.assert_array_equal(loaded.exemplars(c), memory.exemplars(c))
    assert not list(tmp_path.glob(".tmp-*"))


def test_memory_validation():
    with pytest.raises(ValueError, match="either a total `budget` or `per_class`"):
        ExemplarMemory(10, per_class=2)
    with pytest.raises(ValueError, match="either a total `budget` or `per_class`"):
        ExemplarMemory()
    with pytest.raises(ValueError, match="budget must be a positive integer, got 0"):
        ExemplarMemory(0)
    with pytest.raises(ValueError, match="selection must be one of herding, random"):
        ExemplarMemory(10, selection="kmeans")
    x, y = _class_data(2)
    memory = ExemplarMemory(10)
    with pytest.raises(ValueError, match="herding selection needs a feature function"):
        memory.add(x, y, [0])
    memory.add(x, y, [0], features=lambda v: v)
    with pytest.raises(ValueError, match=r"classes \[0\] are in the memory already"):
        memory.add(x, y, [0], features=lambda v: v)
    with pytest.raises(ValueError, match="no training samples of class 5"):
        memory.add(x, y, [5], features=lambda v: v)
