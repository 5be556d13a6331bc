"""Read, check and load weights: Tensorpack `.npz` files (the published models) and TF checkpoints.

docs/FACTS.md Sec. 3: a model built with the same --arch/-d has exactly the names and shapes of the published files,
so they load unchanged; anything else is an error that says what differs.
"""
import os
import re

import numpy as np
import tensorflow as tf

from files import atomic_write

tf1 = tf.compat.v1

# Saved by training but not part of the model: the step counter, the learning rate, the optimizer's slots and free
# training's perturbation (engine/graphs.FreeAdversarialTraining). They are
# skipped silently when loading a model.
TRAINING_STATE = re.compile(r"^(global_step|learning_rate|free_delta)$|/Momentum$")
SHOW_NAMES = 5


class CheckpointError(ValueError):
    """A weights file that cannot be read: the message names it and says what is wrong."""


class CheckpointMismatch(ValueError):
    """The checkpoint's variables are not the model's: lists what is missing, unexpected or mis-shaped."""


def read_weights(path):
    """{name: array} from a `.npz` file, a TF checkpoint prefix, or a directory holding a checkpoint. Every tensor is
    read, so a truncated or corrupt file is a CheckpointError naming it, never a half-loaded model."""
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise FileNotFoundError("weights file not found: {}".format(path))
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k[:-2] if k.endswith(":0") else k: f[k] for k in f.files}     # names without ":0"
        except Exception as error:      # zipfile, numpy and OS errors alike
            raise CheckpointError("cannot read weights file {}: it is truncated or not a .npz of arrays "
                                  "({}: {})".format(path, type(error).__name__, error)) from None
    try:
        prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
        found = prefix is not None and tf1.train.checkpoint_exists(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError("cannot read the checkpoint list in {} ({})".format(path, error)) from None
    if not found:
        raise FileNotFoundError("no checkpoint at {}: give a .npz file, a checkpoint prefix (model-1000) or a "
                                "directory with a 'checkpoint' file".format(path))
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except Exception as error:          # TF reports a short file as DataLossError, IndexError, ...
        raise CheckpointError("cannot read checkpoint {}: it is truncated or corrupt ({}: {})".format(
            prefix, type(error).__name__, str(error).splitlines()[0] if str(error) else "")) from None


def compare(model_shapes, weights):
    """(missing, unexpected, misshaped) model-variable names of {name: shape} vs weights, training state left out."""
    names = {n for n in weights if not TRAINING_STATE.search(n)}
    model = {n: shape for n, shape in model_shapes.items() if not TRAINING_STATE.search(n)}
    missing = sorted(set(model) - names)
    unexpected = sorted(names - set(model))
    misshaped = sorted(n for n in names & set(model) if tuple(weights[n].shape) != tuple(model[n]))
    return missing, unexpected, misshaped


def _summarize(title, names, describe=str):
    if not names:
        return None
    shown = ", ".join(describe(n) for n in names[:SHOW_NAMES])
    more = " and {} more".format(len(names) - SHOW_NAMES) if len(names) > SHOW_NAMES else ""
    return "{} {}: {}{}".format(len(names), title, shown, more)


def mismatch_message(source, model_shapes, weights, missing, unexpected, misshaped):
    parts = [_summarize("missing from the checkpoint", missing),
             _summarize("unexpected (not in the model)", unexpected),
             _summarize("mis-shaped", misshaped, lambda n: "{} (checkpoint {} vs model {})".format(
                 n, list(weights[n].shape), list(model_shapes[n])))]
    return ("{} does not match the model: {}. Check --arch and -d (and the other architecture flags), or pass "
            "--ignore-mismatch to load only the variables that match.").format(source, "; ".join(p for p in parts if p))


def load_weights(session, weights, source="checkpoint", ignore_mismatch=False, variables=None):
    """Assign `weights` ({name: array}) to the graph's global variables. Raises CheckpointMismatch unless the model
    variables' names and shapes agree exactly, or, with `ignore_mismatch`, loads the matching ones and returns the
    message describing the rest (None when everything matched). Training state (step, learning rate, momentum slots) is
    restored where graph and checkpoint both have it, so training resumes."""
    variables = variables if variables is not None else tf1.global_variables()
    by_name = {v.op.name: v for v in variables}
    model_shapes = {n: v.shape.as_list() for n, v in by_name.items()}
    missing, unexpected, misshaped = compare(model_shapes, weights)
    message = None
    if missing or unexpected or misshaped:
        message = mismatch_message(source, model_shapes, weights, missing, unexpected, misshaped)
        if not ignore_mismatch:
            raise CheckpointMismatch(message)
    loadable = [(var, weights[name]) for name, var in by_name.items()
                if name in weights and tuple(weights[name].shape) == tuple(model_shapes[name])]
    # one run for all: the initializers with their initial values fed (a run per variable took seconds)
    session.run([var.initializer for var, _ in loadable],
                {var.initial_value: value.astype(var.dtype.base_dtype.as_numpy_dtype) for var, value in loadable})
    return message


def save_npz(session, path, variables=None):
    """Write the model's variables as a Tensorpack-style `.npz` ({name: array}, no ':0')."""
    variables = variables if variables is not None else tf1.global_variables()
    values = session.run({v.op.name: v for v in variables if not TRAINING_STATE.search(v.op.name)})
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **values)
