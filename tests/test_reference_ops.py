"""Self-checks for the NumPy reference ops in tests/reference_ops.py.

Every test compares the reference against an answer that is known
independently: a hand computation, a matrix-algebra formula, or an
invariant that follows directly from the definition.
"""

import math

import numpy as np
import pytest

from tests import reference_ops as ref


def _rand(shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float64)


def _img(rows):
    """Hand-written single-channel image -> [1, H, W, 1]."""
    return np.asarray(rows, dtype=np.float64)[None, :, :, None]


GRID_1_TO_9 = [[1, 2, 3],
               [4, 5, 6],
               [7, 8, 9]]

GRID_SHUFFLED = [[9, 1, 7],
                 [3, 5, 2],
                 [8, 6, 4]]

SHAPES = [(2, 3, 3, 1), (2, 4, 5, 3), (2, 6, 6, 8), (2, 1, 6, 2), (2, 5, 2, 4)]


# ---------------------------------------------------------------------------
# Layout helpers, conv1x1, null_op
# ---------------------------------------------------------------------------

def test_to_nchw_and_back():
    x = _rand((2, 3, 4, 5))
    n = ref.to_nchw(x)
    assert n.shape == (2, 5, 3, 4)
    for b in range(2):
        for c in range(5):
            for h in range(3):
                for w in range(4):
                    assert n[b, c, h, w] == x[b, h, w, c]
    back = ref.to_nhwc(n)
    assert back.shape == x.shape
    np.testing.assert_array_equal(back, x)


def test_conv1x1_hand_values():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0] = [1.0, 2.0]
    x[0, 0, 1] = [3.0, -1.0]
    w = np.array([[1.0, 0.0, 2.0],
                  [1.0, 1.0, -1.0]])
    y = ref.conv1x1(x, w)
    assert y.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(y[0, 0, 0], [3.0, 2.0, 0.0])
    np.testing.assert_allclose(y[0, 0, 1], [2.0, -1.0, 7.0])


def test_conv1x1_matches_matrix_product():
    x = _rand((2, 4, 3, 5), seed=1)
    w = _rand((5, 7), seed=2)
    y = ref.conv1x1(x, w)
    expected = (x.reshape(-1, 5) @ w).reshape(2, 4, 3, 7)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_null_op_is_identity_copy():
    x = _rand((2, 3, 3, 2))
    y = ref.null_op(x)
    np.testing.assert_array_equal(y, x)
    y[0, 0, 0, 0] += 1.0
    assert y[0, 0, 0, 0] != x[0, 0, 0, 0]


# ---------------------------------------------------------------------------
# Shapes, copies and batch independence for every op
# ---------------------------------------------------------------------------

ALL_OPS = [
    ("nonlocal_gaussian", lambda x: ref.nonlocal_gaussian(x)),
    ("nonlocal_dot", lambda x: ref.nonlocal_dot(x)),
    ("bilateral_gaussian", lambda x: ref.bilateral_gaussian(x, 3)),
    ("bilateral_dot", lambda x: ref.bilateral_dot(x, 3)),
    ("mean_filter", lambda x: ref.mean_filter(x, 3)),
    ("median_filter", lambda x: ref.median_filter(x, 3)),
    ("null_op", ref.null_op),
]


@pytest.mark.parametrize("name,op", ALL_OPS, ids=[n for n, _ in ALL_OPS])
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_preserved_and_input_untouched(name, op, shape):
    x = _rand(shape, seed=3)
    x_before = x.copy()
    y = op(x)
    assert y.shape == x.shape
    assert y.dtype == np.float64
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("name,op", ALL_OPS, ids=[n for n, _ in ALL_OPS])
def test_batch_elements_are_independent(name, op):
    x = _rand((2, 4, 4, 3), seed=4)
    x2 = x.copy()
    x2[1] = _rand((4, 4, 3), seed=5)
    y, y2 = op(x), op(x2)
    np.testing.assert_array_equal(y[0], y2[0])
    assert not np.allclose(y[1], y2[1])


