"""reversalkit._C.ngram_counts against a brute-force pure-Python n-gram counter.

The C++ tokenizer must split exactly like `str.lower().split()`, unicode whitespace included, and
its distinct counts must be exact (no hash-collision undercounting) on every input.
"""

import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reversalkit._ext import native
from reversalkit.metrics import diversity, ngram_counts, ngram_counts_reference

C = native()
pytestmark = pytest.mark.skipif(C is None, reason="reversalkit._C is not built")

PY_WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


def brute_counts(groups, max_n):
    """Independent oracle: explicit tuple slicing and a Counter per order."""
    out = np.zeros((len(groups), max_n, 2), dtype=np.int64)
    for g, texts in enumerate(groups):
        for n in range(1, max_n + 1):
            grams = Counter()
            for text in texts:
                tokens = text.lower().split()
                for i in range(len(tokens) - n + 1):
                    grams[tuple(tokens[i:i + n])] += 1
            out[g, n - 1] = (len(grams), sum(grams.values()))
    return out


def check(groups, max_n=5):
    expected = brute_counts(groups, max_n)
    np.testing.assert_array_equal(C.ngram_counts(groups, max_n), expected)
    np.testing.assert_array_equal(ngram_counts_reference(groups, max_n), expected)


def test_hand_counted_example():
    got = C.ngram_counts([["A b a B", "a b"]], 3)
    # tokens: a b a b | a b -> 1-grams 6 (2 unique); 2-grams ab ba ab | ab -> 4 (2); 3-grams 2 (2)
    assert got.tolist() == [[[2, 6], [2, 4], [2, 2]]]


def test_empty_and_degenerate_groups():
    check([[], [""], ["   \n\t "], ["one"], ["one", ""], ["a a a a a a"]], max_n=5)
    assert C.ngram_counts([], 3).shape == (0, 3, 2)
    check([["a b c"]], max_n=10)  # max_n beyond every text's length


def test_ngrams_never_span_texts():
    assert C.ngram_counts([["x y", "z w"]], 2)[0, 1].tolist() == [2, 2]  # xy, zw but not yz


def test_every_python_whitespace_splits_and_nothing_else():
    for ws in PY_WHITESPACE:
        assert C.split_whitespace(f"a{ws}b{ws}{ws}c{ws}") == ["a", "b", "c"], hex(ord(ws))
    # Look-alikes that str.split() does NOT split on stay inside the token.
    for ch in ["\u200b", "\u180e", "\ufeff", "\u2060", "\u00ad", "\x00", "\x7f", "\u0080", "\u2011"]:
        text = f"a{ch}b c"
        assert C.split_whitespace(text) == text.split(), hex(ord(ch))


def test_is_python_whitespace_over_all_code_points():
    got = [cp for cp in range(sys.maxunicode + 1) if C.is_python_whitespace(cp)]
    assert got == [ord(w) for w in PY_WHITESPACE]


def test_unicode_lowercasing_and_whitespace_in_counts():
    groups = [
        ["Straße STRASSE straße", "ẞ ß"],                       # lower() of U+1E9E is ß
        ["İstanbul istanbul I\u0307stanbul"],                   # U+0130 lowers to two code points
        ["Ünïcödé\u3000ÜNÏCÖDÉ\u00a0x\u2028y\u2029z\x85w\x1cv\x1dv"],
        ["emoji 🎉🎉 🎉 \U0001F389", "ΣΊΣΥΦΟΣ σίσυφος ΣΊΣΥΦΟΣ"],  # final-sigma rules of str.lower
        ["tab\tnew\nline\r\ncarriage\x0bvt\x0cff", "mixed ascii AND Ünicode AND ascii"],
        ["nul\x00inside nul\x00inside", "\ud800 lone \udfff surrogates \ud800"],
    ]
    check(groups, max_n=4)


