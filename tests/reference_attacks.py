"""Plain NumPy (float64) references for APGD, the DLR losses and the Square attack schedule.

Written from the papers and checked against the behaviour of the authors' code; nothing
here is copied from AutoAttack or ART. Meant for testing a TensorFlow implementation on
tiny inputs, not for speed.

Papers:

* [APGD] F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690).
  Sec. 3.1: gradient step with momentum; Sec. 3.2: step-size schedule (checkpoints,
  Conditions 1 and 2, restart from the best point), Algorithm 1; Sec. 4: the DLR loss
  and its targeted version; Sec. 5: AutoAttack.
* [Square] M. Andriushchenko, F. Croce, N. Flammarion, M. Hein, "Square Attack: a
  query-efficient black-box adversarial attack via random search", ECCV 2020
  (arXiv:1912.00049). Sec. 3: random search (Alg. 1) and the L-inf square proposals
  (Alg. 2); the piecewise-constant schedule of p is the authors' choice
  (halving at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000 iterations).

Conventions:

* Images are float arrays [N, H, W, C] (or already flat [N, D]) on the 0..255 scale;
  every projection clips to the eps-ball around the clean image and to [0, 255].
* A linear model is ``logits = x.reshape(N, -1) @ W + b`` with W of shape [D, K].
* Iterates: x^(0) is the start point, x^(k) the point after k gradient steps. A loss
  trace of one image is ``losses[k] = f(x^(k))`` for k = 0..n_iter, the loss of the
  iterate as computed by its gradient step (before any restart replaces it).
* A checkpoint w means: the halving test runs right after x^(w) has been evaluated; if
  the step is halved, x^(w) is replaced by the best point so far and the step from
  x^(w) to x^(w+1) already uses the halved size. This is the timing of the authors'
  code (autopgd_base.py). Algorithm 1 of [APGD] tests "k in W" one iterate later
  (after computing x^(k+1)), which is also what ART 1.20.1 does.
"""

import math
from fractions import Fraction

import numpy as np

DLR_EPS = 1e-12          # added to the DLR denominators, as in [APGD] Sec. 4 and the authors' code
APGD_ALPHA = 0.75        # momentum, [APGD] Sec. 3.1
APGD_RHO = 0.75          # Condition 1 threshold, [APGD] Sec. 3.2


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _logits_labels(logits, labels, min_classes):
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError("logits must be [N, K], got shape %r" % (z.shape,))
    if z.shape[1] < min_classes:
        raise ValueError("this loss needs at least %d classes, got %d" % (min_classes, z.shape[1]))
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ValueError("need one label per row of logits")
    return z, y


def _rows(n):
    return np.arange(n)


def _best_other(z, y):
    """max_{i != y} z_i per row, and its index (the first one on ties)."""
    masked = z.copy()
    masked[_rows(len(y)), y] = -np.inf
    idx = np.argmax(masked, axis=1)
    return masked[_rows(len(y)), idx], idx


def _sorted_desc_indices(z):
    """pi: indices of each row's logits in decreasing order (stable on ties)."""
    return np.argsort(-z, axis=1, kind="stable")


def _softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# Losses (all are maximised by APGD; Square minimises the margin)
# ---------------------------------------------------------------------------

def cross_entropy(logits, labels):
    """Per-row cross-entropy -log softmax(z)_y (what APGD-CE maximises)."""
    z, y = _logits_labels(logits, labels, 1)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return lse - z[_rows(len(y)), y]


def dlr_loss(logits, labels):
    """Untargeted Difference-of-Logits-Ratio loss of [APGD] Sec. 4, per row.

        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)

    pi sorts the logits in DEcreasing order (z_pi1 >= z_pi2 >= ...). Sign: the
    attack MAXIMISES this value; it is negative while the point is classified
    correctly (z_y is the largest logit) and positive once it is misclassified.
    The 1e-12 is added to the denominator only (DLR_EPS). Needs K >= 3 classes.
    The value is invariant to shifting and (positive) scaling of the logits.
    """
    z, y = _logits_labels(logits, labels, 3)
    zs = -np.sort(-z, axis=1)
    other, _ = _best_other(z, y)
    return -(z[_rows(len(y)), y] - other) / (zs[:, 0] - zs[:, 2] + DLR_EPS)


def targeted_dlr_loss(logits, labels, targets):
    """Targeted DLR of [APGD] Sec. 4 (used by APGD-T), per row.

        DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

    Maximised by the attack (it grows as z_t overtakes z_y). pi sorts in decreasing
    order; 1e-12 in the denominator only. Needs K >= 4 classes.
    """
    z, y = _logits_labels(logits, labels, 4)
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    zs = -np.sort(-z, axis=1)
    r = _rows(len(y))
    return -(z[r, y] - z[r, t]) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + DLR_EPS)


