"""The synthetic arithmetic task: the study's embedded default (no downloads, seconds to generate).

Multi-step word problems about one person's items ("Mia has 12 pens . Mia buys 3 boxes with 7 pens
in each . Mia gives 5 pens to Leo . How many pens does Mia have now ?") with GSM8K-style worked
solutions (`3 * 7 = <<3*7=21>>21`, last line `#### 28`). Every problem carries several distinct
valid solutions in `meta["solutions"]` (`solution` is the canonical one), so solution diversity
is real and can collapse. Splits, all deterministic from `seed`:
- `train`, `dev` and `test`: 2-3 steps (in-distribution); a hash of the problem text assigns each
  problem to one of them, so they never share a problem. `dev` is the validation split recipes
  and defaults are chosen on (`benchmarks/sweep_recipe.py`); `test` only reports;
- `test_ood`: 4-5 steps, larger numbers (still 0..999; `ood_numbers="id"` keeps train's ranges)
  and held-out problem phrasings.
Numbers anywhere are integers in 0..999 and the word vocabulary is closed (`vocabulary()`), as
a tiny word-level model needs: build its tokenizer from `vocabulary()` + `number_tokens()`, or
from the texts of `SyntheticTask.corpus()`, pre-tokenized by `TOKEN_PATTERN`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Iterator

from reversalkit.config import Config, check, option
from reversalkit.tasks import extract
from reversalkit.tasks import synthetic_world as W
from reversalkit.tasks.base import Problem, PromptedTask
from reversalkit.tasks.synthetic_gen import ID_RANGES, OOD_RANGES, problem_text, sample_story, verify_solution
from reversalkit.tasks.synthetic_solutions import solutions

SPLITS = ("train", "dev", "test", "test_ood")
# Numbers 0-999 as whole tokens, words, and every other character on its own.
TOKEN_PATTERN = r"\d+|[A-Za-z]+|[^\sA-Za-z\d]"
# In-distribution problem texts hash into 5 buckets: bucket 0 is test, bucket 1 dev, the rest train.
_BUCKETS = 5
_SPLIT_BUCKET = {"test": 0, "dev": 1}


@dataclasses.dataclass
class SyntheticConfig(Config):
    seed: int = option(0, "generator seed; the same seed gives the same splits and solutions")
    train_size: int = option(2000, "problems in the train split")
    dev_size: int = option(200, "problems in the in-distribution dev (validation) split")
    test_size: int = option(500, "problems in the in-distribution test split")
    ood_size: int = option(500, "problems in the out-of-distribution test split")
    id_steps: tuple[int, ...] = option((2, 3), "equations per canonical solution in train/test")
    ood_steps: tuple[int, ...] = option((4, 5), "equations per canonical solution in test_ood")
    ood_numbers: str = option("wide", "numbers of test_ood: 'wide' (larger ranges than train) or 'id' "
                                      "(train's ranges: test_ood then differs by phrasings and steps only)")
    n_solutions: int = option(6, "distinct valid solutions generated per problem (canonical first)")
    shots: int = option(0, "k-shot exemplars from train in each prompt (0 = zero-shot, the default)")
    shot_seed: int = option(0, "seed that draws the k exemplars")

    def __post_init__(self):
        for name in ("train_size", "dev_size", "test_size", "ood_size"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("id_steps", "ood_steps"):
            steps = tuple(getattr(self, name))
            check(bool(steps) and all(1 <= s <= 8 for s in steps),
                  f"{name} must list step counts in 1..8 (numbers must stay below 1000), got {steps}")
        check(self.ood_numbers in ("wide", "id"),
              f"ood_numbers must be 'wide' or 'id', got {self.ood_numbers!r}")
        check(self.n_solutions >= 1, f"n_solutions must be >= 1, got {self.n_solutions}")
        check(self.shots >= 0, f"shots must be >= 0, got {self.shots}")


def _bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % _BUCKETS


def _in_split(prompt: str, split: str) -> bool:
    """Whether an in-distribution problem text belongs to `split` (the hash decides, so train, dev
    and test never share a problem whatever their sizes)."""
    bucket = _bucket(prompt)
    if split in _SPLIT_BUCKET:
        return bucket == _SPLIT_BUCKET[split]
    return bucket not in _SPLIT_BUCKET.values()


def generate_split(cfg: SyntheticConfig, split: str) -> list[Problem]:
    """The problems of one split; every solution is checked by evaluating its equations."""
    if split not in SPLITS:
        raise ValueError(f"synthetic: unknown split {split!r}; splits are {', '.join(SPLITS)}")
    ood = split == "test_ood"
    sizes = {"train": cfg.train_size, "dev": cfg.dev_size, "test": cfg.test_size, "test_ood": cfg.ood_size}
    size = sizes[split]
    rng = random.Random(f"reversalkit-synthetic/{cfg.seed}/{split}")
    ranges, steps_choices = (OOD_RANGES, cfg.ood_steps) if ood else (ID_RANGES, cfg.id_steps)
    if ood and cfg.ood_numbers == "id":
        ranges = ID_RANGES
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(400 * size + 1000):
        if len(problems) == size:
            break
        steps = rng.choice(steps_choices)
        story = sample_story(rng, steps, ranges, ood)
        if story is None:
            continue
        prompt = problem_text(story)
        if prompt in seen or (not ood and not _in_split(prompt, split)):
            continue
        seen.add(prompt)
        answer = story.answer()
        sols = solutions(story, rng, cfg.n_solutions)
        for sol in sols:
            errors = verify_solution(sol, answer)
            if errors:
                raise RuntimeError(f"synthetic generator produced an invalid solution ({errors}):\n{sol}")
        problems.append(Problem(
            id=f"synthetic/{cfg.seed}/{split}/{len(problems)}", prompt=prompt, answer=str(answer),
            solution=sols[0],
            meta={"solutions": tuple(sols), "steps": steps, "split": split,
                  "final": story.final[0] if story.final else None,
                  "events": tuple(e.kind for e in story.events)}))
    if len(problems) < size:
        raise RuntimeError(f"synthetic: only {len(problems)} distinct {split} problems could be generated "
                           f"for size {size}; lower the size or widen the step counts")
    return problems


def vocabulary() -> list[str]:
    """Every non-number token the task can produce (prompts, all solutions, all splits), sorted."""
    words: set[str] = set(W.PROMPT_WORDS)
    for template in W.all_templates():
        words.update(re.findall(TOKEN_PATTERN, re.sub(r"\{\w+\}", " ", template)))
    for fill in (W.NAMES, W.ITEMS, W.CONTAINERS):
        words.update(fill)
    words.update(re.findall(TOKEN_PATTERN, "<<3*7+2-1/1=21>>21\n####"))
    return sorted(w for w in words if not w.isdigit())


def number_tokens() -> list[str]:
    return [str(i) for i in range(1000)]


class SyntheticTask(PromptedTask):
    name = "synthetic"

    def __init__(self, **options):
        self.config = SyntheticConfig.from_dict(options)
        super().__init__(shots=self.config.shots, shot_seed=self.config.shot_seed)
        self._cache: dict[str, list[Problem]] = {}

    def load(self, split: str) -> list[Problem]:
        if split not in self._cache:
            self._cache[split] = generate_split(self.config, split)
        return self._cache[split]

    def render_question(self, problem: Problem) -> str:
        return f"Question: {problem.prompt}\nAnswer:"

    def render_exemplar(self, problem: Problem) -> str:
        return f"{self.render_question(problem)} {problem.solution}"

    def solutions(self, problem: Problem) -> tuple[str, ...]:
        """All generated valid solutions of a problem, the canonical one first."""
        return tuple(problem.meta.get("solutions") or (problem.solution,))

    def corpus(self, splits: tuple[str, ...] = SPLITS) -> Iterator[str]:
        """Every formatted prompt and every solution of `splits` (e.g. to build a tokenizer)."""
        for split in splits:
            for problem in self.load(split):
                yield self.format_prompt(problem)
                yield from self.solutions(problem)

    def extract_answer(self, text: str) -> str | None:
        return extract.extract_number_answer(text)

    def is_correct(self, problem: Problem, text: str) -> bool:
        return extract.numbers_equal(self.extract_answer(text), problem.answer)

    def equations(self, text: str) -> list[str]:
        return extract.equations(text)
