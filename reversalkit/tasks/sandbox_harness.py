"""The program side of a checked sandbox run, and the plain-data codec both sides share.

In a checked run (`sandbox.run(code, check=...)`) this file is the sandboxed program: it runs the
candidate's code as `__main__`, says whether that worked, then answers the grader's requests (call
a function of the candidate, read an attribute) with plain data. It never sees the tests' expected
values, and what it sends back can only be plain data: the grader decodes it into fresh built-in
objects (None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict) and
compares them itself, so an object with its own `__eq__` cannot reach the verdict. Any other
object stays in the program; the grader holds an opaque reference to it.

Protocol, one JSON line per message: requests on fd 3 (`{"op": "call", "f": target, "a": [args],
"k": {kwargs}}` or `{"op": "attr", "o": target, "n": name}`, target `["name", n]` or `["ref", i]`),
replies on fd 4 (`{"ok": value}` or `{"raise": exception type name, "msg": text}`); the first
reply says whether the code loaded. Standard library only: it starts fast, and the runner imports
it for `encode`/`decode`.
"""

import builtins
import json
import math
import os
import sys
import traceback
import types
from collections.abc import Iterator

REQUEST_FD, RESPONSE_FD = 3, 4
MAX_ITER_ITEMS = 100_000  # an iterator result is materialized; more items than this is an error
_SEQUENCES = (("tuple", tuple), ("list", list), ("frozenset", frozenset), ("set", set))


def encode(value, fallback=None):
    """JSON-able form of plain data; other objects go to `fallback(value)` (or raise TypeError).

    Tagged values are two-element lists `[tag, payload]`, so every JSON array is a tag.
    Subclasses encode as their built-in base (a namedtuple as a tuple, a Counter as a dict).
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        value = int.__index__(value)
        return value if abs(value) < 1 << 53 else ["int", hex(value)]
    if isinstance(value, float):
        value = float.__float__(value)
        return value if math.isfinite(value) else ["float", repr(value)]
    if isinstance(value, complex):
        value = complex.__complex__(value)
        return ["complex", [encode(value.real), encode(value.imag)]]
    if isinstance(value, (bytes, bytearray)):
        return ["bytes" if isinstance(value, bytes) else "bytearray", bytes(value).hex()]
    for tag, base in _SEQUENCES:
        if isinstance(value, base):
            return [tag, [encode(v, fallback) for v in base.__iter__(value)]]
    if isinstance(value, dict):
        return ["dict", [[encode(k, fallback), encode(v, fallback)] for k, v in dict.items(value)]]
    if isinstance(value, range):
        return ["range", [value.start, value.stop, value.step]]
    if isinstance(value, Iterator):  # a generator or map object: its items, as a fresh iterator
        items = []
        for item in value:
            if len(items) >= MAX_ITER_ITEMS:
                raise ValueError(f"an iterator result has more than {MAX_ITER_ITEMS} items")
            items.append(encode(item, fallback))
        return ["iter", items]
    if fallback is None:
        raise TypeError(f"{type(value).__name__} is not plain data")
    return fallback(value)


def decode(data, resolve=None):
    """Fresh built-in objects from `encode`'s output; `["ref", ...]`/`["name", ...]` go to `resolve`."""
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise ValueError(f"not an encoded value: {str(data)[:80]}")
    tag, payload = data
    if tag == "int":
        return int(payload, 16)
    if tag == "float":
        return float(payload)
    if tag == "complex":
        return complex(decode(payload[0]), decode(payload[1]))
    if tag in ("bytes", "bytearray"):
        return (bytes if tag == "bytes" else bytearray).fromhex(payload)
    if tag == "range":  # bounded: a lazy range must not turn into a huge list on the grader's side
        value = range(*(int(x) for x in payload))
        if len(value) > MAX_ITER_ITEMS:
            raise ValueError(f"a range of more than {MAX_ITER_ITEMS} items")
        return value
    if tag == "dict":
        return {decode(k, resolve): decode(v, resolve) for k, v in payload}
    seq = {"tuple": tuple, "list": list, "frozenset": frozenset, "set": set, "iter": list}.get(tag)
    if seq is not None:
        items = seq(decode(v, resolve) for v in payload)
        return iter(items) if tag == "iter" else items
    if tag in ("ref", "name") and resolve is not None:
        return resolve(tag, payload)
    raise ValueError(f"unknown tag {tag!r}")


class Server:
    """Answers the grader's requests against the candidate's module."""

    def __init__(self, module):
        self.module = module
        self.refs = []

    def keep(self, obj):
        self.refs.append(obj)
        return ["ref", [len(self.refs) - 1, type(obj).__name__]]

    def resolve(self, tag, payload):
        if tag == "ref":
            return self.refs[payload[0]]
        try:
            return self.module.__dict__[payload]
        except KeyError:
            raise NameError(f"name {payload!r} is not defined") from None

    def answer(self, request):
        try:
            if request["op"] == "call":
                fn = decode(request["f"], self.resolve)
                args = [decode(a, self.resolve) for a in request["a"]]
                kwargs = {k: decode(v, self.resolve) for k, v in request["k"].items()}
                value = fn(*args, **kwargs)
            elif request["op"] == "attr":
                value = getattr(decode(request["o"], self.resolve), request["n"])
            else:
                raise ValueError(f"unknown request {request['op']!r}")
            return {"ok": encode(value, self.keep)}
        except BaseException as exc:  # noqa: BLE001 - whatever the candidate raised is its answer
            return {"raise": type(exc).__name__, "msg": _text(exc)}


def _text(exc):
    try:
        return str(exc)[:500]
    except BaseException:  # noqa: BLE001 - a candidate's __str__ may raise too
        return ""


def _send(out, message):
    out.write(json.dumps(message) + "\n")
    out.flush()


def main():
    requests = os.fdopen(REQUEST_FD, "r", encoding="utf-8")
    replies = os.fdopen(RESPONSE_FD, "w", encoding="utf-8")
    with open("candidate.py", encoding="utf-8") as f:
        source = f.read()
    module = types.ModuleType("__main__")
    module.__dict__.update(__builtins__=builtins, __file__=os.path.abspath("candidate.py"))
    sys.modules["__main__"] = module
    try:
        exec(compile(source, "candidate.py", "exec"), module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - the candidate failed to load; say so and stop
        traceback.print_exc()
        _send(replies, {"raise": type(exc).__name__, "msg": _text(exc)})
        sys.exit(1)
    _send(replies, {"ok": None})
    server = Server(module)
    for line in requests:
        _send(replies, server.answer(json.loads(line)))


if __name__ == "__main__":
    main()