def margin_loss(logits, labels):
    """Square attack's untargeted margin z_y - max_{i != y} z_i on logits (minimised;
    <= 0 means misclassified). [Square] Sec. 3; authors' code loss='margin'."""
    z, y = _logits_labels(logits, labels, 2)
    other, _ = _best_other(z, y)
    return z[_rows(len(y)), y] - other


def _loss_grad_logits(z, y, loss, targets):
    """(loss per row, d loss / d logits) for loss in {'ce', 'dlr', 'dlr-targeted'}.

    For DLR the sorted positions are treated as fixed (the subgradient autograd gives
    through sort/max); ties have probability zero for random weights.
    """
    n, k = z.shape
    r = _rows(n)
    eye = np.eye(k)
    if loss == "ce":
        return cross_entropy(z, y), _softmax_rows(z) - eye[y]
    pi = _sorted_desc_indices(z)
    if loss == "dlr":
        _, other = _best_other(z, y)
        num = z[r, y] - z[r, other]
        den = z[r, pi[:, 0]] - z[r, pi[:, 2]] + DLR_EPS
        d_num = eye[y] - eye[other]
        d_den = eye[pi[:, 0]] - eye[pi[:, 2]]
    elif loss == "dlr-targeted":
        t = np.asarray(targets, dtype=np.int64).reshape(-1)
        num = z[r, y] - z[r, t]
        den = z[r, pi[:, 0]] - 0.5 * (z[r, pi[:, 2]] + z[r, pi[:, 3]]) + DLR_EPS
        d_num = eye[y] - eye[t]
        d_den = eye[pi[:, 0]] - 0.5 * (eye[pi[:, 2]] + eye[pi[:, 3]])
    else:
        raise ValueError("loss must be 'ce', 'dlr' or 'dlr-targeted', got %r" % (loss,))
    value = -num / den
    grad = -d_num / den[:, None] + (num / den ** 2)[:, None] * d_den
    return value, grad


