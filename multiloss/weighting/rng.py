"""Counter-based random numbers for the train step: the same in eager, graph and XLA.

TensorFlow's stateless ops use a different Philox under XLA, so a seeded run
would change with ``jit_compile``.  These draws hash ``(seed, step, stream,
index)`` with SplitMix64's finaliser (uint64 arithmetic, which every mode
computes identically) and are a pure function of their arguments: every
replica draws the same numbers, and a run is reproducible from its seed.
"""

from __future__ import annotations

import math

from ..spec.lazy import tf

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _u64(value):
    return tf.constant(value, tf.uint64)


def _shift(z, bits: int):
    return tf.bitwise.right_shift(z, _u64(bits))


def mix64(z):
    """SplitMix64's finaliser on a uint64 tensor."""
    z = tf.bitwise.bitwise_xor(z, _shift(z, 30)) * _u64(_M1)
    z = tf.bitwise.bitwise_xor(z, _shift(z, 27)) * _u64(_M2)
    return tf.bitwise.bitwise_xor(z, _shift(z, 31))


def uniform(num: int, seed: int, step, stream: int = 0):
    """``num`` float64 draws in (0, 1), a function of ``(seed, step, stream)``."""
    key = mix64(_u64(seed % 2**64) + _u64(_GOLDEN) * _u64(stream + 1))
    key = mix64(tf.bitwise.bitwise_xor(key, tf.cast(tf.cast(step, tf.int64), tf.uint64)))
    index = tf.cast(tf.range(1, num + 1, dtype=tf.int64), tf.uint64)
    z = mix64(key + _u64(_GOLDEN) * index)
    return (tf.cast(_shift(z, 11), tf.float64) + 0.5) * 2.0 ** -53


def normal(num: int, seed: int, step):
    """``num`` standard normal float64 draws (Box–Muller on two uniform streams)."""
    u1, u2 = uniform(num, seed, step, 0), uniform(num, seed, step, 1)
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * math.pi * u2)
