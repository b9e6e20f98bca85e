"""The synthetic task: determinism, answer validity (equations evaluated), numbers in 0..999, step
counts per split, disjoint splits, real solution diversity, a closed small vocabulary, lengths that
fit a tiny model's context, and final-answer-only grading."""

import re
from collections import Counter

import pytest

from reversalkit.tasks import extract, get_task
from reversalkit.tasks.synthetic import TOKEN_PATTERN, SyntheticConfig, number_tokens, vocabulary
from reversalkit.tasks.synthetic_gen import verify_solution

SIZES = {"train_size": 300, "dev_size": 60, "test_size": 100, "ood_size": 100}


@pytest.fixture(scope="module")
def task():
    return get_task("synthetic", seed=7, **SIZES)


def _all(task):
    return {split: task.load(split) for split in ("train", "dev", "test", "test_ood")}


def test_deterministic_from_seed(task):
    again = get_task("synthetic", seed=7, **SIZES)
    for split, problems in _all(task).items():
        other = again.load(split)
        assert [(p.id, p.prompt, p.answer, p.meta["solutions"]) for p in problems] == \
               [(p.id, p.prompt, p.answer, p.meta["solutions"]) for p in other]
    different = get_task("synthetic", seed=8, **SIZES).load("train")
    assert [p.prompt for p in different] != [p.prompt for p in task.load("train")]


def test_sizes_and_disjoint_splits(task):
    splits = _all(task)
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "dev": 60, "test": 100, "test_ood": 100}
    prompts = {k: {p.prompt for p in v} for k, v in splits.items()}
    assert all(len(prompts[k]) == len(splits[k]) for k in splits)  # no duplicates within a split
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test"), ("train", "test_ood"),
                 ("dev", "test_ood")):
        assert not prompts[a] & prompts[b], (a, b)
    with pytest.raises(ValueError, match="unknown split"):
        task.load("validation")


def test_answers_verified_by_evaluating_equations(task):
    for problems in _all(task).values():
        for p in problems:
            for sol in p.meta["solutions"]:
                eqs = extract.annotations(sol)
                assert eqs and all(extract.equation_holds(e) for e in eqs), sol
                assert extract.eval_arithmetic(eqs[-1].split("=")[0]) == int(p.answer)
                assert task.is_correct(p, sol) and verify_solution(sol, int(p.answer)) == []
            numbers = [int(n) for n in re.findall(r"\d+", p.prompt + " ".join(p.meta["solutions"]))]
            assert all(0 <= n <= 999 for n in numbers)
    assert verify_solution("3 * 7 = <<3*7=22>>22\n#### 22", 22) == ["false equation 3*7=22"]


def test_step_counts_per_split(task):
    splits = _all(task)
    for split, allowed in (("train", {2, 3}), ("dev", {2, 3}), ("test", {2, 3}), ("test_ood", {4, 5})):
        steps = Counter(len(extract.annotations(p.solution)) for p in splits[split])
        assert set(steps) == allowed, (split, steps)
        assert set(steps) == {p.meta["steps"] for p in splits[split]}
    held_out = ("At first ,", "Then ", "In the end ,")
    assert not any(h in p.prompt for p in splits["train"] + splits["test"] for h in held_out)
    assert sum(any(h in p.prompt for h in held_out) for p in splits["test_ood"]) > 50


def test_several_distinct_valid_solutions(task):
    train = task.load("train")
    for p in train:
        sols = task.solutions(p)
        assert sols[0] == p.solution and len(set(sols)) == len(sols)
    assert Counter(len(p.meta["solutions"]) for p in train).most_common(1)[0][0] == 6
    # diversity is real: different equations, not only different words
    distinct_eq_sets = [len({tuple(extract.annotations(s)) for s in p.meta["solutions"]}) for p in train]
    assert sum(distinct_eq_sets) / len(train) > 3
    flat = [e for p in train for s in p.meta["solutions"] for e in extract.annotations(s)]
    assert any(re.fullmatch(r"(\d+)\*(\d+)=\d+", e) for e in flat)
    commuted = {(a, b) for a, b in (re.fullmatch(r"(\d+)\*(\d+)=\d+", e).groups()
                                    for e in flat if re.fullmatch(r"(\d+)\*(\d+)=\d+", e))}
    assert any((b, a) in commuted and a != b for a, b in commuted)


def test_closed_small_vocabulary_and_lengths(task):
    vocab = set(vocabulary())
    assert 50 < len(vocab) <= 300 and not any(w.isdigit() for w in vocab)
    numbers = set(number_tokens())
    assert len(numbers) == 1000
    seen = Counter()
    for text in task.corpus():
        tokens = re.findall(TOKEN_PATTERN, text)
        assert set(tokens) <= vocab | numbers, set(tokens) - vocab - numbers
        seen.update(tokens)
    id_lengths = [len(re.findall(TOKEN_PATTERN, task.format_prompt(p) + " " + s))
                  for split in ("train", "test") for p in task.load(split) for s in p.meta["solutions"]]
    assert max(id_lengths) <= 128
    ood_lengths = [len(re.findall(TOKEN_PATTERN, task.format_prompt(p) + " " + s))
                   for p in task.load("test_ood") for s in p.meta["solutions"]]
    assert max(ood_lengths) <= 240


def test_prompt_and_grading(task):
    p = task.load("test")[0]
    assert task.format_prompt(p) == f"Question: {p.prompt}\nAnswer:"
    wrong = str(int(p.answer) + 1)
    assert task.is_correct(p, f"nonsense steps\n#### {p.answer}")  # final answer only
    assert task.is_correct(p, f"< < 1 + 1 = 2 > > 2 # # # # {p.answer}")
    assert not task.is_correct(p, p.solution.replace(f"#### {p.answer}", f"#### {wrong}"))
    assert task.equations(p.solution) == extract.annotations(p.solution)
    shot = get_task("synthetic", seed=7, shots=2, **SIZES)
    prompt = shot.format_prompt(p)
    assert prompt.count("Question:") == 3 and prompt.count("####") == 2


def test_config_validation():
    with pytest.raises(ValueError, match="ood_steps"):
        SyntheticConfig(ood_steps=(12,))
    with pytest.raises(ValueError, match="train_size"):
        SyntheticConfig(train_size=-1)
    with pytest.raises(ValueError, match="unknown config key"):
        get_task("synthetic", trainsize=3)


def test_ood_numbers_id_keeps_train_ranges_and_held_out_phrasings():
    def prompt_numbers(problems):
        return [int(x) for p in problems for x in re.findall(r"\d+", p.prompt)]

    wide = get_task("synthetic", seed=7, **SIZES).load("test_ood")
    narrow = get_task("synthetic", seed=7, ood_numbers="id", **SIZES).load("test_ood")
    assert max(prompt_numbers(wide)) > 60  # the wide ranges reach past every ID range
    assert max(prompt_numbers(narrow)) <= 60  # ID: start <= 60, amounts <= 30, groups of <= 12
    assert {p.meta["steps"] for p in narrow} == {4, 5}
    held_out = ("At first ,", "Then ", "In the end ,")
    assert sum(any(h in p.prompt for h in held_out) for p in narrow) > 50
    with pytest.raises(ValueError, match="ood_numbers must be 'wide' or 'id'"):
        SyntheticConfig(ood_numbers="small")
