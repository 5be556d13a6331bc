"""Random draws per image: a draw depends only on the seed, the image's index in the data set and what it is drawn
for (a stream), so an image gets the same target and random start whatever the batch size and number of ranks."""
import random

import tensorflow as tf

STREAMS = 1 << 20          # draws per image: stream k of image i uses counter i * STREAMS + k


def base_seed(seed):
    """The seed, or one drawn now (per evaluation graph) when none is given."""
    return seed if seed is not None else random.SystemRandom().randrange(1 << 31)


def uniform_per_image(index, seed, stream, shape, minval, maxval, dtype=tf.float32):
    """[B] + shape uniform values in [minval, maxval), image b's from (seed, index[b], stream)."""
    index = tf.cast(index, tf.int64)
    seeds = tf.stack([tf.fill(tf.shape(index), tf.constant(seed, tf.int64)),
                      index * STREAMS + tf.cast(stream, tf.int64)], axis=1)
    return tf.map_fn(lambda s: tf.random.stateless_uniform(shape, s, minval, maxval, dtype), seeds,
                     fn_output_signature=dtype)
