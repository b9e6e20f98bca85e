"""MATH answer equivalence: a fast exact path after the standard MATH string normalization, then
`math-verify` (parse + verify) under a time limit.

`normalize_math_answer` applies the usual MATH clean-ups (`\\dfrac`/`\\tfrac` -> `\\frac`,
`\\left`/`\\right`, spaces, `\\text{units}`, `^\\circ`, `\\%`, `\\$`, `x = 5` -> `5`, `\\frac12` ->
`\\frac{1}{2}`, `0.5` -> `\\frac{1}{2}`, trailing zeros). Most model answers are decided there.
The rest go to math-verify, whose own timeout uses SIGALRM and so works only in a main thread;
from other threads `MathVerifier` runs the check in a helper process it owns and kills on timeout.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import threading


def _fix_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \frac{a}2 -> \frac{a}{2}
    out, parts = [], s.split("\\frac")
    out.append(parts[0])
    for part in parts[1:]:
        if part.startswith("{") or len(part) < 2:
            if part.startswith("{"):
                close = part.find("}")
                rest = part[close + 1:] if close >= 0 else ""
                if close >= 0 and rest and not rest.startswith("{"):
                    part = part[: close + 1] + "{" + rest[0] + "}" + rest[1:]
            out.append("\\frac" + part)
            continue
        num, rest = part[0], part[1:]
        if rest.startswith("{"):
            out.append("\\frac{" + num + "}" + rest)
        else:
            out.append("\\frac{" + num + "}{" + rest[0] + "}" + rest[1:])
    return "".join(out)


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt\s*([^{\s\\])", r"\\sqrt{\1}", s)


def _slash_to_frac(s: str) -> str:
    match = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}" if match else s


def _strip_trailing_zeros(s: str) -> str:
    return re.sub(r"(?<![\d.])(\d+)\.(\d*?)0+(?!\d)",
                  lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), s)


def normalize_math_answer(answer: str) -> str:
    """Canonical string of a MATH final answer (the standard MATH normalization)."""
    s = answer.strip().replace("\n", "").replace("\\!", "")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    # Trailing units written as text ("5 \text{ cm}"), then any remaining \text{...} unwrapped.
    s = re.sub(r"\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ]*\}\s*(?:\^\{?\d\}?)?\s*$", "", s) or s
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2:
        s = s.split("=")[1]
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = _strip_trailing_zeros(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def _math_verify_equal(gold: str, pred: str, timeout_s: int) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=timeout_s)
    pred_parsed = parse(f"${pred}$", parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


class MathVerifier:
    """Decides MATH answer equivalence with a bounded time per comparison.

    In the main thread math-verify's own SIGALRM timeout is used; from any other thread the check
    runs in a single spawned helper process (created on first need, replaced after a timeout).
    Call `close()` (or use as a context manager) to stop the helper.
    """

    def __init__(self, timeout_s: float = 5.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._pool = None
        self._lock = threading.Lock()

    def equal(self, gold: str, pred: str | None) -> bool:
        if pred is None or not pred.strip():
            return False
        g, p = normalize_math_answer(gold), normalize_math_answer(pred)
        if g == p:
            return True
        seconds = max(1, math.ceil(self.timeout_s))
        if threading.current_thread() is threading.main_thread():
            try:
                return _math_verify_equal(g, p, seconds)
            except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
                return False
        return self._equal_in_helper(g, p, seconds)

    def _equal_in_helper(self, gold: str, pred: str, seconds: int) -> bool:
        with self._lock:  # one helper process, one comparison at a time
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(1)
            pending = self._pool.apply_async(_math_verify_equal, (gold, pred, seconds))
            try:
                return bool(pending.get(timeout=self.timeout_s + 60.0))  # + start-up of the helper
            except multiprocessing.TimeoutError:
                self._pool.terminate()
                self._pool = None
                return False
            except Exception:  # noqa: BLE001
                return False

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.terminate()
