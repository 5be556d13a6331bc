"""Valid ranges of settings, declared on the dataclass field they constrain and checked when
the object is made, so that a value outside its range never runs (an attack with 0 target
classes that attacks nothing, a budget above the 0..255 pixel scale, zero epochs).

    iterations: int = setting(100, minimum=1)
    rho: float = setting(0.75, minimum=0.0, maximum=1.0)

`check_settings(obj, owner)` raises SettingError naming the owner, the setting, the value and
the valid range. A tuple value is checked element by element; None passes (an unset optional).
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple


class SettingError(ValueError):
    """A setting outside its valid range; `setting` is the field's name, so that a command-line
    layer can name the flag that set it."""

    def __init__(self, message, setting):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Range:
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False         # (minimum, ...] instead of [minimum, ...]
    integer: bool = False
    choices: Optional[Tuple[str, ...]] = None
    unit: str = ""                          # said after the range, e.g. "on the 0..255 scale"

    def describe(self):
        if self.choices is not None:
            return "one of {}".format(", ".join(self.choices))
        kind = "an integer" if self.integer else "a number"
        if self.minimum is not None and self.maximum is not None:
            text = "{} in {}{:g}, {:g}]".format(kind, "(" if self.exclusive_minimum else "[", self.minimum,
                                                self.maximum)
        elif self.minimum is not None:
            text = "{} {} {:g}".format(kind, ">" if self.exclusive_minimum else ">=", self.minimum)
        elif self.maximum is not None:
            text = "{} <= {:g}".format(kind, self.maximum)
        else:
            text = "a finite number"
        return text + (" " + self.unit if self.unit else "")

    def admits(self, value):
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum


def setting(default, **valid):
    """A dataclass field with `default` whose values must lie in Range(**valid)."""
    return dataclasses.field(default=default, metadata={"range": Range(**valid)})


def integer_setting(default, minimum=None, maximum=None):
    return setting(default, minimum=minimum, maximum=maximum, integer=True)


def check_settings(obj, owner):
    """SettingError for the first field of the dataclass `obj` whose value is outside its Range."""
    for field in dataclasses.fields(obj):
        valid = field.metadata.get("range")
        value = getattr(obj, field.name)
        if valid is None or value is None:
            continue
        for item in (value if isinstance(value, tuple) else (value,)):
            if not valid.admits(item):
                raise SettingError("{}: {} must be {}, got {}".format(
                    owner, field.name, valid.describe(), "{!r}".format(item) if isinstance(item, str) else item),
                    field.name)
