"""Equation extraction and normalization for the Distinct Equations metric.

Two kinds of equations are found in a solution text:
- calculator annotations `<<lhs=rhs>>` (GSM8K style), whatever their content;
- plain `expression = number` spans with at least one operator, e.g. `3 x 7 = 21`.
An annotation's own text is masked before plain spans are searched, so `48/2 = <<48/2=24>>24`
yields one equation, not two.

Normalization makes equal equations compare equal: whitespace removed; `x`, `X`, `×` -> `*`;
`÷` -> `/`; `$` dropped; thousands separators dropped (`1,000` -> `1000`); trailing zeros of
decimals dropped (`21.0` -> `21`, `2.50` -> `2.5`).

    extract_equations("She pays 3 x 7 = 21.0 dollars, <<21+4=25>>25 in all")
    # ['21+4=25', '3*7=21']
"""

from __future__ import annotations

import re

__all__ = ["extract_equations", "normalize_equation"]

_ANNOTATION = re.compile(r"<<([^<>]*=[^<>]*)>>")
_OPERAND = r"\(*\$?\d+(?:[.,]\d+)*%?\)*"
_OPERATOR = r"[-+*/xX×÷^]"
# An expression (operand (op operand)+) not glued to a preceding word or number, '=', a number.
_PLAIN = re.compile(
    rf"(?<![\w.$])({_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+)\s*=\s*(-?\$?\d+(?:[.,]\d+)*%?)(?![\d\w])")
_WHITESPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(\d\.\d*?)0+(?!\d)")
_DANGLING_POINT = re.compile(r"(\d)\.(?!\d)")
_SYMBOLS = str.maketrans({"x": "*", "X": "*", "×": "*", "÷": "/", "$": None})


def normalize_equation(eq: str) -> str:
    """Canonical form of one equation string (see the module docstring)."""
    s = _WHITESPACE.sub("", eq).translate(_SYMBOLS)
    s = _THOUSANDS.sub("", s)
    s = _TRAILING_ZEROS.sub(r"\1", s)
    return _DANGLING_POINT.sub(r"\1", s)


def extract_equations(text: str) -> list[str]:
    """Normalized equations of `text`: annotations first (in order), then plain spans (in order)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    found = [normalize_equation(m.group(1)) for m in _ANNOTATION.finditer(text)]
    masked = _ANNOTATION.sub("\x00", text)  # a mask character no number or operator can follow
    for m in _PLAIN.finditer(masked):
        found.append(normalize_equation(f"{m.group(1)}={m.group(2)}"))
    return found
