"""The gaps between Tensorpack 0.11 and what this project runs it with, closed from outside (no installed file edited):
- TF 2: a few call sites use a TF1 top-level name (HorovodTrainer's broadcast calls `tf.global_variables`);
  `install()` supplies exactly those names from `tf.compat.v1`.
- Its main loop logs "Training failed at global_step=" with the step as an argument but no placeholder, which
  logging reports as an error of its own (hiding the real one); a filter on its logger joins the two.
- Its log file: on a full disk every later line printed a "--- Logging error ---" traceback;
  `log_file_errors_once()` turns the first such failure into one warning and drops the file."""
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
    supplied = [name for name in MISSING_TF1_NAMES if not hasattr(tf, name)]
    for name in supplied:
        setattr(tf, name, getattr(tf.compat.v1, name))
    tensorpack_logger = logging.getLogger("tensorpack")
    if not any(isinstance(f, JoinArgumentsWithoutPlaceholder) for f in tensorpack_logger.filters):
        tensorpack_logger.addFilter(JoinArgumentsWithoutPlaceholder())
    return supplied


def log_file_errors_once():
    """After `logger.set_logger_dir`: the first failed write of log.log prints one warning and stops writing it."""
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