def test_many_distinct_tokens_are_counted_exactly():
    # 30k distinct tokens and their bigrams: any hash collision merging two keys would undercount.
    rng = np.random.default_rng(0)
    tokens = [f"t{i}" for i in rng.permutation(30_000)]
    texts = [" ".join(tokens[i:i + 100]) for i in range(0, 30_000, 100)]
    texts += texts[:50]  # repeats so unique != total
    check([texts], max_n=3)


def test_large_group_small_vocabulary():
    rng = np.random.default_rng(1)
    vocab = np.array(["a", "B", "c", "d"])
    texts = [" ".join(vocab[rng.integers(0, 4, size=rng.integers(0, 60))]) for _ in range(300)]
    check([texts, texts[:7], texts[::3]], max_n=6)


_WS = "".join(PY_WHITESPACE[:12]) + "\u3000\u00a0\u2028"
_TEXT = st.text(alphabet=st.sampled_from(list("abAB") + ["é", "É", "ß", "Σ", "ς"] + list(_WS)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_TEXT, max_size=6), max_size=4), st.integers(1, 6))
def test_property_native_equals_bruteforce(groups, max_n):
    check(groups, max_n)


def test_errors():
    with pytest.raises(ValueError, match="max_n"):
        C.ngram_counts([["a"]], 0)
    with pytest.raises(TypeError, match="must be str"):
        C.ngram_counts([["a", 3]], 2)
    with pytest.raises(TypeError, match="wrap it in a list"):
        C.ngram_counts(["a b c"], 2)
    with pytest.raises(TypeError):
        ngram_counts("a b c", 2)
    with pytest.raises(ValueError, match="backend"):
        ngram_counts([["a"]], 2, backend="rust")


def test_dispatch_native_python_and_missing_extension(monkeypatch):
    groups = [["The cat sat", "the CAT ran"], ["x"]]
    expected = brute_counts(groups, 3)
    for backend in ("auto", "native", "python"):
        np.testing.assert_array_equal(ngram_counts(groups, 3, backend=backend), expected)
    monkeypatch.setattr(diversity, "native", lambda: None)
    np.testing.assert_array_equal(ngram_counts(groups, 3), expected)
    with pytest.raises(RuntimeError, match="not built"):
        ngram_counts(groups, 3, backend="native")


def test_threads_give_identical_counts():
    rng = np.random.default_rng(2)
    words = np.array(["Alpha", "beta", "γάμμα", "delta", "ß", "5", "+", "="])
    text = lambda: " ".join(words[rng.integers(0, 8, size=rng.integers(0, 40))])
    groups = [[text() for _ in range(rng.integers(0, 9))] for _ in range(61)]
    expected = brute_counts(groups, 4)
    for threads in (1, 2, 3, 8, 100):
        np.testing.assert_array_equal(C.ngram_counts(groups, 4, threads), expected)
        np.testing.assert_array_equal(ngram_counts(groups, 4, num_threads=threads), expected)
    with pytest.raises(ValueError, match="num_threads"):
        C.ngram_counts(groups, 4, 0)
    with pytest.raises(ValueError, match="num_threads"):
        ngram_counts(groups, 4, num_threads=0)


def test_tokens_that_differ_in_one_byte_or_only_in_length():
    # Short tokens are compared as packed words (two overlapping 4-byte loads for 4..8 bytes) and
    # longer ones by hash + bytes: every position and length must still tell tokens apart.
    base = "abcdefghijklmnopqrst"
    tokens = [base[:n] for n in range(1, 21)]
    tokens += [base[:i] + "Z" + base[i + 1:n] for n in range(1, 21) for i in range(n)]
    tokens += ["a", "a\x00", "a\x00\x00", "\x00", "\x00\x00", "\x00" * 9, "\x00" * 10]
    texts = [" ".join(tokens), " ".join(reversed(tokens)), " ".join(tokens[::2])]
    check([texts], max_n=3)
    assert C.ngram_counts([texts], 1)[0, 0, 0] == len(set(tokens))
