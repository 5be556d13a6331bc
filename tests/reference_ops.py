"""Plain NumPy reference implementations of feature-denoising operations.

These are deliberately slow and loop-based so that each one can be checked
by eye against its definition. They are meant only for testing other
(e.g. TensorFlow) implementations on tiny inputs.

Conventions used throughout:

* ``x`` is a float64 array in NHWC layout ``[B, H, W, C]``; every op returns
  an array of the same shape (a new array, never a view of ``x``).
* Positions ``i`` and ``j`` index the ``H * W`` spatial positions of one
  image; ``x_i`` is the length-``C`` feature vector at position ``i``.
* "The window centred at i" of odd size ``window`` is the
  ``window x window`` square of positions centred at ``i``. Only the
  positions of that square that lie INSIDE the image are used ("valid"
  positions); positions outside the image are excluded, never zero-padded.
* Optional embeddings ``theta_w`` / ``phi_w`` are ``[C, D]`` matrices
  (a 1x1 convolution without bias): ``theta_i = x_i @ theta_w``,
  ``phi_j = x_j @ phi_w``. If they are not given, ``theta = phi = x``.
  The value term is always the identity: ``g_j = x_j``.
"""

import math

import numpy as np


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _check_nhwc(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError("expected a 4-D NHWC array, got shape %r" % (x.shape,))
    return x


def _check_window(window):
    if int(window) != window or window < 1 or window % 2 != 1:
        raise ValueError("window must be a positive odd integer, got %r" % (window,))
    return int(window)


def _embeddings(x, theta_w, phi_w):
    """Return (theta, phi, d) for x of shape [B, H, W, C].

    theta and phi have shape [B, H, W, D]; d is the embedding size D
    (or C when no weights are given).
    """
    if (theta_w is None) != (phi_w is None):
        raise ValueError("theta_w and phi_w must be given together or not at all")
    if theta_w is None:
        return x, x, x.shape[3]
    theta_w = np.asarray(theta_w, dtype=np.float64)
    phi_w = np.asarray(phi_w, dtype=np.float64)
    if theta_w.shape != phi_w.shape:
        raise ValueError("theta_w and phi_w must have the same shape")
    return conv1x1(x, theta_w), conv1x1(x, phi_w), theta_w.shape[1]


def _valid_window_positions(H, W, h, w, window):
    """List of (hh, ww) inside an H x W image in the window centred at (h, w)."""
    r = window // 2
    positions = []
    for hh in range(h - r, h + r + 1):
        for ww in range(w - r, w + r + 1):
            if 0 <= hh < H and 0 <= ww < W:
                positions.append((hh, ww))
    return positions


def _all_positions(H, W):
    return [(hh, ww) for hh in range(H) for ww in range(W)]


def _softmax(scores):
    """Numerically stable softmax of a 1-D list/array of scores."""
    scores = np.asarray(scores, dtype=np.float64)
    m = np.max(scores)
    e = np.exp(scores - m)
    return e / np.sum(e)


def _gaussian_at(x, theta, phi, d, b, h, w, positions):
    """sum_j softmax_j(theta_i . phi_j / sqrt(d)) * x_j over `positions`."""
    t = theta[b, h, w, :]
    scores = [np.dot(t, phi[b, hh, ww, :]) / math.sqrt(d) for (hh, ww) in positions]
    weights = _softmax(scores)
    out = np.zeros(x.shape[3], dtype=np.float64)
    for weight, (hh, ww) in zip(weights, positions):
        out += weight * x[b, hh, ww, :]
    return out


def _dot_at(x, theta, phi, b, h, w, positions):
    """(1/n) * sum_j (theta_i . phi_j) * x_j over `positions`, n = len(positions)."""
    t = theta[b, h, w, :]
    out = np.zeros(x.shape[3], dtype=np.float64)
    for (hh, ww) in positions:
        out += np.dot(t, phi[b, hh, ww, :]) * x[b, hh, ww, :]
    return out / len(positions)


# ---------------------------------------------------------------------------
# Layout helpers and 1x1 convolution
# ---------------------------------------------------------------------------

def to_nchw(x):
    """Transpose [B, H, W, C] -> [B, C, H, W] (returns a new contiguous array)."""
    x = _check_nhwc(x)
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def to_nhwc(x):
    """Transpose [B, C, H, W] -> [B, H, W, C] (returns a new contiguous array)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError("expected a 4-D NCHW array, got shape %r" % (x.shape,))
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def conv1x1(x, w):
    """1x1 convolution without bias.

    x: [B, H, W, C_in], w: [C_in, C_out]. Returns y of shape
    [B, H, W, C_out] with y[b, h, w_, :] = x[b, h, w_, :] @ w, i.e.
    y[b, h, w_, o] = sum_c x[b, h, w_, c] * w[c, o].
    """
    x = _check_nhwc(x)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != x.shape[3]:
        raise ValueError("w must have shape [C_in=%d, C_out], got %r" % (x.shape[3], w.shape))
    B, H, W, _ = x.shape
    y = np.zeros((B, H, W, w.shape[1]), dtype=np.float64)
    for b in range(B):
        for h in range(H):
            for ww in range(W):
                y[b, h, ww, :] = x[b, h, ww, :] @ w
    return y


# ---------------------------------------------------------------------------
# Denoising operations
# ---------------------------------------------------------------------------

def nonlocal_gaussian(x, theta_w=None, phi_w=None):
    """Non-local means with a Gaussian (embedded-Gaussian / softmax) affinity.

    For every image b and every spatial position i:

        y_i = sum_j softmax_j(theta_i . phi_j / sqrt(d)) * x_j

    where j runs over all H*W positions of the same image, the softmax is
    taken over j, theta_i = x_i @ theta_w and phi_j = x_j @ phi_w with
    d = D if theta_w / phi_w ([C, D] each) are given, otherwise
    theta = phi = x and d = C. The value term is the identity (g_j = x_j).

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    theta, phi, d = _embeddings(x, theta_w, phi_w)
    B, H, W, _ = x.shape
    y = np.zeros_like(x)
    positions = _all_positions(H, W)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                y[b, h, w, :] = _gaussian_at(x, theta, phi, d, b, h, w, positions)
    return y


def nonlocal_dot(x, theta_w=None, phi_w=None):
    """Non-local means with a dot-product affinity.

    For every image b and every spatial position i:

        y_i = (1 / N) * sum_j (theta_i . phi_j) * x_j

    where j runs over all N = H*W positions of the same image,
    theta_i = x_i @ theta_w and phi_j = x_j @ phi_w if theta_w / phi_w
    ([C, D] each) are given, otherwise theta = phi = x. There is no
    1/sqrt(d) scaling. The value term is the identity (g_j = x_j).

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    theta, phi, _ = _embeddings(x, theta_w, phi_w)
    B, H, W, _ = x.shape
    y = np.zeros_like(x)
    positions = _all_positions(H, W)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                y[b, h, w, :] = _dot_at(x, theta, phi, b, h, w, positions)
    return y


def bilateral_gaussian(x, window, theta_w=None, phi_w=None):
    """Local (windowed) version of `nonlocal_gaussian`.

    For every image b and every spatial position i:

        y_i = sum_{j in V(i)} softmax_{j in V(i)}(theta_i . phi_j / sqrt(d)) * x_j

    where V(i) is the set of positions of the window x window square centred
    at i that lie inside the image (positions outside the image are
    excluded, not zero-padded; the softmax is normalised over V(i) only).
    theta, phi and d are as in `nonlocal_gaussian`. `window` must be odd.

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    window = _check_window(window)
    theta, phi, d = _embeddings(x, theta_w, phi_w)
    B, H, W, _ = x.shape
    y = np.zeros_like(x)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                positions = _valid_window_positions(H, W, h, w, window)
                y[b, h, w, :] = _gaussian_at(x, theta, phi, d, b, h, w, positions)
    return y


def bilateral_dot(x, window, theta_w=None, phi_w=None):
    """Local (windowed) version of `nonlocal_dot`.

    For every image b and every spatial position i:

        y_i = (1 / |V(i)|) * sum_{j in V(i)} (theta_i . phi_j) * x_j

    where V(i) is the set of positions of the window x window square centred
    at i that lie inside the image, and |V(i)| is the number of such valid
    positions (NOT window*window). theta and phi are as in `nonlocal_dot`.
    `window` must be odd.

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    window = _check_window(window)
    theta, phi, _ = _embeddings(x, theta_w, phi_w)
    B, H, W, _ = x.shape
    y = np.zeros_like(x)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                positions = _valid_window_positions(H, W, h, w, window)
                y[b, h, w, :] = _dot_at(x, theta, phi, b, h, w, positions)
    return y


def mean_filter(x, window):
    """Per-channel mean over the valid positions of a window.

    For every image b, position i and channel c:

        y_i[c] = (1 / |V(i)|) * sum_{j in V(i)} x_j[c]

    where V(i) is the set of positions of the window x window square centred
    at i that lie inside the image. Positions outside the image are excluded
    (not zero-padded), so border outputs are not biased towards zero.
    `window` must be odd.

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    window = _check_window(window)
    B, H, W, C = x.shape
    y = np.zeros_like(x)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                positions = _valid_window_positions(H, W, h, w, window)
                for c in range(C):
                    total = 0.0
                    for (hh, ww) in positions:
                        total += x[b, hh, ww, c]
                    y[b, h, w, c] = total / len(positions)
    return y


def median_filter(x, window):
    """Per-channel (lower) median over the valid positions of a window.

    For every image b, position i and channel c: collect the values x_j[c]
    for j in V(i) (the positions of the window x window square centred at i
    that lie inside the image), sort them ascending, and take the element at
    0-based index (n_valid - 1) // 2, n_valid = |V(i)|. For odd n_valid this
    is the true median; for even n_valid it is the lower median, which is
    always an element of the window (no averaging). `window` must be odd.

    x: [B, H, W, C] float64. Returns an array of the same shape.
    """
    x = _check_nhwc(x)
    window = _check_window(window)
    B, H, W, C = x.shape
    y = np.zeros_like(x)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                positions = _valid_window_positions(H, W, h, w, window)
                for c in range(C):
                    values = sorted(float(x[b, hh, ww, c]) for (hh, ww) in positions)
                    y[b, h, w, c] = values[(len(values) - 1) // 2]
    return y


def null_op(x):
    """Identity: returns a copy of x ([B, H, W, C] float64)."""
    x = _check_nhwc(x)
    return np.array(x, dtype=np.float64, copy=True)
