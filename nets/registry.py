"""A name -> object registry, so that a new architecture or denoising operation is one entry."""


class Registry:
    """Maps names to objects; an unknown name is an error that lists the known ones."""

    def __init__(self, kind):
        self.kind, self._entries = kind, {}

    def register(self, name, obj=None):
        """`register(name, obj)`, or `@register(name)` as a decorator."""
        if obj is None:
            return lambda fn: self.register(name, fn)
        if name in self._entries:
            raise KeyError("{} '{}' is registered twice".format(self.kind, name))
        self._entries[name] = obj
        return obj

    def get(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError("unknown {} '{}'; choose one of: {}".format(
                self.kind, name, ", ".join(self.names()))) from None

    def names(self):
        return sorted(self._entries)
