"""Export a model with its weights for other tools: a SavedModel folder or an ONNX file.

    python -m tools.export --load R152-Denoise.npz --arch ResNetDenoise -d 152 --format onnx --out r152-denoise.onnx
    python -m tools.export --load W.npz --arch ResNet -d 152 --format savedmodel --out r152/ [--input float]

The model of the architecture flags (the same as main.py's), BN in inference mode, the preprocessing inside: input
`images`, BGR in 0..255, NHWC [N, S, S, 3] (uint8, or float32 with `--input float`), output `logits`, float32
[N, classes]. The SavedModel has the signature `serving_default`; the ONNX file (opset 17 by default) is the frozen
graph converted by tf2onnx (`pip install -r requirements-export.txt`). The export is written beside --out under a
temporary name and renamed when whole; an existing --out is replaced only with --overwrite.
"""
import argparse
import contextlib
import os
import shutil
import sys

import tf_environment  # noqa: F401,E402  (before TensorFlow)

FORMATS = ("savedmodel", "onnx")
INPUTS = ("uint8", "float")
DEFAULT_OPSET = 17              # tf2onnx 1.17 writes opsets 14-18; onnxruntime 1.32 runs them all
INPUT_NAME, OUTPUT_NAME = "images", "logits"
INSTALL_HINT = "pip install -r requirements-export.txt (tf2onnx, onnx and onnxruntime at the versions tested here)"


def build_parser():
    from flags import add_model_arguments
    parser = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--out", required=True, metavar="PATH", help="the SavedModel folder or the .onnx file")
    parser.add_argument("--input", default="uint8", choices=INPUTS,
                        help="the input's type: uint8 or float32 (default uint8); BGR in 0..255 either way")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, choices=range(14, 19), metavar="14..18",
                        help="ONNX opset (default %(default)s)")
    parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register operations and architectures)")
    add_model_arguments(parser)
    return parser


# ---------------------------------------------------------------- what is refused before anything is built

def tf2onnx_module():
    """The tf2onnx module, or an ImportError that says how to install it."""
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError("--format onnx needs tf2onnx, which is not installed ({}): {}".format(
            error, INSTALL_HINT)) from None
    return tf2onnx


def check_out(path, fmt, overwrite):
    """--out is free, or an earlier export of the same format that --overwrite replaces (never another file or a
    folder that is not a SavedModel)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ValueError("--out {} already exists: pass --overwrite to replace it, or choose another path".format(path))
    earlier = os.path.isfile(os.path.join(path, "saved_model.pb")) if fmt == "savedmodel" else os.path.isfile(path)
    if not earlier:
        raise ValueError("--out {} exists and is not {}: it is not replaced, even with --overwrite; choose another "
                         "path".format(path, "a SavedModel folder" if fmt == "savedmodel" else "a file"))


def refuse_early(args):
    """Every refusal that needs no model: no --load, NCHW, a taken --out, tf2onnx missing."""
    if not args.load:
        raise ValueError("--load is required: the weights to export (a .npz file or a TF checkpoint)")
    if args.data_format == "NCHW":
        raise ValueError("exports are NHWC (the layout TF's CPU kernels and ONNX runtimes run): drop --data-format "
                         "NCHW")
    check_out(args.out, args.format, args.overwrite)
    if args.format == "onnx":
        tf2onnx_module()


def read_load(path):
    """{name: array} of --load; a missing or unreadable file is the loader's message, naming --load."""
    from nets.checkpoint import read_weights
    try:
        return read_weights(path)
    except FileNotFoundError as error:
        raise ValueError("--load: {}".format(error.args[0])) from None


# ---------------------------------------------------------------- the inference graph

def frozen_graph(spec, options, weights, source, input_dtype, ignore_mismatch=False):
    """(GraphDef with the weights as constants: `images` -> `logits`, BN in inference mode; the loader's message about
    what --ignore-mismatch left out, or None). A mismatch is the loader's CheckpointMismatch."""
    import tensorflow as tf
    from nets import logits
    from nets.checkpoint import load_weights
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        size = spec.image_size
        images = tf1.placeholder(input_dtype, [None, size, size, 3], name=INPUT_NAME)
        tf.identity(logits(tf.cast(images, tf.float32), spec, training=False, options=options), name=OUTPUT_NAME)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            message = load_weights(session, weights, source=source, ignore_mismatch=ignore_mismatch)
            graph_def = tf1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), [OUTPUT_NAME])
    return graph_def, message


