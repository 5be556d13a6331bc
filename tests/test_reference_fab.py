"""Self-checks for the FAB-T reference in tests/reference_attacks.py.

Each test compares the reference against something known independently of it: a linear
program solved by scipy (HiGHS), a closed-form FAB step on a two-class linear model, and
facts any correct attack result must satisfy (misclassified, within eps, not closer than
the exact minimal distance found by bisection, at least as strong as random search). NumPy/SciPy only: no
TensorFlow, so the module runs in a couple of seconds.
"""

import numpy as np
import pytest
from scipy.optimize import linprog

from tests import reference_attacks as ref

LO, HI = 0.0, 255.0
HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@pytest.fixture(autouse=True)
def registries_restored():
    """Overrides the conftest fixture of the same name: this module registers nothing, and
    the conftest version imports the attack and network packages (TensorFlow)."""
    yield


# ---------------------------------------------------------------------------
# (a) the projection against a linear program
# ---------------------------------------------------------------------------

def _lp_min_linf_step(x, w, target):
    """min t s.t. |d_i| <= t, w.d = target, LO <= x + d <= HI (variables d, t)."""
    dim = len(x)
    cost = np.zeros(dim + 1)
    cost[-1] = 1.0
    eye = np.eye(dim)
    a_ub = np.block([[eye, -np.ones((dim, 1))], [-eye, -np.ones((dim, 1))]])
    bounds = [(LO - xi, HI - xi) for xi in x] + [(0.0, None)]
    return linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=np.append(w, 0.0)[None],
                   b_eq=[target], bounds=bounds, method="highs", options=HIGHS)


def _projection_cases(n_cases=200, seed=0):
    """Random small problems: (x, w, b, kind). Pixels partly on the box faces, some w_i = 0.

    b is placed relative to the range [lo, hi] of w.x over the box (computed directly):
    'near' = a small move (box rarely binds), 'inside' = anywhere in the range (the box
    usually binds), 'outside' = beyond the range (unreachable), 'on' = b = w.x (d = 0)."""
    rng = np.random.default_rng(seed)
    kinds = ["near", "inside", "inside", "outside", "on"]
    cases = []
    for i in range(n_cases):
        dim = int(rng.integers(5, 21))
        x = rng.uniform(LO, HI, dim)
        faces = rng.uniform(size=dim)
        x[faces < 0.1], x[faces > 0.9] = LO, HI
        w = rng.normal(size=dim) * rng.choice([0.01, 1.0, 100.0])
        w[rng.uniform(size=dim) < 0.15] = 0.0
        w[0] = w[0] if w[0] != 0 else 1.0
        lo = np.minimum(w * LO, w * HI).sum()
        hi = np.maximum(w * LO, w * HI).sum()
        kind = kinds[i % len(kinds)]
        if kind == "near":
            b = w @ x + rng.normal() * 0.02 * np.abs(w).sum()
        elif kind == "inside":
            b = lo + rng.uniform(0.02, 0.98) * (hi - lo)
        elif kind == "outside":
            b = rng.choice([lo - rng.uniform(0.05, 1.0) * (hi - lo),
                            hi + rng.uniform(0.05, 1.0) * (hi - lo)])
        else:
            b = w @ x
        cases.append((x, w, float(b), kind))
    return cases


def test_projection_matches_linear_program():
    kinds_seen, box_binds = set(), 0
    for x, w, b, kind in _projection_cases():
        d = ref.fab_project_linf(x[None], w[None], np.array([b]))[0]
        scale = np.abs(w).sum() * HI + abs(b)
        assert np.all(x + d >= LO - 1e-9) and np.all(x + d <= HI + 1e-9)
        assert np.all(d[w == 0] == 0)
        lp = _lp_min_linf_step(x, w, b - w @ x)
        lo = np.minimum(w * LO, w * HI).sum()
        hi = np.maximum(w * LO, w * HI).sum()
        if lo <= b <= hi:
            assert lp.status == 0, lp.message
            assert abs(w @ (x + d) - b) <= 1e-12 * scale
            assert np.abs(d).max() == pytest.approx(lp.fun, rel=1e-9, abs=1e-9)
            # the box binds when some coordinate stops short of the L-inf radius
            box_binds += np.any((w != 0) & (np.abs(d) < np.abs(d).max() - 1e-9))
        else:
            assert kind == "outside"
            assert lp.status == 2, lp.message                      # infeasible
            # the corner that moves w.x furthest towards b: LP over the box alone
            sense = 1.0 if b < w @ x else -1.0
            corner = linprog(sense * w, bounds=[(LO - xi, HI - xi) for xi in x],
                             method="highs", options=HIGHS)
            assert corner.status == 0
            assert w @ d == pytest.approx(corner.x @ w, rel=1e-9, abs=1e-9)
            assert w @ (x + d) == pytest.approx(lo if b < lo else hi, rel=1e-9, abs=1e-9)
            nz = w != 0
            np.testing.assert_allclose((x + d)[nz], np.where(sense * w[nz] > 0, LO, HI),
                                       rtol=0, atol=1e-9)
        kinds_seen.add(kind)
    assert kinds_seen == {"near", "inside", "outside", "on"}
    assert box_binds >= 40


