"""Counter-based, stateless randomness for policies.

Every row of a batch carries its own 64-bit seed, so a row's random draws depend only on
that seed and never on the row's position in a batch or on earlier calls. That makes a
logged decision reproducible from its seed, and lets one SavedModel serve any number of
concurrent requests without random state (STYLE habit 4).

The generator is SplitMix64 (Steele, Lea, Flood, OOPSLA 2014) applied to
``seed + (counter + 1) * golden_gamma``.
"""

from __future__ import annotations

import math

import tensorflow as tf

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB


def _splitmix64(z: tf.Tensor) -> tf.Tensor:
    """The SplitMix64 finaliser. z: any shape, uint64."""
    shift = tf.bitwise.right_shift
    z = tf.bitwise.bitwise_xor(z, shift(z, tf.constant(30, tf.uint64))) * tf.constant(_MIX_1, tf.uint64)
    z = tf.bitwise.bitwise_xor(z, shift(z, tf.constant(27, tf.uint64))) * tf.constant(_MIX_2, tf.uint64)
    return tf.bitwise.bitwise_xor(z, shift(z, tf.constant(31, tf.uint64)))


def uniform(seed: tf.Tensor, count: int | tf.Tensor, stream: int = 0) -> tf.Tensor:
    """Uniform draws in (0, 1), independent per row.

    seed: [batch] int64. count: draws per row. stream: selects an independent sequence
    for the same seed (different uses inside one policy take different streams).
    Returns [batch, count] float32.
    """
    seed_u = tf.bitcast(tf.cast(seed, tf.int64), tf.uint64)[:, None]
    counter = tf.cast(tf.range(count, dtype=tf.int64), tf.uint64)[None, :]
    offset = tf.constant((stream << 40) + 1, tf.uint64)
    z = seed_u + (counter + offset) * tf.constant(_GOLDEN_GAMMA, tf.uint64)
    bits = tf.bitwise.right_shift(_splitmix64(z), tf.constant(40, tf.uint64))  # top 24 bits
    return (tf.cast(bits, tf.float32) + 0.5) / float(1 << 24)


def normal(seed: tf.Tensor, count: int | tf.Tensor, stream: int = 0) -> tf.Tensor:
    """Standard normal draws by Box-Muller. seed: [batch] int64. Returns [batch, count] float32."""
    u = uniform(seed, 2 * count, stream)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * math.pi * u2)
