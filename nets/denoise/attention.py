"""Fast kernels of the non-local operations (registered as their "fast" formulation).

Gaussian (softmax) non-local means, on maps with N >= C positions (on smaller maps, 14x14 and 7x7 in a ResNet, the
definition's passes over N x N are the cheap ones and it runs):
- when one image's N x N affinity fits `options.softmax_block_bytes`, the whole affinity with the 1/sqrt(d) scale
  applied to q (N x D) instead of the affinity (N x N) and a backward pass that makes one elementwise pass over the
  N x N gradient, not five;
- otherwise the softmax one block of query rows at a time (images in turn), with a backward pass that recomputes each
  block's weights from a saved log-normaliser, so neither pass holds more than one [block rows, N] piece of the
  affinity (on a CPU this costs the recomputed q k^T, about 10% more time, for its memory saving).
Dot product: the C x C product phi^T g first when C <= N (docs/FACTS.md Sec. 1): O(N C^2) instead of O(N^2 C).
"""
import math

import tensorflow as tf

from .neighbourhood import static_hw
from .operations import fast_kernel, nonlocal_dot, nonlocal_gaussian


def static_positions(x, layout):
    hw = static_hw(x, layout)
    return None if hw is None else hw[0] * hw[1]


def softmax_block_rows(positions, itemsize, options):
    """Query rows per softmax block: as many as fit `softmax_block_bytes` of affinity per image."""
    rows = options.softmax_block_rows or options.softmax_block_bytes // (positions * itemsize)
    return max(1, min(rows, positions))


def _large_map(x, layout, window, options):
    positions = static_positions(x, layout)
    return positions is not None and positions >= layout.channels(x)


@fast_kernel(nonlocal_gaussian, applies=_large_map)
def nonlocal_gaussian_fast(x, theta, phi, layout, window, options):
    positions = static_positions(x, layout)
    rows = softmax_block_rows(positions, x.dtype.size, options)
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    if not layout.channels_last:        # to [B, N, .] as well (under XLA the transposes fold into the matmuls)
        th, ph, g = (tf.transpose(t, [0, 2, 1]) for t in (th, ph, g))
    q = th * tf.cast(1.0 / math.sqrt(layout.channels(theta)), th.dtype)
    y = softmax_attention(q, ph, g) if rows >= positions else blocked_softmax_attention(q, ph, g, rows)
    return tf.reshape(y if layout.channels_last else tf.transpose(y, [0, 2, 1]), tf.shape(x))


def _with_ones_column(t):
    """[.., C] -> [.., C + 1] with a last column of ones: [a, -b] . [t, 1] = a t^T - b in one matmul."""
    return tf.concat([t, tf.ones_like(t[..., :1])], axis=-1)


def softmax_attention(q, k, v):
    """softmax(q k^T, over keys) v for q [B, N, D] (already scaled), k [B, N, D], v [B, N, C], the whole affinity
    kept for a hand-written backward pass:
        dV = P^T dO,  dS = P * (dO v^T - rowsum(dO * O)),  dQ = dS k,  dK = dS^T q.
    rowsum(dP * P) of the softmax gradient equals rowsum(dO * O) (O = P v), an N x C reduction instead of N x N,
    subtracted inside the dO v^T product by an extra column: one elementwise pass over the N x N gradient, not four."""
    @tf.custom_gradient
    def attend(q, k, v):
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True))                      # [B, N, N]
        y = tf.matmul(weights, v)

        def grad(dy):
            dy_delta = tf.concat([dy, -tf.reduce_sum(dy * y, axis=-1, keepdims=True)], axis=-1)
            d_scores = weights * tf.matmul(dy_delta, _with_ones_column(v), transpose_b=True)
            return (tf.matmul(d_scores, k), tf.matmul(d_scores, q, transpose_a=True),
                    tf.matmul(weights, dy, transpose_a=True))
        return y, grad
    return attend(q, k, v)