# ---------------------------------------------------------------------------
# Constant images are fixed points
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda x: ref.mean_filter(x, 3),
    lambda x: ref.mean_filter(x, 5),
    lambda x: ref.median_filter(x, 3),
    lambda x: ref.median_filter(x, 5),
    lambda x: ref.nonlocal_gaussian(x),
    lambda x: ref.bilateral_gaussian(x, 3),
    lambda x: ref.bilateral_gaussian(x, 5),
], ids=["mean3", "mean5", "median3", "median5", "nl_gauss", "bil_gauss3", "bil_gauss5"])
def test_constant_image_is_fixed_point(op):
    x = np.empty((2, 5, 4, 3))
    x[0] = [0.7, -1.3, 2.0]   # per-channel constant, different per channel
    x[1] = [3.0, 0.0, -0.5]
    np.testing.assert_allclose(op(x), x, rtol=1e-12, atol=1e-12)


def test_constant_image_fixed_point_with_embeddings():
    x = np.empty((2, 4, 4, 3))
    x[...] = [0.4, -0.2, 1.1]
    tw, pw = _rand((3, 2), seed=6), _rand((3, 2), seed=7)
    np.testing.assert_allclose(ref.nonlocal_gaussian(x, tw, pw), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.bilateral_gaussian(x, 3, tw, pw), x, rtol=1e-12, atol=1e-12)


def test_dot_on_constant_image():
    # Every theta_i . phi_j equals |v|^2, so y_i = |v|^2 * v for both
    # the non-local and the windowed dot versions (the 1/n cancels the sum).
    v = np.array([0.5, -1.0, 2.0])
    x = np.empty((2, 4, 5, 3))
    x[...] = v
    expected = np.empty_like(x)
    expected[...] = np.dot(v, v) * v
    np.testing.assert_allclose(ref.nonlocal_dot(x), expected, rtol=1e-12)
    np.testing.assert_allclose(ref.bilateral_dot(x, 3), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# mean_filter
# ---------------------------------------------------------------------------

def test_mean_filter_hand_values():
    y = ref.mean_filter(_img(GRID_1_TO_9), 3)[0, :, :, 0]
    # corners: 4 valid values each
    assert y[0, 0] == pytest.approx((1 + 2 + 4 + 5) / 4.0)   # 3.0
    assert y[0, 2] == pytest.approx((2 + 3 + 5 + 6) / 4.0)   # 4.0
    assert y[2, 0] == pytest.approx((4 + 5 + 7 + 8) / 4.0)   # 6.0
    assert y[2, 2] == pytest.approx((5 + 6 + 8 + 9) / 4.0)   # 7.0
    # edges: 6 valid values
    assert y[0, 1] == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 6.0)  # 3.5
    assert y[1, 0] == pytest.approx((1 + 2 + 4 + 5 + 7 + 8) / 6.0)  # 4.5
    # centre: all 9
    assert y[1, 1] == pytest.approx(45 / 9.0)


def test_mean_filter_matches_padded_box_sum():
    # Independent formulation: zero-padded box sum of x divided by the
    # zero-padded box sum of an all-ones image (= number of valid positions).
    x = _rand((2, 5, 6, 3), seed=8)
    for window in (1, 3, 5, 7):
        r = window // 2
        xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
        op = np.pad(np.ones_like(x), ((0, 0), (r, r), (r, r), (0, 0)))
        num = np.zeros_like(x)
        den = np.zeros_like(x)
        for dh in range(window):
            for dw in range(window):
                num += xp[:, dh:dh + 5, dw:dw + 6, :]
                den += op[:, dh:dh + 5, dw:dw + 6, :]
        np.testing.assert_allclose(ref.mean_filter(x, window), num / den, rtol=1e-12, atol=1e-12)


def test_mean_filter_whole_image_window_is_global_mean():
    x = _rand((2, 3, 4, 2), seed=9)
    y = ref.mean_filter(x, 7)  # 7 >= 2*4-1: every window covers the image
    expected = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# median_filter
# ---------------------------------------------------------------------------

def test_median_filter_hand_values():
    y = ref.median_filter(_img(GRID_SHUFFLED), 3)[0, :, :, 0]
    # centre: {1..9} -> 5
    assert y[1, 1] == 5
    # top-left corner {9,1,3,5} -> sorted 1,3,5,9 -> index (4-1)//2 = 1 -> 3
    assert y[0, 0] == 3
    # top-right corner {1,7,5,2} -> sorted 1,2,5,7 -> index 1 -> 2
    assert y[0, 2] == 2
    # bottom-right corner {5,2,6,4} -> sorted 2,4,5,6 -> index 1 -> 4
    assert y[2, 2] == 4
    # top edge {9,1,7,3,5,2} -> sorted 1,2,3,5,7,9 -> index (6-1)//2 = 2 -> 3
    assert y[0, 1] == 3
    # left edge {9,1,3,5,8,6} -> sorted 1,3,5,6,8,9 -> index 2 -> 5
    assert y[1, 0] == 5


