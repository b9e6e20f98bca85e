"""Word lists and sentence templates of the synthetic arithmetic task (the embedded default).

Everything the generator can write comes from here, so the vocabulary is closed and small (a
few hundred words; see `synthetic.vocabulary()`), as a tiny word-level model needs. Problem
templates marked OOD (the last phrasing of each kind) appear only in the out-of-distribution
test split. Placeholders: {N} person, {F} friend, {I} item (plural), {C} container (plural),
{a} {b} {k} numbers, {eq} an equation as it appears in a worked solution.
"""

from __future__ import annotations

NAMES = ("Ann", "Ben", "Cal", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Leo", "Mia",
         "Ned", "Ola", "Pam", "Ray", "Sam", "Tom", "Uma", "Val", "Zoe")
ITEMS = ("apples", "pens", "books", "cards", "coins", "cups", "eggs", "flowers", "grapes", "hats",
         "keys", "lemons", "marbles", "nuts", "pencils", "plums", "rocks", "shells", "stamps", "toys")
CONTAINERS = ("boxes", "bags", "packs", "jars", "baskets", "crates", "trays", "cases")

# Problem sentences per event kind; the LAST entry of each list is held out for test_ood.
PROBLEM = {
    "start": ("{N} has {a} {I} .", "{N} starts with {a} {I} .", "At first , {N} has {a} {I} ."),
    "start_groups": ("{N} has {a} {C} with {b} {I} in each .", "{N} has {a} {C} of {b} {I} each .",
                     "At first , {N} has {a} {C} , and each one holds {b} {I} ."),
    "gain": ("{F} gives {N} {a} {I} .", "{N} finds {a} more {I} .", "{N} buys {a} more {I} .",
             "Then {N} gets {a} {I} from {F} ."),
    "loss": ("{N} gives {a} {I} to {F} .", "{N} loses {a} {I} .", "{N} sells {a} {I} .",
             "Then {N} uses {a} of the {I} ."),
    "gain_groups": ("{N} buys {a} {C} with {b} {I} in each .", "{F} gives {N} {a} {C} of {b} {I} each .",
                    "Then {N} gets {a} more {C} , and each one holds {b} {I} ."),
    "loss_groups": ("{N} sells {a} {C} with {b} {I} in each .", "{N} gives {F} {a} {C} of {b} {I} each .",
                    "Then {N} gives away {a} {C} , and each one holds {b} {I} ."),
}
QUESTION = ("How many {I} does {N} have now ?", "How many {I} does {N} have at the end ?",
            "In the end , how many {I} are with {N} ?")
FINAL_PROBLEM = {
    "share": ("{N} shares the {I} equally among {k} friends . How many {I} does each friend get ?",
              "Then {N} splits the {I} equally among {k} friends . How many {I} does each one get ?"),
    "pack": ("{N} puts all the {I} into {C} of {k} . How many {C} does {N} fill ?",
             "Then {N} packs the {I} with {k} in each of the {C} . How many {C} are full ?"),
    "times": ("{F} has {k} times as many {I} as {N} has now . How many {I} does {F} have ?",
              "Then {F} gets {k} times as many {I} as {N} has . How many {I} does {F} get ?"),
}

# Worked-solution sentences. Index 0 of each list is the canonical phrasing.
START_SENTENCE = ("{N} starts with {a} {I} .", "At first , {N} has {a} {I} .")
PRODUCT = {
    "start_groups": ("{N} has {eq} {I} at first .", "The {C} hold {eq} {I} .",
                     "{a} {C} of {b} {I} is {eq} {I} ."),
    "gain_groups": ("{N} gets {eq} more {I} .", "The new {C} hold {eq} {I} .",
                    "{a} {C} of {b} {I} is {eq} {I} ."),
    "loss_groups": ("{N} gives away {eq} {I} .", "The {C} that go hold {eq} {I} .",
                    "{a} {C} of {b} {I} is {eq} {I} ."),
}
COMBINE = {
    "gain": ("Now {N} has {eq} {I} .", "Then {N} has {eq} {I} .", "After that , {N} has {eq} {I} ."),
    "loss": ("Now {N} has {eq} {I} .", "Then {N} has {eq} {I} left .", "After that , {N} has {eq} {I} ."),
}
FUSED = {
    "gain_groups": ("{N} gets {peq} more {I} , so {N} has {eq} {I} .",),
    "loss_groups": ("{N} gives away {peq} {I} , so {N} has {eq} {I} left .",),
}
MERGED = ("Now {N} has {eq} {I} .", "After that , {N} has {eq} {I} .")
GAINS_TOTAL = ("Without the losses , {N} would have {eq} {I} .", "All together , {N} gets {eq} {I} .")
LOSSES_TOTAL = ("In total , {N} loses {eq} {I} .", "In total , {eq} {I} are gone .")
NET = ("So {N} has {eq} {I} left .", "So {N} has {eq} {I} now .")
FINAL_SOLUTION = {
    "share": ("Each friend gets {eq} {I} .", "So each friend gets {eq} {I} ."),
    "pack": ("{N} fills {eq} {C} .", "So {N} fills {eq} {C} ."),
    "times": ("{F} has {eq} {I} .", "So {F} has {eq} {I} ."),
}
PROMPT_WORDS = ("Question", ":", "Answer", "#")


def all_templates() -> list[str]:
    """Every template string, for computing the closed vocabulary."""
    out: list[str] = list(QUESTION) + list(START_SENTENCE) + list(MERGED) + list(GAINS_TOTAL)
    out += list(LOSSES_TOTAL) + list(NET)
    for table in (PROBLEM, FINAL_PROBLEM, PRODUCT, COMBINE, FUSED, FINAL_SOLUTION):
        for phrasings in table.values():
            out += list(phrasings)
    return out