def linear_loss_and_grad(W, b, x, y, loss, targets=None):
    """Loss per image and its gradient w.r.t. the image for logits = flat(x) @ W + b."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    z = x.reshape(len(x), -1) @ W + np.asarray(b, dtype=np.float64)
    value, g_logits = _loss_grad_logits(z, np.asarray(y, dtype=np.int64), loss, targets)
    return value, (g_logits @ W.T).reshape(x.shape), z


# ---------------------------------------------------------------------------
# APGD step-size schedule
# ---------------------------------------------------------------------------

def apgd_checkpoints(n_iter, variant="autoattack"):
    """Checkpoints w_1 < w_2 < ... <= n_iter where APGD tests whether to halve the step.

    [APGD] Sec. 3.2: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    w_j = ceil(p_j * n_iter) <= n_iter. The variants:

    * "paper": that formula in exact rational arithmetic, while p_j <= 1
      (p = .22, .41, .57, .70, .80, .87, .93, .99), duplicates removed.
    * "autoattack": the authors' code (autopgd_base.py, APGDAttack.__init__ and the
      counter3/k logic of attack_single_run): interval lengths with FLOORs,
      first = max(int(0.22 n), 1), then shrink by max(int(0.03 n), 1) down to a floor
      of max(int(0.06 n), 1), and the test repeats every such interval until n_iter.
      Same as "paper" when 0.22n, 0.03n and 0.06n are integers (n = 100: 22, 41, 57,
      70, 80, 87, 93, 99), different otherwise (n = 50: 11, 21, 30, 38, 45 vs paper
      11, 21, 29, 35, 40, 44, 47, 50).
    * "art": ART 1.20.1 (auto_projected_gradient_descent.py): the formula in float
      arithmetic, so ceil() is hit by rounding error (n = 100 gives 58 instead of 57,
      n = 1000 gives 411, 571, 701). Returned as ART's loop indices k (0 < k < n_iter);
      ART tests after computing x^(k+1), i.e. the Algorithm-1 timing, one iterate
      later than the convention of this module.
    """
    n_iter = int(n_iter)
    if n_iter < 1:
        raise ValueError("n_iter must be >= 1")
    if variant == "paper":
        p = [Fraction(0), Fraction(22, 100)]
        while True:
            nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
            if nxt > 1:
                break
            p.append(nxt)
        return sorted({math.ceil(pj * n_iter) for pj in p[1:]})
    if variant == "autoattack":
        length = max(int(0.22 * n_iter), 1)
        shrink = max(int(0.03 * n_iter), 1)
        floor = max(int(0.06 * n_iter), 1)
        points, at = [], 0
        while at + length <= n_iter:
            at += length
            points.append(at)
            length = max(length - shrink, floor)
        return points
    if variant == "art":
        p = [0.0, 0.22]
        while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
            p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        return sorted({math.ceil(pj * n_iter) for pj in p if 0 < math.ceil(pj * n_iter) < n_iter})
    raise ValueError("variant must be 'paper', 'autoattack' or 'art', got %r" % (variant,))


def apgd_halving_decisions(losses, checkpoints, rho=APGD_RHO, variant="autoattack", n_iter=None):
    """Whether APGD halves the step at each checkpoint, for ONE image.

    losses: 1-D trace f(x^(0)), f(x^(1)), ..., (length >= checkpoints[-1] + 1); the
        loss of each iterate as produced by its gradient step (see module docstring).
    checkpoints: increasing w_1 < w_2 < ... (e.g. apgd_checkpoints(n_iter, variant)).
    n_iter: the run's length, only used by the "autoattack" first-interval quirk below
        (default: len(losses) - 1, i.e. the full trace was given).
    Returns a bool array, one entry per checkpoint.

    With w_0 = 0, f_max(k) = max_{i <= k} f(x^(i)) and h = w_j - w_{j-1}, the step is
    halved at w_j if Condition 1 or Condition 2 holds ([APGD] Sec. 3.2):

    1. #{i in [w_{j-1}, w_j - 1] : f(x^(i+1)) > f(x^(i))} < rho * h
       (too few of the steps since the last checkpoint increased the loss);
    2. the step was not halved at w_{j-1} and f_max(w_{j-1}) == f_max(w_j)
       (no progress with an unchanged step).

    variant "paper" applies these literally (at w_1 the step is unchanged since w_0 = 0,
    so Condition 2 can fire there). variant "autoattack" reproduces the authors' code
    (autopgd_base.py: check_oscillation and fl_reduce_no_impr):
      - Condition 1 uses "<=" (t <= k * k3) instead of "<";
      - for the first interval the pair i = 0 compares f(x^(1)) against 0.0 instead of
        f(x^(0)) (loss_steps[-1] of a zero-initialised buffer; it is f(x^(n_iter)) only
        if w_1 == n_iter);
      - Condition 2 never fires at w_1 (reduced_last_check starts at ones).
    """
    f = np.asarray(losses, dtype=np.float64).reshape(-1)
    w = [int(c) for c in checkpoints]
    if any(b <= a for a, b in zip([0] + w, w)):
        raise ValueError("checkpoints must be strictly increasing and positive")
    if len(f) < w[-1] + 1:
        raise ValueError("need losses up to x^(%d)" % w[-1])
    if variant not in ("paper", "autoattack"):
        raise ValueError("variant must be 'paper' or 'autoattack', got %r" % (variant,))
    n_iter = len(f) - 1 if n_iter is None else int(n_iter)
    decisions = []
    prev, halved_prev = 0, False
    for j, wj in enumerate(w):
        h = wj - prev
        increases = 0
        for i in range(prev, wj):
            before = f[i]
            if variant == "autoattack" and i == 0:
                before = f[n_iter] if wj >= n_iter else 0.0
            increases += f[i + 1] > before
        if variant == "paper":
            cond1 = increases < rho * h
            cond2 = (not halved_prev) and f[:prev + 1].max() == f[:wj + 1].max()
        else:
            cond1 = increases <= rho * h
            cond2 = j > 0 and (not halved_prev) and f[:prev + 1].max() >= f[:wj + 1].max()
        halve = bool(cond1 or cond2)
        decisions.append(halve)
        prev, halved_prev = wj, halve
    return np.array(decisions, dtype=bool)


# ---------------------------------------------------------------------------
# APGD on a linear model (L-inf)
# ---------------------------------------------------------------------------

def project_linf(x_adv, x, eps, clip_min=0.0, clip_max=255.0):
    """Projection onto {|x_adv - x|_inf <= eps} intersected with [clip_min, clip_max]."""
    return np.clip(np.clip(x_adv, x - eps, x + eps), clip_min, clip_max)


def autoattack_linf_start(x, eps, uniform, clip_min=0.0, clip_max=255.0):
    """APGD's L-inf random start in the authors' code: t = 2u - 1 with u ~ U[0, 1)^d,
    x0 = clip(x + eps * t / max|t|) per image. So each image has one coordinate at
    exactly +-eps (NOT a plain uniform draw in the ball). `uniform` is u, same shape as x."""
    x = np.asarray(x, dtype=np.float64)
    t = 2.0 * np.asarray(uniform, dtype=np.float64) - 1.0
    scale = np.abs(t.reshape(len(t), -1)).max(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip(x + eps * t / (scale + 1e-12), clip_min, clip_max)


def apgd_target_class(clean_logits, target_rank):
    """APGD-T / FAB-T target of run `target_rank` (2 .. n_target_classes + 1): the class
    with the target_rank-th LARGEST clean logit (rank 2 = runner-up). Authors' code:
    output.sort(dim=1)[1][:, -target_class]."""
    z = np.asarray(clean_logits, dtype=np.float64)
    return np.argsort(z, axis=1, kind="stable")[:, -int(target_rank)]


def apgd_linear(W, b, x, y, eps, n_iter, loss="ce", x_init=None, targets=None,
                variant="autoattack", rho=APGD_RHO, alpha=APGD_ALPHA,
                clip_min=0.0, clip_max=255.0):
    """One APGD run (L-inf, no restarts) on the linear classifier logits = flat(x) @ W + b.

    [APGD] Sec. 3.1-3.2 / Algorithm 1, with the bookkeeping of the authors' code:
      eta = 2 * eps per image;
      x^(1) = P(x^(0) + eta * sign(g(x^(0))))                       (no momentum);
      z = P(x^(k) + eta * sign(g(x^(k)))),
      x^(k+1) = P(x^(k) + alpha (z - x^(k)) + (1 - alpha)(x^(k) - x^(k-1)))   k >= 1;
      the best point (highest loss, strict ">") and its gradient are kept;
      at checkpoint w (apgd_checkpoints(n_iter, variant)) an image whose step is halved
      (apgd_halving_decisions) gets eta /= 2 and x^(w) := x_best, g := g_best; the next
      momentum term is then x_best - x^(w-1).
    P clips to the eps-ball and to [clip_min, clip_max]. sign(0) = 0.

    x: [N, ...] clean images, y: [N] labels, W: [D, K], b: [K].
    x_init: start point x^(0) (e.g. autoattack_linf_start(...)); None = the clean x.
    loss: 'ce', 'dlr' or 'dlr-targeted' (then `targets` is required).
    variant: 'autoattack' or 'paper' (checkpoints and halving conditions).

    Returns a dict:
      x_best [N, ...]   the highest-loss point (what perturb(best_loss=True) returns);
      loss_best [N];
      x_adv [N, ...]    the LAST iterate x^(k), k = 0..n_iter, that was misclassified
                        (argmax != y), else x^(0) -- what AutoAttack returns;
      fooled [N] bool   some iterate x^(0..n_iter) was misclassified;
      losses [N, n_iter + 1], steps [N, n_iter] (eta used for step k -> k+1),
      checkpoints [J], halved [N, J].
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    n = len(x)
    if loss == "dlr-targeted" and targets is None:
        raise ValueError("loss 'dlr-targeted' needs targets")
    shape_b = (-1,) + (1,) * (x.ndim - 1)
    checkpoints = apgd_checkpoints(n_iter, variant)
    x_k = x.copy() if x_init is None else project_linf(np.asarray(x_init, dtype=np.float64),
                                                         x, eps, clip_min, clip_max)

    f, g, z = linear_loss_and_grad(W, b, x_k, y, loss, targets)
    losses = np.zeros((n, n_iter + 1))
    steps = np.zeros((n, n_iter))
    halved = np.zeros((n, len(checkpoints)), dtype=bool)
    losses[:, 0] = f
    fooled = np.argmax(z, axis=1) != y
    x_adv = x_k.copy()
    x_best, g_best, loss_best = x_k.copy(), g.copy(), f.copy()
    eta = np.full(n, 2.0 * eps)
    x_prev = x_k.copy()

    for k in range(n_iter):
        a = 1.0 if k == 0 else alpha
        e = eta.reshape(shape_b)
        z_step = project_linf(x_k + e * np.sign(g), x, eps, clip_min, clip_max)
        x_new = project_linf(x_k + a * (z_step - x_k) + (1.0 - a) * (x_k - x_prev),
                             x, eps, clip_min, clip_max)
        steps[:, k] = eta
        x_prev, x_k = x_k, x_new
        f, g, z = linear_loss_and_grad(W, b, x_k, y, loss, targets)
        losses[:, k + 1] = f

        wrong = np.argmax(z, axis=1) != y
        x_adv[wrong] = x_k[wrong]
        fooled |= wrong
        better = f > loss_best
        x_best[better], g_best[better], loss_best[better] = x_k[better], g[better], f[better]

        if k + 1 in checkpoints:
            j = checkpoints.index(k + 1)
            for i in range(n):
                halve = apgd_halving_decisions(losses[i, :k + 2], checkpoints[:j + 1],
                                               rho, variant, n_iter)[-1]
                halved[i, j] = halve
                if halve:
                    eta[i] /= 2.0
                    x_k[i] = x_best[i]
                    g[i] = g_best[i]

    return {"x_best": x_best, "loss_best": loss_best, "x_adv": x_adv, "fooled": fooled,
            "losses": losses, "steps": steps, "checkpoints": checkpoints, "halved": halved}


