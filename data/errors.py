"""The one exception of the data layer, and how its messages list names."""


class DataError(ValueError):
    """Bad input data: the message names the offending path and says what to do. A subclass of ValueError, so
    `main.py` reports it as a plain error (exit code 2)."""


def first_few(names, count=5):
    """The first `count` of `names`, comma-separated, with " ..." after them when there are more."""
    return ", ".join(names[:count]) + (" ..." if len(names) > count else "")