def test_projection_rows_are_independent_and_scale_with_the_box():
    by_dim = {}
    for c in _projection_cases(100, seed=1):
        by_dim.setdefault(len(c[0]), []).append(c)
    cases = max(by_dim.values(), key=len)                # one dimension, all kinds mixed
    x = np.stack([c[0] for c in cases])
    w = np.stack([c[1] for c in cases])
    b = np.array([c[2] for c in cases])
    batched = ref.fab_project_linf(x, w, b)
    for i in range(len(x)):
        np.testing.assert_array_equal(batched[i], ref.fab_project_linf(x[i:i + 1], w[i:i + 1], b[i:i + 1])[0])
    # [0, 1] box with x / 255 is the same problem scaled by 1/255
    np.testing.assert_allclose(ref.fab_project_linf(x / HI, w, b / HI, 0.0, 1.0), batched / HI,
                               rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# (b) closed-form FAB steps on a two-class linear model
# ---------------------------------------------------------------------------

def _two_class_problem(seed=0):
    """4x4x3 images around 128 on a 2-class model, correctly classified with a margin so
    small that the projection moves every pixel by far less than its distance to the box."""
    rng = np.random.default_rng(seed)
    n, dim = 6, 48
    x = rng.uniform(100.0, 156.0, (n, 4, 4, 3))
    W = rng.normal(size=(dim, 2))
    y = rng.integers(0, 2, n)
    w = (W[:, 1] - W[:, 0])[None] * np.where(y == 0, 1.0, -1.0)[:, None]   # grad of z_t - z_y
    margin = rng.uniform(1.0, 20.0, n)                  # z_y - z_t at the clean image
    return x, W, y, w, x.reshape(n, -1), margin


@pytest.mark.parametrize("alpha_max", [0.0, 0.1])
def test_first_two_fab_steps_have_closed_form(alpha_max):
    x, W, y, w, flat, margin = _two_class_problem()
    eta, beta = 1.05, 0.9
    for i in range(len(x)):
        # per-image bias: z_t - z_y = -margin[i] at the clean image
        t = 1 - y[i]
        bias = np.zeros(2)
        bias[t] = -margin[i] - (flat[i] @ W[:, t] - flat[i] @ W[:, y[i]])
        run = ref.fab_targeted_linear(W, bias, x[i:i + 1], y[i:i + 1], [t], n_iter=2,
                                      alpha_max=alpha_max, eta=eta, beta=beta)
        lam = margin[i] / np.abs(w[i]).sum()            # L-inf distance to the boundary
        direction = np.sign(w[i])
        assert lam < 5.0                                 # far from the box: nothing binds
        # step 1 from x1 = x0: d1 = d2, so x1 = x0 + eta * d (alpha plays no role)
        x1 = run["trace"][0, 0].reshape(-1)
        np.testing.assert_allclose(x1, flat[i] + eta * lam * direction, rtol=1e-13, atol=1e-11)
        z1 = x1 @ W + bias
        assert z1[t] - z1[y[i]] == pytest.approx((eta - 1.0) * margin[i], rel=1e-9)
        # misclassified -> back-step to x0 + beta * eta * lam * sign(w); the gap left is
        # (1 - beta eta) * margin, a1 = (1 - beta eta) lam, a2 = lam
        a1, a2 = (1.0 - beta * eta) * lam, lam
        alpha = min(a1 / (a1 + a2), alpha_max)
        coef = (beta * eta + eta * (1.0 - beta * eta)) * (1.0 - alpha) + eta * alpha
        x2 = run["trace"][1, 0].reshape(-1)
        np.testing.assert_allclose(x2, flat[i] + coef * lam * direction, rtol=1e-13, atol=1e-11)
        # both points are misclassified; the second is closer and is the one kept
        assert coef < eta
        assert run["found"][0]
        assert run["distance"][0] == pytest.approx(coef * lam, rel=1e-12)
        np.testing.assert_allclose(run["adv"][0], x2.reshape(x.shape[1:]), rtol=1e-13, atol=1e-11)


# ---------------------------------------------------------------------------
# (c) FAB-T on a 5-class model of 8x8x3 images
# ---------------------------------------------------------------------------

def _five_class_problem(seed=0):
    rng = np.random.default_rng(seed)
    n, k = 40, 5
    x = rng.uniform(LO, HI, (n, 8, 8, 3))
    x[:, :2] = LO                                        # some pixels on the box faces
    x[:, -1] = HI
    W = rng.normal(size=(8 * 8 * 3, k)) / 100.0
    bias = rng.normal(size=k)
    y = np.argmax(x.reshape(n, -1) @ W + bias, axis=1)
    y[:6] = (y[:6] + 1 + rng.integers(0, k - 1, 6)) % k  # misclassified from the start
    return x, W, bias, y


def _exact_min_distance(W, bias, x, y, n_bisect=80):
    """Smallest L-inf radius r (inside the box) at which some class j != y can reach
    z_j >= z_y, i.e. the exact distance to misclassification of a linear model.

    Within radius r the largest achievable gain of z_j - z_y = v.(x + d) + c is separable:
    each coordinate takes the end of [max(-r, LO - x_i), min(r, HI - x_i)] that v_i favours.
    That gain is nondecreasing in r, so bisection on r (to machine precision) finds the
    radius. Images that cannot reach any class get inf."""
    flat = x.reshape(len(x), -1)
    k = W.shape[1]
    v = (W.T[None, :, :] - W.T[y][:, None, :])             # [N, K, D], rows j == y are 0
    gap = -(flat @ W + bias - (flat @ W + bias)[np.arange(len(x)), y][:, None])   # z_y - z_j

    def best_gain(r):
        down = np.maximum(-r[..., None], LO - flat[:, None, :])
        up = np.minimum(r[..., None], HI - flat[:, None, :])
        return np.maximum(v * down, v * up).sum(axis=2)

    lo = np.zeros((len(x), k))
    hi = np.full((len(x), k), HI - LO)
    reachable = best_gain(hi) >= gap
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        ok = best_gain(mid) >= gap
        lo, hi = np.where(ok, lo, mid), np.where(ok, mid, hi)
    hi[~reachable] = np.inf
    hi[np.arange(len(x)), y] = np.inf
    return hi.min(axis=1)


def test_fab_t_breaks_only_within_eps_and_beats_random_search():
    x, W, bias, y = _five_class_problem()
    n = len(x)
    flat = x.reshape(n, -1)
    correct = np.argmax(flat @ W + bias, axis=1) == y
    exact = _exact_min_distance(W, bias, x, y)
    eps = float(np.median(exact[correct]))

    res = ref.fab_t_linear(W, bias, x, y, eps, target_classes=4, n_iter=100)
    adv, robust = res["adv"], res["robust"]
    broken = correct & ~robust
    adv_flat = adv.reshape(n, -1)
    dist = np.abs(adv_flat - flat).max(axis=1)

    np.testing.assert_array_equal(res["clean_correct"], correct)
    assert (~correct).sum() == 6 and broken.sum() >= 5
    # images misclassified at the start: untouched, not robust
    np.testing.assert_array_equal(adv[~correct], x[~correct])
    assert not robust[~correct].any() and np.all(res["distance"][~correct] == 0)
    # broken images: misclassified, within eps, inside the box, not closer than possible
    assert np.all(np.argmax(adv_flat[broken] @ W + bias, axis=1) != y[broken])
    assert np.all(dist[broken] <= eps)
    np.testing.assert_array_equal(res["distance"][broken], dist[broken])
    assert np.all(adv >= LO) and np.all(adv <= HI)
    assert np.all(dist[broken] >= exact[broken] * (1 - 1e-9))
    assert np.all(res["broken_by"][broken] >= 2) and np.all(res["broken_by"][~broken] == 0)
    # robust images: untouched
    np.testing.assert_array_equal(adv[robust], x[robust])
    assert np.all(np.isinf(res["distance"][robust]))
    # on a linear model FAB converges to the boundary: everything clearly inside eps breaks
    assert not (robust & (exact < eps / 1.05)).any()

    # random search in the eps-ball (corners x + eps * sign, the strongest random points
    # for a linear model) leaves at least as many images robust
    rng = np.random.default_rng(1)
    rand_robust = correct.copy()
    for _ in range(200):
        cand = np.clip(flat + eps * rng.choice([-1.0, 1.0], flat.shape), LO, HI)
        rand_robust &= np.argmax(cand @ W + bias, axis=1) == y
    assert robust.sum() <= rand_robust.sum()
    assert robust.sum() < correct.sum()


def test_fab_t_target_order_and_validation():
    x, W, bias, y = _five_class_problem()
    with pytest.raises(ValueError):
        ref.fab_t_linear(W, bias, x, y, 1.0, target_classes=5)
    # one target rank only = one targeted run against the runner-up class
    n = len(x)
    logits = x.reshape(n, -1) @ W + bias
    eps = 1e9
    res = ref.fab_t_linear(W, bias, x, y, eps, target_classes=1, n_iter=20)
    run = ref.fab_targeted_linear(W, bias, x, y, ref.apgd_target_class(logits, 2), n_iter=20)
    np.testing.assert_array_equal(res["robust"], run["attacked"] & ~run["found"])
    np.testing.assert_array_equal(res["adv"], run["adv"])