def test_median_filter_odd_count_is_true_median():
    # Interior positions of a 3x3 window have 9 valid values: the result must
    # equal np.median there. Whole-image window on a 3x5 image: 15 values.
    x = _rand((2, 5, 6, 3), seed=10)
    y = ref.median_filter(x, 3)
    for b in range(2):
        for h in range(1, 4):
            for w in range(1, 5):
                for c in range(3):
                    assert y[b, h, w, c] == np.median(x[b, h - 1:h + 2, w - 1:w + 2, c])
    x = _rand((2, 3, 5, 2), seed=11)
    y = ref.median_filter(x, 9)
    for b in range(2):
        for c in range(2):
            assert np.all(y[b, :, :, c] == np.median(x[b, :, :, c]))


def test_median_filter_output_values_come_from_window():
    x = _rand((2, 4, 4, 2), seed=12)
    y = ref.median_filter(x, 3)
    for b in range(2):
        for h in range(4):
            for w in range(4):
                for c in range(2):
                    win = x[b, max(h - 1, 0):h + 2, max(w - 1, 0):w + 2, c]
                    assert y[b, h, w, c] in win.ravel()


def test_median_filter_channels_independent():
    a = _img(GRID_SHUFFLED)
    bch = _img([[0, 0, 0], [0, 100, 0], [0, 0, 0]])
    x = np.concatenate([a, bch], axis=3)
    y = ref.median_filter(x, 3)
    np.testing.assert_array_equal(y[..., :1], ref.median_filter(a, 3))
    np.testing.assert_array_equal(y[..., 1:], ref.median_filter(bch, 3))
    # the isolated spike is removed everywhere
    assert np.all(y[..., 1] == 0)


# ---------------------------------------------------------------------------
# window = 1
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda x: ref.mean_filter(x, 1),
    lambda x: ref.median_filter(x, 1),
    lambda x: ref.bilateral_gaussian(x, 1),
    lambda x: ref.bilateral_gaussian(x, 1, _rand((3, 2), 13), _rand((3, 2), 14)),
], ids=["mean", "median", "bil_gauss", "bil_gauss_emb"])
def test_window_one_is_identity(op):
    x = _rand((2, 4, 5, 3), seed=15)
    np.testing.assert_allclose(op(x), x, rtol=1e-12, atol=1e-12)


def test_bilateral_dot_window_one():
    # Only j = i is valid, n = 1: y_i = (theta_i . phi_i) * x_i.
    x = _rand((2, 3, 4, 3), seed=16)
    sq = np.sum(x * x, axis=3, keepdims=True)
    np.testing.assert_allclose(ref.bilateral_dot(x, 1), sq * x, rtol=1e-12)
    tw, pw = _rand((3, 2), 17), _rand((3, 2), 18)
    t, p = ref.conv1x1(x, tw), ref.conv1x1(x, pw)
    tp = np.sum(t * p, axis=3, keepdims=True)
    np.testing.assert_allclose(ref.bilateral_dot(x, 1, tw, pw), tp * x, rtol=1e-12)


# ---------------------------------------------------------------------------
# Whole-image window == non-local
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 3, 2), (2, 4, 6, 3), (2, 5, 2, 4)])
@pytest.mark.parametrize("use_emb", [False, True])
def test_bilateral_with_covering_window_equals_nonlocal(shape, use_emb):
    x = _rand(shape, seed=19) * 0.5
    C = shape[3]
    emb = (_rand((C, 3), 20), _rand((C, 3), 21)) if use_emb else (None, None)
    window = 2 * max(shape[1], shape[2]) - 1
    for win in (window, window + 2):
        np.testing.assert_allclose(ref.bilateral_gaussian(x, win, *emb),
                                   ref.nonlocal_gaussian(x, *emb), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ref.bilateral_dot(x, win, *emb),
                                   ref.nonlocal_dot(x, *emb), rtol=1e-12, atol=1e-12)


