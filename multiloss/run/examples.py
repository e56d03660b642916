"""Small example models, used by the quickstart, the configs and the docs.

``multiloss check configs/siamese.yaml --model multiloss.run.examples:siamese_model``
"""

from __future__ import annotations

import keras
from keras import layers


def siamese_model(image_shape=(8, 8, 1), num_classes: int = 10, embedding: int = 16) -> keras.Model:
    """The Siamese network of :func:`multiloss.run.models.siamese_cnn` for 8×8 digits."""
    from .models import siamese_cnn

    return siamese_cnn({"input_shape": image_shape, "num_classes": num_classes}, embedding=embedding)


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
