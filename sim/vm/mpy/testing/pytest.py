"""The few pytest helpers tests/mpy/ may use, for the MicroPython VM (tests/test_mpy_suite.py).

``raises`` (context manager or call form, with ``match`` as a substring), ``approx`` (floats) and
``fail``. Anything else from pytest (fixtures, marks, skips) does not exist in the VM on purpose:
a tests/mpy test is a plain function that runs the same under CPython and MicroPython.
"""




class _Failed(AssertionError):
    pass


def fail(msg=""):
    raise _Failed(msg)


class _Raises:
    def __init__(self, exc, match):
        self.expected = exc
        self.match = match
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            raise _Failed("DID NOT RAISE %r" % (self.expected,))
        if not issubclass(exc_type, self.expected):
            return False
        self.value = exc
        if self.match is not None and self.match not in str(exc):
            raise _Failed("%r does not contain %r" % (str(exc), self.match))
        return True


def raises(exc, *args, match=None, **kwargs):
    ctx = _Raises(exc, match)
    if not args:
        return ctx
    with ctx:
        args[0](*args[1:], **kwargs)
    return ctx


class approx:
    def __init__(self, expected, rel=1e-6, abs=1e-12):
        self.expected = expected
        self.rel = rel
        self.abs = abs

    def _close(self, a, b):
        tol = max(self.rel * (b if b >= 0 else -b), self.abs)
        d = a - b
        return (d if d >= 0 else -d) <= tol

    def __eq__(self, other):
        exp = self.expected
        if isinstance(exp, (list, tuple)):
            return len(other) == len(exp) and all(self._close(a, b) for a, b in zip(other, exp))
        return self._close(other, exp)

    def __repr__(self):
        return "approx(%r)" % (self.expected,)
