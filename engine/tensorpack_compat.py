"""The gaps between Tensorpack 0.11 and what this project runs it with, closed from outside
(no installed file is edited):

- TF 2: most of Tensorpack goes through `tf.compat.v1`, but a few call sites use the TF1
  top-level name directly (HorovodTrainer's broadcast calls `tf.global_variables`); `install()`
  supplies exactly those names from `tf.compat.v1`.
- Its main loop logs "Training failed at global_step=" with the step as an argument but no
  placeholder, which Python's logging reports as an error of its own (a traceback that hides
  the real one); a filter on its logger joins the two.
- Its log file: on a full disk every later line printed a "--- Logging error ---" traceback;
  `log_file_errors_once()` turns the first such failure into one warning and drops the file.
"""
import logging
import sys

import tensorflow as tf

MISSING_TF1_NAMES = ("global_variables",)


class JoinArgumentsWithoutPlaceholder(logging.Filter):
    def filter(self, record):
        if record.args and isinstance(record.msg, str) and "%" not in record.msg:
            record.msg = " ".join([record.msg] + [str(a) for a in record.args])
            record.args = ()
        return True


def install():
    """Idempotent. Returns the TF1 names it supplied."""
    supplied = []
    for name in MISSING_TF1_NAMES:
        if not hasattr(tf, name):
            setattr(tf, name, getattr(tf.compat.v1, name))
            supplied.append(name)
    tensorpack_logger = logging.getLogger("tensorpack")
    if not any(isinstance(f, JoinArgumentsWithoutPlaceholder) for f in tensorpack_logger.filters):
        tensorpack_logger.addFilter(JoinArgumentsWithoutPlaceholder())
    return supplied


def log_file_errors_once():
    """After `tensorpack.logger.set_logger_dir`: the first failed write of its log.log prints one
    warning and stops writing the file (the console keeps the whole log)."""
    from tensorpack.utils import logger
    handler = logger._FILE_HANDLER
    if handler is None:
        return

    def handle_error(record):
        error = sys.exc_info()[1]
        sys.stderr.write("warning: cannot write {} any more ({}); the log continues on the console only\n".format(
            handler.baseFilename, error))
        logging.getLogger("tensorpack").removeHandler(handler)
    handler.handleError = handle_error