# ---------------------------------------------------------------------------
# Square attack (L-inf) schedule and proposal
# ---------------------------------------------------------------------------

SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p_schedule(p_init, iteration, n_queries=10000, rescale=True):
    """Fraction p of pixels changed at `iteration` (0-based) of the Square attack.

    The authors' schedule is written for 10000 iterations: p = p_init until it = 10,
    then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (intervals are
    (a, b], so it = 10 still uses p_init and it = 11 uses p_init / 2).
    rescale=True: it = int(iteration / n_queries * 10000) first (original square-attack
    repo p_selection, always; AutoAttack's SquareAttack with resc_schedule=True).
    rescale=False: the raw iteration is used -- what AutoAttack's *standard* version runs
    (resc_schedule=False, n_queries=5000, so p never goes below p_init / 128).
    """
    it = int(iteration / n_queries * 10000) if rescale else int(iteration)
    halvings = sum(it > t for t in SQUARE_HALVINGS)
    return p_init / 2 ** halvings


def square_side_length(p, height, width, variant="autoattack"):
    """Side s of the square window for fraction p on an H x W image (all channels).

    s = max(int(round(sqrt(p * n_features / channels))), 1) = max(int(round(sqrt(p*H*W))), 1)
    with Python's round (half to even), then clamped:
      "autoattack": s = min(s, min(H, W))            (auto-attack square.py)
      "original":   s = min(s, H - 1)                (max-andr/square-attack attack.py)
      "art":        no upper clamp                   (ART 1.20.1; randint fails if s >= H)
    The window's top-left corner is then drawn uniformly from {0, ..., H - s - 1} (upper
    end exclusive in all three codes, so the last row/column is never a window start;
    AutoAttack uses 0 when s == H).
    """
    s = max(int(round(math.sqrt(p * height * width))), 1)
    if variant == "autoattack":
        return min(s, min(height, width))
    if variant == "original":
        return min(s, height - 1)
    if variant == "art":
        return s
    raise ValueError("variant must be 'autoattack', 'original' or 'art', got %r" % (variant,))


