"""Verdicts decided outside the program: each way of forging an MBPP pass without solving the
problem (stolen pass token, always-equal objects, trace tricks, early exits, patched modules,
forged replies) fails, honest programs of every plain result type still pass, and the expected
values never reach the program."""

import textwrap

import pytest

from reversalkit.tasks.base import Problem
from reversalkit.tasks.mbpp import assert_check
from reversalkit.tasks.sandbox import SandboxLimits, run, run_many
from reversalkit.tasks.sandbox_harness import decode, encode

LIMITS = SandboxLimits(timeout_s=5.0)
SECRET = 987654321123  # an expected value that appears nowhere but in the test


def problem(tests, setup="", solution=""):
    return Problem(id="t", prompt="", answer="", solution=solution,
                   meta={"test_list": list(tests), "test_setup_code": setup})


SUM_SQ = problem(["assert sum_sq([1, 2, 3]) == 14", "assert sum_sq([]) == 0", "assert sum_sq([-2]) == 4"])


def grade(prob, code):
    res = run(f"{prob.meta['test_setup_code']}\n{code}\n", limits=LIMITS, check=assert_check(prob))
    return res.passed, res


def test_honest_program_passes_and_wrong_one_fails():
    ok, res = grade(SUM_SQ, "def sum_sq(xs):\n    return sum(x * x for x in xs)")
    assert ok and res.checked is True and res.check_failure is None
    ok, res = grade(SUM_SQ, "def sum_sq(xs):\n    return sum(xs)")
    assert not ok and res.checked is False and res.status == "ok"


@pytest.mark.parametrize("code", [
    # always-equal objects: a class of its own, and subclasses of the expected types
    "class E:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
    "def sum_sq(xs): return E()",
    "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
    "def sum_sq(xs): return I(-1)",
    "class L(list):\n    def __eq__(self, o): return True\ndef sum_sq(xs): return L()",
    # the old pass token, looked for in the program's text and constants, then an early clean exit
    "import gc, os, re, sys\nfound = set()\nfor name in os.listdir('.'):\n"
    "    found |= set(re.findall(r'__reversalkit_tests_passed_\\w+__', open(name).read()))\n"
    "for o in gc.get_objects():\n    if isinstance(o, str) and o.startswith('__reversalkit_tests'):\n"
    "        found.add(o)\nfor t in found:\n    print('\\n' + t)\nsys.stdout.flush()\nos._exit(0)",
    # exits: before the tests, inside the call, and a clean exit code after printing
    "import sys\nsys.exit(0)\ndef sum_sq(xs): return 0",
    "import os\ndef sum_sq(xs): os._exit(0)",
    "import sys\ndef sum_sq(xs): sys.exit(0)",
    # a trace function that jumps over every line that starts with `assert`
    "import linecache, sys\n"
    "def skip(frame, event, arg):\n"
    "    if event == 'line':\n"
    "        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()\n"
    "        if line.startswith('assert'):\n"
    "            frame.f_lineno = frame.f_lineno + 1\n"
    "    return skip\n"
    "sys.settrace(skip)\nsys._getframe().f_trace = skip\n"
    "def sum_sq(xs): return 0",
    # the program answering requests it has not seen, with garbage and forbidden tags
    "import os\nfor _ in range(8):\n    os.write(4, b'{\"ok\": [\"name\", \"sum_sq\"]}\\n')\n"
    "def sum_sq(xs): return 0",
    "import os\nos.write(4, b'{\"ok\": ' + b'[\"list\", ' * 5000 + b'\\n')\ndef sum_sq(xs): return 0",
    "import os\nos.write(4, b'not json\\n')\ndef sum_sq(xs): return 0",
    # a reply too large to take
    "def sum_sq(xs): return 'x' * (4 << 20)",
])
def test_forgeries_fail(code):
    ok, res = grade(SUM_SQ, code)
    assert not ok, res
    assert "__reversalkit_tests_passed" not in res.stdout or res.checked is not True


def test_patched_modules_in_the_program_do_not_reach_the_grader():
    prob = problem(["assert math.isclose(area(2.0), 12.566, rel_tol=1e-3)",
                    "assert isinstance(area(1.0), float)"], setup="import math")
    patched = ("import builtins, math, operator\nmath.isclose = lambda *a, **k: True\n"
               "builtins.isinstance = lambda *a: True\noperator.eq = lambda a, b: True\n"
               "def area(r): return 'not a number'")
    assert not grade(prob, patched)[0]
    assert grade(prob, "def area(r): return math.pi * r * r")[0]


def test_expected_values_never_reach_the_program():
    prob = problem([f"assert big() == {SECRET}", f"assert big() != {SECRET + 1}"])
    snoop = textwrap.dedent("""
        import gc, os, sys
        seen = []
        for name in os.listdir('.'):
            seen.append(open(name, errors='replace').read())
        seen += sys.argv + list(os.environ.values())
        seen += [repr(o) for o in gc.get_objects() if isinstance(o, (int, str, tuple))]
        try:
            seen.append(open('/proc/self/cmdline', 'rb').read().decode(errors='replace'))
            seen.append(open('/proc/1/cmdline', 'rb').read().decode(errors='replace'))
        except OSError:
            pass
        needle = ''.join(['9876', '54321'])  # not spelled whole in this source
        print('LEAK' if any(needle in s for s in seen) else 'CLEAN')
        def big():
            return 0
    """)
    ok, res = grade(prob, snoop)
    assert not ok and res.stdout == "CLEAN\n", res


