"""The grader's side of a checked sandbox run: trusted test code calls into the sandboxed program.

`sandbox.run(code, check=fn)` runs `code` under `sandbox_harness` and calls `fn(calls)` in the
runner while the program waits for requests. `calls.name("f")` is a `Remote` standing for the
candidate's `f`; calling it, or reading an attribute of what it returned, is a round trip whose
reply is decoded into fresh built-in objects (or another `Remote` for anything that is not plain
data). So the test code, the expected values and every comparison stay in the grader; the program
only ever supplies plain data, and an always-equal object, a trace function or an early exit in it
cannot turn a failed comparison into a pass.

Errors: an exception the candidate raised comes back as the built-in exception of that name (or
`CandidateError`); a program that stops answering (exits, times out, garbles a reply) raises
`ProgramFailed`, a BaseException so that a test's own `except Exception` cannot swallow it.
"""

from __future__ import annotations

import builtins
import json

from reversalkit.tasks.sandbox_harness import decode, encode
from reversalkit.tasks.sandbox_io import Collector


class ProgramFailed(BaseException):
    """The program stopped answering: it exited, timed out, or sent something that is not a reply."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a built-in one (its type name is the message)."""


class Remote:
    """An object that lives in the sandboxed program: callable, with readable attributes; it is
    equal only to itself and has no truth value, so only plain data can decide a comparison."""

    __slots__ = ("_calls", "_target", "_what")

    def __init__(self, calls: Calls, target: list, what: str):
        self._calls, self._target, self._what = calls, target, what

    def __call__(self, *args, **kwargs):
        return self._calls.request({"op": "call", "f": self._target, "a": list(args), "k": kwargs})

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)  # protocol probes (copy, pickle) stay on this side
        return self._calls.request({"op": "attr", "o": self._target, "n": name})

    def __bool__(self):
        raise TypeError(f"the program's {self._what} is not plain data and has no truth value here")

    def __repr__(self):
        return f"<remote {self._what}>"


def _exception(reply: dict) -> Exception:
    name, msg = str(reply.get("raise")), str(reply.get("msg", ""))
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(msg)
        except Exception:  # noqa: BLE001 - an exception type with a different constructor
            pass
    return CandidateError(f"{name}: {msg}")


class Calls:
    """Request/reply exchange with one sandboxed harness over the runner's `Collector`."""

    def __init__(self, collector: Collector):
        self.collector = collector
        self.count = 0  # requests answered
        self.failure: str | None = None  # the first ProgramFailed, even if a test's bare except ate it

    def name(self, name: str) -> Remote:
        """The candidate's top-level `name` (looked up in the program when it is used)."""
        return Remote(self, ["name", name], repr(name))

    def loaded(self) -> None:
        """Wait for the harness's first reply: the candidate's code ran to its end."""
        reply = self._reply()
        if "raise" in reply:
            raise self._failed(f"the program's code raised {reply['raise']} while loading")

    def request(self, message: dict):
        try:
            line = json.dumps({**message, "a": [self._encode(a) for a in message.get("a", [])],
                               "k": {k: self._encode(v) for k, v in message.get("k", {}).items()}})
        except RecursionError as exc:
            raise ValueError("an argument is nested too deeply to send") from exc
        self.collector.send(line.encode() + b"\n")
        reply = self._reply()
        self.count += 1
        if "raise" in reply:
            raise _exception(reply)
        try:
            return decode(reply["ok"], self._resolve)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise self._failed(f"the program's reply is not plain data ({exc})") from None

    def _encode(self, value):
        def remote_only(obj):
            if isinstance(obj, Remote) and obj._calls is self:
                return obj._target
            raise TypeError(f"cannot pass {type(obj).__name__} to the program: not plain data")
        return encode(value, remote_only)

    def _resolve(self, tag: str, payload):
        if tag != "ref":
            raise ValueError(f"a reply may not contain {tag!r}")
        ref, what = int(payload[0]), str(payload[1])
        return Remote(self, ["ref", [ref, what]], f"{what} object")

    def _reply(self) -> dict:
        c = self.collector
        c.pump(lambda: c.has_reply() or not c.reply_open())
        if c.out.timed_out:
            raise self._failed("the program ran out of time")
        if c.out.overflow or c.reply_overflow:
            raise self._failed("the program's output or reply exceeded its limit")
        line = c.reply_line()
        if line is None:
            raise self._failed("the program stopped answering")
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict) or not ({"ok", "raise"} & reply.keys()):
            raise self._failed("the program sent something that is not a reply")
        return reply

    def _failed(self, reason: str) -> ProgramFailed:
        self.failure = self.failure or reason
        return ProgramFailed(reason)
