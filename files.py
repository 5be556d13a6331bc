"""Writing files so that a crash never leaves a half-written one: write a temporary file
beside the target, then rename it over the target (atomic on POSIX file systems)."""
import contextlib
import os


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """`with atomic_write(path) as f:` writes `path` whole or not at all; missing parent
    folders are created. The temporary name keeps the extension (numpy appends .npz otherwise)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    root, extension = os.path.splitext(path)
    tmp = "{}.tmp{}{}".format(root, os.getpid(), extension)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