# ---------------------------------------------------------------- the two formats

def write_savedmodel(graph_def, folder):
    """A SavedModel (tag `serve`) of the frozen graph with the signature `serving_default`: images -> logits."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        tf1.import_graph_def(graph_def, name="")
        signature = tf1.saved_model.predict_signature_def(
            inputs={INPUT_NAME: graph.get_tensor_by_name(INPUT_NAME + ":0")},
            outputs={OUTPUT_NAME: graph.get_tensor_by_name(OUTPUT_NAME + ":0")})
        builder = tf1.saved_model.Builder(folder)
        builder.add_meta_graph_and_variables(session, [tf1.saved_model.SERVING], strip_default_attrs=True,
                                             signature_def_map={"serving_default": signature})
        builder.save()


def write_onnx(graph_def, path, opset):
    """The frozen graph converted by tf2onnx, its input and output named `images` and `logits`."""
    tf2onnx = tf2onnx_module()
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, name="feature_denoising", input_names=[INPUT_NAME + ":0"], output_names=[OUTPUT_NAME + ":0"],
        opset=opset, tensors_to_rename={INPUT_NAME + ":0": INPUT_NAME, OUTPUT_NAME + ":0": OUTPUT_NAME})
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


# ---------------------------------------------------------------- written whole or not at all

def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def synced(path):
    """Flush every file of `path` (a file or a folder) to the disk, so that a rename after it names whole files."""
    files = [path] if os.path.isfile(path) else [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
    for name in files:
        with open(name, "rb") as f:
            os.fsync(f.fileno())
    return path


def move_into_place(tmp, path):
    """Rename `tmp` to `path`; an earlier file is replaced in one rename, an earlier folder moved aside first (and
    put back if the rename fails), then deleted."""
    if not (os.path.isdir(path) and not os.path.islink(path)):
        os.replace(tmp, path)
        return
    aside = tmp + ".replaced"
    os.replace(path, aside)
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(aside, path)
        raise
    remove(aside)


@contextlib.contextmanager
def written_whole(path):
    """`with written_whole(path) as tmp:` write the export at `tmp` (beside `path`, same file system); it becomes
    `path` when the block ends without an error and is removed otherwise."""
    root, extension = os.path.splitext(os.path.abspath(path))
    tmp = "{}.tmp{}{}".format(root, os.getpid(), extension)
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    remove(tmp)
    try:
        yield tmp
        move_into_place(synced(tmp), path)
    finally:
        remove(tmp)


# ---------------------------------------------------------------- the command

def export(args):
    """Writes the export of the flags; returns what to print."""
    import tensorflow as tf
    from flags import build_options_from_args, spec_from_args
    refuse_early(args)
    spec = spec_from_args(args)
    options = build_options_from_args(args).replace(data_format="NHWC").exact
    graph_def, message = frozen_graph(spec, options, read_load(args.load), args.load,
                                      tf.uint8 if args.input == "uint8" else tf.float32, args.ignore_mismatch)
    if message:
        print("warning: loaded with --ignore-mismatch: {}".format(message), file=sys.stderr)
    with written_whole(args.out) as tmp:
        if args.format == "savedmodel":
            write_savedmodel(graph_def, tmp)
        else:
            write_onnx(graph_def, tmp, args.opset)
    return "wrote {} {}: {} {} [N, {s}, {s}, 3] (BGR, 0..255) -> {} float32 [N, {}]".format(
        args.format, args.out, INPUT_NAME, "uint8" if args.input == "uint8" else "float32", OUTPUT_NAME,
        spec.num_classes, s=spec.image_size)


def main(argv=None):
    from flags import import_plugins
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        import_plugins(argv)
        args = build_parser().parse_args(argv)
        print(export(args))
    except SystemExit as exit_:         # argparse: the message is printed already
        return exit_.code
    except (ValueError, KeyError, ImportError, OSError) as error:
        text = error.args[0] if isinstance(error, (ValueError, KeyError, ImportError)) and error.args else error
        print("error: {}".format(text), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