def test_bilateral_smaller_window_differs_from_nonlocal():
    x = _rand((2, 5, 5, 2), seed=22)
    assert not np.allclose(ref.bilateral_gaussian(x, 3), ref.nonlocal_gaussian(x))
    assert not np.allclose(ref.bilateral_dot(x, 3), ref.nonlocal_dot(x))


# ---------------------------------------------------------------------------
# Matrix-algebra formulations of the non-local ops
# ---------------------------------------------------------------------------

def _softmax_rows(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_nonlocal_dot_matrix_form():
    x = _rand((2, 4, 3, 5), seed=23)
    B, H, W, C = x.shape
    N = H * W
    y = ref.nonlocal_dot(x)
    for b in range(B):
        X = x[b].reshape(N, C)
        expected = (X @ (X.T @ X)) / N   # = (1/N) (X X^T) X
        np.testing.assert_allclose(y[b].reshape(N, C), expected, rtol=1e-12, atol=1e-12)


def test_nonlocal_dot_matrix_form_with_embeddings():
    x = _rand((2, 3, 4, 3), seed=24)
    tw, pw = _rand((3, 5), 25), _rand((3, 5), 26)
    B, H, W, C = x.shape
    N = H * W
    y = ref.nonlocal_dot(x, tw, pw)
    for b in range(B):
        X = x[b].reshape(N, C)
        expected = ((X @ tw) @ (X @ pw).T @ X) / N
        np.testing.assert_allclose(y[b].reshape(N, C), expected, rtol=1e-12, atol=1e-12)


def test_nonlocal_gaussian_matrix_form():
    x = _rand((2, 3, 4, 6), seed=27)
    B, H, W, C = x.shape
    N = H * W
    y = ref.nonlocal_gaussian(x)
    for b in range(B):
        X = x[b].reshape(N, C)
        A = _softmax_rows(X @ X.T / math.sqrt(C))
        np.testing.assert_allclose(y[b].reshape(N, C), A @ X, rtol=1e-12, atol=1e-12)


def test_nonlocal_gaussian_matrix_form_with_embeddings():
    x = _rand((2, 4, 4, 3), seed=28)
    D = 4
    tw, pw = _rand((3, D), 29), _rand((3, D), 30)
    B, H, W, C = x.shape
    N = H * W
    y = ref.nonlocal_gaussian(x, tw, pw)
    for b in range(B):
        X = x[b].reshape(N, C)
        A = _softmax_rows((X @ tw) @ (X @ pw).T / math.sqrt(D))  # scale by sqrt(D), not sqrt(C)
        np.testing.assert_allclose(y[b].reshape(N, C), A @ X, rtol=1e-12, atol=1e-12)


def test_identity_embeddings_match_no_embeddings():
    x = _rand((2, 3, 3, 4), seed=31)
    eye = np.eye(4)
    np.testing.assert_allclose(ref.nonlocal_gaussian(x, eye, eye), ref.nonlocal_gaussian(x), rtol=1e-12)
    np.testing.assert_allclose(ref.nonlocal_dot(x, eye, eye), ref.nonlocal_dot(x), rtol=1e-12)
    np.testing.assert_allclose(ref.bilateral_gaussian(x, 3, eye, eye), ref.bilateral_gaussian(x, 3), rtol=1e-12)
    np.testing.assert_allclose(ref.bilateral_dot(x, 3, eye, eye), ref.bilateral_dot(x, 3), rtol=1e-12)


# ---------------------------------------------------------------------------
# Hand-computed gaussian cases
# ---------------------------------------------------------------------------

def test_nonlocal_gaussian_two_pixel_hand_value():
    # 1x2 image, C = 1, values a and b, d = 1:
    #   y_0 = (e^{aa} a + e^{ab} b) / (e^{aa} + e^{ab})
    a, b = 0.8, -0.3
    y = ref.nonlocal_gaussian(_img([[a, b]]))[0, 0, :, 0]
    y0 = (math.exp(a * a) * a + math.exp(a * b) * b) / (math.exp(a * a) + math.exp(a * b))
    y1 = (math.exp(b * a) * a + math.exp(b * b) * b) / (math.exp(b * a) + math.exp(b * b))
    assert y[0] == pytest.approx(y0, rel=1e-12)
    assert y[1] == pytest.approx(y1, rel=1e-12)


def test_gaussian_scaling_uses_embedding_dim():
    # C = 1, theta_w = phi_w = [[1, 1, 1, 1]] (D = 4):
    # theta_i . phi_j = 4 x_i x_j, divided by sqrt(4) -> 2 x_i x_j.
    a, b = 0.6, -0.4
    w = np.ones((1, 4))
    y = ref.nonlocal_gaussian(_img([[a, b]]), w, w)[0, 0, :, 0]
    y0 = (math.exp(2 * a * a) * a + math.exp(2 * a * b) * b) / (math.exp(2 * a * a) + math.exp(2 * a * b))
    assert y[0] == pytest.approx(y0, rel=1e-12)


def test_bilateral_gaussian_hand_value_at_corner():
    # 1x3 image, window 3: the left pixel sees only itself and its right
    # neighbour (the out-of-image position is excluded, not a zero entry).
    a, b, c = 0.5, 1.0, -2.0
    y = ref.bilateral_gaussian(_img([[a, b, c]]), 3)[0, 0, :, 0]
    y0 = (math.exp(a * a) * a + math.exp(a * b) * b) / (math.exp(a * a) + math.exp(a * b))
    y1 = ((math.exp(b * a) * a + math.exp(b * b) * b + math.exp(b * c) * c)
          / (math.exp(b * a) + math.exp(b * b) + math.exp(b * c)))
    assert y[0] == pytest.approx(y0, rel=1e-12)
    assert y[1] == pytest.approx(y1, rel=1e-12)


def test_bilateral_dot_hand_value_at_corner():
    # 1x3 image, window 3, C = 1: divided by number of valid positions.
    a, b, c = 0.5, 1.0, -2.0
    y = ref.bilateral_dot(_img([[a, b, c]]), 3)[0, 0, :, 0]
    assert y[0] == pytest.approx((a * a * a + a * b * b) / 2.0, rel=1e-12)
    assert y[1] == pytest.approx((b * a * a + b * b * b + b * c * c) / 3.0, rel=1e-12)
    assert y[2] == pytest.approx((c * b * b + c * c * c) / 2.0, rel=1e-12)


def test_gaussian_weights_concentrate_on_dominant_similarity():
    # Single channel, all zeros except one pixel of value v. For that pixel
    # the score with itself is v^2 and 0 with every other pixel, so its
    # output is v * e^{v^2} / (e^{v^2} + N - 1), which tends to v (all weight
    # on itself). For every other pixel theta_i = 0, all scores are 0, the
    # weights are uniform and the output is the image mean v / N.
    H = W = 4
    N = H * W
    for v in (3.0, 10.0):
        rows = np.zeros((H, W))
        rows[1, 2] = v
        x = np.concatenate([_img(rows), _img(rows)], axis=0)
        y = ref.nonlocal_gaussian(x)
        expected_peak = v * math.exp(v * v) / (math.exp(v * v) + (N - 1))
        for b in range(2):
            assert y[b, 1, 2, 0] == pytest.approx(expected_peak, rel=1e-12)
            assert y[b, 1, 2, 0] > 0.99 * v          # weight on itself > 0.99
            others = np.delete(y[b, :, :, 0].ravel(), 1 * W + 2)
            np.testing.assert_allclose(others, v / N, rtol=1e-12)
        # windowed version: 9 valid positions around the (interior) peak
        yb = ref.bilateral_gaussian(x, 3)
        expected_peak_b = v * math.exp(v * v) / (math.exp(v * v) + 8)
        assert yb[0, 1, 2, 0] == pytest.approx(expected_peak_b, rel=1e-12)
        assert yb[0, 1, 2, 0] > 0.99 * v


def test_gaussian_large_scores_are_numerically_stable():
    x = _rand((2, 3, 3, 2), seed=32) * 40.0   # scores up to ~1e4
    for y in (ref.nonlocal_gaussian(x), ref.bilateral_gaussian(x, 3)):
        assert np.all(np.isfinite(y))


# ---------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("window", [0, 2, 4, -1])
def test_bad_window_rejected(window):
    x = _rand((2, 3, 3, 1))
    for op in (ref.mean_filter, ref.median_filter, ref.bilateral_gaussian, ref.bilateral_dot):
        with pytest.raises(ValueError):
            op(x, window)


def test_only_one_embedding_rejected():
    x = _rand((2, 3, 3, 2))
    with pytest.raises(ValueError):
        ref.nonlocal_gaussian(x, theta_w=np.eye(2))
    with pytest.raises(ValueError):
        ref.nonlocal_dot(x, phi_w=np.eye(2))