def test_honest_results_of_every_plain_type_pass():
    tests = [
        "assert pair(1) == (1, 2)", "assert pair(1) != [1, 2]", "assert as_list(3) == [0, 1, 2]",
        "assert as_set('aab') == {'a', 'b'}", "assert counts('aab') == {'a': 2, 'b': 1}",
        "assert keyed() == {(1, 2): frozenset({3})}", "assert big(100) == 2 ** 100 + 1",
        "assert math.isnan(nan())", "assert nothing() is None", "assert not falsy()",
        "assert truthy(3)", "assert raw() == b'\\x00\\xff'", "assert cplx() == 1 + 2j",
        "assert list(gen(3)) == [0, 1, 4]", "assert point() == (1, 2)", "assert point()[1] == 2",
        "assert sorted(as_set('ba')) == ['a', 'b']", "assert text('x') == 'xx'",
        "assert bump() == 1 and bump() == 2",  # state persists between calls, in test order
        "assert Pair(3, 4).total() == 7", "assert longest([Pair(1, 2), Pair(5, 6)]) == 11",
        "assert math.isclose(third(), 1 / 3)",  # math from the candidate's import, bound here
    ]
    code = textwrap.dedent("""
        import math
        from collections import Counter, namedtuple
        P = namedtuple('P', 'x y')
        state = [0]
        def pair(a): return (a, a + 1)
        def as_list(n): return list(range(n))
        def as_set(s): return set(s)
        def counts(s): return Counter(s)
        def keyed(): return {(1, 2): frozenset({3})}
        def big(n): return 2 ** n + 1
        def nan(): return float('nan')
        def nothing(): return None
        def falsy(): return 0
        def truthy(x): return x > 2
        def raw(): return b'\\x00\\xff'
        def cplx(): return complex(1, 2)
        def gen(n): return (i * i for i in range(n))
        def point(): return P(1, 2)
        def text(s): return s * 2
        def bump():
            state[0] += 1
            return state[0]
        class Pair:
            def __init__(self, a, b): self.a, self.b = a, b
            def total(self): return self.a + self.b
        def longest(pairs): return max(p.total() for p in pairs)
        def third(): return 1 / 3
    """)
    prob = problem(tests, solution=code)
    ok, res = grade(prob, code)
    assert ok, (res, res.check_failure)
    wrong = code.replace("return (a, a + 1)", "return [a, a + 1]")
    assert not grade(prob, wrong)[0]


def test_candidate_exceptions_fail_the_test_and_keep_their_type():
    prob = problem(["assert safe_div(1, 0) == 0"])
    assert not grade(prob, "def safe_div(a, b): return a / b")[0]
    raising = problem(["try:\n    parse('x')\n    assert False\nexcept ValueError:\n    pass"])
    assert grade(raising, "def parse(s): return int(s)")[0]
    assert not grade(raising, "def parse(s): return 0")[0]


def test_a_test_that_swallows_everything_cannot_hide_a_dead_program():
    lenient = problem(["try:\n    risky(1)\nexcept BaseException:\n    pass"])
    ok, res = grade(lenient, "import os\ndef risky(x): os._exit(0)")
    assert not ok and res.checked is None and res.check_failure == "the program stopped answering"
    assert grade(lenient, "def risky(x): raise ValueError(x)")[0]  # an honest exception is fine


def test_objects_without_plain_value_do_not_decide():
    prob = problem(["assert make()", "assert make() == make()"])
    ok, res = grade(prob, "class T:\n    def __bool__(self): return True\ndef make(): return T()")
    assert not ok and res.checked is False


def test_run_many_checks_in_order():
    codes = ["def sum_sq(xs):\n    return sum(x * x for x in xs)", "def sum_sq(xs):\n    return 14",
             "def sum_sq(xs):\n    return sum(x ** 2 for x in xs)"]
    results = run_many(codes, limits=LIMITS, workers=2, progress=False,
                       checks=[assert_check(SUM_SQ)] * 3)
    assert [r.passed for r in results] == [True, False, True]


def test_codec_round_trips_and_refuses_objects():
    values = [None, True, 0, -5, 2 ** 80, 1.5, float("inf"), "s", b"b", bytearray(b"a"), 1j,
              [1, (2, 3)], {1: {"a": frozenset({1})}}, {(1, 2)}, range(1, 9, 2)]
    for v in values:
        back = decode(encode(v))
        assert back == v and type(back) is type(v)
    with pytest.raises(TypeError, match="not plain data"):
        encode(object())
    with pytest.raises(ValueError):
        decode(["ref", [0, "x"]])
    with pytest.raises(ValueError, match="range of more than"):
        decode(encode(range(10 ** 18)))  # the grader never expands a huge lazy range


def test_checked_run_from_a_process_with_few_open_fds():
    # There the runner's pipes get the lowest numbers, so the supervisor's status pipe can be fd 3
    # or 4, where the program's request/reply pipes go: it must be moved out of their way first.
    import subprocess
    import sys

    script = ("from reversalkit.tasks.sandbox import run\n"
              "r = run('def f():\\n    return 1', check=lambda calls: calls.name('f')() == 1)\n"
              "print(r.passed, r.check_failure)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout == "True None\n", out.stderr
