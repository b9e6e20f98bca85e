"""Answer extraction and normalization edge cases (GSM8K numbers, CSQA letters, MATH boxed answers
and equivalence, MBPP code, equation annotations)."""

import threading
from fractions import Fraction

import pytest

from reversalkit.tasks import extract
from reversalkit.tasks.math_normalize import MathVerifier, normalize_math_answer


@pytest.mark.parametrize("text, expected", [
    ("so 48-30=18 left.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("#### $1,234.00", "1234"),
    ("The total is #### 12 dollars.", "12"),
    ("#### -6", "-6"),
    ("#### 7.50", "7.5"),
    ("# # # # 28", "28"),  # how a word-level detokenizer may write ####
    ("First 3 then 4. The answer is $15.", "15"),
    ("The answer is: 2,000 pencils", "2000"),
    ("She has 5 apples and buys 7, so 12 apples.", "12"),
    ("#### 3 #### 4", "4"),
    ("It costs .5 dollars", "0.5"),
    ("no numbers here", None),
])
def test_number_answer_extraction(text, expected):
    assert extract.extract_number_answer(text) == expected


def test_normalize_number_and_equality():
    assert extract.normalize_number("1,234.50") == "1234.5"
    assert extract.normalize_number("$7.") == "7"
    assert extract.normalize_number("3/4") == "0.75"
    assert extract.normalize_number("1/0") is None
    assert extract.normalize_number("abc") is None
    assert extract.numbers_equal("18.0", "18") and not extract.numbers_equal("18", "81")
    assert not extract.numbers_equal(None, "1")
    assert extract.gsm8k_gold("x\n#### 2,000") == "2000"
    with pytest.raises(ValueError, match="####"):
        extract.gsm8k_gold("no marker 5")


@pytest.mark.parametrize("text, expected", [
    ("The answer is (C).", "C"),
    ("answer is C", "C"),
    ("Answer: B.", "B"),
    ("I think (A) is wrong, so the answer is (D)", "D"),
    ("E.", "E"),
    ("C", "C"),
    ("The answer is A bird.", None),  # article, not a choice
    ("The answer is F", None),  # not a valid choice letter
    ("I don't know", None),
    ("So the answer is (b)", None),
])
def test_choice_extraction(text, expected):
    assert extract.extract_choice(text) == expected


def test_choice_respects_labels():
    assert extract.extract_choice("The answer is (E)", labels="ABCD") is None
    assert extract.extract_choice("The answer is (E)", labels="ABCDE") == "E"


def test_last_boxed_nested_and_fbox():
    assert extract.last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract.last_boxed("\\fbox{\\{1, \\{2\\}\\}}") == "\\{1, \\{2\\}\\}"
    assert extract.last_boxed("so \\boxed 5$") == "5"
    assert extract.last_boxed("\\boxed{unclosed") is None
    assert extract.last_boxed("nothing") is None


def test_code_extraction():
    fenced = "Here:\n```python\ndef f():\n    return 1\n```\nDone"
    assert extract.extract_code(fenced) == "def f():\n    return 1"
    assert extract.extract_code("def f():\n    return 2\n[DONE] trailing") == "def f():\n    return 2"
    assert extract.extract_code("[BEGIN]\nx = 1\n[DONE]") == "x = 1"
    assert extract.extract_code("   \n") is None


def test_equations_and_arithmetic():
    text = "Mia buys 3 * 7 = <<3*7=21>>21 pens. Then < < 12 + 21 = 33 > > 33."
    assert extract.annotations(text) == ["3*7=21", "12+21=33"]
    assert extract.equations("so 4 x 5 = 20 and 20 - 3 = 17") == ["4*5=20", "20-3=17"]
    assert extract.eval_arithmetic("2+3*4-10/4") == Fraction(23, 2)
    assert extract.eval_arithmetic("(2+3)*4") == 20
    assert extract.equation_holds("3*7=21") and not extract.equation_holds("3*7=22")
    assert not extract.equation_holds("1/0=1")
    with pytest.raises(ValueError):
        extract.eval_arithmetic("__import__('os')")
    with pytest.raises(ValueError):
        extract.eval_arithmetic("2**100000")


@pytest.mark.parametrize("raw, expected", [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac12", "\\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("90^\\circ", "90"),
    ("50\\%", "50"),
    ("\\$5.00", "5"),
    ("5 \\text{ cm}", "5"),
    ("x = 5", "5"),
    ("2.50", "2.5"),
    ("\\sqrt3", "\\sqrt{3}"),
    ("1,000", "1000"),
    (".5", "\\frac{1}{2}"),
])
def test_math_normalization(raw, expected):
    assert normalize_math_answer(raw) == expected


def test_math_equivalence_exact_and_math_verify():
    v = MathVerifier(timeout_s=5)
    assert v.equal("\\frac{1}{2}", "0.5")  # exact path after normalization
    assert v.equal("\\frac{7}{2}", "3.5")  # math-verify
    assert v.equal("5\\sqrt{2}", "\\sqrt{50}")  # math-verify, symbolic
    assert v.equal("\\{-1, 1\\}", "\\{1,-1\\}")
    assert not v.equal("\\frac{1}{2}", "\\frac{1}{3}")
    assert not v.equal("14", None) and not v.equal("14", "  ")
    with pytest.raises(ValueError):
        MathVerifier(timeout_s=0)


def test_math_equivalence_off_the_main_thread():
    results = {}
    with MathVerifier(timeout_s=5) as v:
        def work():
            results["sym"] = v.equal("\\frac{7}{2}", "3.5")
            results["neq"] = v.equal("2", "3")
            results["exact"] = v.equal("\\dfrac{1}{2}", "0.5")
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=120)
    assert results == {"sym": True, "neq": False, "exact": True}
