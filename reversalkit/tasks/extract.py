"""Answer extraction from model completions: numbers (GSM8K, synthetic), choice letters (CSQA),
`\\boxed{}` contents (MATH), code (MBPP), and GSM8K-style equation annotations.

Every function takes plain text and returns a string (or None when nothing valid is found); the
comparisons live in the task modules. Tolerances are those the GSM8K/CSQA evaluations commonly
accept, so a correct answer written in a slightly different surface form still counts.
"""

from __future__ import annotations

import ast
import functools
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# A number as written in answers: optional sign, thousands separators, decimals.
_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
# "####" may come back from a word-level tokenizer as "# # # #".
_HASHES_RE = re.compile(r"#\s*#\s*#\s*#")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
# `<<3*7=21>>`, tolerating spaces a detokenizer may insert ("< < 3 * 7 = 21 > >").
_ANNOTATION_RE = re.compile(r"<\s*<([^<>]*?)>\s*>")
# Inline arithmetic like "3 * 7 = 21" or "12 + 21 - 5 = 28" (used when there are no annotations).
_INLINE_EQ_RE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?(?:\s*[-+*/x×]\s*\d+(?:\.\d+)?)+\s*=\s*\d+(?:\.\d+)?)(?![\w.])"
)


def normalize_number(text: str | None) -> str | None:
    """Canonical decimal string of a written number: '1,234.50' -> '1234.5', '$7.' -> '7'.

    Returns None when `text` is not a number after stripping currency, commas and a trailing
    period. Fractions like '3/4' are reduced to decimals when exact ('0.75').
    """
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d+/\d+", s):
        num, den = s.split("/")
        if int(den) == 0:
            return None
        frac = Fraction(int(num), int(den))
        s = str(frac.numerator) if frac.denominator == 1 else str(Decimal(frac.numerator) / frac.denominator)
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _first_number(text: str) -> str | None:
    match = _NUMBER_RE.search(text.replace("$", ""))
    return normalize_number(match.group(0)) if match else None


def last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(text.replace("$", ""))
    return normalize_number(matches[-1]) if matches else None


def extract_number_answer(text: str) -> str | None:
    """GSM8K-style final answer: after the last `####`, else after 'the answer is', else the last
    number in the text. Handles `#### 1,234`, `$`, units, a trailing period, negatives, decimals."""
    hashes = list(_HASHES_RE.finditer(text))
    if hashes:
        found = _first_number(text[hashes[-1].end():])
        if found is not None:
            return found
    answer_is = list(_ANSWER_IS_RE.finditer(text))
    if answer_is:
        found = _first_number(text[answer_is[-1].end():][:80])
        if found is not None:
            return found
    return last_number(text)


def hashes_answer(text: str) -> str | None:
    """The answer on a GSM8K-style final line: the text after the last `####` up to the end of its
    line, without `$` or a trailing period ('#### $1,234.' -> '1,234'); None when there is none.

    Kept as written, not parsed as a number, so a task with non-numeric answers (MATH) can accept
    it and compare it under its own equivalence."""
    hashes = list(_HASHES_RE.finditer(text))
    if not hashes:
        return None
    line = text[hashes[-1].end():].split("\n", 1)[0]
    answer = line.replace("$", "").strip().rstrip(".").strip()
    return answer or None


def gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K `answer` column (the text after `####`)."""
    if "####" not in answer_field:
        raise ValueError(f"a GSM8K answer must end with '#### <number>', got {answer_field[-80:]!r}")
    gold = normalize_number(answer_field.rsplit("####", 1)[1])
    if gold is None:
        raise ValueError(f"no number after '####' in {answer_field[-80:]!r}")
    return gold


def numbers_equal(a: str | None, b: str | None) -> bool:
    na, nb = normalize_number(a), normalize_number(b)
    return na is not None and na == nb


def annotations(text: str) -> list[str]:
    """Contents of `<<...>>` annotations with whitespace removed: '3*7=21'."""
    return [re.sub(r"\s+", "", m) for m in _ANNOTATION_RE.findall(text) if "=" in m]


def inline_equations(text: str) -> list[str]:
    """Arithmetic equalities written inline ('3 * 7 = 21'), whitespace removed."""
    return [re.sub(r"\s+", "", m).replace("×", "*").replace("x", "*") for m in _INLINE_EQ_RE.findall(text)]


def equations(text: str) -> list[str]:
    """Equations of a worked solution: its annotations, or inline equalities when it has none."""
    return annotations(text) or inline_equations(text)


_ALLOWED_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                   ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


_SIMPLE_ARITH_RE = re.compile(r"\d+(?:[-+*/]\d+)*")


def _eval_simple(expr: str) -> Fraction:
    """Fast path for unsigned integers joined by + - * / without parentheses (usual precedence)."""
    tokens = re.findall(r"\d+|[-+*/]", expr)
    num = Fraction if "/" in expr else int  # exact integers unless there is a division
    total, term, sign = num(0), num(int(tokens[0])), 1
    for op, digits in zip(tokens[1::2], tokens[2::2]):
        value = int(digits)
        if op == "*":
            term *= value
        elif op == "/":
            if value == 0:
                raise ValueError(f"division by zero in {expr!r}")
            term /= value
        else:
            total += sign * term
            term, sign = num(value), 1 if op == "+" else -1
    return Fraction(total + sign * term)


def eval_arithmetic(expr: str) -> Fraction:
    """Exact value of an expression of numbers, + - * / and parentheses (no names, no powers)."""
    if _SIMPLE_ARITH_RE.fullmatch(expr):
        return _eval_simple(expr)

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _ALLOWED_BINOPS:
            right = ev(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError(f"division by zero in {expr!r}")
            return _ALLOWED_BINOPS[type(node.op)](ev(node.left), right)
        raise ValueError(f"unsupported element {type(node).__name__} in arithmetic {expr!r}")

    if len(expr) > 200:
        raise ValueError(f"arithmetic expression too long ({len(expr)} chars)")
    try:
        tree = ast.parse(expr.replace("×", "*"), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expr!r}") from exc
    return ev(tree)


@functools.lru_cache(maxsize=1 << 16)
def equation_holds(equation: str) -> bool:
    """True when 'lhs=rhs' evaluates to equal exact values on both sides."""
    if equation.count("=") != 1:
        return False
    lhs, rhs = equation.split("=")
    try:
        return eval_arithmetic(lhs) == eval_arithmetic(rhs)
    except ValueError:
        return False


_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*:?\s*\(?\s*([A-Z])\s*\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\(([A-Z])\)"),
    re.compile(r"(?:^|\n)\s*([A-Z])\s*[.):](?:\s|$)"),
    re.compile(r"^\s*([A-Z])\s*$"),
]


def extract_choice(text: str, labels: str = "ABCDE") -> str | None:
    """The chosen letter from '(C)', 'the answer is C', 'Answer: C.', 'C.' or a bare 'C'.

    Patterns are tried from most to least explicit, taking the last match of the first pattern
    that yields a letter in `labels`; anything else (e.g. 'F' for five choices) gives None.
    """
    for index, pattern in enumerate(_CHOICE_PATTERNS):
        for match in reversed(list(pattern.finditer(text))):
            letter = match.group(1)
            if index == 0 and letter.islower():
                # "the answer is a bird": lower-case article, not a choice.
                continue
            if index == 0 and letter == "A" and re.match(r"\s+[a-z]", text[match.end(1):]):
                continue  # "the answer is A bird": the article again
            if letter.upper() in labels:
                return letter.upper()
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces kept), or `\\boxed 5`."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{|\s)", text)]
    if not starts:
        return None
    last = starts[-1]
    if last.group(1) != "{":
        tail = re.match(r"\s*([^\s$]+)", text[last.end():])
        return tail.group(1) if tail else None
    depth, i = 1, last.end()
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[last.end():i].strip()
        i += 1
    return None


_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str | None:
    """Code from a completion: the first fenced block, else the text before `[DONE]`, else all of
    it (raw code). Returns None for an empty result."""
    fence = _FENCE_RE.search(text)
    if fence:
        code = fence.group(1)
    else:
        code = text.split("[DONE]", 1)[0]
        code = code.split("[BEGIN]", 1)[1] if "[BEGIN]" in code else code
    code = code.strip("\n")
    return code if code.strip() else None