class RowBlocks:
    """N positions cut into `blocks` blocks of `rows` rows; N is padded with zero rows to blocks x rows, the padding
    spread over the blocks. The passes of `blocked_softmax_attention` over one image's [N, .] tensors."""

    def __init__(self, positions, rows):
        self.positions = positions
        self.blocks = -(-positions // rows)
        self.rows = -(-positions // self.blocks)
        self.padded = self.blocks * self.rows

    def split(self, t):
        """[N, C] -> [blocks, rows, C] (zero rows appended)."""
        if self.padded != self.positions:
            t = tf.pad(t, [[0, self.padded - self.positions], [0, 0]])
        return tf.reshape(t, [self.blocks, self.rows, t.shape[-1]])

    def join(self, array):
        """TensorArray of `blocks` x [rows, C] -> [N, C]."""
        stacked = array.stack()
        return tf.reshape(stacked, [self.padded, stacked.shape[-1]])[:self.positions]

    def array(self, like):
        return tf.TensorArray(like.dtype, self.blocks, element_shape=[self.rows, like.shape[-1]])

    def forward(self, q, k, v):
        """softmax(q k^T) v and each row's log-normaliser lse ([N, 1]), one block of query rows at a time."""
        q_blocks = self.split(q)

        def body(i, out, lse):
            scores = tf.matmul(q_blocks[i], k, transpose_b=True)                           # [rows, N]
            weights = tf.nn.softmax(scores)
            # log-normaliser: the weight of a row's largest score is exp(0) / sum = 1 / sum
            lse_i = tf.reduce_max(scores, -1, keepdims=True) - tf.math.log(tf.reduce_max(weights, -1, keepdims=True))
            return i + 1, out.write(i, tf.matmul(weights, v)), lse.write(i, lse_i)
        out, lse = sequential_loop(self.blocks, body, [self.array(v), self.array(v[:, :1])])
        return self.join(out), self.join(lse)

    def backward(self, q, k, v, dy, q_lse, dy_delta):
        """(dQ, dK, dV), one block j of key rows at a time, its weights recomputed from q_lse = [q, -lse]."""
        # an extra column folds the subtractions into the matmuls:
        # [q, -lse] . [k_j, 1] = q k_j^T - lse and [dO, -delta] . [v_j, 1] = dO v_j^T - delta
        k_blocks, v_blocks = (self.split(_with_ones_column(t)) for t in (k, v))

        def body(j, dq, dk, dv):
            k_j, v_j = k_blocks[j], v_blocks[j]                                              # [rows, . + 1]
            weights = tf.exp(tf.matmul(q_lse, k_j, transpose_b=True))                         # [N, rows]
            d_scores = weights * tf.matmul(dy_delta, v_j, transpose_b=True)
            return (j + 1, dq + tf.matmul(d_scores, k_j[:, :-1]),
                    dk.write(j, tf.matmul(d_scores, q, transpose_a=True)),
                    dv.write(j, tf.matmul(weights, dy, transpose_a=True)))
        dq, dk, dv = sequential_loop(self.blocks, body, [tf.zeros_like(q), self.array(k), self.array(v)])
        return dq, self.join(dk), self.join(dv)


def sequential_loop(count, body, carried):
    """tf.while_loop of body(i, *carried) for i = 0..count-1, one iteration at a time; the final `carried`."""
    return tf.while_loop(lambda i, *_: i < count, body, [tf.constant(0)] + carried, parallel_iterations=1)[1:]


def per_image(fn, outputs_like, *tensors):
    """fn(image tensors) -> tuple of [N, .] tensors, for each image in turn; stacked [B, N, .]."""
    images, positions = tf.shape(tensors[0])[0], int(tensors[0].shape[1])

    def body(b, *arrays):
        results = fn(*[t[b] for t in tensors])
        return (b + 1,) + tuple(a.write(b, r) for a, r in zip(arrays, results))
    arrays = [tf.TensorArray(like.dtype, images, element_shape=[positions, like.shape[-1]]) for like in outputs_like]
    return [a.stack() for a in sequential_loop(images, body, arrays)]


def blocked_softmax_attention(q, k, v, rows):
    """softmax(q k^T, over keys) v for q [B, N, D] (already scaled), k [B, N, D], v [B, N, C]. Both passes are
    sequential loops over the images and, within an image, over blocks of `rows` positions, so at most one image's
    [rows, N] piece of the affinity exists at once, whatever the batch. The forward pass takes query blocks (a block's
    softmax sees every key) and keeps each row's log-normaliser lse. The backward pass takes key blocks j and
    recomputes their weights from lse:
        P_j = exp(q k_j^T - lse),  dV_j = P_j^T dO,  dS_j = P_j * (dO v_j^T - rowsum(dO * O)),
        dK_j = dS_j^T q,  dQ += dS_j k_j,
    so only one image's dQ ([N, D]) is accumulated across blocks. N must be static; it is padded with zero rows to whole
    blocks (padded queries are dropped; padded keys enter only the backward pass, where k = v = 0 cancels them)."""
    blocks = RowBlocks(int(q.shape[1]), rows)

    @tf.custom_gradient
    def attend(q, k, v):
        y, lse = per_image(blocks.forward, [v, v[:, :, :1]], q, k, v)                     # [B, N, C], [B, N, 1]

        def grad(dy):
            q_lse = tf.concat([q, -lse], axis=-1)
            dy_delta = tf.concat([dy, -tf.reduce_sum(dy * y, axis=-1, keepdims=True)], axis=-1)
            return per_image(blocks.backward, [q, k, v], q, k, v, dy, q_lse, dy_delta)
        return y, grad
    return attend(q, k, v)


def dot_product_order(channels, positions):
    """'channel' computes phi^T g first (C x C, O(N C^2)), 'pairwise' the N x N affinity first (O(N^2 C)): the C x C
    order when C <= N (docs/FACTS.md Sec. 1)."""
    return "channel" if channels <= positions else "pairwise"


@fast_kernel(nonlocal_dot, applies=lambda x, layout, window, options: static_positions(x, layout) is not None)
def nonlocal_dot_channel_order(x, theta, phi, layout, window, options):
    """(1 / N) theta (phi^T g): the same product associated the cheaper way (d = theta's channels), or as defined."""
    if dot_product_order(layout.channels(theta), static_positions(x, layout)) == "pairwise":
        return nonlocal_dot(x, theta, phi, layout, window)
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    height, width = layout.spatial_size(x)
    if layout.channels_last:   # tensors are [B, N, C]
        y = tf.matmul(th, tf.matmul(ph, g, transpose_a=True))          # [B,N,D] x [B,D,C]
    else:                      # tensors are [B, C, N]
        y = tf.matmul(tf.matmul(g, ph, transpose_b=True), th)          # [B,C,D] x [B,D,N]
    return tf.reshape(y / tf.cast(height * width, x.dtype), tf.shape(x))