def square_linf_init(x, eps, stripe_signs, clip_min=0.0, clip_max=255.0):
    """Square attack's L-inf start: vertical stripes, x + eps * sign per (image, column,
    channel), constant along each column ([Square] Sec. 3). stripe_signs: [N, W, C] of +-1."""
    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(stripe_signs, dtype=np.float64)[:, None, :, :]
    return np.clip(x + eps * s, clip_min, clip_max)


def square_linf_proposal(x, x_best, eps, row, col, size, channel_signs,
                         clip_min=0.0, clip_max=255.0):
    """One L-inf Square proposal in NHWC ([Square] Alg. 2, as AutoAttack codes it):
    add 2 * eps * sign_c on the size x size window at (row, col), project to the eps-ball
    around x and to [clip_min, clip_max]. Inside the window every pixel ends at x +- eps
    (clipped); outside it x_best is unchanged. channel_signs: [C] or [N, C] of +-1.
    The proposal is accepted if it lowers the margin loss (strictly) or misclassifies."""
    x = np.asarray(x, dtype=np.float64)
    delta = np.zeros_like(x)
    signs = np.asarray(channel_signs, dtype=np.float64)
    signs = signs.reshape((-1, 1, 1, x.shape[3]))
    delta[:, row:row + size, col:col + size, :] = 2.0 * eps * signs
    return project_linf(np.asarray(x_best, dtype=np.float64) + delta, x, eps, clip_min, clip_max)


# ---------------------------------------------------------------------------
# AutoAttack composite
# ---------------------------------------------------------------------------

AUTOATTACK_STANDARD_LINF = ("apgd-ce", "apgd-t", "fab-t", "square")


