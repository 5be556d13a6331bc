"""The one exception of the data layer."""


class DataError(ValueError):
    """Bad input data: the message names the offending path and says what to do.

    A subclass of ValueError, so `main.py` reports it as a plain error (exit code 2).
    """
