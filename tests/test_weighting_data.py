"""The Multi-Fashion source: canvases built from the IDX files, checked pixel by pixel."""

import numpy as np
import pytest

from multiloss.run import data


def test_overlay_puts_one_item_top_left_and_one_bottom_right_by_the_maximum():
    a = np.zeros((2, 28, 28, 1), "float32")
    a[0, 0, 0] = 0.5          # image 0: top-left corner pixel
    a[1, 27, 27] = 0.25       # image 1: bottom-right corner pixel
    a[1, 0, 0] = 0.75         # image 1's top-left pixel lands at (8, 8)
    a[0, 8, 8] = 0.5
    out = data.overlay_pairs(a, np.array([0]), np.array([1]))
    assert out.shape == (1, 36, 36, 1)
    assert out[0, 0, 0, 0] == 0.5 and out[0, 35, 35, 0] == 0.25
    assert out[0, 8, 8, 0] == 0.75                     # max(0.5 from the first, 0.75 from the second)
    assert np.count_nonzero(out) == 3


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_multi_fashion_canvases_and_labels_come_from_the_idx_files():
    splits = data.get_source("multi_fashion")(seed=3, train_size=500, test_size=200, val_fraction=0.2)
    (x, y), (xt, yt) = data.load_fashion_mnist()
    assert splits.train.x.shape == (400, 36, 36, 1) and len(splits.val) == 100 and len(splits.test) == 200
    assert splits.info["input_shape"] == (36, 36, 1)
    for part, images, labels in ((splits.train, x, y), (splits.test, xt, yt)):
        for k in range(5):
            canvas = part.x[k, :, :, 0]
            # find the two items by exhaustive search over the source images: the top-left 8×8 corner
            # belongs to the first item only, the bottom-right corner to the second only
            first = np.flatnonzero((images[:, :8, :8, 0] == canvas[:8, :8]).all((1, 2))
                                   & (labels == part.y["left"][k]))
            second = np.flatnonzero((images[:, 20:, 20:, 0] == canvas[28:, 28:]).all((1, 2))
                                    & (labels == part.y["right"][k]))
            assert len(first) and len(second)
            assert any(np.array_equal(canvas, _canvas(images, i, j)) for i in first for j in second)
    again = data.get_source("multi_fashion")(seed=3, train_size=500, test_size=200, val_fraction=0.2)
    np.testing.assert_array_equal(again.train.x, splits.train.x)     # a pure function of the seed


def _canvas(images, i, j):
    out = np.zeros((36, 36), "float32")
    out[:28, :28] = images[i, :, :, 0]
    out[8:, 8:] = np.maximum(out[8:, 8:], images[j, :, :, 0])
    return out