def autoattack_robust_accuracy(clean_correct, fooled_per_attack):
    """Robust accuracy after each attack of an AutoAttack-style cascade.

    clean_correct: [N] bool. fooled_per_attack: list (in run order) of [N] bool arrays,
    "attack a found an adversarial example for point n when run on it". Each attack is
    run only on points still robust after the previous ones, so a point counts as robust
    at the end iff it is clean-correct and no attack fooled it; entries of
    fooled_per_attack for points already non-robust are ignored.
    Returns [clean accuracy, accuracy after attack 1, ...].
    """
    robust = np.asarray(clean_correct, dtype=bool).copy()
    out = [robust.mean()]
    for fooled in fooled_per_attack:
        robust &= ~np.asarray(fooled, dtype=bool)
        out.append(robust.mean())
    return out


# ---------------------------------------------------------------------------
# FAB-T (L-inf) on a linear model
# ---------------------------------------------------------------------------
#
# [FAB] F. Croce, M. Hein, "Minimally distorted adversarial examples with a fast
# adaptive boundary attack", ICML 2020 (arXiv:1907.02044). Sec. 2: the linearised
# decision boundary and its box-constrained projection (Sec. 2.1, L-inf case), the
# biased step towards the clean image (alpha, alpha_max), the extrapolation eta and the
# backward step beta (Algorithm 1). The targeted variant (FAB-T) used by the standard
# AutoAttack replaces "closest decision boundary" by the boundary between the label and
# one target class; the bookkeeping below follows the authors' code
# (auto-attack fab_base.py: attack_single_run with is_targeted=True and the targeted
# branch of perturb; fab_projections.py: projection_linf). Differences from that code:
# float64 instead of float32, the box is [clip_min, clip_max] instead of [0, 1], and the
# projection is solved by sorting + cumulative sums instead of a bisection over the
# sorted breakpoints (same minimiser, see fab_project_linf).

FAB_NORM_FLOOR = 1e-8    # authors' clamp of ||d1||, ||d2|| on the [0, 1] scale; scaled by the box width


