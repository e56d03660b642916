"""Small example models, used by the quickstart, the configs and the docs.

``multiloss check configs/siamese.yaml --model multiloss.examples:siamese_model``
"""

from __future__ import annotations

import keras
from keras import layers, ops


def siamese_model(image_shape=(8, 8, 1), num_classes: int = 10, embedding: int = 16) -> keras.Model:
    """Two images -> one shared CNN -> two category heads and a same/different head.

    Outputs: ``ctg_out_1``, ``ctg_out_2`` (softmax over classes), ``bin_out``
    (softmax over {different, same}) and the embeddings ``emb_a``/``emb_b``.
    """
    trunk = keras.Sequential(
        [
            layers.Input(image_shape),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(embedding, activation="relu"),
        ],
        name="shared_cnn",
    )
    a = keras.Input(image_shape, name="image_a")
    b = keras.Input(image_shape, name="image_b")
    ea, eb = trunk(a), trunk(b)
    classify = layers.Dense(num_classes, activation="softmax", name="classifier")
    out1 = layers.Identity(name="ctg_out_1")(classify(ea))
    out2 = layers.Identity(name="ctg_out_2")(classify(eb))
    dist = layers.Lambda(lambda t: ops.abs(t[0] - t[1]), name="abs_diff")([ea, eb])
    bin_out = layers.Dense(2, activation="softmax", name="bin_out")(dist)
    emb_a = layers.Identity(name="emb_a")(ea)
    emb_b = layers.Identity(name="emb_b")(eb)
    return keras.Model(
        {"image_a": a, "image_b": b},
        {"ctg_out_1": out1, "ctg_out_2": out2, "bin_out": bin_out, "emb_a": emb_a, "emb_b": emb_b},
        name="siamese",
    )


def depth_model(height: int = 16, width: int = 16, classes: int = 4) -> keras.Model:
    """A tiny dense-prediction net: ``depth`` [B,H,W,1] and ``segmentation`` [B,H,W,C]."""
    x = keras.Input((height, width, 3), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    depth = layers.Conv2D(1, 1, name="depth")(h)
    seg = layers.Conv2D(classes, 1, activation="softmax", name="segmentation")(h)
    return keras.Model(x, {"depth": depth, "segmentation": seg}, name="depth_seg")


def digits_multitask_model(num_classes: int = 10) -> keras.Model:
    """Digits (8×8) -> class, parity and reconstruction heads."""
    x = keras.Input((64,), name="pixels")
    h = layers.Dense(64, activation="relu")(x)
    h = layers.Dense(32, activation="relu")(h)
    cls = layers.Dense(num_classes, activation="softmax", name="digit")(h)
    parity = layers.Dense(1, activation="sigmoid", name="parity")(h)
    recon = layers.Dense(64, name="reconstruction")(h)
    return keras.Model(x, {"digit": cls, "parity": parity, "reconstruction": recon}, name="digits_mt")
