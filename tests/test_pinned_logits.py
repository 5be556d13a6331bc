"""Numbers pinned across refactors: logits of small fixed-weight models and a PGD image.

The expected values in tests/golden/pinned.npz were computed by the code as it was before
the architecture redesign (commit 0af5c02). Weights are a function of each variable's name
only (not of creation order), so any refactor that keeps the variable names and the
function must give the same numbers. Regenerate only for a deliberate change of numbers:

    .venv/bin/python -m tests.test_pinned_logits --write
"""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.pinned_models import PINNED_CONFIGS, pinned_outputs

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "pinned.npz")


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", sorted(PINNED_CONFIGS))
def test_logits_and_attack_are_unchanged(name, golden):
    got = pinned_outputs(name)
    assert set(got) == {k.split("/", 1)[1] for k in golden if k.startswith(name + "/")}
    for key, value in got.items():
        want = golden[name + "/" + key]
        assert np.abs(want).max() > 0
        if key == "adversarial":
            # sign steps: a gradient that rounds to the other side of zero moves a pixel by one step
            assert np.mean(value == want) > 0.999, key
        else:
            np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=key)


def test_every_pinned_model_computes_something_different(golden):
    """The pin would miss a change to an operation whose block barely moved the logits."""
    names = sorted(PINNED_CONFIGS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = np.abs(golden[a + "/logits"] - golden[b + "/logits"]).max()
            assert gap > 10 * 1e-4 * np.abs(golden[a + "/logits"]).max(), (a, b)


def write():
    outputs = {}
    for name in sorted(PINNED_CONFIGS):
        for key, value in pinned_outputs(name).items():
            outputs[name + "/" + key] = value
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    np.savez(GOLDEN, **outputs)
    print("wrote {} arrays to {}".format(len(outputs), GOLDEN))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_pinned_logits --write")
    tf.compat.v1.logging.set_verbosity("ERROR")
    write()