def fab_project_linf(points, w, b, clip_min=0.0, clip_max=255.0):
    """Minimal L-inf step onto the hyperplane {x : w.x = b} inside the box, per row.

    points t [N, D], w [N, D], b [N] -> d [N, D] minimising ||d||_inf subject to
    w.(t + d) = b and clip_min <= t + d <= clip_max ([FAB] Sec. 2.1; authors'
    projection_linf with the box [0, 1] replaced by [clip_min, clip_max]). The points are
    expected inside the box (a coordinate outside it gets p_i = 0 below, i.e. it stays).

    Derivation. Let r = w.t - b, s = sign(r) (sign(0) := +1) and c = |r|. The step has to
    lower s * w.x by c. Coordinate i helps by moving in direction u_i = -s * sign(w_i)
    (u_i = 0 when w_i == 0, so those coordinates never move), by at most
    p_i = (distance from t_i to the bound in direction u_i). If every coordinate moves
    min(lam, p_i), which is the best a step of L-inf radius lam can do, s * w.x drops by

        g(lam) = sum_i |w_i| min(lam, p_i),

    piecewise linear, continuous and nondecreasing in lam, with breakpoints at the p_i and
    maximum g_max = sum_i |w_i| p_i. So:

    * c < g_max (reachable): with the p_i sorted ascending (q_0 <= q_1 <= ...) and the
      matching weights |w| (v_0, v_1, ...), on [q_{k-1}, q_k] (q_{-1} = 0)
          g(lam) = P_k + lam * S_k,  P_k = sum_{j<k} v_j q_j,  S_k = sum_{j>=k} v_j;
      k is the first index with g(q_k) >= c, lam = (c - P_k) / S_k (S_k > 0 there), and
      d_i = u_i * min(lam, p_i). ||d||_inf = lam is the optimum (any step of smaller
      radius lowers s * w.x by at most g(radius) < c).
    * c >= g_max (unreachable, or reachable only at the corner): d_i = u_i * p_i, the box
      corner that moves w.x furthest towards b -- what the authors' code returns (their d
      is initialised to that corner and only overwritten for reachable rows).
    r == 0 gives d = 0.
    """
    t = np.asarray(points, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if t.ndim != 2 or w.shape != t.shape or b.shape[0] != t.shape[0]:
        raise ValueError("need points [N, D], w [N, D], b [N]; got %r, %r, %r"
                         % (t.shape, w.shape, b.shape))
    r = np.einsum("nd,nd->n", w, t) - b
    s = np.where(r >= 0, 1.0, -1.0)
    c = np.abs(r)
    u = -np.sign(w) * s[:, None]                       # helpful direction, 0 where w == 0
    room = np.where(u > 0, clip_max - t, t - clip_min)
    p = np.where(u != 0, np.maximum(room, 0.0), 0.0)   # how far each coordinate can help
    v = np.abs(w)

    order = np.argsort(p, axis=1, kind="stable")
    q = np.take_along_axis(p, order, axis=1)
    vq = np.take_along_axis(v, order, axis=1)
    n, dim = q.shape
    zeros = np.zeros((n, 1))
    prefix = np.concatenate([zeros, np.cumsum(vq * q, axis=1)[:, :-1]], axis=1)   # P_k
    suffix = np.cumsum(vq[:, ::-1], axis=1)[:, ::-1]                             # S_k
    g_at_q = prefix + q * suffix                                                 # g(q_k)
    g_max = g_at_q[:, -1]                                                        # = sum |w| p

    reachable = c < g_max
    k = np.argmax(g_at_q >= c[:, None], axis=1)        # first breakpoint with g >= c
    rows = np.arange(n)
    p_k, s_k = prefix[rows, k], suffix[rows, k]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(reachable, np.maximum(c - p_k, 0.0) / np.where(reachable, s_k, 1.0),
                       np.inf)
    return u * np.minimum(lam[:, None], p)


def fab_targeted_linear(W, bias, x, y, targets, n_iter=100, alpha_max=0.1, eta=1.05, beta=0.9,
                        clip_min=0.0, clip_max=255.0):
    """ONE targeted FAB run (L-inf, no random start) on logits = flat(x) @ W + bias.

    [FAB] Algorithm 1 as the authors' code runs it (fab_base.py attack_single_run,
    is_targeted=True, use_rand_start=False). x: [N, H, W, C] or [N, D] clean images,
    y: [N] labels, targets: [N] target classes (e.g. apgd_target_class(logits, k)).
    Only images with argmax(logits(x)) == y are attacked; the others come back unchanged
    with found=False. With x0 the clean image and x1 := x0, each of the n_iter iterations:

      df = z_target(x1) - z_y(x1), dg = its gradient W[:, target] - W[:, y];
      hyperplane w = dg, b = dg.x1 - df (for a linear model: the boundary z_target = z_y);
      d1 = fab_project_linf(x1, w, b), d2 = fab_project_linf(x0, w, b);
      a1 = max(||d1||_inf, floor), a2 = max(||d2||_inf, floor);
      alpha = min(max(a1 / (a1 + a2), 0), alpha_max);
      x1 = clip((x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha, clip_min, clip_max);
      is_adv = argmax(logits(x1)) != y   (misclassified; reaching the target is NOT
               required); for those, t = ||x1 - x0||_inf, and if t < best distance
               (strictly) x1 becomes the adversarial example and t the best distance;
               then x1 = x0 + beta (x1 - x0) for every is_adv image (improved or not).

    floor: the authors clamp both norms at 1e-8 on their [0, 1] scale. Here
    floor = FAB_NORM_FLOOR * (clip_max - clip_min), i.e. 255e-8 on the 0..255 scale, so
    that the run on 255 * x is exactly 255 times the authors' run on x (every other step
    is equivariant under scaling images and box together; alpha is a ratio). The floor
    only acts when a norm is below 2.55e-6, i.e. x1 or x0 (numerically) on the
    hyperplane: if both are, it turns 0/0 into alpha = 0.5 -> alpha_max; if only x1 is,
    alpha is ~0 with or without it. Keeping the bare 1e-8 on the 0..255 scale would
    break that equivalence for norms in [1e-8, 2.55e-6).
    argmax ties go to the first index (torch.max leaves ties unspecified).

    Returns a dict:
      adv [N, ...]     the closest misclassified iterate found, clean x where none;
      distance [N]     its L-inf distance to x, inf where none;
      found [N] bool   some iterate was misclassified (only possible for attacked images);
      attacked [N] bool  the image was correctly classified at the start;
      trace [n_iter, N, ...]  x1 right after each step (before the beta back-step) -- the
                       point that is classified; clean x for images not attacked.
    """
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    n = len(x)
    if len(y) != n or len(targets) != n:
        raise ValueError("need one label and one target per image")
    flat = x.reshape(n, -1)
    if W.shape[0] != flat.shape[1] or bias.shape[0] != W.shape[1]:
        raise ValueError("W must be [D, K] and bias [K]")
    floor = FAB_NORM_FLOOR * (clip_max - clip_min)

    adv = flat.copy()
    distance = np.full(n, np.inf)
    trace = np.repeat(flat[None], n_iter, axis=0)
    attacked = np.argmax(flat @ W + bias, axis=1) == y
    idx = np.flatnonzero(attacked)
    if len(idx):
        x0 = flat[idx]
        yy, tt = y[idx], targets[idx]
        dg = (W[:, tt] - W[:, yy]).T                   # [M, D], constant for a linear model
        best = np.full(len(idx), np.inf)
        x1 = x0.copy()
        for it in range(n_iter):
            z = x1 @ W + bias
            rows = np.arange(len(idx))
            df = z[rows, tt] - z[rows, yy]
            hb = np.einsum("md,md->m", dg, x1) - df
            d1 = fab_project_linf(x1, dg, hb, clip_min, clip_max)
            d2 = fab_project_linf(x0, dg, hb, clip_min, clip_max)
            a1 = np.maximum(np.abs(d1).max(axis=1), floor)[:, None]
            a2 = np.maximum(np.abs(d2).max(axis=1), floor)[:, None]
            alpha = np.minimum(np.maximum(a1 / (a1 + a2), 0.0), alpha_max)
            x1 = np.clip((x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha,
                         clip_min, clip_max)
            trace[it, idx] = x1
            is_adv = np.argmax(x1 @ W + bias, axis=1) != yy
            if is_adv.any():
                dist = np.abs(x1 - x0).max(axis=1)
                better = is_adv & (dist < best)
                best[better] = dist[better]
                adv[idx[better]] = x1[better]
                x1[is_adv] = x0[is_adv] + beta * (x1[is_adv] - x0[is_adv])
        distance[idx] = best
    found = np.isfinite(distance)
    return {"adv": adv.reshape(x.shape), "distance": distance, "found": found,
            "attacked": attacked, "trace": trace.reshape((n_iter,) + x.shape)}


def fab_t_linear(W, bias, x, y, eps, target_classes=9, n_iter=100, alpha_max=0.1, eta=1.05,
                 beta=0.9, clip_min=0.0, clip_max=255.0):
    """FAB-T of the standard AutoAttack (L-inf, one run per target, no random start).

    The targeted branch of the authors' FABAttack.perturb with n_restarts = 1: robust :=
    (argmax(logits(x)) == y); for target rank k = 2 .. target_classes + 1 (the k-th
    LARGEST clean logit, apgd_target_class) run fab_targeted_linear on the images still
    robust. A run breaks an image iff its result is misclassified AND its L-inf distance
    to x is <= eps (authors: acc_curr = max(correct, res > eps)); the image then leaves
    the robust set and keeps that result as its adversarial example. A run's result with
    distance > eps is discarded (the image is attacked again with the next target).
    Needs target_classes <= K - 1 (the authors' code would fail to index otherwise).

    Returns a dict:
      adv [N, ...]      the breaking example, clean x for all other images;
      robust [N] bool   correctly classified and not broken by any run;
      distance [N]      ||adv - x||_inf for broken images, 0 for images misclassified
                        at the start, inf for robust images;
      clean_correct [N] bool;
      broken_by [N]     the target rank k whose run broke the image, 0 otherwise.
    """
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    n = len(x)
    if not 1 <= int(target_classes) <= W.shape[1] - 1:
        raise ValueError("target_classes must be in 1..K-1 = 1..%d" % (W.shape[1] - 1))
    flat = x.reshape(n, -1)
    clean_logits = flat @ W + bias
    clean_correct = np.argmax(clean_logits, axis=1) == y
    robust = clean_correct.copy()
    adv = flat.copy()
    distance = np.where(clean_correct, np.inf, 0.0)
    broken_by = np.zeros(n, dtype=np.int64)
    for rank in range(2, int(target_classes) + 2):
        idx = np.flatnonzero(robust)
        if not len(idx):
            break
        targets = apgd_target_class(clean_logits[idx], rank)
        run = fab_targeted_linear(W, bias, flat[idx], y[idx], targets, n_iter=n_iter,
                                  alpha_max=alpha_max, eta=eta, beta=beta,
                                  clip_min=clip_min, clip_max=clip_max)
        adv_run = run["adv"]
        still_correct = np.argmax(adv_run @ W + bias, axis=1) == y[idx]
        res = np.abs(adv_run - flat[idx]).max(axis=1)
        broken = ~(still_correct | (res > eps))
        hit = idx[broken]
        robust[hit] = False
        adv[hit] = adv_run[broken]
        distance[hit] = res[broken]
        broken_by[hit] = rank
    return {"adv": adv.reshape(x.shape), "robust": robust, "distance": distance,
            "clean_correct": clean_correct, "broken_by": broken_by}
